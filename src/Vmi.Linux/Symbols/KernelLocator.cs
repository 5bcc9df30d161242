using System.Buffers.Binary;
using Vmi.Memory;

namespace Vmi.Linux.Symbols;

/// <summary>Where the running kernel image is.</summary>
/// <param name="VirtualBase">The kernel's <c>_text</c>.</param>
/// <param name="PhysicalBase">Guest physical address of <c>_text</c> (the "Kernel code" start in /proc/iomem).</param>
/// <param name="UnslidBase">The link-time <c>_text</c> the slide is measured from.</param>
/// <param name="MappedLength">
/// Bytes from <c>_text</c> to the end of the last 2 MiB step that maps into the same physically contiguous image
/// (holes, such as freed init memory, are skipped over).
/// </param>
public sealed record KernelLocation(ulong VirtualBase, ulong PhysicalBase, ulong UnslidBase, ulong MappedLength)
{
    /// <summary>KASLR slide: <c>_text</c> − its link-time address.</summary>
    public long Slide => unchecked((long)(VirtualBase - UnslidBase));

    /// <summary>The physical address of a kernel-image virtual address (the image is physically contiguous).</summary>
    public ulong ToPhysical(ulong virtualAddress) => PhysicalBase + (virtualAddress - VirtualBase);

    /// <inheritdoc/>
    public override string ToString() =>
        $"_text 0x{VirtualBase:x} (phys 0x{PhysicalBase:x}, slide 0x{Slide:x}, {MappedLength >> 20} MiB mapped)";
}

/// <summary>
/// Finds the running x86-64 Linux kernel from outside, from physical memory and a paging context: the kernel
/// image is mapped 2 MiB-aligned in <c>[0xffffffff80000000, 0xffffffffc0000000)</c> and everything below
/// <c>_text</c> in that window is unmapped at run time (cleanup_highmap), so the first mapped 2 MiB step is
/// <c>_text</c>.
/// </summary>
public static class KernelLocator
{
    /// <summary>x86-64 link-time <c>_text</c> with the default CONFIG_PHYSICAL_START (16 MiB).</summary>
    public const ulong DefaultUnslidBase = 0xffffffff81000000;

    /// <summary>Start of the kernel-image window (<c>__START_KERNEL_map</c>).</summary>
    public const ulong KernelWindowStart = 0xffffffff80000000;

    /// <summary>End of the kernel-image window (KERNEL_IMAGE_SIZE is at most 1 GiB).</summary>
    public const ulong KernelWindowEnd = 0xffffffffc0000000;

    /// <summary>Image alignment (CONFIG_PHYSICAL_ALIGN on x86-64 is a multiple of 2 MiB).</summary>
    public const ulong Step = 2UL << 20;

    /// <summary>Bytes after <c>_text</c> that must map page for page contiguously (kernel text is at least this big).</summary>
    public const ulong ContiguityCheckLength = 2UL << 20;

    /// <summary>Finds the kernel image.</summary>
    /// <param name="memory">Guest physical memory.</param>
    /// <param name="context">An address space that maps the kernel (any process's CR3 will do).</param>
    /// <param name="unslidBase">Link-time <c>_text</c>, for <see cref="KernelLocation.Slide"/>.</param>
    /// <exception cref="KernelNotFoundException">Nothing in the window looks like a mapped kernel image.</exception>
    public static KernelLocation Locate(IPhysicalMemory memory, PagingContext context, ulong unslidBase = DefaultUnslidBase)
    {
        ArgumentNullException.ThrowIfNull(memory);
        var walker = new PageWalker(memory);
        string? firstRejection = null;
        // At most (1 GiB / 2 MiB) = 512 walks.
        for (ulong va = KernelWindowStart; va < KernelWindowEnd; va += Step)
        {
            if (!walker.TryTranslate(context, va, out Translation t, out _))
                continue;
            string? why = Validate(memory, walker, context, va, t.PhysicalAddress);
            if (why is null)
                return new KernelLocation(va, t.PhysicalAddress, unslidBase, MappedExtent(walker, context, va, t.PhysicalAddress));
            firstRejection ??= $"0x{va:x} (phys 0x{t.PhysicalAddress:x}) {why}";
        }
        throw new KernelNotFoundException(firstRejection is null
            ? $"no page of the kernel-image window 0x{KernelWindowStart:x}-0x{KernelWindowEnd:x} is mapped under CR3 0x{context.Cr3:x}; is this a 64-bit Linux guest past early boot, and is CR3 right?"
            : $"no mapped 2 MiB step of the kernel-image window looks like a kernel image under CR3 0x{context.Cr3:x}; first candidate rejected: {firstRejection}");
    }

