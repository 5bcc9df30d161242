namespace Vmi.Memory;

/// <summary>Kind of memory dump file.</summary>
public enum DumpFormat
{
    /// <summary>Raw RAM image: file offset == guest physical address, or a caller-given <see cref="QemuRamLayout"/>.</summary>
    Raw,

    /// <summary>ELF core file as QEMU's <c>dump-guest-memory</c> writes it (PT_LOAD p_paddr = guest physical address).</summary>
    Elf,
}

/// <summary>A segment register as QEMU records it (QEMUCPUSegment).</summary>
/// <param name="Selector">Visible selector.</param>
/// <param name="Limit">Segment limit.</param>
/// <param name="Flags">QEMU's descriptor flags (access rights in bits 8..23, as in the descriptor's high dword).</param>
/// <param name="Base">Segment base (for GDT/IDT: the table's linear address).</param>
public readonly record struct DumpSegment(uint Selector, uint Limit, uint Flags, ulong Base);

/// <summary>
/// One vCPU's state from the "QEMU" note of a <c>dump-guest-memory</c> ELF core (QEMUCPUState, version 1,
/// from QEMU's target/i386/arch_dump.c).
/// </summary>
public sealed record DumpCpuState
{
    /// <summary>Zero-based position of the vCPU's note in the dump.</summary>
    public int Index { get; init; }

    /// <summary>QEMUCPUState.version (1).</summary>
    public uint Version { get; init; }

    public ulong Rax { get; init; }
    public ulong Rbx { get; init; }
    public ulong Rcx { get; init; }
    public ulong Rdx { get; init; }
    public ulong Rsi { get; init; }
    public ulong Rdi { get; init; }
    public ulong Rsp { get; init; }
    public ulong Rbp { get; init; }
    public ulong R8 { get; init; }
    public ulong R9 { get; init; }
    public ulong R10 { get; init; }
    public ulong R11 { get; init; }
    public ulong R12 { get; init; }
    public ulong R13 { get; init; }
    public ulong R14 { get; init; }
    public ulong R15 { get; init; }
    public ulong Rip { get; init; }
    public ulong Rflags { get; init; }

    public DumpSegment Cs { get; init; }
    public DumpSegment Ds { get; init; }
    public DumpSegment Es { get; init; }
    public DumpSegment Fs { get; init; }
    public DumpSegment Gs { get; init; }
    public DumpSegment Ss { get; init; }
    public DumpSegment Ldt { get; init; }
    public DumpSegment Tr { get; init; }
    public DumpSegment Gdt { get; init; }
    public DumpSegment Idt { get; init; }

    public ulong Cr0 { get; init; }
    public ulong Cr2 { get; init; }
    public ulong Cr3 { get; init; }
    public ulong Cr4 { get; init; }

    /// <summary>IA32_KERNEL_GS_BASE when the note is large enough to hold it (fields are appended without a version change; newer QEMU writes it); null otherwise.</summary>
    public ulong? KernelGsBase { get; init; }

    /// <summary>True when CR0.PG (bit 31) is set: the vCPU was translating through page tables.</summary>
    public bool PagingEnabled => (Cr0 & (1UL << 31)) != 0;

    /// <summary>
    /// The paging context of this vCPU. The note carries no EFER, so NXE is the caller's assumption (true on
    /// every 64-bit Linux and Windows kernel).
    /// </summary>
    public PagingContext GetPagingContext(bool nxe = true, int maxPhysicalAddressBits = 52) =>
        PagingContext.FromRegisters(Cr3, Cr4, nxe ? PagingContext.EferNxe : 0, maxPhysicalAddressBits);
}
