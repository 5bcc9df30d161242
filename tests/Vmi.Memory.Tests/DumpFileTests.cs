using System.Buffers.Binary;
using System.Text;
using Vmi.Core;
using Xunit;

namespace Vmi.Memory.Tests;

public sealed class DumpFileTests
{
    private static byte[] Pattern(int length, byte seed) =>
        Enumerable.Range(0, length).Select(i => (byte)(i * 13 + seed)).ToArray();

    private static ElfCoreBuilder QemuLikeCore()
    {
        byte[] prstatus = new byte[336]; // NT_PRSTATUS, ignored by the reader
        return new ElfCoreBuilder()
            .AddNote("CORE", 1, prstatus)
            .AddNote("CORE", 1, prstatus)
            .AddNote("QEMU", 0, ElfCoreBuilder.QemuCpuState(0, withKernelGsBase: true))
            .AddNote("QEMU", 0, ElfCoreBuilder.QemuCpuState(1, withKernelGsBase: false))
            .AddNote("VMCOREINFO", 0, Encoding.ASCII.GetBytes("OSRELEASE=6.1.0-test\nPAGESIZE=4096\n\0"))
            .AddLoad(0, Pattern(0x3000, 1))
            .AddLoad(0x100000, Pattern(0x1000, 2), memSize: 0x2000)   // second page not in the file
            .AddLoad(0x1_0000_0000, Pattern(0x1000, 3));
    }

    [Fact]
    public void Elf_core_maps_segments_by_physical_address()
    {
        using TempFile file = TempFile.WithBytes(QemuLikeCore().Build());
        using GuestDump dump = DumpFile.Open(file.Path);

        Assert.Equal(DumpFormat.Elf, dump.Format);
        Assert.Equal([new PhysicalRange(0, 0x3000), new PhysicalRange(0x100000, 0x1000), new PhysicalRange(0x1_0000_0000, 0x1000)], dump.Ranges);
        Assert.True(dump.TryGetSpan(0x1000, 0x2000, out ReadOnlySpan<byte> span));
        Assert.Equal(Pattern(0x3000, 1).AsSpan(0x1000), span);
        Assert.True(dump.TryReadUInt64(0x100ff8, out ulong v));
        Assert.Equal(BinaryPrimitives.ReadUInt64LittleEndian(Pattern(0x1000, 2).AsSpan(0xff8)), v);
        // p_memsz beyond p_filesz is documented as unbacked.
        Assert.False(dump.TryReadUInt64(0x101000, out _));
        Assert.Equal(8, dump.ReadPartial(0x100ff8, new byte[16]));
        Assert.True(dump.TryRead(0x1_0000_0000, out byte first));
        Assert.Equal(Pattern(1, 3)[0], first);
        Assert.False(dump.TryRead(0x3000, out byte _));
        Assert.Equal("OSRELEASE=6.1.0-test\nPAGESIZE=4096\n", dump.VmcoreInfo);
    }

