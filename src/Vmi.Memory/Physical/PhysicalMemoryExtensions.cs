using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Vmi.Memory;

/// <summary>Typed helpers over <see cref="IPhysicalMemory"/>.</summary>
public static class PhysicalMemoryExtensions
{
    /// <summary>Reads an unmanaged value in host (little-endian) byte order.</summary>
    [SkipLocalsInit]
    public static bool TryRead<T>(this IPhysicalMemory memory, ulong address, out T value) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(memory);
        value = default;
        return memory.TryRead(address, MemoryMarshal.AsBytes(new Span<T>(ref value)));
    }

    /// <summary>True when every byte of <c>[address, address + length)</c> is backed.</summary>
    public static bool IsBacked(this IPhysicalMemory memory, ulong address, ulong length)
    {
        ArgumentNullException.ThrowIfNull(memory);
        if (length == 0)
            return true;
        ulong end = address + length;
        if (end < address)
            return false;
        // Ranges are sorted and may touch: walk them while they stay contiguous.
        ulong cursor = address;
        foreach (PhysicalRange range in memory.Ranges)
        {
            if (range.End <= cursor)
                continue;
            if (range.Start > cursor)
                return false;
            cursor = range.End;
            if (cursor >= end)
                return true;
        }
        return false;
    }

    /// <summary>Total number of backed bytes.</summary>
    public static ulong BackedBytes(this IPhysicalMemory memory)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ulong total = 0;
        foreach (PhysicalRange range in memory.Ranges)
            total += range.Length;
        return total;
    }
}
