using System.Buffers.Binary;
using System.Text;
using Vmi.Core;

namespace Vmi.Memory;

/// <summary>
/// Parses an ELF core file as QEMU's <c>dump-guest-memory</c> (paging=false) writes it, from the mapped file,
/// validating every field before use: the file is untrusted input.
/// </summary>
internal static class ElfCoreReader
{
    // Bounds far above anything QEMU writes (one PT_LOAD per RAM block, two notes per vCPU) yet small
    // enough that a hostile header cannot make us allocate or loop without end.
    internal const uint MaxProgramHeaders = 1 << 20;
    internal const int MaxNotes = 1 << 16;
    internal const int MaxCpus = 1 << 13;
    internal const int MaxVmcoreInfoBytes = 1 << 20;
    private const ulong MaxNoteNameBytes = 64;

    private const uint PT_LOAD = 1;
    private const uint PT_NOTE = 4;
    private const ushort ET_CORE = 4;
    private const ushort EM_386 = 3;
    private const ushort EM_X86_64 = 62;
    private const ushort PN_XNUM = 0xffff;
    private const byte ELFCLASS32 = 1;
    private const byte ELFCLASS64 = 2;
    private const byte ELFDATA2LSB = 1;

    // QEMUCPUState (target/i386/arch_dump.c): u32 version, u32 size, 16 GPRs (rax rbx rcx rdx rsi rdi rsp rbp
    // r8..r15), rip, rflags, 10 QEMUCPUSegment {u32 selector, limit, flags, pad; u64 base} (cs ds es fs gs ss
    // ldt tr gdt idt), u64 cr[5], then optional fields appended without a version change.
    private const int QemuStateGprOffset = 8;
    private const int QemuStateRipOffset = QemuStateGprOffset + 16 * 8;      // 8 + 128 = 136
    private const int QemuStateSegmentOffset = QemuStateRipOffset + 2 * 8;   // 136 + 16 = 152
    private const int QemuSegmentSize = 24;                                  // 4 * 4 + 8
    private const int QemuStateCrOffset = QemuStateSegmentOffset + 10 * QemuSegmentSize; // 152 + 240 = 392
    private const int QemuStateV1Size = QemuStateCrOffset + 5 * 8;           // 392 + 40 = 432
    private const int QemuStateKernelGsBaseOffset = QemuStateV1Size;         // 432
    private const int QemuStateWithKernelGsBaseSize = QemuStateKernelGsBaseOffset + 8; // 440

    internal sealed record Result(PhysicalSegment[] Segments, DumpCpuState[] CpuStates, string? VmcoreInfo);

