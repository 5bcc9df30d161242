using Vmi.Linux.Btf;
using Vmi.Linux.Tests.Image;
using Xunit;

namespace Vmi.Linux.Tests.Btf;

/// <summary>Our parser against bpftool on real kernel BTF: the lab's Debian 6.1 kernel and this host's kernel.</summary>
public class BtfBpftoolDifferentialTests
{
    private const string HostBtf = "/sys/kernel/btf/vmlinux";

    private static readonly string[] Structs =
    [
        "task_struct", "mm_struct", "cred", "module", "list_head", "file", "files_struct", "fdtable", "inet_sock",
        "sock_common", "vm_area_struct", "pid", "upid", "sched_entity", "sock", "path", "dentry", "qstr", "kernfs_node",
    ];

    private static readonly Lazy<Task<(BtfTypes Ours, BpftoolRaw Reference)>> Lab = new(async () =>
    {
        byte[] blob = await LabKernel.BtfAsync();
        string file = Path.Combine(Path.GetDirectoryName(await LabKernel.VmlinuxAsync())!, "vmlinux.btf");
        await File.WriteAllBytesAsync(file, blob);
        return (BtfTypes.Parse(blob), await BpftoolRaw.DumpAsync(file));
    });

    private static readonly Lazy<Task<(BtfTypes Ours, BpftoolRaw Reference)>> Host = new(async () =>
        (BtfTypes.ParseFile(HostBtf), await BpftoolRaw.DumpAsync(HostBtf)));

    [Fact]
    public async Task Lab_kernel_every_type_matches_bpftool()
    {
        var (ours, reference) = await Lab.Value;
        AssertSameTypes(ours, reference);
    }

    [Fact]
    public async Task Lab_kernel_named_structs_match_bpftool()
    {
        var (ours, reference) = await Lab.Value;
        AssertNamedStructs(ours, reference);
    }

    [Fact]
    public async Task Lab_kernel_offsets_match_bpftool()
    {
        var (ours, reference) = await Lab.Value;
        AssertKeyOffsets(ours, reference);
    }

    [HostBtfFact]
    public async Task Host_kernel_matches_bpftool()
    {
        var (ours, reference) = await Host.Value;
        AssertSameTypes(ours, reference);
        AssertNamedStructs(ours, reference);
        AssertKeyOffsets(ours, reference);
    }

    private static void AssertSameTypes(BtfTypes ours, BpftoolRaw reference)
    {
        Assert.Equal(reference.Types.Count + 1, ours.TypeCount);
        foreach (BpftoolRaw.Type r in reference.Types.Values)
        {
            BtfType t = ours[r.Id];
            Assert.Equal(r.Kind, KindName(t.Kind));
            Assert.Equal(r.Name == "(anon)" ? "" : r.Name, t.Name);
            if (r.Kind is not ("STRUCT" or "UNION"))
                continue;
            Assert.Equal(r.Size, t.Size);
            IReadOnlyList<BtfMember> members = t.Members;
            Assert.Equal(r.Members.Count, members.Count);
            for (int i = 0; i < members.Count; i++)
            {
                BpftoolRaw.Member rm = r.Members[i];
                if (rm.Name != members[i].Name || rm.BitOffset != members[i].BitOffset || rm.TypeId != members[i].Type
                    || rm.BitfieldSize != members[i].BitfieldSize)
                {
                    Assert.Fail($"[{r.Id}] {r.Kind} '{r.Name}' member {i}: bpftool {rm}, ours {members[i]}");
                }
            }
        }
    }

    private static void AssertNamedStructs(BtfTypes ours, BpftoolRaw reference)
    {
        foreach (string name in Structs)
        {
            BpftoolRaw.Type r = reference.Struct(name);
            Assert.True(ours.TryFindType(name, out int id), name);
            Assert.Equal(r.Id, id);
            Assert.Equal(r.Size, ours.SizeOf(name));
            foreach (BpftoolRaw.Member m in r.Members.Where(m => m.Name.Length > 0))
            {
                BtfMemberInfo info = ours.ResolveMember(name, m.Name);
                Assert.Equal(m.BitOffset, info.BitOffset);
                Assert.Equal(m.BitOffset / 8, info.Offset);
            }
        }
    }

    private static void AssertKeyOffsets(BtfTypes ours, BpftoolRaw reference)
    {
        (string Type, string Path)[] cases =
        [
            ("task_struct", "tasks"), ("task_struct", "pid"), ("task_struct", "tgid"), ("task_struct", "comm"),
            ("task_struct", "se.vruntime"), ("task_struct", "real_cred"), ("task_struct", "mm"), ("mm_struct", "pgd"),
            ("mm_struct", "mmap_base"), ("module", "list"), ("module", "name"), ("cred", "uid.val"), ("list_head", "prev"),
            ("inet_sock", "sk.__sk_common.skc_daddr"), ("sock_common", "skc_dport"), ("files_struct", "fdt"),
        ];
        foreach (var (type, path) in cases)
        {
            long? expected = reference.BitOffsetOf(reference.Struct(type), path);
            Assert.True(expected is not null, $"bpftool model has no {type}.{path}");
            Assert.True(ours.TryOffsetOf(type, path, out int offset), $"{type}.{path}");
            Assert.Equal(expected / 8, offset);
        }
        MemberPath uid = ours.ResolvePath("task_struct.real_cred->uid.val");
        Assert.Equal(2, uid.Steps.Count);
        Assert.Equal(reference.BitOffsetOf(reference.Struct("task_struct"), "real_cred") / 8, uid.Steps[0].Offset);
        Assert.True(uid.Steps[0].Dereference);
        Assert.Equal(reference.BitOffsetOf(reference.Struct("cred"), "uid.val") / 8, uid.Steps[1].Offset);
        Assert.False(uid.Steps[1].Dereference);
        Assert.Equal(4, uid.Size);
        Assert.Equal("struct cred *", ours.Describe(ours.ResolveMember("task_struct", "cred").TypeId).Replace("const ", "", StringComparison.Ordinal));
    }

    private static string KindName(BtfKind kind) => kind switch
    {
        BtfKind.FuncProto => "FUNC_PROTO",
        BtfKind.DeclTag => "DECL_TAG",
        BtfKind.TypeTag => "TYPE_TAG",
        _ => kind.ToString().ToUpperInvariant(),
    };
}

/// <summary>Runs only where the host kernel exposes its BTF; skipped with the reason otherwise.</summary>
public sealed class HostBtfFactAttribute : FactAttribute
{
    public HostBtfFactAttribute()
    {
        if (!File.Exists("/sys/kernel/btf/vmlinux"))
            Skip = "this host's kernel exposes no /sys/kernel/btf/vmlinux (needs CONFIG_DEBUG_INFO_BTF=y)";
    }
}
