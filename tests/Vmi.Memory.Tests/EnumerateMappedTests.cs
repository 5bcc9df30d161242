using Vmi.Memory;
using Xunit;

namespace Vmi.Memory.Tests;

public sealed class EnumerateMappedTests
{
    private const ulong Pml4 = 0x1000, Pdpt = 0x2000, Pd = 0x3000, Pt = 0x4000;
    private const ulong Rw = 0x3, Ps = 0x80;
    private const ulong Base = 0xffff_ffff_c000_0000; // PML4 511, PDPT 511

    private static SparsePhysicalMemory BuildTables()
    {
        var m = new SparsePhysicalMemory();
        m.WriteUInt64(Pml4 + 511 * 8, Pdpt | Rw);
        m.WriteUInt64(Pdpt + 511 * 8, Pd | Rw);
        m.WriteUInt64(Pd + 0 * 8, Pt | Rw);                       // 0xffffffffc0000000: a page table
        m.WriteUInt64(Pd + 3 * 8, 0x20_0000 | Rw | Ps);           // 0xffffffffc0600000: a 2 MiB page
        m.WriteUInt64(Pt + 1 * 8, 0x10_0000 | Rw);                // 0xffffffffc0001000
        m.WriteUInt64(Pt + 5 * 8, 0x10_5000 | Rw);                // 0xffffffffc0005000
        m.WriteUInt64(Pt + 6 * 8, 0x10_6000);                     // not present
        m.Write(0x10_0000, new byte[1]);
        return m;
    }

    [Fact]
    public void Lists_present_leaves_in_order_with_their_frames()
    {
        var vm = new VirtualMemory(BuildTables(), new PagingContext(Pml4, La57: false));
        IReadOnlyList<MappedPage> pages = vm.EnumerateMapped(Base, 0xffff_ffff_ff00_0000, 1000, 1000, out bool truncated);
        Assert.False(truncated);
        Assert.Equal(
            [new MappedPage(Base + 0x1000, 0x10_0000, 0x1000), new MappedPage(Base + 0x5000, 0x10_5000, 0x1000), new MappedPage(Base + 0x60_0000, 0x20_0000, 0x20_0000)],
            pages);
    }

    [Fact]
    public void Respects_the_range_and_the_bounds()
    {
        var vm = new VirtualMemory(BuildTables(), new PagingContext(Pml4, La57: false));
        Assert.Single(vm.EnumerateMapped(Base + 0x2000, Base + 0x6000, 1000, 1000, out _));
        Assert.Empty(vm.EnumerateMapped(0xffff_8000_0000_0000, 0xffff_8100_0000_0000, 1000, 1000, out _));
        IReadOnlyList<MappedPage> two = vm.EnumerateMapped(Base, 0, 2, 1000, out bool truncated);
        Assert.Equal(2, two.Count);
        Assert.True(truncated);
    }

    [Fact]
    public void Self_referencing_tables_are_bounded()
    {
        var m = new SparsePhysicalMemory();
        // Every entry of the PML4 points at the PML4 itself: 512^4 "pages" if unbounded.
        for (ulong i = 0; i < 512; i++)
            m.WriteUInt64(Pml4 + i * 8, Pml4 | Rw);
        var vm = new VirtualMemory(m, new PagingContext(Pml4, La57: false));
        IReadOnlyList<MappedPage> pages = vm.EnumerateMapped(0xffff_8000_0000_0000, 0, 10_000, 100, out bool truncated);
        Assert.True(truncated);
        Assert.True(pages.Count <= 10_000);
    }
}
