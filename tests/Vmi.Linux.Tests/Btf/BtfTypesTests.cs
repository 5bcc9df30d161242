using Vmi.Linux.Btf;
using Xunit;

namespace Vmi.Linux.Tests.Btf;

public class BtfTypesTests
{
    private static readonly BtfTypes Sample = BtfTypes.Parse(BtfBuilder.Sample());

    [Fact]
    public void Parses_every_kind()
    {
        var kinds = Enumerable.Range(1, Sample.TypeCount - 1).Select(i => Sample[i].Kind).ToHashSet();
        foreach (BtfKind kind in Enum.GetValues<BtfKind>().Where(k => k != BtfKind.Void))
            Assert.Contains(kind, kinds);
        Assert.Equal(43, Sample.TypeCount);
        Assert.Equal(BtfKind.Void, Sample[0].Kind);
        Assert.Equal("void", Sample.Describe(0));
    }

    [Fact]
    public void Int_encoding_and_names()
    {
        Assert.True(Sample.TryFindType("int", out int id));
        BtfType t = Sample[id];
        Assert.Equal(BtfKind.Int, t.Kind);
        Assert.Equal(4u, t.Size);
        Assert.Equal(new BtfIntInfo(BtfIntEncoding.Signed, 0, 32), t.Int);
        Assert.Equal(4, Sample.SizeOf("int"));
        Assert.Equal(8, Sample.SizeOf("long unsigned int"));
        Assert.Equal(8, Sample.SizeOf("double"));
    }

    [Fact]
    public void Struct_is_preferred_over_typedef_of_the_same_name()
    {
        Assert.True(Sample.TryFindType("kuid_t", out int id));
        Assert.Equal(BtfKind.Struct, Sample[id].Kind);
        Assert.True(Sample.TryFindType("list_head", out id));
        Assert.Equal(BtfKind.Struct, Sample[id].Kind); // not the FWD that comes first
        Assert.True(Sample.TryFindType("struct cred", out id));
        Assert.Equal("struct cred", Sample.Describe(id));
        Assert.True(Sample.TryFindType("union onion", out id));
        Assert.Equal(BtfKind.Union, Sample[id].Kind);
        Assert.True(Sample.TryFindType("enum big", out id));
        Assert.Equal(BtfKind.Enum64, Sample[id].Kind);
        Assert.False(Sample.TryFindType("struct onion", out _));
        Assert.False(Sample.TryFindType("no_such_type", out _));
    }

    [Fact]
    public void Member_offsets_through_nested_and_anonymous_members()
    {
        Assert.Equal(8, Sample.OffsetOf("task_struct", "se"));
        Assert.Equal(16, Sample.OffsetOf("task_struct", "se.vruntime"));
        Assert.Equal(24, Sample.OffsetOf("task_struct", "tasks"));
        Assert.Equal(32, Sample.OffsetOf("task_struct", "tasks.prev"));
        Assert.Equal(40, Sample.OffsetOf("task_struct", "pid"));
        Assert.Equal(56, Sample.OffsetOf("task_struct", "comm"));
        Assert.Equal(8, Sample.OffsetOf("mm_struct", "pgd"));        // inside the anonymous struct
        Assert.Equal(24, Sample.OffsetOf("mm_struct", "cpu_bitmap"));
        Assert.Equal(80, Sample.OffsetOf("task_struct", "u_b"));     // inside the anonymous union
        Assert.Equal(8, Sample.OffsetOf("cred", "uid.val"));         // through typedef kuid_t
        Assert.Equal(32, Sample.SizeOf("task_struct") / 4);
    }

    [Fact]
    public void Array_indexing()
    {
        Assert.Equal(56 + 5, Sample.OffsetOf("task_struct", "comm[5]"));
        Assert.Equal(96 + (1 * 12) + (2 * 4), Sample.OffsetOf("task_struct", "arr2[1][2]"));
        BtfMemberInfo comm = Sample.ResolveMember("task_struct", "comm");
        Assert.True(comm.IsArray);
        Assert.Equal(16, comm.ElementCount);
        Assert.Equal("char", Sample.Describe(comm.ElementTypeId));
        Assert.Equal(16, comm.Size);
        Assert.Equal(24, Sample.ResolveMember("task_struct", "arr2").Size);
        Assert.Throws<BtfFormatException>(() => Sample.OffsetOf("task_struct", "comm[16]"));
        Assert.Throws<BtfFormatException>(() => Sample.OffsetOf("task_struct", "pid[0]"));
        Assert.Throws<BtfFormatException>(() => Sample.OffsetOf("task_struct", "comm[x]"));
    }