    /// <summary>
    /// Independent cross-check from the IDT: entry 0's handler (asm_exc_divide_error) minus its known offset from
    /// <c>_text</c> (from a System.map or an earlier kallsyms read of the same build).
    /// </summary>
    /// <param name="memory">Guest physical memory.</param>
    /// <param name="context">An address space mapping the IDT (the IDTR base is a virtual address).</param>
    /// <param name="idtBase">The IDTR base.</param>
    /// <param name="divideErrorOffset">asm_exc_divide_error − _text for this kernel build.</param>
    /// <exception cref="KernelNotFoundException">The IDT is unreadable or entry 0 is not a present 64-bit gate.</exception>
    public static ulong LocateFromIdt(IPhysicalMemory memory, PagingContext context, ulong idtBase, ulong divideErrorOffset)
    {
        ulong handler = ReadIdtHandler(memory, context, idtBase, 0);
        return handler - divideErrorOffset;
    }

    /// <summary>The handler address of IDT entry <paramref name="vector"/> (a 16-byte long-mode gate).</summary>
    /// <exception cref="KernelNotFoundException">Unreadable, or not a present interrupt/trap gate.</exception>
    public static ulong ReadIdtHandler(IPhysicalMemory memory, PagingContext context, ulong idtBase, int vector)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentOutOfRangeException.ThrowIfNegative(vector);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(vector, 255);
        Span<byte> gate = stackalloc byte[16];
        ulong va = idtBase + (ulong)vector * 16;
        if (!new VirtualMemory(memory, context).TryRead(va, gate))
            throw new KernelNotFoundException($"IDT entry {vector} at 0x{va:x} is not readable");
        byte attributes = gate[5];
        int type = attributes & 0xF; // 0xE interrupt gate, 0xF trap gate
        if ((attributes & 0x80) == 0 || (type != 0xE && type != 0xF))
            throw new KernelNotFoundException($"IDT entry {vector} at 0x{va:x} is not a present 64-bit gate (attributes 0x{attributes:x2})");
        // Offset bits 0-15 at bytes 0-1, 16-31 at bytes 6-7, 32-63 at bytes 8-11.
        return BinaryPrimitives.ReadUInt16LittleEndian(gate)
            | ((ulong)BinaryPrimitives.ReadUInt16LittleEndian(gate[6..]) << 16)
            | ((ulong)BinaryPrimitives.ReadUInt32LittleEndian(gate[8..]) << 32);
    }

    private static string? Validate(IPhysicalMemory memory, PageWalker walker, PagingContext context, ulong va, ulong pa)
    {
        if ((pa & (Step - 1)) != 0)
            return "is not 2 MiB-aligned physically";
        Span<byte> head = stackalloc byte[64];
        if (!memory.TryRead(pa, head))
            return "maps to unbacked physical memory";
        if (!head.ContainsAnyExcept((byte)0))
            return "starts with zeros, not kernel text";
        if (!head.ContainsAnyExcept((byte)0xCC))
            return "starts with int3 padding, not kernel text";
        // 512 walks of 4 KiB: the text must map page for page onto contiguous physical memory.
        for (ulong off = 0; off < ContiguityCheckLength; off += 4096)
        {
            if (!walker.TryTranslate(context, va + off, out Translation t, out WalkStatus s))
                return $"is not mapped at +0x{off:x} ({s})";
            if (t.PhysicalAddress != pa + off)
                return $"is not physically contiguous at +0x{off:x} (0x{t.PhysicalAddress:x}, expected 0x{pa + off:x})";
            if (!memory.TryRead(t.PhysicalAddress, head[..1]))
                return $"maps to unbacked physical memory at +0x{off:x}";
        }
        return null;
    }

    private static ulong MappedExtent(PageWalker walker, PagingContext context, ulong va, ulong pa)
    {
        ulong end = ContiguityCheckLength;
        for (ulong off = Step; va + off < KernelWindowEnd && va + off >= va; off += Step)
        {
            // Probe each 2 MiB step at a few 4 KiB pages: freed init/gap pages may leave holes at its start.
            for (ulong probe = 0; probe < Step; probe += Step / 8)
            {
                if (!walker.TryTranslate(context, va + off + probe, out Translation t, out _))
                    continue;
                if (t.PhysicalAddress != pa + off + probe)
                    return end; // something else (a module, a fixmap) after the image
                end = off + Step;
                break;
            }
        }
        return end;
    }
}
