using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Vmi.Memory;

/// <summary>
/// Reads guest memory through one address space: every page is translated on its own (through the optional
/// <see cref="TranslationCache"/>), so reads cross page boundaries correctly and stop at the first hole.
/// </summary>
/// <remarks>Not thread-safe when a cache is used (the cache is not); otherwise as thread-safe as the memory.</remarks>
[SkipLocalsInit]
public sealed class VirtualMemory
{
    private readonly IPhysicalMemory _memory;
    private readonly PageWalker _walker;
    private readonly TranslationCache? _cache;
    private readonly PagingContext _context;

    /// <summary>Creates a view of <paramref name="memory"/> through the page tables of <paramref name="context"/>.</summary>
    public VirtualMemory(IPhysicalMemory memory, PagingContext context, TranslationCache? cache = null)
    {
        ArgumentNullException.ThrowIfNull(memory);
        _memory = memory;
        _walker = new PageWalker(memory);
        _context = context;
        _cache = cache;
    }

    /// <summary>The address space.</summary>
    public PagingContext Context => _context;

    /// <summary>The physical memory read.</summary>
    public IPhysicalMemory Memory => _memory;

    /// <summary>The cache, when one was given.</summary>
    public TranslationCache? Cache => _cache;

    /// <summary>Translates <paramref name="va"/>, through the cache when there is one.</summary>
    public bool TryTranslate(ulong va, out Translation t) => TryTranslate(va, out t, out _);

    /// <summary>Translates <paramref name="va"/> and says why it failed.</summary>
    public bool TryTranslate(ulong va, out Translation t, out WalkStatus status)
    {
        if (_cache is not null && _cache.TryGet(_context.Cr3, va, out t))
        {
            status = WalkStatus.Ok;
            return true;
        }
        if (!_walker.TryTranslate(_context, va, out t, out status))
            return false;
        _cache?.Add(_context.Cr3, t);
        return true;
    }

    /// <summary>Full walk with every entry, bypassing the cache.</summary>
    public WalkResult Walk(ulong va) => _walker.Walk(_context, va);

    /// <summary>
    /// Copies from <paramref name="va"/> until <paramref name="destination"/> is full or a page cannot be read,
    /// and says how far it got and why it stopped.
    /// </summary>
    public VirtualReadResult Read(ulong va, Span<byte> destination)
    {
        int done = 0;
        while (done < destination.Length)
        {
            if (!TryTranslate(va, out Translation t, out WalkStatus status))
                return new VirtualReadResult(done, status, va);
            int chunk = (int)Math.Min(t.BytesToPageEnd, (ulong)(destination.Length - done));
            int copied = _memory.ReadPartial(t.PhysicalAddress, destination.Slice(done, chunk));
            done += copied;
            va += (ulong)copied; // wraps like the CPU would; the walk then decides canonicality
            if (copied < chunk)
                return new VirtualReadResult(done, WalkStatus.PhysicalUnbacked, va);
        }
        return new VirtualReadResult(done, WalkStatus.Ok, 0);
    }

    /// <summary>True when every byte of <paramref name="destination"/> was read.</summary>
    public bool TryRead(ulong va, Span<byte> destination) => Read(va, destination).IsComplete;

    /// <summary>Reads a little-endian 64-bit value (a pointer, typically).</summary>
    public bool TryReadUInt64(ulong va, out ulong v)
    {
        // Fast path: the 8 bytes lie in one 4 KiB page (true for any aligned pointer).
        if ((va & 0xFFF) <= 0x1000 - sizeof(ulong))
        {
            if (TryTranslate(va, out Translation t))
                return _memory.TryReadUInt64(t.PhysicalAddress, out v);
            v = 0;
            return false;
        }
        Span<byte> bytes = stackalloc byte[sizeof(ulong)];
        if (TryRead(va, bytes))
        {
            v = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
            return true;
        }
        v = 0;
        return false;
    }

