using System.Buffers.Binary;
using System.IO.Compression;
using Vmi.Core;
using Vmi.Linux.Btf;
using Vmi.Linux.Image;
using Xunit;

namespace Vmi.Linux.Tests.Image;

public sealed class BzImageTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("vmi-bzimage-tests-");

    public void Dispose() => _dir.Delete(recursive: true);

    private static readonly byte[] Elf = ElfBuilder.Build((".text", Enumerable.Range(0, 5000).Select(i => (byte)(i * 7)).ToArray()));

    [Fact]
    public void Header_locates_the_payload_after_the_setup_sectors()
    {
        byte[] image = ElfBuilder.BzImage([1, 2, 3, 4], setupSects: 27, payloadOffsetInPm: 0x2cc);
        BzImageHeader h = BzImage.ReadHeader(image);
        Assert.Equal(27, h.SetupSectors);
        Assert.Equal((28 * 512) + 0x2cc, h.PayloadOffset);
        Assert.Equal(4, h.PayloadLength);
        Assert.Equal(0x020f, h.Version);
    }

    [Fact]
    public void Zero_setup_sects_means_four()
    {
        byte[] image = ElfBuilder.BzImage([1, 2, 3, 4], setupSects: 4);
        image[0x1f1] = 0;
        Assert.Equal(4, BzImage.ReadHeader(image).SetupSectors);
    }

    [Fact]
    public void Rejects_bad_headers()
    {
        Assert.Throws<KernelImageException>(() => BzImage.ReadHeader(new byte[100]));
        Assert.Throws<KernelImageException>(() => BzImage.ReadHeader(new byte[4096])); // no HdrS
        byte[] image = ElfBuilder.BzImage([1, 2, 3, 4], payloadLength: 0x7FFF_FFFF);
        Assert.Throws<KernelImageException>(() => BzImage.ReadHeader(image));
        image = ElfBuilder.BzImage([1, 2, 3, 4]);
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(0x248), 0xFFFF_FFF0);
        Assert.Throws<KernelImageException>(() => BzImage.ReadHeader(image));
        image = ElfBuilder.BzImage([1, 2, 3, 4]);
        BinaryPrimitives.WriteUInt16LittleEndian(image.AsSpan(0x206), 0x0204);
        Assert.Throws<KernelImageException>(() => BzImage.ReadHeader(image));
    }

    [Theory]
    [InlineData(new byte[] { 0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00, 0x00 }, PayloadCompression.Xz)]
    [InlineData(new byte[] { 0x1F, 0x8B, 0x08, 0x00 }, PayloadCompression.Gzip)]
    [InlineData(new byte[] { 0x28, 0xB5, 0x2F, 0xFD, 0x00 }, PayloadCompression.Zstd)]
    [InlineData(new byte[] { 0x02, 0x21, 0x4C, 0x18, 0x00 }, PayloadCompression.Lz4)]
    [InlineData(new byte[] { (byte)'B', (byte)'Z', (byte)'h', (byte)'9' }, PayloadCompression.Bzip2)]
    [InlineData(new byte[] { 0x89, 0x4C, 0x5A, 0x4F, 0x00, 0x0D }, PayloadCompression.Lzo)]
    [InlineData(new byte[] { 0x7F, (byte)'E', (byte)'L', (byte)'F' }, PayloadCompression.None)]
    [InlineData(new byte[] { 0x12, 0x34 }, PayloadCompression.Unknown)]
    public void Detects_compression_by_magic(byte[] payload, PayloadCompression expected) =>
        Assert.Equal(expected, BzImage.DetectCompression(payload));

    [Fact]
    public async Task Gzip_payload_is_inflated_in_process()
    {
        var gz = new MemoryStream();
        using (var z = new GZipStream(gz, CompressionLevel.Optimal, leaveOpen: true))
            z.Write(Elf);
        byte[] payload = gz.ToArray(); // the kernel appends nothing to gzip: its trailer's ISIZE is last
        string bz = Path.Combine(_dir.FullName, "bz-gzip");
        await File.WriteAllBytesAsync(bz, ElfBuilder.BzImage(payload));
        string output = Path.Combine(_dir.FullName, "out", "vmlinux");
        Assert.Equal(PayloadCompression.Gzip, await BzImage.ExtractVmlinuxAsync(bz, output));
        Assert.Equal(Elf, await File.ReadAllBytesAsync(output));
    }

    [Fact]
    public async Task Corrupt_gzip_payload_is_a_kernel_image_exception()
    {
        byte[] payload = [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        string bz = Path.Combine(_dir.FullName, "bz-bad");
        await File.WriteAllBytesAsync(bz, ElfBuilder.BzImage(payload));
        await Assert.ThrowsAsync<KernelImageException>(() => BzImage.ExtractVmlinuxAsync(bz, Path.Combine(_dir.FullName, "o")));
    }

    [Fact]
    public async Task Xz_payload_with_appended_size_uses_xz_single_stream()
    {
        string xz = ExternalTool.Require("xz", "xz-utils");
        string raw = Path.Combine(_dir.FullName, "elf");
        await File.WriteAllBytesAsync(raw, Elf);
        await ExternalTool.RunCheckedAsync(xz, ["-k", "-f", "--check=crc32", raw]);
        byte[] size = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(size, (uint)Elf.Length);
        byte[] payload = [.. await File.ReadAllBytesAsync(raw + ".xz"), .. size]; // like the kernel's size_append
        string bz = Path.Combine(_dir.FullName, "bz-xz");
        await File.WriteAllBytesAsync(bz, ElfBuilder.BzImage(payload));
        string output = Path.Combine(_dir.FullName, "vmlinux-xz");
        Assert.Equal(PayloadCompression.Xz, await BzImage.ExtractVmlinuxAsync(bz, output));
        Assert.Equal(Elf, await File.ReadAllBytesAsync(output));
    }

    [Fact]
    public async Task Unknown_payload_is_rejected()
    {
        string bz = Path.Combine(_dir.FullName, "bz-unknown");
        await File.WriteAllBytesAsync(bz, ElfBuilder.BzImage([0x12, 0x34, 0x56, 0x78, 0x9A]));
        var e = await Assert.ThrowsAsync<KernelImageException>(() => BzImage.ExtractVmlinuxAsync(bz, Path.Combine(_dir.FullName, "o")));
        Assert.Contains("unknown payload compression", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Lab_kernel_extracts_to_an_x86_64_vmlinux_with_btf()
    {
        string vmlinux = await LabKernel.VmlinuxAsync();
        using ElfImage elf = ElfImage.Open(vmlinux);
        Assert.Equal(62, elf.Machine);
        Assert.Contains(elf.Segments, s => s.Type == ElfSegment.Load);
        Assert.True(elf.TryGetSection(".BTF", out ReadOnlyMemory<byte> btf));
        BtfTypes types = BtfTypes.Parse(btf.Span);
        Assert.True(types.TypeCount > 50_000);
        Assert.True(types.SizeOf("task_struct") > 1000);
        BzImageHeader h = BzImage.ReadHeader(await File.ReadAllBytesAsync(LabKernel.BzImagePath()));
        Assert.Equal(PayloadCompression.Xz, BzImage.DetectCompression((await File.ReadAllBytesAsync(LabKernel.BzImagePath())).AsSpan((int)h.PayloadOffset, 8)));
    }
}
