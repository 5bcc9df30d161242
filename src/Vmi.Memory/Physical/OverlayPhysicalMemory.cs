using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Runtime.CompilerServices;

namespace Vmi.Memory;

/// <summary>
/// A copy-on-write layer over read-only guest physical memory (a dump, a live VM's RAM): writes land in
/// private 4 KiB pages, reads see them, the base is never touched. For "what if" analysis on a real
/// image, and for tests that play the attacker (DKOM) on a real kernel without leaking their edits.
/// </summary>
/// <remarks>
/// <see cref="WriteUInt64"/> stores an aligned value in an already overlaid page atomically, so the
/// benchmarks can re-attack the guest while detectors read it on other threads. Safe for concurrent
/// readers; other writes must not race reads of the same bytes.
/// </remarks>
public sealed class OverlayPhysicalMemory : IPhysicalMemory
{
    public const int PageSize = 4096;
    private const ulong PageMask = PageSize - 1;

    private readonly IPhysicalMemory _base;
    private readonly bool _ownsBase;
    private readonly ConcurrentDictionary<ulong, byte[]> _pages = new();

    /// <param name="baseMemory">The memory under the overlay.</param>
    /// <param name="ownsBase">Dispose <paramref name="baseMemory"/> with the overlay.</param>
    public OverlayPhysicalMemory(IPhysicalMemory baseMemory, bool ownsBase = false)
    {
        ArgumentNullException.ThrowIfNull(baseMemory);
        _base = baseMemory;
        _ownsBase = ownsBase;
    }

    public IReadOnlyList<PhysicalRange> Ranges => _base.Ranges;

    /// <summary>Number of pages written so far.</summary>
    public int DirtyPages => _pages.Count;

    /// <summary>Overwrites <paramref name="data"/> at <paramref name="address"/> in the overlay.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A byte of the range is not backed by the base memory.</exception>
    public void Write(ulong address, ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty)
        {
            ulong page = address & ~PageMask;
            int offset = (int)(address & PageMask);
            int chunk = Math.Min(PageSize - offset, data.Length);
            byte[] bytes = GetOrCopyPage(page);
            data[..chunk].CopyTo(bytes.AsSpan(offset));
            data = data[chunk..];
            address += (ulong)chunk;
        }
    }

    /// <summary>Writes 8 bytes; aligned ones into an already overlaid page are one atomic store (readers never see a torn value).</summary>
    public void WriteUInt64(ulong address, ulong value)
    {
        if ((address & 7) == 0 && _pages.TryGetValue(address & ~PageMask, out byte[]? page))
        {
            ref byte at = ref page[(int)(address & PageMask)];
            Volatile.Write(ref Unsafe.As<byte, ulong>(ref at), BitConverter.IsLittleEndian ? value : BinaryPrimitives.ReverseEndianness(value));
            return;
        }
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, value);
        Write(address, b);
    }

    public void WriteUInt32(ulong address, uint value)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        Write(address, b);
    }

    public bool TryRead(ulong address, Span<byte> destination) => ReadPartial(address, destination) == destination.Length;

    public bool TryReadUInt64(ulong address, out ulong value)
    {
        if ((address & PageMask) <= PageSize - 8 && !_pages.ContainsKey(address & ~PageMask))
            return _base.TryReadUInt64(address, out value);
        Span<byte> b = stackalloc byte[8];
        if (TryRead(address, b))
        {
            value = BinaryPrimitives.ReadUInt64LittleEndian(b);
            return true;
        }
        value = 0;
        return false;
    }

    public bool TryGetSpan(ulong address, int length, out ReadOnlySpan<byte> span)
    {
        span = default;
        if (length < 0)
            return false;
        if (length == 0)
            return true;
        ulong last = address + (ulong)length - 1;
        if (last < address)
            return false;
        bool touched = false;
        for (ulong page = address & ~PageMask; ; page += PageSize)
        {
            if (_pages.ContainsKey(page))
            {
                touched = true;
                break;
            }
            if (page >= (last & ~PageMask))
                break;
        }
        if (!touched)
            return _base.TryGetSpan(address, length, out span);
        // Inside one overlaid page: a view of it; otherwise a private copy of the merged bytes.
        if ((address & ~PageMask) == (last & ~PageMask) && _pages.TryGetValue(address & ~PageMask, out byte[]? bytes))
        {
            span = bytes.AsSpan((int)(address & PageMask), length);
            return true;
        }
        var copy = new byte[length];
        if (!TryRead(address, copy))
            return false;
        span = copy;
        return true;
    }

    public int ReadPartial(ulong address, Span<byte> destination)
    {
        int done = 0;
        while (done < destination.Length)
        {
            ulong page = address & ~PageMask;
            int offset = (int)(address & PageMask);
            int chunk = Math.Min(PageSize - offset, destination.Length - done);
            Span<byte> target = destination.Slice(done, chunk);
            if (_pages.TryGetValue(page, out byte[]? bytes))
            {
                bytes.AsSpan(offset, chunk).CopyTo(target);
            }
            else
            {
                int n = _base.ReadPartial(address, target);
                done += n;
                if (n < chunk)
                    return done;
                address += (ulong)chunk;
                continue;
            }
            done += chunk;
            ulong next = address + (ulong)chunk;
            if (next < address)
                return done;
            address = next;
        }
        return done;
    }

    public void Dispose()
    {
        _pages.Clear();
        if (_ownsBase)
            _base.Dispose();
    }

    private byte[] GetOrCopyPage(ulong page)
    {
        if (_pages.TryGetValue(page, out byte[]? bytes))
            return bytes;
        bytes = new byte[PageSize];
        if (!_base.TryRead(page, bytes))
            throw new ArgumentOutOfRangeException(nameof(page), FormattableString.Invariant($"physical page 0x{page:x} is not (fully) backed: cannot overlay it"));
        return _pages.GetOrAdd(page, bytes);
    }
}