    public static Result Read(MappedFile file)
    {
        string name = file.Name;
        ReadOnlySpan<byte> ident = Require(file, 0, 16, "ELF identification");
        byte elfClass = ident[4];
        if (elfClass is not (ELFCLASS32 or ELFCLASS64))
            throw Error(name, $"unknown ELF class {elfClass} (expected 1 for ELF32 or 2 for ELF64)");
        if (ident[5] != ELFDATA2LSB)
            throw Error(name, $"ELF data encoding {ident[5]} is not little-endian; not an x86 dump");
        if (ident[6] != 1)
            throw Error(name, $"ELF version {ident[6]} is not 1");
        bool is64 = elfClass == ELFCLASS64;

        // ELF64 header is 64 bytes, ELF32 header 52.
        ReadOnlySpan<byte> eh = Require(file, 0, is64 ? 64 : 52, "ELF header");
        ushort type = U16(eh, 16);
        ushort machine = U16(eh, 18);
        if (type != ET_CORE)
            throw Error(name, $"ELF type {type} is not ET_CORE (4): this is not a core dump");
        if (machine is not (EM_X86_64 or EM_386))
            throw Error(name, $"ELF machine {machine} is not x86 (62 or 3)");
        ulong phoff = is64 ? U64(eh, 32) : U32(eh, 28);
        ulong shoff = is64 ? U64(eh, 40) : U32(eh, 32);
        ushort phentsize = U16(eh, is64 ? 54 : 42);
        uint phnum = U16(eh, is64 ? 56 : 44);
        ushort shentsize = U16(eh, is64 ? 58 : 46);
        int expectedPhentsize = is64 ? 56 : 32;
        if (phentsize != expectedPhentsize)
            throw Error(name, $"program header entry size {phentsize} is not {expectedPhentsize}");

        if (phnum == PN_XNUM)
        {
            // More than 0xfffe program headers: the real count is sh_info of section header 0.
            int shSize = is64 ? 64 : 40;
            if (shoff == 0 || shentsize != shSize)
                throw Error(name, $"e_phnum is PN_XNUM but section header 0 is missing or has size {shentsize} (expected {shSize})");
            ReadOnlySpan<byte> sh0 = Require(file, shoff, shSize, "section header 0 (PN_XNUM program header count)");
            phnum = U32(sh0, is64 ? 44 : 28);
        }
        if (phnum == 0)
            throw Error(name, "the ELF core has no program headers: no guest memory in it");
        if (phnum > MaxProgramHeaders)
            throw Error(name, $"{phnum} program headers is absurd (limit {MaxProgramHeaders}): the header is corrupt");
        ulong tableSize = phnum * (ulong)phentsize; // ≤ 2^20 * 56, no overflow
        ulong tableEnd = phoff + tableSize;
        if (tableEnd > file.Length || tableEnd < phoff)
            throw Error(name, $"program header table at 0x{phoff:x} ({phnum} × {phentsize} bytes) extends beyond the end of the file (0x{file.Length:x} bytes)");

        var loads = new List<(PhysicalSegment Segment, ulong MemSize, uint Index)>();
        var cpus = new List<DumpCpuState>();
        string? vmcoreInfo = null;
        int notesSeen = 0;
        for (uint i = 0; i < phnum; i++)
        {
            ReadOnlySpan<byte> ph = Require(file, phoff + i * phentsize, phentsize, $"program header {i}");
            uint pType = U32(ph, 0);
            ulong pOffset, pPaddr, pFilesz, pMemsz;
            if (is64)
            {
                pOffset = U64(ph, 8);
                pPaddr = U64(ph, 24);
                pFilesz = U64(ph, 32);
                pMemsz = U64(ph, 40);
            }
            else
            {
                pOffset = U32(ph, 4);
                pPaddr = U32(ph, 12);
                pFilesz = U32(ph, 16);
                pMemsz = U32(ph, 20);
            }

            if (pType is not (PT_LOAD or PT_NOTE))
                continue;
            ulong fileEnd = pOffset + pFilesz;
            if (fileEnd > file.Length || fileEnd < pOffset)
                throw Error(name, $"program header {i} (type {pType}) covers file bytes 0x{pOffset:x}+0x{pFilesz:x}, beyond the end of the file (0x{file.Length:x} bytes): the dump is truncated or corrupt");

            if (pType == PT_LOAD)
            {
                if (pFilesz > pMemsz)
                    throw Error(name, $"PT_LOAD {i} has p_filesz 0x{pFilesz:x} larger than p_memsz 0x{pMemsz:x}");
                ulong memEnd = pPaddr + pMemsz;
                if (memEnd < pPaddr)
                    throw Error(name, $"PT_LOAD {i} at GPA 0x{pPaddr:x} with p_memsz 0x{pMemsz:x} wraps around the address space");
                if (pMemsz != 0)
                    loads.Add((new PhysicalSegment(pPaddr, pFilesz, pOffset), pMemsz, i));
            }
            else
            {
                ReadNotes(file, pOffset, pFilesz, i, cpus, ref vmcoreInfo, ref notesSeen);
            }
        }

        loads.Sort((a, b) => a.Segment.Start.CompareTo(b.Segment.Start));
        for (int k = 1; k < loads.Count; k++)
        {
            var prev = loads[k - 1];
            var cur = loads[k];
            if (cur.Segment.Start < prev.Segment.Start + prev.MemSize)
                throw Error(name, $"PT_LOAD {prev.Index} (GPA 0x{prev.Segment.Start:x}-0x{prev.Segment.Start + prev.MemSize:x}) and PT_LOAD {cur.Index} (GPA 0x{cur.Segment.Start:x}) overlap");
        }
        // Bytes in p_memsz beyond p_filesz are not in the file: they are reported as unbacked, not as zeros.
        PhysicalSegment[] segments = [.. loads.Where(l => l.Segment.Length != 0).Select(l => l.Segment)];
        if (segments.Length == 0)
            throw Error(name, "the ELF core has no PT_LOAD segment with file data: no guest memory in it");
        return new Result(segments, [.. cpus], vmcoreInfo);
    }

