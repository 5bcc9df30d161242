namespace Vmi.Memory;

/// <summary>Size of a translated page.</summary>
public enum PageSize : ulong
{
    /// <summary>4 KiB page mapped by a PT entry.</summary>
    Size4K = 0x1000,

    /// <summary>2 MiB page mapped by a PD entry with PS=1.</summary>
    Size2M = 0x20_0000,

    /// <summary>1 GiB page mapped by a PDPT entry with PS=1.</summary>
    Size1G = 0x4000_0000,
}

/// <summary>
/// Effective access rights of a translation: <see cref="Writable"/> and <see cref="User"/> are ANDed over every
/// level, <see cref="NoExecute"/> is ORed (only with EFER.NXE); <see cref="Global"/>, <see cref="Dirty"/> and
/// <see cref="Accessed"/> come from the leaf entry.
/// </summary>
[Flags]
public enum PageFlags
{
    None = 0,
    Present = 1,
    Writable = 2,
    User = 4,
    NoExecute = 8,
    Global = 16,
    Dirty = 32,
    Accessed = 64,
}

/// <summary>A successful translation of one virtual address.</summary>
/// <param name="VirtualAddress">The address translated.</param>
/// <param name="PhysicalAddress">Its guest physical address.</param>
/// <param name="Size">Size of the page containing it.</param>
/// <param name="Flags">Effective rights.</param>
public readonly record struct Translation(ulong VirtualAddress, ulong PhysicalAddress, PageSize Size, PageFlags Flags)
{
    /// <summary>Offset of the address within its page.</summary>
    public ulong PageOffset => VirtualAddress & ((ulong)Size - 1);

    /// <summary>Virtual address of the page's first byte.</summary>
    public ulong PageVirtualBase => VirtualAddress & ~((ulong)Size - 1);

    /// <summary>Physical address of the page's first byte.</summary>
    public ulong PagePhysicalBase => PhysicalAddress & ~((ulong)Size - 1);

    /// <summary>Bytes from the address to the end of its page (1..Size).</summary>
    public ulong BytesToPageEnd => (ulong)Size - PageOffset;

    /// <inheritdoc/>
    public override string ToString() =>
        string.Create(System.Globalization.CultureInfo.InvariantCulture, $"VA 0x{VirtualAddress:x} -> PA 0x{PhysicalAddress:x} ({Size}, {Flags})");

    /// <summary>The same page translating another address inside it.</summary>
    public Translation WithAddress(ulong virtualAddress) =>
        this with { VirtualAddress = virtualAddress, PhysicalAddress = PagePhysicalBase | (virtualAddress & ((ulong)Size - 1)) };
}

/// <summary>Outcome of a page walk.</summary>
public enum WalkStatus
{
    /// <summary>Translated.</summary>
    Ok,

    /// <summary>The address is not canonical for the paging mode (would #GP, not #PF).</summary>
    NonCanonical,

    /// <summary>An entry on the path has P=0.</summary>
    NotPresent,

    /// <summary>An entry on the path has a reserved bit set (#PF with RSVD=1).</summary>
    ReservedBitsSet,

    /// <summary>A paging-structure entry lies in unbacked guest physical memory.</summary>
    TableUnreadable,

    /// <summary>
    /// The translation succeeded but the physical page it names is not backed. Reported only by
    /// <see cref="VirtualMemory.Read"/>, never by the walker.
    /// </summary>
    PhysicalUnbacked,
}

/// <summary>Paging-structure levels; the value is the level number.</summary>
public enum PagingLevel
{
    /// <summary>Page table (maps 4 KiB pages).</summary>
    Pt = 1,

    /// <summary>Page directory (2 MiB pages with PS=1).</summary>
    Pd = 2,

    /// <summary>Page-directory-pointer table (1 GiB pages with PS=1).</summary>
    Pdpt = 3,

    /// <summary>PML4 table.</summary>
    Pml4 = 4,

    /// <summary>PML5 table (LA57 only).</summary>
    Pml5 = 5,
}

/// <summary>One entry read during a walk.</summary>
/// <param name="Level">Table level.</param>
/// <param name="Index">Index of the entry in its table (0..511).</param>
/// <param name="EntryAddress">Guest physical address of the entry.</param>
/// <param name="Entry">Its raw value.</param>
public readonly record struct WalkStep(PagingLevel Level, int Index, ulong EntryAddress, ulong Entry);

/// <summary>Result of <see cref="VirtualMemory.Read"/>.</summary>
/// <param name="BytesRead">Bytes copied, a prefix of the destination.</param>
/// <param name="Status"><see cref="WalkStatus.Ok"/> when the whole destination was filled; otherwise why it stopped.</param>
/// <param name="FailedAddress">The virtual address where the read stopped (0 when complete).</param>
public readonly record struct VirtualReadResult(int BytesRead, WalkStatus Status, ulong FailedAddress)
{
    /// <summary>True when every byte was read.</summary>
    public bool IsComplete => Status == WalkStatus.Ok;
}
