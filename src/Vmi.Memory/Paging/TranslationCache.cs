using System.Diagnostics.CodeAnalysis;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace Vmi.Memory;

/// <summary>
/// A software TLB: translations keyed by (CR3, virtual page), with explicit invalidation only — it never
/// notices the guest changing its page tables; callers invalidate, as an OS would with INVLPG / CR3 writes.
/// </summary>
/// <remarks>
/// Three direct-mapped tables, one per page size, so a large page is one entry and
/// <see cref="Invalidate"/> drops the page of every size covering the address (like INVLPG). CR3 is compared
/// with bit 63 (no-flush) cleared; its PCID bits are part of the key. Not thread-safe: use one cache per
/// thread or lock around it. Lookups and inserts do not allocate.
/// </remarks>
[SkipLocalsInit]
public sealed class TranslationCache
{
    private const ulong Cr3KeyMask = ~(1UL << 63);

    private readonly Entry[] _small;   // 4 KiB pages
    private readonly Entry[] _medium;  // 2 MiB pages
    private readonly Entry[] _large;   // 1 GiB pages
    private long _hits;
    private long _misses;

    /// <summary>Creates a cache of about <paramref name="capacity"/> 4 KiB entries (rounded up to a power of two) plus smaller tables for large pages.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="capacity"/> is outside 1..2^24.</exception>
    public TranslationCache(int capacity = 4096)
    {
        if (capacity is < 1 or > 1 << 24)
            ThrowHelper.ArgumentOutOfRange(nameof(capacity), "capacity must be between 1 and 2^24 entries");
        int small = (int)BitOperations.RoundUpToPowerOf2((uint)capacity);
        _small = new Entry[small];
        // Large pages cover 512× (2 MiB) or 262144× (1 GiB) more address space, so far fewer entries are needed.
        _medium = new Entry[Math.Max(16, small / 8)];
        _large = new Entry[Math.Max(16, small / 64)];
    }

    /// <summary>Entries in the 4 KiB table.</summary>
    public int Capacity => _small.Length;

    /// <summary>Lookups that found an entry.</summary>
    public long Hits => _hits;

    /// <summary>Lookups that found nothing.</summary>
    public long Misses => _misses;

    /// <summary>Looks up the translation of <paramref name="virtualAddress"/> in address space <paramref name="cr3"/>.</summary>
    public bool TryGet(ulong cr3, ulong virtualAddress, out Translation t)
    {
        ulong key = cr3 & Cr3KeyMask;
        if (Probe(_small, key, virtualAddress, 12, PageSize.Size4K, out t)
            || Probe(_medium, key, virtualAddress, 21, PageSize.Size2M, out t)
            || Probe(_large, key, virtualAddress, 30, PageSize.Size1G, out t))
        {
            _hits++;
            return true;
        }
        _misses++;
        return false;
    }

    /// <summary>Caches the page of <paramref name="t"/> (any address inside it will hit), replacing whatever shared its slot.</summary>
    /// <exception cref="ArgumentException"><paramref name="t"/> has an unknown page size.</exception>
    public void Add(ulong cr3, in Translation t)
    {
        Entry[] table;
        int shift;
        switch (t.Size)
        {
            case PageSize.Size4K: (table, shift) = (_small, 12); break;
            case PageSize.Size2M: (table, shift) = (_medium, 21); break;
            case PageSize.Size1G: (table, shift) = (_large, 30); break;
            default: ThrowInvalidSize(t.Size); return;
        }
        ulong key = cr3 & Cr3KeyMask;
        ulong page = t.VirtualAddress >> shift;
        ref Entry e = ref table[Slot(table, key, page)];
        e.Cr3 = key;
        e.Page = page;
        e.PhysicalBase = t.PagePhysicalBase;
        e.Flags = t.Flags;
        e.Valid = true;
    }

    /// <summary>Drops any cached page (of any size) containing <paramref name="virtualAddress"/> in <paramref name="cr3"/>'s space.</summary>
    public void Invalidate(ulong cr3, ulong virtualAddress)
    {
        ulong key = cr3 & Cr3KeyMask;
        Drop(_small, key, virtualAddress >> 12);
        Drop(_medium, key, virtualAddress >> 21);
        Drop(_large, key, virtualAddress >> 30);
    }

    /// <summary>Drops every entry of one address space (a MOV to CR3 without PCID).</summary>
    public void InvalidateAddressSpace(ulong cr3)
    {
        ulong key = cr3 & Cr3KeyMask;
        DropSpace(_small, key);
        DropSpace(_medium, key);
        DropSpace(_large, key);
    }

    /// <summary>Drops everything.</summary>
    public void InvalidateAll()
    {
        Array.Clear(_small);
        Array.Clear(_medium);
        Array.Clear(_large);
    }

    /// <summary>Resets <see cref="Hits"/> and <see cref="Misses"/>.</summary>
    public void ResetStatistics()
    {
        _hits = 0;
        _misses = 0;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool Probe(Entry[] table, ulong key, ulong virtualAddress, int shift, PageSize size, out Translation t)
    {
        ulong page = virtualAddress >> shift;
        ref Entry e = ref table[Slot(table, key, page)];
        if (e.Valid && e.Page == page && e.Cr3 == key)
        {
            ulong offsetMask = (1UL << shift) - 1;
            t = new Translation(virtualAddress, e.PhysicalBase | (virtualAddress & offsetMask), size, e.Flags);
            return true;
        }
        t = default;
        return false;
    }

    private static void Drop(Entry[] table, ulong key, ulong page)
    {
        ref Entry e = ref table[Slot(table, key, page)];
        if (e.Valid && e.Page == page && e.Cr3 == key)
            e = default;
    }

    private static void DropSpace(Entry[] table, ulong key)
    {
        for (int i = 0; i < table.Length; i++)
        {
            if (table[i].Valid && table[i].Cr3 == key)
                table[i] = default;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Slot(Entry[] table, ulong key, ulong page)
    {
        // Consecutive pages of one space land in consecutive slots; the CR3 is scrambled (Fibonacci hashing)
        // so different spaces using the same virtual pages do not all collide. Table lengths are powers of two.
        ulong h = page ^ ((key >> 12) * 0x9E37_79B9_7F4A_7C15UL >> 32);
        return (int)(h & (ulong)(table.Length - 1));
    }

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowInvalidSize(PageSize size) =>
        throw new ArgumentException($"unknown page size 0x{(ulong)size:x}", nameof(size));

    private struct Entry
    {
        public ulong Cr3;
        public ulong Page;
        public ulong PhysicalBase;
        public PageFlags Flags;
        public bool Valid;
    }
}