    [Fact]
    public void Bitfields_with_kind_flag()
    {
        BtfMemberInfo b = Sample.ResolveMember("bits", "b");
        Assert.Equal(1, b.BitOffset);
        Assert.Equal(3, b.BitfieldSize);
        Assert.Equal(0, b.Offset);
        Assert.True(b.IsBitfield);
        BtfMemberInfo c = Sample.ResolveMember("bits", "c");
        Assert.Equal(32, c.BitOffset);
        Assert.False(c.IsBitfield);
        Assert.Equal(4, c.Offset);
        Assert.True(Sample.TryFindType("bits", out int id));
        Assert.Equal(new BtfMember("b", 1, 1, 3), Sample[id].Members[1]);
    }

    [Fact]
    public void Bitfields_without_kind_flag_use_the_int_encoding()
    {
        BtfMemberInfo x = Sample.ResolveMember("oldbits", "x");
        Assert.Equal(8 + 2, x.BitOffset);
        Assert.Equal(5, x.BitfieldSize);
        Assert.Equal(1, x.Offset);
    }

    [Fact]
    public void Typedef_and_qualifier_chains_resolve()
    {
        BtfMemberInfo flags = Sample.ResolveMember("task_struct", "flags");
        Assert.Equal(BtfKind.Int, flags.ResolvedKind);
        Assert.Equal("td2", Sample.Describe(flags.TypeId));
        Assert.Equal(4, flags.Size);
        Assert.Equal(4, Sample.SizeOf("td2"));
        BtfMemberInfo state = Sample.ResolveMember("task_struct", "state");
        Assert.Equal("volatile unsigned int", Sample.Describe(state.TypeId));
    }

    [Fact]
    public void Pointer_members_and_describe()
    {
        BtfMemberInfo cred = Sample.ResolveMember("task_struct", "real_cred");
        Assert.True(cred.IsPointer);
        Assert.Equal(8, cred.Size);
        Assert.Equal("const struct cred *", Sample.Describe(cred.TypeId));
        Assert.Equal("const struct cred", Sample.Describe(cred.PointeeTypeId));
        Assert.True(Sample.TryFindType("do_thing", out int func));
        Assert.Equal("func do_thing", Sample.Describe(func));
        Assert.Equal("int (*)(const struct cred *, ...)", Sample.Describe(Sample[func].Type));
        Assert.Equal("char [16]", Sample.Describe(Sample.ResolveMember("task_struct", "comm").TypeId));
    }

    [Fact]
    public void Dotted_path_cannot_cross_a_pointer()
    {
        Assert.Throws<BtfFormatException>(() => Sample.OffsetOf("task_struct", "real_cred.uid"));
        Assert.Throws<BtfFormatException>(() => Sample.OffsetOf("task_struct", "real_cred->uid"));
    }

    [Fact]
    public void Resolve_path_with_dereferences()
    {
        MemberPath p = Sample.ResolvePath("task_struct.real_cred->uid.val");
        Assert.Equal([new MemberPathStep(48, true), new MemberPathStep(8, false)], p.Steps);
        Assert.Equal(4, p.Size);
        Assert.Equal("u32", Sample.Describe(p.Final.TypeId));
        MemberPath pgd = Sample.ResolvePath("task_struct.mm->pgd");
        Assert.Equal([new MemberPathStep(72, true), new MemberPathStep(8, false)], pgd.Steps);
        Assert.True(pgd.Final.IsPointer);
        MemberPath single = Sample.ResolvePath("task_struct.pid");
        Assert.Equal([new MemberPathStep(40, false)], single.Steps);
        Assert.Throws<BtfFormatException>(() => Sample.ResolvePath("task_struct.pid->x"));
        Assert.Throws<BtfFormatException>(() => Sample.ResolvePath("task_struct"));
        Assert.Throws<BtfFormatException>(() => Sample.ResolvePath("task_struct.real_cred->"));
        Assert.Throws<BtfFormatException>(() => Sample.ResolvePath("nope.x"));
    }

