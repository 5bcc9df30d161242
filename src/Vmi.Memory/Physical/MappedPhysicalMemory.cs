using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using Vmi.Core;

namespace Vmi.Memory;

/// <summary>
/// Guest physical memory read zero-copy from a read-only memory-mapped file: a QEMU RAM file
/// (<c>/dev/shm/…</c>), a raw dump or the PT_LOAD segments of an ELF core.
/// </summary>
/// <remarks>
/// Safe for concurrent readers. Spans handed out stay valid until <see cref="Dispose"/>; for a live VM their
/// content changes as the guest runs. The file must not be truncated while mapped (see QEMU's RAM file:
/// it never is).
/// </remarks>
[SkipLocalsInit]
public sealed unsafe class MappedPhysicalMemory : IPhysicalMemory
{
    // Sorted by Start, non-overlapping, each inside the file and not wrapping: checked once in the constructor.
    private readonly PhysicalSegment[] _segments;
    private readonly PhysicalRange[] _ranges;
    private readonly MappedFile _file;
    private readonly byte* _base;

    internal MappedPhysicalMemory(MappedFile file, IEnumerable<PhysicalSegment> segments)
    {
        _file = file;
        _base = file.Pointer;
        _segments = [.. segments.OrderBy(s => s.Start)];
        for (int i = 0; i < _segments.Length; i++)
        {
            PhysicalSegment s = _segments[i];
            if (s.Length == 0)
                ThrowHelper.GuestMemory($"'{file.Name}': segment at GPA 0x{s.Start:x} is empty");
            if (s.End < s.Start)
                ThrowHelper.GuestMemory($"'{file.Name}': segment at GPA 0x{s.Start:x} of 0x{s.Length:x} bytes wraps around the address space");
            if (s.FileEnd > file.Length || s.FileEnd < s.FileOffset)
                ThrowHelper.GuestMemory($"'{file.Name}': segment at GPA 0x{s.Start:x} needs file bytes 0x{s.FileOffset:x}-0x{s.FileOffset + s.Length:x} but the file is 0x{file.Length:x} bytes");
            if (i > 0 && s.Start < _segments[i - 1].End)
                ThrowHelper.GuestMemory($"'{file.Name}': segments at GPA 0x{_segments[i - 1].Start:x} and 0x{s.Start:x} overlap");
        }
        _ranges = [.. _segments.Select(s => new PhysicalRange(s.Start, s.Length))];
    }

    /// <summary>Maps a QEMU RAM file (or raw RAM image) at <paramref name="path"/> with the given layout.</summary>
    /// <exception cref="GuestMemoryException">The file is shorter than the layout needs.</exception>
    /// <exception cref="TargetException">The file cannot be opened or mapped.</exception>
    public static MappedPhysicalMemory Open(string path, QemuRamLayout layout)
    {
        ArgumentNullException.ThrowIfNull(layout);
        MappedFile file = MappedFile.Open(path);
        return Create(file, layout);
    }

    /// <summary>
    /// Maps an already open file (e.g. a /dev/shm RAM file that was unlinked after opening). The memory takes
    /// ownership of <paramref name="stream"/>; the mapping stays valid after the stream is closed.
    /// </summary>
    /// <exception cref="GuestMemoryException">The file is shorter than the layout needs.</exception>
    /// <exception cref="TargetException">The file cannot be mapped.</exception>
    public static MappedPhysicalMemory Open(FileStream stream, QemuRamLayout layout) => Open(stream, layout, leaveOpen: false);

    /// <summary>As <see cref="Open(FileStream, QemuRamLayout)"/>, optionally leaving <paramref name="stream"/> open on dispose.</summary>
    public static MappedPhysicalMemory Open(FileStream stream, QemuRamLayout layout, bool leaveOpen)
    {
        ArgumentNullException.ThrowIfNull(layout);
        MappedFile file = MappedFile.Open(stream, leaveOpen);
        return Create(file, layout);
    }

    /// <summary>The GPA → file offset segments, sorted by GPA.</summary>
    public IReadOnlyList<PhysicalSegment> Segments => _segments;

    /// <summary>Length of the mapped file.</summary>
    public ulong FileLength => _file.Length;

    /// <summary>Path of the mapped file.</summary>
    public string FileName => _file.Name;

