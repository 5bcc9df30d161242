using System.Buffers.Binary;
using System.Text;

namespace Vmi.Memory.Tests;

/// <summary>Writes small ELF64 x86-64 core files laid out like QEMU's dump-guest-memory output.</summary>
internal sealed class ElfCoreBuilder
{
    private readonly List<(byte[] Name, uint Type, byte[] Desc)> _notes = [];
    private readonly List<(ulong Gpa, byte[] Data, ulong MemSize)> _loads = [];

    public ushort Machine { get; set; } = 62;
    public ushort Type { get; set; } = 4;

    public ElfCoreBuilder AddNote(string name, uint type, byte[] desc)
    {
        _notes.Add(([.. Encoding.ASCII.GetBytes(name), 0], type, desc));
        return this;
    }

    public ElfCoreBuilder AddLoad(ulong gpa, byte[] data, ulong? memSize = null)
    {
        _loads.Add((gpa, data, memSize ?? (ulong)data.Length));
        return this;
    }

    /// <summary>A QEMUCPUState (version 1) with recognisable values: register n = 0x1000 * (n + 1) + index.</summary>
    public static byte[] QemuCpuState(int index, bool withKernelGsBase)
    {
        int size = withKernelGsBase ? 440 : 432;
        var b = new byte[size];
        BinaryPrimitives.WriteUInt32LittleEndian(b, 1);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), (uint)size);
        for (int r = 0; r < 16; r++) // rax rbx rcx rdx rsi rdi rsp rbp r8..r15
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8 + r * 8), 0x1000UL * (ulong)(r + 1) + (ulong)index);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(136), 0xffffffff81000000UL + (ulong)index); // rip
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(144), 0x246);                               // rflags
        for (int s = 0; s < 10; s++) // cs ds es fs gs ss ldt tr gdt idt, 24 bytes each from 152
        {
            Span<byte> seg = b.AsSpan(152 + s * 24, 24);
            BinaryPrimitives.WriteUInt32LittleEndian(seg, (uint)(0x10 + s * 8));
            BinaryPrimitives.WriteUInt32LittleEndian(seg[4..], 0xffffffff);
            BinaryPrimitives.WriteUInt32LittleEndian(seg[8..], 0xa09b00 + (uint)s);
            BinaryPrimitives.WriteUInt64LittleEndian(seg[16..], 0xfffffe0000000000UL + (ulong)s * 0x1000);
        }
        ulong[] cr = [0x80050033, 0, 0xdead0000, 0x1000 + (ulong)index * 0x1000, 0x3506f0];
        for (int c = 0; c < 5; c++)
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(392 + c * 8), cr[c]);
        if (withKernelGsBase)
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(432), 0xffff888007c00000UL);
        return b;
    }

    public byte[] Build()
    {
        // Layout: ELF header, program headers (PT_NOTE first, as QEMU does), notes, then segment data.
        byte[] notes = BuildNotes();
        int phnum = 1 + _loads.Count;
        ulong phoff = 64;
        ulong notesOffset = phoff + (ulong)(56 * phnum);
        ulong dataOffset = notesOffset + (ulong)notes.Length;
        var output = new MemoryStream();
        var header = new byte[64];
        header[0] = 0x7f; header[1] = (byte)'E'; header[2] = (byte)'L'; header[3] = (byte)'F';
        header[4] = 2; header[5] = 1; header[6] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(16), Type);
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(18), Machine);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(20), 1);
        BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(32), phoff);
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(52), 64);
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(54), 56);
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(56), (ushort)phnum);
        output.Write(header);

        output.Write(ProgramHeader(4, notesOffset, 0, (ulong)notes.Length, (ulong)notes.Length));
        ulong offset = dataOffset;
        foreach (var (gpa, data, memSize) in _loads)
        {
            output.Write(ProgramHeader(1, offset, gpa, (ulong)data.Length, memSize));
            offset += (ulong)data.Length;
        }
        output.Write(notes);
        foreach (var (_, data, _) in _loads)
            output.Write(data);
        return output.ToArray();
    }

    public static byte[] ProgramHeader(uint type, ulong offset, ulong paddr, ulong filesz, ulong memsz)
    {
        var ph = new byte[56];
        BinaryPrimitives.WriteUInt32LittleEndian(ph, type);
        BinaryPrimitives.WriteUInt32LittleEndian(ph.AsSpan(4), 7);
        BinaryPrimitives.WriteUInt64LittleEndian(ph.AsSpan(8), offset);
        BinaryPrimitives.WriteUInt64LittleEndian(ph.AsSpan(16), 0);      // p_vaddr: 0 with paging=false
        BinaryPrimitives.WriteUInt64LittleEndian(ph.AsSpan(24), paddr);
        BinaryPrimitives.WriteUInt64LittleEndian(ph.AsSpan(32), filesz);
        BinaryPrimitives.WriteUInt64LittleEndian(ph.AsSpan(40), memsz);
        return ph;
    }

    private byte[] BuildNotes()
    {
        var ms = new MemoryStream();
        foreach (var (name, type, desc) in _notes)
        {
            var nh = new byte[12];
            BinaryPrimitives.WriteUInt32LittleEndian(nh, (uint)name.Length);
            BinaryPrimitives.WriteUInt32LittleEndian(nh.AsSpan(4), (uint)desc.Length);
            BinaryPrimitives.WriteUInt32LittleEndian(nh.AsSpan(8), type);
            ms.Write(nh);
            ms.Write(name);
            ms.Write(new byte[Pad4(name.Length)]);
            ms.Write(desc);
            ms.Write(new byte[Pad4(desc.Length)]);
        }
        return ms.ToArray();
    }

    private static int Pad4(int n) => (4 - (n & 3)) & 3;
}