    [Fact]
    public void Unknown_types_and_members_name_themselves()
    {
        var e = Assert.Throws<BtfFormatException>(() => Sample.SizeOf("no_such_struct"));
        Assert.Contains("no_such_struct", e.Message, StringComparison.Ordinal);
        e = Assert.Throws<BtfFormatException>(() => Sample.OffsetOf("task_struct", "nonexistent"));
        Assert.Contains("nonexistent", e.Message, StringComparison.Ordinal);
        Assert.False(Sample.TryOffsetOf("task_struct", "nonexistent", out _));
        Assert.True(Sample.TryOffsetOf("task_struct", "pid", out int pid));
        Assert.Equal(40, pid);
        Assert.Throws<BtfFormatException>(() => Sample[Sample.TypeCount]);
        Assert.Throws<BtfFormatException>(() => Sample[-1]);
        Assert.Throws<BtfFormatException>(() => Sample.SizeOf("do_thing")); // a function has no size
    }

    [Fact]
    public void Enums_including_enum64_and_signedness()
    {
        Assert.True(Sample.TryFindType("pid_type", out int id));
        Assert.Equal([new BtfEnumValue("PIDTYPE_PID", 0), new BtfEnumValue("PIDTYPE_MAX", 4)], Sample[id].EnumValues);
        Assert.True(Sample.TryFindType("neg", out id));
        Assert.Equal(-1, Sample[id].EnumValues[0].Value);
        Assert.True(Sample.TryFindType("big", out id));
        Assert.Equal(unchecked((long)0xFFFF_FFFF_0000_0001UL), Sample[id].EnumValues[0].Value);
        Assert.Equal(2, Sample[id].EnumValues[1].Value);
        Assert.Equal(8, Sample.SizeOf("big"));
    }

    [Fact]
    public void Func_proto_var_datasec_decl_tag_type_tag()
    {
        Assert.True(Sample.TryFindType("do_thing", out int func));
        BtfType proto = Sample[Sample[func].Type];
        Assert.Equal(BtfKind.FuncProto, proto.Kind);
        Assert.Equal(2, proto.Params.Count);
        Assert.Equal(new BtfParam("", 0), proto.Params[1]);
        Assert.Equal(1, Sample[func].Extra);
        Assert.True(Sample.TryFindType("jiffies", out int v));
        Assert.Equal(BtfKind.Var, Sample[v].Kind);
        Assert.Equal(8, Sample.SizeOf(v));
        Assert.True(Sample.TryFindType(".data", out int sec));
        Assert.Equal([new BtfVarSecInfo(v, 0, 8)], Sample[sec].Variables);
        var tag = Enumerable.Range(1, Sample.TypeCount - 1).Select(i => Sample[i]).Single(t => t.Kind == BtfKind.DeclTag);
        Assert.Equal("user", tag.Name);
        Assert.Equal(3, tag.Extra);
        var typeTag = Enumerable.Range(1, Sample.TypeCount - 1).Select(i => Sample[i]).Single(t => t.Kind == BtfKind.TypeTag);
        Assert.Equal("rcu", typeTag.Name);
        Assert.Equal(Sample.SizeOf("task_struct"), Sample.SizeOf(typeTag.Id));
        Assert.True(Sample.TryFindType("list_head", out int lh));
        Assert.Equal(2, Sample[lh].Members.Count);
    }

    [Fact]
    public void Members_list_matches_the_wire_encoding()
    {
        Assert.True(Sample.TryFindType("mm_struct", out int mm));
        IReadOnlyList<BtfMember> members = Sample[mm].Members;
        Assert.Equal(2, members.Count);
        Assert.Equal("", members[0].Name);
        Assert.True(Sample[members[0].Type].IsAnonymous);
        Assert.Equal(192u, members[1].BitOffset);
    }

    [Fact]
    public void Blob_with_only_a_header_is_empty()
    {
        BtfTypes empty = BtfTypes.Parse(new BtfBuilder().Build());
        Assert.Equal(1, empty.TypeCount);
        Assert.False(empty.TryFindType("int", out _));
    }
}
