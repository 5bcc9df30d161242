using Xunit;

namespace Vmi.Memory.Tests;

public sealed class WalkResultTests
{
    private static SparsePhysicalMemory Tables()
    {
        var m = new SparsePhysicalMemory();
        m.WriteUInt64(0x1008, 0x2007);             // PML4[1] -> PDPT 0x2000
        m.WriteUInt64(0x2010, 0x3007);             // PDPT[2] -> PD 0x3000
        m.WriteUInt64(0x3018, 0x202083);           // PD[3]: 2 MiB page with bit 13 set
        m.WriteUInt64(0x3020, 0x9_0000_0003);      // PD[4] -> PT at 0x900000000, unbacked
        m.WriteUInt64(0x3028, 0x600083);           // PD[5]: 2 MiB page at 0x600000
        return m;
    }

    private static string Describe(ulong va, PagingContext? context = null)
    {
        using SparsePhysicalMemory m = Tables();
        return new PageWalker(m).Walk(context ?? new PagingContext(0x1000, false), va).Describe();
    }

    [Fact]
    public void Not_present_names_level_index_and_entry_address() =>
        Assert.Equal("VA 0x8080c00000: PD entry 0x6 at PA 0x3030 not present (value 0x0)", Describe(0x80_80c0_0000));

    [Fact]
    public void Reserved_bits_say_which_and_why() =>
        Assert.Equal("VA 0x8080600000: PD entry 0x3 at PA 0x3018 has reserved bits 0x2000 set (value 0x202083): 2 MiB page base not aligned (bits 13..20)",
            Describe(0x80_8060_0000));

    [Fact]
    public void Reserved_bit_63_without_nxe()
    {
        using var m = new SparsePhysicalMemory();
        m.WriteUInt64(0x1000, 0x8000_0000_0000_2003);
        string text = new PageWalker(m).Walk(new PagingContext(0x1000, false, Nxe: false), 0).Describe();
        Assert.Contains("PML4 entry 0x0 at PA 0x1000 has reserved bits 0x8000000000000000", text, StringComparison.Ordinal);
        Assert.Contains("EFER.NXE", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Unreadable_table_names_the_missing_address() =>
        Assert.Equal("VA 0x8080800000: PT entry 0x0 at PA 0x900000000 is unreadable: the table lies outside backed guest memory",
            Describe(0x80_8080_0000));

    [Fact]
    public void Non_canonical_explains_the_rule()
    {
        Assert.Contains("not canonical for 4-level paging", Describe(0x8000_0000_0000), StringComparison.Ordinal);
        Assert.Contains("not canonical for 5-level paging", Describe(0x0100_0000_0000_0000, new PagingContext(0x1000, true)), StringComparison.Ordinal);
    }

    [Fact]
    public void Success_gives_the_translation()
    {
        Assert.Equal("VA 0x8080a12345 -> PA 0x612345 (2 MiB page, RW supervisor X)", Describe(0x80_80a1_2345));
        using SparsePhysicalMemory m = Tables();
        WalkResult r = new PageWalker(m).Walk(new PagingContext(0x1000, false), 0x80_80a1_2345);
        Assert.True(r.Succeeded);
        Assert.Equal([PagingLevel.Pml4, PagingLevel.Pdpt, PagingLevel.Pd], r.Steps.Select(s => s.Level));
        Assert.Equal(new WalkStep(PagingLevel.Pd, 5, 0x3028, 0x600083), r.Steps[^1]);
        Assert.Equal(r.Describe(), r.ToString());
    }
}