    [Fact]
    public void Elf_core_qemu_notes_become_cpu_states()
    {
        using TempFile file = TempFile.WithBytes(QemuLikeCore().Build());
        using GuestDump dump = DumpFile.Open(file.Path);

        Assert.Equal(2, dump.CpuStates.Count);
        DumpCpuState cpu0 = dump.CpuStates[0];
        Assert.Equal(0, cpu0.Index);
        Assert.Equal(1u, cpu0.Version);
        // Register n of the QEMUCPUState order (rax rbx rcx rdx rsi rdi rsp rbp r8..r15) holds 0x1000 * (n + 1) + cpu.
        Assert.Equal(0x1000UL, cpu0.Rax);
        Assert.Equal(0x2000UL, cpu0.Rbx);
        Assert.Equal(0x3000UL, cpu0.Rcx);
        Assert.Equal(0x4000UL, cpu0.Rdx);
        Assert.Equal(0x5000UL, cpu0.Rsi);
        Assert.Equal(0x6000UL, cpu0.Rdi);
        Assert.Equal(0x7000UL, cpu0.Rsp);
        Assert.Equal(0x8000UL, cpu0.Rbp);
        Assert.Equal(0x9000UL, cpu0.R8);
        Assert.Equal(0x10000UL, cpu0.R15);
        Assert.Equal(0xffffffff81000000UL, cpu0.Rip);
        Assert.Equal(0x246UL, cpu0.Rflags);
        Assert.Equal(new DumpSegment(0x10, 0xffffffff, 0xa09b00, 0xfffffe0000000000), cpu0.Cs);
        Assert.Equal(new DumpSegment(0x18, 0xffffffff, 0xa09b01, 0xfffffe0000001000), cpu0.Ds);
        Assert.Equal(0x38u, cpu0.Ss.Selector); // ss is segment record 5: 0x10 + 5 * 8
        Assert.Equal(new DumpSegment(0x58, 0xffffffff, 0xa09b09, 0xfffffe0000009000), cpu0.Idt);
        Assert.Equal(0x80050033UL, cpu0.Cr0);
        Assert.Equal(0xdead0000UL, cpu0.Cr2);
        Assert.Equal(0x1000UL, cpu0.Cr3);
        Assert.Equal(0x3506f0UL, cpu0.Cr4);
        Assert.Equal(0xffff888007c00000UL, cpu0.KernelGsBase);
        Assert.True(cpu0.PagingEnabled);

        DumpCpuState cpu1 = dump.CpuStates[1];
        Assert.Equal(0x7001UL, cpu1.Rsp);
        Assert.Equal(0x2000UL, cpu1.Cr3);
        Assert.Null(cpu1.KernelGsBase);

        PagingContext ctx = cpu1.GetPagingContext();
        Assert.Equal(0x2000UL, ctx.Cr3);
        Assert.False(ctx.La57); // CR4 0x3506f0 has bit 12 clear
        Assert.True(ctx.Nxe);
    }

    [Fact]
    public void Adjacent_segments_are_read_across()
    {
        byte[] a = Pattern(0x1000, 5), b = Pattern(0x1000, 6);
        byte[] core = new ElfCoreBuilder().AddLoad(0x2000, b).AddLoad(0x1000, a).Build(); // out of order on purpose
        using TempFile file = TempFile.WithBytes(core);
        using GuestDump dump = DumpFile.Open(file.Path);
        Assert.Empty(dump.CpuStates);
        Assert.True(dump.TryReadUInt64(0x1ffc, out ulong v));
        Assert.Equal(BinaryPrimitives.ReadUInt64LittleEndian([.. a.AsSpan(0xffc).ToArray(), .. b.AsSpan(0, 4).ToArray()]), v);
        Assert.False(dump.TryGetSpan(0x1ffc, 8, out _)); // not contiguous in one segment
        var buffer = new byte[0x2000];
        Assert.True(dump.TryRead(0x1000, buffer));
        Assert.Equal([.. a, .. b], buffer);
    }

