using Xunit;

namespace Vmi.Memory.Tests;

public sealed class VirtualMemoryTests
{
    // 4-level tables at 0x1000..0x4000 mapping VA 0x10000.. (PT indices 16..19) to scattered physical pages:
    // VA 0x10000 -> PA 0x20000, VA 0x11000 -> PA 0x30000, VA 0x12000 not present, VA 0x13000 -> PA 0x50000 (unbacked).
    private static SparsePhysicalMemory BuildMemory()
    {
        var m = new SparsePhysicalMemory();
        m.WriteUInt64(0x1000, 0x2007);          // PML4[0] -> PDPT 0x2000
        m.WriteUInt64(0x2000, 0x3007);          // PDPT[0] -> PD 0x3000
        m.WriteUInt64(0x3000, 0x4007);          // PD[0] -> PT 0x4000
        m.WriteUInt64(0x4000 + 16 * 8, 0x20007); // PT[16] -> 0x20000
        m.WriteUInt64(0x4000 + 17 * 8, 0x30007); // PT[17] -> 0x30000
        m.WriteUInt64(0x4000 + 19 * 8, 0x50007); // PT[19] -> 0x50000, never written
        m.Write(0x20000, Enumerable.Repeat((byte)0xaa, 0x1000).ToArray());
        m.Write(0x30000, Enumerable.Repeat((byte)0xbb, 0x1000).ToArray());
        return m;
    }

    private static readonly PagingContext Context = new(0x1000, La57: false);

    [Fact]
    public void Read_crosses_page_boundaries_translating_each_page()
    {
        using SparsePhysicalMemory m = BuildMemory();
        var vm = new VirtualMemory(m, Context);
        var buffer = new byte[16];
        VirtualReadResult r = vm.Read(0x10ff8, buffer);
        Assert.True(r.IsComplete);
        Assert.Equal(16, r.BytesRead);
        Assert.Equal([.. Enumerable.Repeat((byte)0xaa, 8), .. Enumerable.Repeat((byte)0xbb, 8)], buffer);
    }

    [Fact]
    public void Read_stops_at_a_not_present_page_with_a_partial_result()
    {
        using SparsePhysicalMemory m = BuildMemory();
        var vm = new VirtualMemory(m, Context);
        var buffer = new byte[0x2000];
        VirtualReadResult r = vm.Read(0x10800, buffer);
        Assert.False(r.IsComplete);
        Assert.Equal(WalkStatus.NotPresent, r.Status);
        Assert.Equal(0x1800, r.BytesRead);          // rest of page 0x10000 plus all of 0x11000
        Assert.Equal(0x12000UL, r.FailedAddress);
        Assert.Equal(0xbb, buffer[0x17ff]);
        Assert.False(vm.TryRead(0x10800, buffer));
    }

    [Fact]
    public void Read_reports_unbacked_physical_pages()
    {
        using SparsePhysicalMemory m = BuildMemory();
        var vm = new VirtualMemory(m, Context);
        VirtualReadResult r = vm.Read(0x13010, new byte[4]);
        Assert.Equal(new VirtualReadResult(0, WalkStatus.PhysicalUnbacked, 0x13010), r);
        Assert.Equal(new VirtualReadResult(0, WalkStatus.NonCanonical, 0x8000_0000_0000), vm.Read(0x8000_0000_0000, new byte[1]));
        Assert.Equal(new VirtualReadResult(0, WalkStatus.Ok, 0), vm.Read(0x99999, Span<byte>.Empty));
    }

    [Fact]
    public void ReadUInt64_on_and_across_page_boundaries()
    {
        using SparsePhysicalMemory m = BuildMemory();
        m.WriteUInt64(0x20ff8, 0x0102030405060708);
        var vm = new VirtualMemory(m, Context, new TranslationCache());
        Assert.True(vm.TryReadUInt64(0x10ff8, out ulong v));
        Assert.Equal(0x0102030405060708UL, v);
        Assert.True(vm.TryReadUInt64(0x10ffc, out v)); // 4 bytes from each page
        Assert.Equal(0xbbbbbbbb01020304UL, v);
        Assert.False(vm.TryReadUInt64(0x11ffc, out v)); // second half not present
        Assert.Equal(0UL, v);
        Assert.True(vm.TryRead(0x11000, out uint u));
        Assert.Equal(0xbbbbbbbbu, u);
    }