    private static void ReadNotes(MappedFile file, ulong offset, ulong size, uint header, List<DumpCpuState> cpus,
        ref string? vmcoreInfo, ref int notesSeen)
    {
        string name = file.Name;
        // Note records: u32 namesz, u32 descsz, u32 type, name padded to 4, desc padded to 4 (same for ELF32/64).
        ulong position = 0;
        while (position < size)
        {
            if (++notesSeen > MaxNotes)
                throw Error(name, $"more than {MaxNotes} notes: the note segment is corrupt");
            if (size - position < 12)
                throw Error(name, $"PT_NOTE {header}: truncated note header at file offset 0x{offset + position:x}");
            ReadOnlySpan<byte> nh = Require(file, offset + position, 12, "note header");
            ulong namesz = U32(nh, 0);
            ulong descsz = U32(nh, 4);
            uint noteType = U32(nh, 8);
            ulong nameStart = position + 12;
            ulong descStart = nameStart + Align4(namesz);   // ≤ 2^32 + 12 + position: cannot overflow
            ulong next = descStart + Align4(descsz);
            if (descStart + descsz > size || next < position)
                throw Error(name, $"PT_NOTE {header}: note at file offset 0x{offset + position:x} (namesz {namesz}, descsz {descsz}) runs past the end of the note segment (0x{size:x} bytes)");
            // Only short names matter ("QEMU", "CORE", "VMCOREINFO"); longer ones are skipped unread.
            ReadOnlySpan<byte> noteName = namesz <= MaxNoteNameBytes
                ? Require(file, offset + nameStart, (int)namesz, "note name")
                : default;
            if (noteName.Length > 0 && noteName[^1] == 0)
                noteName = noteName[..^1];

            if (noteName.SequenceEqual("QEMU"u8) && noteType == 0)
            {
                if (cpus.Count >= MaxCpus)
                    throw Error(name, $"more than {MaxCpus} QEMU CPU notes: the note segment is corrupt");
                if (descsz > int.MaxValue)
                    throw Error(name, $"QEMU CPU note of {descsz} bytes is absurd");
                ReadOnlySpan<byte> desc = Require(file, offset + descStart, (int)descsz, "QEMU CPU note");
                cpus.Add(ParseQemuCpuState(name, desc, cpus.Count));
            }
            else if (noteName.SequenceEqual("VMCOREINFO"u8) && vmcoreInfo is null)
            {
                if (descsz > MaxVmcoreInfoBytes)
                    throw Error(name, $"VMCOREINFO note of {descsz} bytes exceeds the {MaxVmcoreInfoBytes}-byte limit");
                ReadOnlySpan<byte> desc = Require(file, offset + descStart, (int)descsz, "VMCOREINFO note");
                int nul = desc.IndexOf((byte)0);
                vmcoreInfo = Encoding.UTF8.GetString(nul >= 0 ? desc[..nul] : desc);
            }
            // NT_PRSTATUS ("CORE") and anything else: not needed, skipped.
            position = next;
        }
    }