    [Fact]
    public void Elf32_core_is_read_too()
    {
        // QEMU writes ELF32 for a guest outside long mode with all RAM below 4 GiB: 52-byte header, 32-byte phdrs.
        byte[] data = Pattern(0x1000, 4);
        var b = new byte[52 + 32 + data.Length];
        b[0] = 0x7f; b[1] = (byte)'E'; b[2] = (byte)'L'; b[3] = (byte)'F'; b[4] = 1; b[5] = 1; b[6] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(16), 4);   // ET_CORE
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(18), 3);   // EM_386
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(20), 1);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(28), 52);  // e_phoff
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(40), 52);  // e_ehsize
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(42), 32);  // e_phentsize
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(44), 1);   // e_phnum
        Span<byte> ph = b.AsSpan(52, 32);
        BinaryPrimitives.WriteUInt32LittleEndian(ph, 1);             // PT_LOAD
        BinaryPrimitives.WriteUInt32LittleEndian(ph[4..], 84);       // p_offset
        BinaryPrimitives.WriteUInt32LittleEndian(ph[12..], 0xa000);  // p_paddr
        BinaryPrimitives.WriteUInt32LittleEndian(ph[16..], 0x1000);  // p_filesz
        BinaryPrimitives.WriteUInt32LittleEndian(ph[20..], 0x1000);  // p_memsz
        data.CopyTo(b, 84);
        using TempFile file = TempFile.WithBytes(b);
        using GuestDump dump = DumpFile.Open(file.Path);
        Assert.Equal(DumpFormat.Elf, dump.Format);
        Assert.Equal([new PhysicalSegment(0xa000, 0x1000, 84)], dump.Segments);
        Assert.True(dump.TryGetSpan(0xa000, 0x1000, out ReadOnlySpan<byte> span));
        Assert.Equal(data, span.ToArray());
    }

    [Fact]
    public void Raw_dump_is_linear_or_uses_the_given_layout()
    {
        byte[] content = Pattern(0x4000, 9);
        using TempFile file = TempFile.WithBytes(content);
        using (GuestDump raw = DumpFile.Open(file.Path))
        {
            Assert.Equal(DumpFormat.Raw, raw.Format);
            Assert.Empty(raw.CpuStates);
            Assert.Equal([new PhysicalRange(0, 0x4000)], raw.Ranges);
            Assert.True(raw.TryRead(0x3fff, out byte last));
            Assert.Equal(content[^1], last);
        }
        using (GuestDump split = DumpFile.Open(file.Path, QemuRamLayout.Split(0x4000, 0x1000)))
        {
            Assert.Equal([new PhysicalRange(0, 0x1000), new PhysicalRange(0x1_0000_0000, 0x3000)], split.Ranges);
            Assert.True(split.TryRead(0x1_0000_0000, out byte b));
            Assert.Equal(content[0x1000], b);
        }
        Assert.Throws<GuestMemoryException>(() => DumpFile.Open(file.Path, QemuRamLayout.Linear(0x8000)));
    }

    [Theory]
    [InlineData("KDUMP   ", "kdump-compressed")]
    [InlineData("makedumpfile", "makedumpfile")]
    [InlineData("PAGEDU64", "Windows")]
    [InlineData("EMiL", "LiME")]
    public void Unsupported_formats_say_so(string magic, string expected)
    {
        byte[] content = new byte[0x1000];
        Encoding.ASCII.GetBytes(magic).CopyTo(content, 0);
        using TempFile file = TempFile.WithBytes(content);
        var ex = Assert.Throws<GuestMemoryException>(() => DumpFile.Open(file.Path));
        Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
        if (magic.StartsWith('K'))
            Assert.Contains("without", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_and_empty_files_fail_clearly()
    {
        Assert.Throws<TargetException>(() => DumpFile.Open("/nonexistent/vmi/dump.elf"));
        using TempFile empty = TempFile.WithBytes([]);
        Assert.Contains("empty", Assert.Throws<GuestMemoryException>(() => DumpFile.Open(empty.Path)).Message, StringComparison.Ordinal);
    }

    public static TheoryData<string, string> MalformedCores()
    {
        var data = new TheoryData<string, string>();
        foreach (var (name, expected, _) in Malformations())
            data.Add(name, expected);
        return data;
    }

    [Theory]
    [MemberData(nameof(MalformedCores))]
    public void Malformed_elf_headers_are_rejected_with_the_reason(string name, string expected)
    {
        byte[] core = Malformations().Single(m => m.Name == name).Make();
        using TempFile file = TempFile.WithBytes(core);
        var ex = Assert.Throws<GuestMemoryException>(() => DumpFile.Open(file.Path));
        Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
        Assert.Contains(file.Path, ex.Message, StringComparison.Ordinal);
    }

    private static IEnumerable<(string Name, string Expected, Func<byte[]> Make)> Malformations()
    {
        static byte[] Good() => QemuLikeCore().Build();
        static byte[] Patch(Action<byte[]> patch)
        {
            byte[] b = Good();
            patch(b);
            return b;
        }
        const int Ph0 = 64;        // PT_NOTE
        const int Ph1 = 64 + 56;   // first PT_LOAD
        const int Ph2 = 64 + 112;  // second PT_LOAD

        yield return ("truncated-ident", "beyond the end of the file", () => Good()[..10]);
        yield return ("truncated-header", "ELF header", () => Good()[..40]);
        yield return ("truncated-phdrs", "program header table", () => Good()[..100]);
        yield return ("elf-class", "unknown ELF class", () => Patch(b => b[4] = 3));
        yield return ("big-endian", "not little-endian", () => Patch(b => b[5] = 2));
        yield return ("not-core", "not ET_CORE", () => Patch(b => b[16] = 2));
        yield return ("not-x86", "not x86", () => Patch(b => b[18] = 183));
        yield return ("phentsize", "entry size", () => Patch(b => b[54] = 32));
        yield return ("no-phdrs", "no program headers", () => Patch(b => BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(56), 0)));
        yield return ("huge-phnum", "extends beyond the end of the file", () => Patch(b => BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(56), 0xfffe)));
        yield return ("phoff-beyond-eof", "extends beyond the end of the file", () => Patch(b => BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(32), 0xffff_ffff_ffff_ff00)));
        yield return ("pn-xnum-without-sections", "PN_XNUM", () => Patch(b => BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(56), 0xffff)));
        yield return ("pn-xnum-absurd", "absurd", () =>
        {
            // PN_XNUM with a section header 0 whose sh_info claims 2^32 - 1 program headers.
            byte[] good = Good();
            byte[] b = [.. good, .. new byte[64]];
            BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(56), 0xffff);
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(40), (ulong)good.Length);
            BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(58), 64);
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(good.Length + 44), 0xffff_ffff);
            return b;
        });
        yield return ("segment-beyond-eof", "beyond the end of the file", () => Patch(b => BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(Ph1 + 32), 0x10_0000)));
        yield return ("segment-offset-wraps", "beyond the end of the file", () => Patch(b => BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(Ph1 + 8), ulong.MaxValue - 0x10)));
        yield return ("filesz-over-memsz", "larger than p_memsz", () => Patch(b => BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(Ph1 + 40), 0x10)));
        yield return ("gpa-wraps", "wraps around", () => Patch(b => BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(Ph1 + 24), ulong.MaxValue - 0x100)));
        yield return ("overlap", "overlap", () => Patch(b => BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(Ph2 + 24), 0x2000)));
        yield return ("overlap-in-memsz-tail", "overlap", () => Patch(b => BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(Ph1 + 40), 0x100001)));
        yield return ("note-segment-beyond-eof", "beyond the end of the file", () => Patch(b => BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(Ph0 + 32), 0x1000_0000)));
        yield return ("note-runs-past-segment", "runs past the end of the note segment", () => Patch(b =>
        {
            ulong notes = BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(Ph0 + 8));
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan((int)notes + 4), 0xffff_fff0); // first note's descsz
        }));
        yield return ("note-name-huge", "runs past the end of the note segment", () => Patch(b =>
        {
            ulong notes = BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(Ph0 + 8));
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan((int)notes), 0xffff_ffff); // first note's namesz
        }));
        yield return ("note-header-truncated", "truncated note header", () => Patch(b =>
        {
            ulong size = BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(Ph0 + 32));
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(Ph0 + 32), size + 4);
        }));
        yield return ("qemu-note-version", "version 2", () => Patch(b =>
        {
            int at = IndexOf(b, "QEMU\0"u8) + 8;
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(at), 2);
        }));
        yield return ("qemu-note-size", "size field", () => Patch(b =>
        {
            int at = IndexOf(b, "QEMU\0"u8) + 8;
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(at + 4), 10_000);
        }));
        yield return ("qemu-note-too-small", "size field", () => Patch(b =>
        {
            int at = IndexOf(b, "QEMU\0"u8) + 8;
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(at + 4), 100);
        }));
        yield return ("no-loads", "no PT_LOAD", () => new ElfCoreBuilder().AddNote("QEMU", 0, ElfCoreBuilder.QemuCpuState(0, true)).Build());
    }

    private static int IndexOf(byte[] haystack, ReadOnlySpan<byte> needle)
    {
        int i = haystack.AsSpan().IndexOf(needle);
        Assert.True(i >= 0);
        return i;
    }
}
