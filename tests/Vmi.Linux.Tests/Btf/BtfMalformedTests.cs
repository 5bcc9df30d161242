using System.Buffers.Binary;
using System.Diagnostics;
using Vmi.Core;
using Vmi.Linux.Btf;
using Xunit;

namespace Vmi.Linux.Tests.Btf;

public class BtfMalformedTests
{
    private static BtfFormatException Rejects(byte[] blob) => Assert.Throws<BtfFormatException>(() => BtfTypes.Parse(blob));

    private static byte[] WithHeaderField(int offset, uint value)
    {
        byte[] blob = BtfBuilder.Sample();
        BinaryPrimitives.WriteUInt32LittleEndian(blob.AsSpan(offset), value);
        return blob;
    }

    [Fact]
    public void Is_a_vmi_exception() => Assert.IsAssignableFrom<VmiException>(Rejects([]));

    [Fact]
    public void Too_short() => Rejects(new byte[10]);

    [Fact]
    public void Bad_magic()
    {
        byte[] blob = BtfBuilder.Sample();
        blob[0] = 0x00;
        Assert.Contains("magic", Rejects(blob).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Big_endian_is_named()
    {
        byte[] blob = BtfBuilder.Sample();
        (blob[0], blob[1]) = (blob[1], blob[0]);
        Assert.Contains("big-endian", Rejects(blob).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Bad_version()
    {
        byte[] blob = BtfBuilder.Sample();
        blob[2] = 2;
        Rejects(blob);
    }

    [Fact]
    public void Header_length_too_small() => Assert.Contains("hdr_len", Rejects(WithHeaderField(4, 8)).Message, StringComparison.Ordinal);

    [Fact]
    public void Header_length_beyond_blob() => Rejects(WithHeaderField(4, 1_000_000));

    [Theory]
    [InlineData(8, 0xFFFF_FFF0u)]  // type_off
    [InlineData(12, 0xFFFF_FFF0u)] // type_len
    [InlineData(16, 0xFFFF_FFF0u)] // str_off
    [InlineData(20, 0xFFFF_FFF0u)] // str_len
    [InlineData(12, 1_000_000u)]
    [InlineData(20, 1_000_000u)]
    [InlineData(12, 6u)]           // unaligned type_len
    public void Sections_out_of_range(int field, uint value) => Rejects(WithHeaderField(field, value));

    [Fact]
    public void Type_id_out_of_range()
    {
        var b = new BtfBuilder();
        b.Int("int", 4);
        b.Ptr(99);
        Assert.Contains("99", Rejects(b.Build()).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Member_type_id_out_of_range()
    {
        var b = new BtfBuilder();
        b.Struct("s", 4, ("m", 7, 0));
        Rejects(b.Build());
    }

    [Fact]
    public void String_offset_out_of_range()
    {
        var b = new BtfBuilder();
        b.Raw(0x00FF_FFFF, 1u << 24, 4, 32); // INT with a name far beyond the string section
        Assert.Contains("name offset", Rejects(b.Build()).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Member_name_offset_out_of_range()
    {
        var b = new BtfBuilder();
        int i = b.Int("int", 4);
        b.Raw(0, (4u << 24) | 1, 4, 0x7FFF_FFFF, (uint)i, 0);
        Rejects(b.Build());
    }

    [Fact]
    public void Unterminated_string_section()
    {
        byte[] blob = BtfBuilder.Sample();
        blob[^1] = (byte)'x';
        Rejects(blob);
    }

    [Fact]
    public void Typedef_cycle()
    {
        var b = new BtfBuilder();
        b.Typedef("a", 2);
        b.Typedef("b", 3);
        b.Const(1);
        Assert.Contains("cycle", Rejects(b.Build()).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Self_referencing_pointer_and_array()
    {
        var b = new BtfBuilder();
        b.Ptr(1);
        Rejects(b.Build());
        b = new BtfBuilder();
        b.Int("int", 4);
        b.Array(2, 1, 4);
        Rejects(b.Build());
    }

    [Fact]
    public void Struct_pointing_at_itself_through_a_pointer_is_fine()
    {
        var b = new BtfBuilder();
        b.Struct("list_head", 16, ("next", 2, 0), ("prev", 2, 64));
        b.Ptr(1);
        BtfTypes t = BtfTypes.Parse(b.Build());
        Assert.Equal(8, t.OffsetOf("list_head", "prev"));
        Assert.Equal("struct list_head *", t.Describe(2));
    }

    [Fact]
    public void Huge_vlen()
    {
        var b = new BtfBuilder();
        b.Raw(0, (4u << 24) | 0xFFFF, 4); // STRUCT with 65535 members and no member records
        Assert.Contains("runs past", Rejects(b.Build()).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Truncated_record_and_unknown_kind()
    {
        var b = new BtfBuilder();
        b.Raw(0, 1u << 24);
        Rejects(b.Build());
        b = new BtfBuilder();
        b.Raw(0, 25u << 24, 0);
        Assert.Contains("unknown kind", Rejects(b.Build()).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Anonymous_member_recursion_is_bounded()
    {
        // A struct containing itself by value through an anonymous member: invalid C, but must not hang.
        var b = new BtfBuilder();
        b.Struct("loop", 8, ("", 1, 0), ("", 2, 0));
        b.Struct("", 8, ("", 1, 0));
        BtfTypes t = BtfTypes.Parse(b.Build());
        Assert.Throws<BtfFormatException>(() => t.OffsetOf("loop", "missing"));
    }

    [Fact]
    public void Wide_anonymous_fan_out_finishes()
    {
        // 30 levels, each with 50 anonymous members of the next level: a naive search is exponential.
        var b = new BtfBuilder();
        b.Int("int", 4);
        const int Levels = 30;
        for (int level = 0; level < Levels; level++)
        {
            int next = level + 3; // ids: 1 int, 2 level0, 3 level1 …
            var members = Enumerable.Range(0, 50).Select(_ => ("", level == Levels - 1 ? 1 : next, 0u)).ToArray();
            b.Struct(level == 0 ? "top" : "", 4, members);
        }
        BtfTypes t = BtfTypes.Parse(b.Build());
        var sw = Stopwatch.StartNew();
        Assert.False(t.TryOffsetOf("top", "missing", out _));
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(2));
    }

    [Fact]
    public void Array_size_overflow_is_reported()
    {
        var b = new BtfBuilder();
        b.Int("int", 4);
        int a = b.Array(1, 1, int.MaxValue);
        int a2 = b.Array(a, 1, int.MaxValue);
        b.Typedef("huge", a2);
        BtfTypes t = BtfTypes.Parse(b.Build());
        Assert.Throws<BtfFormatException>(() => t.SizeOf("huge"));
    }

    [Fact]
    public void Random_mutations_only_ever_throw_btf_format_exception()
    {
        byte[] valid = BtfBuilder.Sample();
        var rng = new Random(12345);
        var sw = Stopwatch.StartNew();
        int rejected = 0;
        for (int iteration = 0; iteration < 5000; iteration++)
        {
            byte[] blob = (byte[])valid.Clone();
            int flips = rng.Next(1, 6);
            for (int f = 0; f < flips; f++)
            {
                int pos = rng.Next(blob.Length);
                switch (rng.Next(4))
                {
                    case 0: blob[pos] ^= (byte)(1 << rng.Next(8)); break;
                    case 1: blob[pos] = (byte)rng.Next(256); break;
                    case 2: blob[pos] = 0xFF; break;
                    default: blob[pos] = 0; break;
                }
            }
            if (rng.Next(10) == 0)
                blob = blob[..rng.Next(blob.Length)];
            try
            {
                BtfTypes t = BtfTypes.Parse(blob);
                Exercise(t);
            }
            catch (BtfFormatException)
            {
                rejected++;
            }
        }
        Assert.True(rejected > 100, $"only {rejected} mutations were rejected");
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60), $"fuzzing took {sw.Elapsed}");
    }

    private static void Exercise(BtfTypes t)
    {
        for (int id = 0; id < t.TypeCount; id++)
        {
            BtfType type = t[id];
            _ = type.Name;
            _ = type.Members;
            _ = type.EnumValues;
            _ = type.Params;
            _ = type.Variables;
            _ = t.Describe(id);
            try
            {
                _ = t.SizeOf(id);
            }
            catch (BtfFormatException)
            {
            }
        }
        foreach (string path in new[] { "se.vruntime", "comm[3]", "u_b", "tasks.prev", "arr2[1][2]", "flags" })
            t.TryOffsetOf("task_struct", path, out _);
        t.TryOffsetOf("mm_struct", "pgd", out _);
        try
        {
            t.ResolvePath("task_struct.real_cred->uid.val");
        }
        catch (BtfFormatException)
        {
        }
    }
}