    [Fact]
    public void Cache_is_used_and_explicit_invalidation_sees_table_changes()
    {
        using SparsePhysicalMemory m = BuildMemory();
        var cache = new TranslationCache(16);
        var vm = new VirtualMemory(m, Context, cache);
        Assert.True(vm.TryTranslate(0x10123, out Translation t));
        Assert.Equal(0x20123UL, t.PhysicalAddress);
        Assert.Equal(0, cache.Hits);
        Assert.Equal(1, cache.Misses);
        Assert.True(vm.TryTranslate(0x10456, out t));
        Assert.Equal(0x20456UL, t.PhysicalAddress);
        Assert.Equal(1, cache.Hits);

        // The guest remaps the page: the cache keeps the stale translation until told.
        m.WriteUInt64(0x4000 + 16 * 8, 0x30007);
        Assert.True(vm.TryTranslate(0x10000, out t));
        Assert.Equal(0x20000UL, t.PhysicalAddress);
        cache.Invalidate(Context.Cr3, 0x10fff);
        Assert.True(vm.TryTranslate(0x10000, out t));
        Assert.Equal(0x30000UL, t.PhysicalAddress);
        Assert.Equal(WalkStatus.NotPresent, vm.Walk(0x12000).Status);
    }

    [Fact]
    public void WithContext_shares_memory_and_cache()
    {
        using SparsePhysicalMemory m = BuildMemory();
        var vm = new VirtualMemory(m, Context, new TranslationCache());
        VirtualMemory other = vm.WithContext(new PagingContext(0x9000, false));
        Assert.Same(vm.Cache, other.Cache);
        Assert.False(other.TryTranslate(0x10000, out _, out WalkStatus status));
        Assert.Equal(WalkStatus.TableUnreadable, status);
    }
}

public sealed class TranslationCacheTests
{
    private static Translation T(ulong va, ulong pa, PageSize size = PageSize.Size4K) =>
        new(va, pa, size, PageFlags.Present | PageFlags.Writable);

    [Fact]
    public void Hit_returns_the_queried_address_within_the_cached_page()
    {
        var cache = new TranslationCache();
        cache.Add(0x1000, T(0x7000_0123, 0x5_5123));
        Assert.True(cache.TryGet(0x1000, 0x7000_0fff, out Translation t));
        Assert.Equal(T(0x7000_0fff, 0x5_5fff), t);
        Assert.False(cache.TryGet(0x1000, 0x7000_1000, out _));
        Assert.False(cache.TryGet(0x2000, 0x7000_0123, out _)); // another address space
        Assert.Equal(1, cache.Hits);
        Assert.Equal(2, cache.Misses);
        cache.ResetStatistics();
        Assert.Equal(0, cache.Hits + cache.Misses);
    }

    [Fact]
    public void Large_pages_hit_anywhere_inside_and_invalidate_as_a_whole()
    {
        var cache = new TranslationCache();
        cache.Add(0x1000, T(0xffff_ffff_8012_3456, 0x112_3456, PageSize.Size2M));
        cache.Add(0x1000, T(0x4000_0000, 0x1_c000_0000, PageSize.Size1G));
        Assert.True(cache.TryGet(0x1000, 0xffff_ffff_801f_ffff, out Translation t));
        Assert.Equal(0x11f_ffffUL, t.PhysicalAddress);
        Assert.Equal(PageSize.Size2M, t.Size);
        Assert.True(cache.TryGet(0x1000, 0x7fff_ffff, out t));
        Assert.Equal(0x1_ffff_ffffUL, t.PhysicalAddress);

        cache.Invalidate(0x1000, 0xffff_ffff_8000_0000); // any address inside the 2 MiB page
        Assert.False(cache.TryGet(0x1000, 0xffff_ffff_8012_3456, out _));
        Assert.True(cache.TryGet(0x1000, 0x4000_0000, out _));
    }