    private static DumpCpuState ParseQemuCpuState(string name, ReadOnlySpan<byte> desc, int index)
    {
        if (desc.Length < 8)
            throw Error(name, $"QEMU CPU note {index} is {desc.Length} bytes, too short for its header");
        uint version = U32(desc, 0);
        uint size = U32(desc, 4);
        if (version != 1)
            throw Error(name, $"QEMU CPU note {index} has QEMUCPUState version {version}; only version 1 is known");
        if (size < QemuStateV1Size || size > (uint)desc.Length)
            throw Error(name, $"QEMU CPU note {index}: size field {size} is outside [{QemuStateV1Size}, {desc.Length}] (the note's length)");
        ReadOnlySpan<byte> s = desc[..(int)size];

        return new DumpCpuState
        {
            Index = index,
            Version = version,
            Rax = Gpr(s, 0), Rbx = Gpr(s, 1), Rcx = Gpr(s, 2), Rdx = Gpr(s, 3),
            Rsi = Gpr(s, 4), Rdi = Gpr(s, 5), Rsp = Gpr(s, 6), Rbp = Gpr(s, 7),
            R8 = Gpr(s, 8), R9 = Gpr(s, 9), R10 = Gpr(s, 10), R11 = Gpr(s, 11),
            R12 = Gpr(s, 12), R13 = Gpr(s, 13), R14 = Gpr(s, 14), R15 = Gpr(s, 15),
            Rip = U64(s, QemuStateRipOffset),
            Rflags = U64(s, QemuStateRipOffset + 8),
            Cs = Seg(s, 0), Ds = Seg(s, 1), Es = Seg(s, 2), Fs = Seg(s, 3), Gs = Seg(s, 4), Ss = Seg(s, 5),
            Ldt = Seg(s, 6), Tr = Seg(s, 7), Gdt = Seg(s, 8), Idt = Seg(s, 9),
            Cr0 = Cr(s, 0), Cr2 = Cr(s, 2), Cr3 = Cr(s, 3), Cr4 = Cr(s, 4),
            KernelGsBase = size >= QemuStateWithKernelGsBaseSize ? U64(s, QemuStateKernelGsBaseOffset) : null,
        };
    }

    private static ulong Gpr(ReadOnlySpan<byte> state, int n) => U64(state, QemuStateGprOffset + n * 8);

    private static ulong Cr(ReadOnlySpan<byte> state, int n) => U64(state, QemuStateCrOffset + n * 8);

    private static DumpSegment Seg(ReadOnlySpan<byte> state, int n)
    {
        ReadOnlySpan<byte> r = state.Slice(QemuStateSegmentOffset + n * QemuSegmentSize, QemuSegmentSize);
        // QEMUCPUSegment: u32 selector, u32 limit, u32 flags, u32 pad, u64 base.
        return new DumpSegment(U32(r, 0), U32(r, 4), U32(r, 8), U64(r, 16));
    }

    private static ReadOnlySpan<byte> Require(MappedFile file, ulong offset, int length, string what)
    {
        if (!file.TryGetSpan(offset, length, out ReadOnlySpan<byte> span))
            throw Error(file.Name, $"{what} at file offset 0x{offset:x} ({length} bytes) is beyond the end of the file (0x{file.Length:x} bytes): the dump is truncated or corrupt");
        return span;
    }

    private static ulong Align4(ulong value) => (value + 3) & ~3UL;

    private static ushort U16(ReadOnlySpan<byte> s, int offset) => BinaryPrimitives.ReadUInt16LittleEndian(s[offset..]);

    private static uint U32(ReadOnlySpan<byte> s, int offset) => BinaryPrimitives.ReadUInt32LittleEndian(s[offset..]);

    private static ulong U64(ReadOnlySpan<byte> s, int offset) => BinaryPrimitives.ReadUInt64LittleEndian(s[offset..]);

    private static GuestMemoryException Error(string name, string message) => new($"'{name}': {message}");
}
