namespace Vmi.Memory;

/// <summary>A backed range of guest physical addresses, <c>[Start, Start + Length)</c>.</summary>
/// <param name="Start">First guest physical address of the range.</param>
/// <param name="Length">Number of bytes; never zero for ranges reported by an <see cref="IPhysicalMemory"/>.</param>
public readonly record struct PhysicalRange(ulong Start, ulong Length)
{
    /// <summary>One past the last address. Implementations never report a range whose end overflows.</summary>
    public ulong End => Start + Length;

    /// <summary>True when <paramref name="address"/> lies inside the range (overflow-safe).</summary>
    public bool Contains(ulong address) => address >= Start && address - Start < Length;
}

/// <summary>
/// Guest physical memory. Guest memory is hostile input: every read is bounds-checked and a read of
/// unbacked memory is an expected failure (a <c>false</c> or short result), never an exception.
/// </summary>
/// <remarks>
/// Implementations are safe for concurrent readers unless they say otherwise. Disposing while a read is
/// in flight is a caller bug.
/// </remarks>
public interface IPhysicalMemory : IDisposable
{
    /// <summary>Backed guest physical ranges, sorted by start and non-overlapping (adjacent ranges may touch).</summary>
    IReadOnlyList<PhysicalRange> Ranges { get; }

    /// <summary>
    /// Copies <c>destination.Length</c> bytes from <paramref name="address"/>. Returns true only when every
    /// byte is backed; on false the content of <paramref name="destination"/> is unspecified. An empty
    /// destination always succeeds.
    /// </summary>
    bool TryRead(ulong address, Span<byte> destination);

    /// <summary>Reads a little-endian 64-bit value (the page walker's hot path).</summary>
    bool TryReadUInt64(ulong address, out ulong value);

    /// <summary>
    /// A zero-copy view of <paramref name="length"/> bytes at <paramref name="address"/>, available only when
    /// the whole range lies in one contiguous backing segment. False for a negative length, an unbacked byte
    /// or a range that straddles two segments (use <see cref="TryRead"/> then). A zero length succeeds.
    /// </summary>
    /// <remarks>The span is valid until the memory is disposed; for live guests its bytes may change under you.</remarks>
    bool TryGetSpan(ulong address, int length, out ReadOnlySpan<byte> span);

    /// <summary>Copies the backed prefix of the range into <paramref name="destination"/> and returns its length.</summary>
    int ReadPartial(ulong address, Span<byte> destination);
}
