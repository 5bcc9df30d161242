using Vmi.Core;

namespace Vmi.Memory;

/// <summary>A run of guest physical addresses stored contiguously in a file.</summary>
/// <param name="Start">First guest physical address.</param>
/// <param name="Length">Number of bytes (positive).</param>
/// <param name="FileOffset">Offset in the file of the byte at <paramref name="Start"/>.</param>
public readonly record struct PhysicalSegment(ulong Start, ulong Length, ulong FileOffset)
{
    /// <summary>One past the last guest physical address.</summary>
    public ulong End => Start + Length;

    /// <summary>One past the last file offset.</summary>
    public ulong FileEnd => FileOffset + Length;
}

/// <summary>
/// Where each guest physical address of a QEMU VM lives in its RAM file (the <c>memory-backend-file</c>
/// behind <c>-machine …,memory-backend=ram0</c>), or in a raw dump of it.
/// </summary>
/// <remarks>
/// QEMU splits x86 RAM around the 32-bit PCI hole: the first <c>lowmem</c> bytes of the file appear at GPA 0,
/// the rest at GPA 4 GiB (file offset = GPA − 4 GiB + lowmem). <c>lowmem</c> depends on the machine type and
/// RAM size (hw/i386/pc_piix.c, pc_q35.c). Not modelled: <c>max-ram-below-4g</c> (use
/// <see cref="Split"/>), pre-1.7 i440fx machine types (lowmem 0xe0000000), and the relocation of
/// above-4G RAM past 1 TiB on AMD hosts with very large guests.
/// </remarks>
public sealed class QemuRamLayout
{
    /// <summary>4 GiB: where RAM above the PCI hole starts in guest physical space.</summary>
    public const ulong FourGiB = 0x1_0000_0000;

    // Guest RAM beyond 2^52 bytes cannot be addressed by any x86-64 CPU: reject it as a typo.
    private const ulong MaxRamSize = 1UL << 52;

    private QemuRamLayout(string machine, ulong ramSize, PhysicalSegment[] segments)
    {
        Machine = machine;
        RamSize = ramSize;
        Segments = segments;
        RequiredFileLength = ramSize;
    }

    /// <summary>The machine type the layout was built for ("linear" or "split" for the other factories).</summary>
    public string Machine { get; }

    /// <summary>Guest RAM size in bytes, also the RAM file's expected length.</summary>
    public ulong RamSize { get; }

    /// <summary>Segments sorted by guest physical address.</summary>
    public IReadOnlyList<PhysicalSegment> Segments { get; }

    /// <summary>Minimum length of a file holding this RAM.</summary>
    public ulong RequiredFileLength { get; }

    /// <summary>RAM split below 4 GiB for a QEMU x86 machine type.</summary>
    /// <param name="machine">"pc" or "pc-i440fx-*" (lowmem 3 GiB when RAM ≥ 3.5 GiB), "q35" or "pc-q35-*" (lowmem 2 GiB when RAM ≥ 2.75 GiB).</param>
    /// <param name="ramSize">The <c>-m</c> size in bytes.</param>
    /// <exception cref="GuestMemoryException">Unknown machine type or an impossible RAM size.</exception>
    public static QemuRamLayout ForMachine(string machine, ulong ramSize)
    {
        ArgumentNullException.ThrowIfNull(machine);
        ulong lowMemory;
        if (machine == "pc" || machine.StartsWith("pc-i440fx-", StringComparison.Ordinal))
            lowMemory = ramSize >= 0xe000_0000 ? 0xc000_0000 : FourGiB; // ≥ 3.5 GiB RAM → 3 GiB below the hole
        else if (machine == "q35" || machine.StartsWith("pc-q35-", StringComparison.Ordinal))
            lowMemory = ramSize >= 0xb000_0000 ? 0x8000_0000 : FourGiB; // ≥ 2.75 GiB RAM → 2 GiB below the hole
        else
            throw new GuestMemoryException(
                $"unknown QEMU machine type '{machine}': the RAM layout is known for pc, pc-i440fx-*, q35 and pc-q35-*");
        return Build(machine, ramSize, lowMemory);
    }

    /// <summary>RAM with the first <paramref name="lowMemory"/> bytes at GPA 0 and the rest at 4 GiB (QEMU's <c>max-ram-below-4g</c>).</summary>
    /// <exception cref="GuestMemoryException"><paramref name="lowMemory"/> is above 4 GiB or the RAM size is impossible.</exception>
    public static QemuRamLayout Split(ulong ramSize, ulong lowMemory)
    {
        if (lowMemory > FourGiB)
            throw new GuestMemoryException($"memory below 4 GiB (0x{lowMemory:x}) cannot exceed 4 GiB");
        return Build("split", ramSize, lowMemory);
    }

    /// <summary>One segment: guest physical address == file offset, for <paramref name="size"/> bytes.</summary>
    /// <exception cref="GuestMemoryException">The size is zero or beyond 2^52.</exception>
    public static QemuRamLayout Linear(ulong size)
    {
        CheckRamSize(size);
        return new QemuRamLayout("linear", size, [new PhysicalSegment(0, size, 0)]);
    }

    /// <summary>Maps a guest physical address to its file offset; false when the address is not RAM.</summary>
    public bool TryGetFileOffset(ulong address, out ulong fileOffset)
    {
        foreach (PhysicalSegment segment in Segments)
        {
            if (address >= segment.Start && address - segment.Start < segment.Length)
            {
                fileOffset = segment.FileOffset + (address - segment.Start);
                return true;
            }
        }
        fileOffset = 0;
        return false;
    }

    /// <inheritdoc/>
    public override string ToString() =>
        $"{Machine}, {RamSize} bytes: " + string.Join(", ", Segments.Select(s => $"GPA 0x{s.Start:x}-0x{s.End:x} @ file 0x{s.FileOffset:x}"));

    private static QemuRamLayout Build(string machine, ulong ramSize, ulong lowMemory)
    {
        CheckRamSize(ramSize);
        if (ramSize <= lowMemory)
            return new QemuRamLayout(machine, ramSize, [new PhysicalSegment(0, ramSize, 0)]);
        PhysicalSegment[] segments = lowMemory == 0
            ? [new PhysicalSegment(FourGiB, ramSize, 0)]
            : [new PhysicalSegment(0, lowMemory, 0), new PhysicalSegment(FourGiB, ramSize - lowMemory, lowMemory)];
        return new QemuRamLayout(machine, ramSize, segments);
    }

    private static void CheckRamSize(ulong ramSize)
    {
        if (ramSize == 0 || ramSize > MaxRamSize)
            throw new GuestMemoryException($"RAM size 0x{ramSize:x} is not possible (must be between 1 byte and 2^52 bytes)");
    }
}
