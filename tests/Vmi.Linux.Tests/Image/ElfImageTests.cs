using System.Buffers.Binary;
using Vmi.Linux.Btf;
using Vmi.Linux.Image;
using Xunit;

namespace Vmi.Linux.Tests.Image;

public class ElfImageTests
{
    private static readonly byte[] Btf = [0x9F, 0xEB, 1, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    [Fact]
    public void Reads_sections_and_segments()
    {
        byte[] file = ElfBuilder.Build((".text", [0x90, 0x90, 0xC3]), (".BTF", Btf));
        using ElfImage elf = ElfImage.FromBytes(file);
        Assert.Equal(62, elf.Machine);
        Assert.Equal(["", ".text", ".BTF", ".shstrtab"], elf.Sections.Select(s => s.Name));
        Assert.True(elf.TryGetSection(".text", out ReadOnlyMemory<byte> text));
        Assert.Equal([0x90, 0x90, 0xC3], text.ToArray());
        Assert.True(elf.TryGetSection(".BTF", out ReadOnlyMemory<byte> btf));
        Assert.Equal(1, BtfTypes.Parse(btf.Span).TypeCount);
        Assert.False(elf.TryGetSection(".data", out _));
        ElfSegment load = Assert.Single(elf.Segments);
        Assert.Equal(ElfSegment.Load, load.Type);
        Assert.Equal(0xffffffff81000000, load.VirtualAddress);
    }

    [Fact]
    public void File_and_bytes_agree()
    {
        byte[] file = ElfBuilder.Build((".BTF", Btf));
        string path = Path.GetTempFileName();
        try
        {
            File.WriteAllBytes(path, file);
            using ElfImage fromFile = ElfImage.Open(path);
            Assert.True(fromFile.TryGetSection(".BTF", out ReadOnlyMemory<byte> a));
            Assert.Equal(Btf, a.ToArray());
        }
        finally
        {
            File.Delete(path);
        }
    }

    public static TheoryData<string, int, ulong, int> Corruptions => new()
    {
        { "truncated header", -1, 0, 0 },
        { "bad magic", 0, 0x00, 1 },
        { "32-bit class", 4, 1, 1 },
        { "big-endian", 5, 2, 1 },
        { "section headers beyond the file", ElfBuilder.ShoffField, 0xFFFF_FFFF_FFFF_FF00, 8 },
        { "section count too large", ElfBuilder.ShnumField, 0xFFF0, 2 },
        { "shstrndx out of range", ElfBuilder.ShstrndxField, 0x7000, 2 },
        { "program headers beyond the file", 32, 0x7FFF_FFFF_FFFF_FFFF, 8 },
        { "bad shentsize", 58, 12, 2 },
    };

    [Theory]
    [MemberData(nameof(Corruptions))]
    public void Rejects_corrupt_headers(string what, int offset, ulong value, int width)
    {
        byte[] file = ElfBuilder.Build((".BTF", Btf));
        if (offset < 0)
            file = file[..40];
        else if (width == 1)
            file[offset] = (byte)value;
        else if (width == 2)
            BinaryPrimitives.WriteUInt16LittleEndian(file.AsSpan(offset), (ushort)value);
        else
            BinaryPrimitives.WriteUInt64LittleEndian(file.AsSpan(offset), value);
        Assert.NotNull(what);
        Assert.Throws<KernelImageException>(() => ElfImage.FromBytes(file));
    }

    [Fact]
    public void Rejects_a_section_outside_the_file()
    {
        byte[] file = ElfBuilder.Build((".BTF", Btf));
        long shoff = (long)BinaryPrimitives.ReadUInt64LittleEndian(file.AsSpan(ElfBuilder.ShoffField));
        // Section 1's sh_size: make it run far past the end.
        BinaryPrimitives.WriteUInt64LittleEndian(file.AsSpan((int)shoff + 64 + 32), 0xFFFF_FFFF_FFFF_FFF0);
        Assert.Throws<KernelImageException>(() => ElfImage.FromBytes(file));
    }

    [Fact]
    public void Rejects_a_name_outside_the_name_table()
    {
        byte[] file = ElfBuilder.Build((".BTF", Btf));
        long shoff = (long)BinaryPrimitives.ReadUInt64LittleEndian(file.AsSpan(ElfBuilder.ShoffField));
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan((int)shoff + 64), 0x10000);
        Assert.Throws<KernelImageException>(() => ElfImage.FromBytes(file));
    }

    [Fact]
    public void Random_corruption_only_throws_kernel_image_exception()
    {
        byte[] valid = ElfBuilder.Build((".text", new byte[100]), (".BTF", Btf));
        var rng = new Random(7);
        for (int i = 0; i < 3000; i++)
        {
            byte[] file = (byte[])valid.Clone();
            for (int f = rng.Next(1, 5); f > 0; f--)
                file[rng.Next(file.Length)] = (byte)rng.Next(256);
            try
            {
                using ElfImage elf = ElfImage.FromBytes(file);
                foreach (ElfSection s in elf.Sections)
                    elf.TryGetSection(s.Name, out _);
            }
            catch (KernelImageException)
            {
            }
        }
    }
}
