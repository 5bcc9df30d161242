namespace Vmi.Memory;

/// <summary>
/// What the page walker needs to know about one address space: CR3 and the paging mode bits.
/// </summary>
/// <param name="Cr3">CR3 as the vCPU holds it. Bits 12..MAXPHYADDR-1 are the top table's frame; PCID (bits 0..11),
/// the no-flush bit 63 and anything at or above MAXPHYADDR are ignored.</param>
/// <param name="La57">5-level paging (CR4.LA57): 57-bit virtual addresses and a PML5 table.</param>
/// <param name="Nxe">EFER.NXE: bit 63 of entries is execute-disable; when false, bit 63 is reserved.</param>
/// <param name="MaxPhysicalAddressBits">MAXPHYADDR (CPUID 0x80000008 EAX[7:0]), 12..52; entry bits from here to 51 are reserved.</param>
public readonly record struct PagingContext(ulong Cr3, bool La57, bool Nxe = true, int MaxPhysicalAddressBits = 52)
{
    /// <summary>CR4.LA57, bit 12.</summary>
    public const ulong Cr4La57 = 1UL << 12;

    /// <summary>EFER.NXE, bit 11.</summary>
    public const ulong EferNxe = 1UL << 11;

    /// <summary>Architectural MAXPHYADDR limit.</summary>
    public const int ArchitecturalMaxPhysicalAddressBits = 52;

    // Stored as given; 0 only in default(PagingContext), read back as 52.
    private readonly int _maxPhysicalAddressBits = Validate(MaxPhysicalAddressBits);

    /// <summary>MAXPHYADDR, 12..52 (52 for <c>default(PagingContext)</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException">Set outside 12..52.</exception>
    public int MaxPhysicalAddressBits
    {
        get => _maxPhysicalAddressBits == 0 ? ArchitecturalMaxPhysicalAddressBits : _maxPhysicalAddressBits;
        init => _maxPhysicalAddressBits = Validate(value);
    }

    /// <summary>Number of translation levels: 5 with LA57, else 4.</summary>
    public int Levels => La57 ? 5 : 4;

    /// <summary>Significant virtual address bits: 9 * 4 + 12 = 48, or 9 * 5 + 12 = 57 with LA57.</summary>
    public int VirtualAddressBits => La57 ? 57 : 48;

    /// <summary>Physical address of the top-level table (CR3 bits 12..MAXPHYADDR-1).</summary>
    public ulong TableBase => Cr3 & FrameMask(MaxPhysicalAddressBits);

    /// <summary>Builds a context from control registers: LA57 = CR4 bit 12, NXE = EFER bit 11.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxPhysicalAddressBits"/> is outside 12..52.</exception>
    public static PagingContext FromRegisters(ulong cr3, ulong cr4, ulong efer, int maxPhysicalAddressBits = 52) =>
        new(cr3, (cr4 & Cr4La57) != 0, (efer & EferNxe) != 0, maxPhysicalAddressBits);

    /// <summary>True when <paramref name="virtualAddress"/> is canonical: bits 63..47 (or 63..56 with LA57) all equal.</summary>
    public bool IsCanonical(ulong virtualAddress)
    {
        int shift = 64 - VirtualAddressBits;
        // Sign-extend from the top implemented bit and compare.
        return (ulong)((long)(virtualAddress << shift) >> shift) == virtualAddress;
    }

    /// <summary>Mask of address bits 12..bits-1: a 4 KiB frame number in place.</summary>
    internal static ulong FrameMask(int bits) => ((1UL << bits) - 1) & ~0xFFFUL;

    private static int Validate(int bits)
    {
        if (bits is < 12 or > ArchitecturalMaxPhysicalAddressBits)
            ThrowHelper.ArgumentOutOfRange(nameof(MaxPhysicalAddressBits), $"MAXPHYADDR {bits} is outside 12..52");
        return bits;
    }
}
