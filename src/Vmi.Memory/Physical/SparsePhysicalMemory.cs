using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace Vmi.Memory;

/// <summary>
/// In-memory guest physical memory made of 4 KiB pages, backed only where written. Used by tests, fuzzers
/// and synthetic page tables. Pages never written are unbacked (reads fail), not zero.
/// </summary>
/// <remarks>
/// Any number of concurrent readers is safe; a writer must not run concurrently with anything else.
/// Addresses at or above <see cref="SizeLimit"/> are never backed.
/// </remarks>
[SkipLocalsInit]
public sealed class SparsePhysicalMemory : IPhysicalMemory
{
    /// <summary>Size of one backing page.</summary>
    public const int PageSize = 4096;

    private const int PageShift = 12; // 1 << 12 = 4096
    private const ulong PageOffsetMask = PageSize - 1;

    private readonly Dictionary<ulong, byte[]> _pages = [];
    private PhysicalRange[]? _ranges;

    /// <summary>Creates an empty memory whose addresses at or above <paramref name="sizeLimit"/> are unbacked.</summary>
    /// <param name="sizeLimit">Exclusive upper bound of backable addresses; defaults to 2^52, the architectural MAXPHYADDR limit.</param>
    public SparsePhysicalMemory(ulong sizeLimit = 1UL << 52)
    {
        if (sizeLimit == 0)
            ThrowHelper.ArgumentOutOfRange(nameof(sizeLimit), "the size limit must be positive");
        SizeLimit = sizeLimit;
    }

    /// <summary>Exclusive upper bound of backable addresses.</summary>
    public ulong SizeLimit { get; }

    /// <summary>Number of 4 KiB pages currently backed.</summary>
    public int PageCount => _pages.Count;

    /// <inheritdoc/>
    public IReadOnlyList<PhysicalRange> Ranges => _ranges ??= BuildRanges();

    /// <summary>Writes <paramref name="data"/> at <paramref name="address"/>, backing (zero-filled) any page it touches.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range reaches <see cref="SizeLimit"/> or wraps around.</exception>
    public void Write(ulong address, ReadOnlySpan<byte> data)
    {
        CheckWritable(address, (ulong)data.Length);
        while (!data.IsEmpty)
        {
            byte[] page = GetOrAddPage(address >> PageShift);
            int offset = (int)(address & PageOffsetMask);
            int chunk = Math.Min(PageSize - offset, data.Length);
            data[..chunk].CopyTo(page.AsSpan(offset));
            data = data[chunk..];
            address += (ulong)chunk;
        }
    }