    [Fact]
    public void Address_space_and_global_invalidation()
    {
        var cache = new TranslationCache(64);
        for (ulong i = 0; i < 8; i++)
        {
            cache.Add(0x1000, T(i << 12, 0x10_0000 + (i << 12)));
            cache.Add(0x2000, T(i << 12, 0x20_0000 + (i << 12)));
        }
        cache.InvalidateAddressSpace(0x1000);
        for (ulong i = 0; i < 8; i++)
        {
            Assert.False(cache.TryGet(0x1000, i << 12, out _));
            Assert.True(cache.TryGet(0x2000, i << 12, out Translation t));
            Assert.Equal(0x20_0000 + (i << 12), t.PhysicalAddress);
        }
        cache.InvalidateAll();
        Assert.False(cache.TryGet(0x2000, 0, out _));
    }

    [Fact]
    public void Pcid_is_part_of_the_key_but_the_no_flush_bit_is_not()
    {
        var cache = new TranslationCache();
        cache.Add(0x1001, T(0x5000, 0x9000));
        Assert.True(cache.TryGet(0x8000_0000_0000_1001, 0x5000, out _));
        Assert.False(cache.TryGet(0x1002, 0x5000, out _));
    }

    [Fact]
    public void Conflicting_entries_replace_each_other()
    {
        var cache = new TranslationCache(1); // one 4 KiB slot
        cache.Add(0x1000, T(0x1000, 0xa000));
        cache.Add(0x1000, T(0x2000, 0xb000));
        Assert.False(cache.TryGet(0x1000, 0x1000, out _));
        Assert.True(cache.TryGet(0x1000, 0x2000, out _));
    }

    [Fact]
    public void Bad_arguments_throw()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new TranslationCache(0));
        Assert.Throws<ArgumentException>(() => new TranslationCache().Add(0, new Translation(0, 0, (PageSize)0x3000, PageFlags.Present)));
    }
}

public sealed class PagingContextTests
{
    [Fact]
    public void FromRegisters_reads_la57_and_nxe()
    {
        PagingContext c = PagingContext.FromRegisters(0x1234_5000, cr4: 1UL << 12, efer: 1UL << 11, maxPhysicalAddressBits: 46);
        Assert.Equal(new PagingContext(0x1234_5000, true, true, 46), c);
        Assert.Equal(5, c.Levels);
        Assert.Equal(57, c.VirtualAddressBits);
        PagingContext d = PagingContext.FromRegisters(0x1234_5000, cr4: 0x3506f0 & ~(1UL << 12), efer: 0xd01 & ~(1UL << 11));
        Assert.False(d.La57);
        Assert.False(d.Nxe);
        Assert.Equal(52, d.MaxPhysicalAddressBits);
    }

    [Fact]
    public void Table_base_masks_pcid_no_flush_and_bits_above_maxphyaddr()
    {
        Assert.Equal(0x1234_5000UL, new PagingContext(0x8000_0000_1234_5fff, false).TableBase);
        Assert.Equal(0x1000UL, new PagingContext(0x6000_4000_0000_1000, false, true, 46).TableBase);
    }

    [Fact]
    public void MaxPhysicalAddressBits_is_validated_and_default_context_means_52()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new PagingContext(0, false, true, 53));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PagingContext(0, false, true, 11));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PagingContext(0, false) with { MaxPhysicalAddressBits = 64 });
        Assert.Equal(52, default(PagingContext).MaxPhysicalAddressBits);
    }

    [Theory]
    [InlineData(0x0000_7fff_ffff_ffffUL, false, true)]
    [InlineData(0x0000_8000_0000_0000UL, false, false)]
    [InlineData(0xffff_8000_0000_0000UL, false, true)]
    [InlineData(0x0000_8000_0000_0000UL, true, true)]
    [InlineData(0x00ff_ffff_ffff_ffffUL, true, true)]
    [InlineData(0x0100_0000_0000_0000UL, true, false)]
    [InlineData(0xff00_0000_0000_0000UL, true, true)]
    public void Canonical_addresses(ulong va, bool la57, bool canonical) =>
        Assert.Equal(canonical, new PagingContext(0, la57).IsCanonical(va));
}