    /// <inheritdoc/>
    public IReadOnlyList<PhysicalRange> Ranges => _ranges;

    /// <inheritdoc/>
    public bool TryRead(ulong address, Span<byte> destination)
    {
        // Fast path: one segment holds the whole range.
        int i = FindSegment(address);
        if (i >= 0)
        {
            ref readonly PhysicalSegment s = ref _segments[i];
            ulong offset = address - s.Start;
            if ((ulong)destination.Length <= s.Length - offset)
            {
                new ReadOnlySpan<byte>(_base + s.FileOffset + offset, destination.Length).CopyTo(destination);
                return true;
            }
        }
        return ReadPartial(address, destination) == destination.Length;
    }

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryReadUInt64(ulong address, out ulong value)
    {
        int i = FindSegment(address);
        if (i >= 0)
        {
            ref readonly PhysicalSegment s = ref _segments[i];
            ulong offset = address - s.Start;
            if (s.Length - offset >= sizeof(ulong))
            {
                value = BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(_base + s.FileOffset + offset, sizeof(ulong)));
                return true;
            }
        }
        return TryReadUInt64Slow(address, out value);
    }

    /// <summary>The value straddles two adjacent segments, or is not backed.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool TryReadUInt64Slow(ulong address, out ulong value)
    {
        Span<byte> bytes = stackalloc byte[sizeof(ulong)];
        if (ReadPartial(address, bytes) == sizeof(ulong))
        {
            value = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
            return true;
        }
        value = 0;
        return false;
    }

    /// <inheritdoc/>
    public bool TryGetSpan(ulong address, int length, out ReadOnlySpan<byte> span)
    {
        span = default;
        if (length < 0)
            return false;
        if (length == 0)
            return true;
        int i = FindSegment(address);
        if (i < 0)
            return false;
        ref readonly PhysicalSegment s = ref _segments[i];
        ulong offset = address - s.Start;
        if ((ulong)length > s.Length - offset)
            return false;
        span = new ReadOnlySpan<byte>(_base + s.FileOffset + offset, length);
        return true;
    }

    /// <inheritdoc/>
    public int ReadPartial(ulong address, Span<byte> destination)
    {
        int copied = 0;
        while (copied < destination.Length)
        {
            int i = FindSegment(address);
            if (i < 0)
                break;
            ref readonly PhysicalSegment s = ref _segments[i];
            ulong offset = address - s.Start;
            int chunk = (int)Math.Min((ulong)(destination.Length - copied), s.Length - offset);
            new ReadOnlySpan<byte>(_base + s.FileOffset + offset, chunk).CopyTo(destination[copied..]);
            copied += chunk;
            // Segment ends never wrap (checked at construction), so neither does address.
            address += (ulong)chunk;
        }
        return copied;
    }

    /// <summary>Unmaps the file. Spans obtained earlier must not be used afterwards.</summary>
    public void Dispose() => _file.Dispose();

    internal static MappedPhysicalMemory Create(MappedFile file, QemuRamLayout layout)
    {
        try
        {
            if (file.Length < layout.RequiredFileLength)
                throw new GuestMemoryException(
                    $"'{file.Name}' is {file.Length} bytes (0x{file.Length:x}) but the RAM layout ({layout.Machine}, " +
                    $"{layout.RamSize} bytes) needs {layout.RequiredFileLength} bytes: is the RAM size (-m) right?");
            return new MappedPhysicalMemory(file, layout.Segments);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>Index of the segment containing <paramref name="address"/>, or -1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int FindSegment(ulong address)
    {
        PhysicalSegment[] segments = _segments;
        // Most RAM files have one or two segments: a linear scan beats a binary search there.
        if (segments.Length <= 4)
        {
            for (int i = 0; i < segments.Length; i++)
            {
                if (address - segments[i].Start < segments[i].Length && address >= segments[i].Start)
                    return i;
            }
            return -1;
        }
        int lo = 0, hi = segments.Length - 1;
        while (lo <= hi)
        {
            int mid = (int)((uint)(lo + hi) >> 1);
            if (segments[mid].Start <= address)
                lo = mid + 1;
            else
                hi = mid - 1;
        }
        // hi is the last segment starting at or below address.
        return hi >= 0 && address - segments[hi].Start < segments[hi].Length ? hi : -1;
    }
}