    /// <summary>Writes a little-endian 64-bit value (a page-table entry, typically).</summary>
    public void WriteUInt64(ulong address, ulong value)
    {
        Span<byte> bytes = stackalloc byte[sizeof(ulong)];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, value);
        Write(address, bytes);
    }

    /// <summary>Backs every page touched by <c>[address, address + length)</c> with zeros, keeping existing content.</summary>
    public void Allocate(ulong address, ulong length)
    {
        CheckWritable(address, length);
        if (length == 0)
            return;
        ulong last = (address + length - 1) >> PageShift;
        for (ulong page = address >> PageShift; page <= last; page++)
            GetOrAddPage(page);
    }

    /// <summary>Drops every page touched by <c>[address, address + length)</c> so it becomes unbacked.</summary>
    public void Remove(ulong address, ulong length)
    {
        if (length == 0)
            return;
        ulong end = address + length;
        if (end < address)
            end = ulong.MaxValue;
        ulong last = (end - 1) >> PageShift;
        ulong first = address >> PageShift;
        // Iterate whichever side is smaller so a huge range over a small memory stays cheap.
        if (last - first >= (ulong)_pages.Count)
        {
            foreach (ulong key in _pages.Keys.Where(k => k >= first && k <= last).ToArray())
                _pages.Remove(key);
        }
        else
        {
            for (ulong page = first; page <= last; page++)
                _pages.Remove(page);
        }
        _ranges = null;
    }

    /// <inheritdoc/>
    public bool TryRead(ulong address, Span<byte> destination) => ReadPartial(address, destination) == destination.Length;

    /// <inheritdoc/>
    public bool TryReadUInt64(ulong address, out ulong value)
    {
        ulong offset = address & PageOffsetMask;
        // Fast path: the 8 bytes lie in one page and below the limit (address <= limit - 8 without underflow).
        if (offset <= PageSize - sizeof(ulong) && SizeLimit >= sizeof(ulong) && address <= SizeLimit - sizeof(ulong)
            && _pages.TryGetValue(address >> PageShift, out byte[]? page))
        {
            value = BinaryPrimitives.ReadUInt64LittleEndian(page.AsSpan((int)offset, sizeof(ulong)));
            return true;
        }
        Span<byte> bytes = stackalloc byte[sizeof(ulong)];
        if (offset > PageSize - sizeof(ulong) && TryRead(address, bytes))
        {
            value = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
            return true;
        }
        value = 0;
        return false;
    }

    /// <inheritdoc/>
    /// <remarks>Each 4 KiB page is its own segment: a view never crosses a page boundary.</remarks>
    public bool TryGetSpan(ulong address, int length, out ReadOnlySpan<byte> span)
    {
        span = default;
        if (length < 0)
            return false;
        if (length == 0)
            return true;
        ulong offset = address & PageOffsetMask;
        ulong end = address + (ulong)length;
        if (end < address || end > SizeLimit || offset + (ulong)length > PageSize)
            return false;
        if (!_pages.TryGetValue(address >> PageShift, out byte[]? page))
            return false;
        span = page.AsSpan((int)offset, length);
        return true;
    }

    /// <inheritdoc/>
    public int ReadPartial(ulong address, Span<byte> destination)
    {
        if (address >= SizeLimit)
            return 0;
        // Clamp to the limit first; SizeLimit - address cannot underflow here.
        ulong available = SizeLimit - address;
        if ((ulong)destination.Length > available)
            destination = destination[..(int)available];
        int copied = 0;
        while (copied < destination.Length)
        {
            if (!_pages.TryGetValue(address >> PageShift, out byte[]? page))
                break;
            int offset = (int)(address & PageOffsetMask);
            int chunk = Math.Min(PageSize - offset, destination.Length - copied);
            page.AsSpan(offset, chunk).CopyTo(destination[copied..]);
            copied += chunk;
            address += (ulong)chunk; // cannot wrap: address + chunk <= SizeLimit
        }
        return copied;
    }

    /// <summary>Nothing to release; present for <see cref="IPhysicalMemory"/>.</summary>
    public void Dispose()
    {
    }

    private void CheckWritable(ulong address, ulong length)
    {
        ulong end = address + length;
        if (end > SizeLimit || end < address)
            ThrowHelper.ArgumentOutOfRange(nameof(address),
                $"range 0x{address:x}+0x{length:x} is beyond the memory's size limit 0x{SizeLimit:x}");
    }

    private byte[] GetOrAddPage(ulong pageNumber)
    {
        if (!_pages.TryGetValue(pageNumber, out byte[]? page))
        {
            page = new byte[PageSize];
            _pages.Add(pageNumber, page);
            _ranges = null;
        }
        return page;
    }

    private PhysicalRange[] BuildRanges()
    {
        ulong[] pageNumbers = [.. _pages.Keys];
        Array.Sort(pageNumbers);
        var ranges = new List<PhysicalRange>();
        int i = 0;
        while (i < pageNumbers.Length)
        {
            int j = i;
            while (j + 1 < pageNumbers.Length && pageNumbers[j + 1] == pageNumbers[j] + 1)
                j++;
            ulong start = pageNumbers[i] << PageShift;
            ulong end = Math.Min((pageNumbers[j] + 1) << PageShift, SizeLimit);
            // (pageNumbers[j] + 1) << 12 wraps to 0 only for the very last page of the 64-bit space.
            if (end == 0 || end > SizeLimit)
                end = SizeLimit;
            ranges.Add(new PhysicalRange(start, end - start));
            i = j + 1;
        }
        return [.. ranges];
    }
}