    /// <summary>Reads an unmanaged value in host (little-endian) byte order.</summary>
    public bool TryRead<T>(ulong va, out T value) where T : unmanaged
    {
        value = default;
        return TryRead(va, MemoryMarshal.AsBytes(new Span<T>(ref value)));
    }

    /// <summary>
    /// The present leaf mappings (4 KiB, 2 MiB or 1 GiB pages) overlapping <c>[start, end)</c>, in address order,
    /// found by walking the page tables top-down so absent upper-level entries skip their whole range at once.
    /// Each page is confirmed by a full translation (so reserved-bit faults are excluded, as on hardware).
    /// Bounded: at most <paramref name="maxPages"/> pages and <paramref name="maxTables"/> tables are visited
    /// (hostile tables may alias one another); <paramref name="truncated"/> says the bound was hit.
    /// </summary>
    /// <param name="start">First virtual address of interest (canonical).</param>
    /// <param name="end">One past the last address; 0 means the end of the address space.</param>
    /// <param name="maxPages">Most pages returned.</param>
    /// <param name="maxTables">Most page tables read.</param>
    /// <param name="truncated">True when a bound stopped the enumeration early.</param>
    public IReadOnlyList<MappedPage> EnumerateMapped(ulong start, ulong end, int maxPages, int maxTables, out bool truncated)
    {
        var pages = new List<MappedPage>();
        ulong last = end - 1; // inclusive; end 0 wraps to the top of the address space
        int tables = 0;
        bool cut = false;
        int top = _context.Levels;
        ulong frameMask = PagingContext.FrameMask(_context.MaxPhysicalAddressBits);
        EnumerateTable(_context.TableBase, top, 0);
        truncated = cut;
        return pages;

        void EnumerateTable(ulong table, int level, ulong vaBase)
        {
            if (cut || ++tables > maxTables)
            {
                cut = true;
                return;
            }
            // Each level resolves 9 bits above the 12-bit page offset: level 1 (PT) shift 12, level 4 (PML4) shift 39.
            int shift = 12 + (9 * (level - 1));
            ulong span = 1UL << shift;
            for (ulong i = 0; i < 512; i++)
            {
                ulong entryVa = vaBase + (i << shift);
                if (level == top)
                    entryVa = SignExtend(entryVa);
                ulong entryLast = entryVa + span - 1;
                if (entryLast < start || entryVa > last)
                    continue;
                if (!_memory.TryReadUInt64(table + (i * 8), out ulong entry) || (entry & PageWalker.EntryPresent) == 0)
                    continue;
                bool leaf = level == 1 || (level is 2 or 3 && (entry & PageWalker.EntryPageSize) != 0);
                if (!leaf)
                {
                    EnumerateTable(entry & frameMask, level - 1, entryVa);
                    if (cut)
                        return;
                    continue;
                }
                if (pages.Count >= maxPages)
                {
                    cut = true;
                    return;
                }
                if (_walker.TryTranslate(_context, entryVa, out Translation t, out _))
                    pages.Add(new MappedPage(entryVa, t.PhysicalAddress, span));
            }
        }

        ulong SignExtend(ulong va)
        {
            int s = 64 - _context.VirtualAddressBits;
            return (ulong)((long)(va << s) >> s);
        }
    }

    /// <summary>A copy of this view in another address space sharing the same memory and cache.</summary>
    public VirtualMemory WithContext(PagingContext context) => new(_memory, context, _cache);
}

/// <summary>One present leaf mapping: a 4 KiB, 2 MiB or 1 GiB page.</summary>
/// <param name="VirtualAddress">First virtual address of the page.</param>
/// <param name="PhysicalAddress">Guest physical address it maps to.</param>
/// <param name="Size">Page size in bytes.</param>
public readonly record struct MappedPage(ulong VirtualAddress, ulong PhysicalAddress, ulong Size);
