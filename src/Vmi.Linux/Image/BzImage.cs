using System.Buffers.Binary;
using System.IO.Compression;
using Vmi.Core;

namespace Vmi.Linux.Image;

/// <summary>Compression of a bzImage payload, detected by magic bytes.</summary>
public enum PayloadCompression
{
    Unknown,
    Gzip,
    Xz,
    Zstd,
    Lz4,
    Bzip2,
    Lzma,
    Lzo,
    /// <summary>An uncompressed ELF payload.</summary>
    None,
}

/// <summary>The parts of the x86 boot header (Documentation/arch/x86/boot.rst) needed to find the payload.</summary>
/// <param name="SetupSectors">setup_sects (0 means 4).</param>
/// <param name="Version">Boot protocol version, e.g. 0x020f.</param>
/// <param name="PayloadOffset">Absolute file offset of the compressed payload.</param>
/// <param name="PayloadLength">payload_length.</param>
public sealed record BzImageHeader(int SetupSectors, ushort Version, long PayloadOffset, int PayloadLength);

/// <summary>Unpacks the ELF vmlinux from an x86 bzImage.</summary>
public static class BzImage
{
    private const int SetupSectsOffset = 0x1f1;
    private const int HeaderMagicOffset = 0x202;
    private const int VersionOffset = 0x206;
    private const int PayloadOffsetOffset = 0x248;
    private const int PayloadLengthOffset = 0x24c;
    private const int MinHeaderBytes = 0x250;
    private const int ToolTimeoutMinutes = 5;

    /// <summary>Reads and validates the boot header of <paramref name="image"/>.</summary>
    /// <exception cref="KernelImageException">The image is not a bzImage with boot protocol ≥ 2.08 or its payload lies outside the file.</exception>
    public static BzImageHeader ReadHeader(ReadOnlySpan<byte> image)
    {
        if (image.Length < MinHeaderBytes)
            throw new KernelImageException($"bzImage: the file is {image.Length} bytes, too short for an x86 boot header");
        if (!image.Slice(HeaderMagicOffset, 4).SequenceEqual("HdrS"u8))
            throw new KernelImageException("bzImage: no 'HdrS' boot header signature at 0x202 (not an x86 bzImage)");
        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(image[VersionOffset..]);
        if (version < 0x0208)
            throw new KernelImageException($"bzImage: boot protocol {version >> 8}.{version & 0xff:d2} has no payload fields (needs 2.08+)");
        int setupSects = image[SetupSectsOffset];
        if (setupSects == 0)
            setupSects = 4;
        // The protected-mode part starts after the boot sector plus setup_sects 512-byte sectors.
        long protectedMode = (setupSects + 1L) * 512;
        uint payloadOffset = BinaryPrimitives.ReadUInt32LittleEndian(image[PayloadOffsetOffset..]);
        uint payloadLength = BinaryPrimitives.ReadUInt32LittleEndian(image[PayloadLengthOffset..]);
        long start = protectedMode + payloadOffset;
        if (payloadLength == 0 || start > image.Length || payloadLength > image.Length - start)
        {
            throw new KernelImageException(
                $"bzImage: payload [0x{start:x}, +0x{payloadLength:x}) lies outside the {image.Length}-byte file");
        }
        return new BzImageHeader(setupSects, version, start, (int)payloadLength);
    }

    /// <summary>Detects the compression of a payload from its first bytes.</summary>
    public static PayloadCompression DetectCompression(ReadOnlySpan<byte> payload)
    {
        if (payload.StartsWith((ReadOnlySpan<byte>)[0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]))
            return PayloadCompression.Xz;
        if (payload.StartsWith((ReadOnlySpan<byte>)[0x1F, 0x8B]))
            return PayloadCompression.Gzip;
        if (payload.StartsWith((ReadOnlySpan<byte>)[0x28, 0xB5, 0x2F, 0xFD]))
            return PayloadCompression.Zstd;
        // The kernel's lz4 uses the legacy frame format (lz4 -l); accept the modern frame magic too.
        if (payload.StartsWith((ReadOnlySpan<byte>)[0x02, 0x21, 0x4C, 0x18]) || payload.StartsWith((ReadOnlySpan<byte>)[0x04, 0x22, 0x4D, 0x18]))
            return PayloadCompression.Lz4;
        if (payload.StartsWith("BZh"u8))
            return PayloadCompression.Bzip2;
        if (payload.StartsWith((ReadOnlySpan<byte>)[0x89, 0x4C, 0x5A, 0x4F, 0x00]))
            return PayloadCompression.Lzo;
        if (payload.StartsWith((ReadOnlySpan<byte>)[0x7F, (byte)'E', (byte)'L', (byte)'F']))
            return PayloadCompression.None;
        // lzma_alone: properties byte 0x5d and a 32-bit dictionary size.
        if (payload.Length >= 13 && payload[0] == 0x5D && payload[1] == 0x00 && payload[2] == 0x00)
            return PayloadCompression.Lzma;
        return PayloadCompression.Unknown;
    }

    /// <summary>
    /// Extracts the ELF vmlinux from <paramref name="bzImagePath"/> into <paramref name="outputPath"/>. gzip is
    /// decompressed in-process; xz, zstd, lz4, bzip2, lzma and lzo use the host tools.
    /// </summary>
    /// <returns>The payload's compression.</returns>
    /// <exception cref="KernelImageException">The image is malformed or the payload does not decompress to an ELF file.</exception>
    /// <exception cref="LabException">A needed decompressor is not installed or fails.</exception>
    public static async Task<PayloadCompression> ExtractVmlinuxAsync(string bzImagePath, string outputPath,
        CancellationToken cancellationToken = default)
    {
        byte[] image = await File.ReadAllBytesAsync(bzImagePath, cancellationToken).ConfigureAwait(false);
        BzImageHeader header = ReadHeader(image);
        ReadOnlyMemory<byte> payload = image.AsMemory((int)header.PayloadOffset, header.PayloadLength);
        PayloadCompression compression = DetectCompression(payload.Span);
        string? outDir = Path.GetDirectoryName(Path.GetFullPath(outputPath));
        if (outDir is not null)
            Directory.CreateDirectory(outDir);
        switch (compression)
        {
            case PayloadCompression.Gzip:
                await GunzipAsync(payload, outputPath, cancellationToken).ConfigureAwait(false);
                break;
            case PayloadCompression.None:
                await File.WriteAllBytesAsync(outputPath, payload, cancellationToken).ConfigureAwait(false);
                break;
            case PayloadCompression.Unknown:
                throw new KernelImageException(
                    $"bzImage: unknown payload compression (first bytes {Convert.ToHexString(payload.Span[..Math.Min(8, payload.Length)])})");
            default:
                await DecompressWithToolAsync(compression, payload, outputPath, cancellationToken).ConfigureAwait(false);
                break;
        }
        byte[] magic = new byte[4];
        await using (FileStream check = File.OpenRead(outputPath))
        {
            if (await check.ReadAtLeastAsync(magic, 4, throwOnEndOfStream: false, cancellationToken).ConfigureAwait(false) < 4
                || !magic.AsSpan().SequenceEqual((ReadOnlySpan<byte>)[0x7F, (byte)'E', (byte)'L', (byte)'F']))
            {
                throw new KernelImageException($"bzImage: the {compression} payload did not decompress to an ELF file");
            }
        }
        return compression;
    }

    private static async Task GunzipAsync(ReadOnlyMemory<byte> payload, string outputPath, CancellationToken cancellationToken)
    {
        int pos = GzipDataStart(payload.Span);
        // ISIZE (the last 4 bytes) is the uncompressed length modulo 2^32.
        uint isize = BinaryPrimitives.ReadUInt32LittleEndian(payload.Span[^4..]);
        long written;
        try
        {
            await using var input = new DeflateStream(new MemoryStream(payload[pos..].ToArray(), writable: false), CompressionMode.Decompress);
            await using var output = new FileStream(outputPath, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20, useAsync: true);
            await input.CopyToAsync(output, cancellationToken).ConfigureAwait(false);
            written = output.Length;
        }
        catch (InvalidDataException ex)
        {
            throw new KernelImageException("bzImage: the gzip payload is corrupt: " + ex.Message, ex);
        }
        if ((uint)written != isize)
            throw new KernelImageException($"bzImage: gzip payload inflated to {written} bytes but its trailer says {isize}");
    }

    private static async Task DecompressWithToolAsync(PayloadCompression compression, ReadOnlyMemory<byte> payload, string outputPath,
        CancellationToken cancellationToken)
    {
        DirectoryInfo temp = Directory.CreateTempSubdirectory("vmi-bzimage-");
        try
        {
            // Every x86 compressor but gzip appends the 32-bit uncompressed size (size_append in scripts/Makefile.lib);
            // tools that reject trailing data get the payload without it.
            string input = Path.Combine(temp.FullName, "payload");
            string tool;
            List<string> args;
            string produced = Path.Combine(temp.FullName, "vmlinux");
            switch (compression)
            {
                case PayloadCompression.Xz:
                case PayloadCompression.Lzma:
                    tool = ExternalTool.Require("xz", "xz-utils");
                    input += compression == PayloadCompression.Xz ? ".xz" : ".lzma";
                    // --single-stream: stop after the first stream and ignore the appended size / padding.
                    args = ["-d", "-c", "--single-stream", compression == PayloadCompression.Xz ? "--format=xz" : "--format=lzma", input];
                    break;
                case PayloadCompression.Zstd:
                    tool = ExternalTool.Require("zstd", "zstd");
                    input += ".zst";
                    payload = StripAppendedSize(payload);
                    args = ["-d", "-q", "-f", input, "-o", produced];
                    break;
                case PayloadCompression.Lz4:
                    tool = ExternalTool.Require("lz4", "lz4");
                    input += ".lz4";
                    payload = StripAppendedSize(payload);
                    args = ["-d", "-q", "-f", input, produced];
                    break;
                case PayloadCompression.Bzip2:
                    tool = ExternalTool.Require("bzip2", "bzip2");
                    input += ".bz2";
                    payload = StripAppendedSize(payload);
                    args = ["-d", "-c", input];
                    break;
                case PayloadCompression.Lzo:
                    tool = ExternalTool.Require("lzop", "lzop");
                    input += ".lzo";
                    payload = StripAppendedSize(payload);
                    args = ["-d", "-f", "-o", produced, input];
                    break;
                default:
                    throw new KernelImageException($"bzImage: no decompressor for {compression}");
            }
            await File.WriteAllBytesAsync(input, payload, cancellationToken).ConfigureAwait(false);
            string hint = $"the bzImage payload ({compression}) could not be decompressed";
            if (args.Contains("-c"))
            {
                // The tool writes to stdout, which ExternalTool captures as text: let a shell send the binary to the file.
                string sh = ExternalTool.Require("sh", "dash");
                string command = $"exec {Quote(tool)} {string.Join(' ', args.Select(Quote))} > {Quote(produced)}";
                await ExternalTool.RunCheckedAsync(sh, ["-c", command], hint: hint, timeout: TimeSpan.FromMinutes(ToolTimeoutMinutes),
                    cancellationToken: cancellationToken).ConfigureAwait(false);
            }
            else
            {
                await ExternalTool.RunCheckedAsync(tool, args, hint: hint, timeout: TimeSpan.FromMinutes(ToolTimeoutMinutes),
                    cancellationToken: cancellationToken).ConfigureAwait(false);
            }
            File.Move(produced, outputPath, overwrite: true);
        }
        finally
        {
            try
            {
                temp.Delete(recursive: true);
            }
            catch (IOException)
            {
                // Best effort: a leftover temp directory is harmless.
            }
        }
    }

    /// <summary>Parses a gzip member header (RFC 1952) and returns where the raw deflate data starts.</summary>
    private static int GzipDataStart(ReadOnlySpan<byte> p)
    {
        // We inflate the raw deflate stream ourselves so that only the first member is read, and check ISIZE
        // (payload_length is exact for gzip: the kernel build appends nothing after the gzip trailer).
        if (p.Length < 18 || p[2] != 8)
            throw new KernelImageException("bzImage: the gzip payload header is truncated or not deflate");
        byte flags = p[3];
        int pos = 10;
        if ((flags & 0x04) != 0)
            pos += 2 + BinaryPrimitives.ReadUInt16LittleEndian(p[pos..]);
        for (int bit = 0x08; bit <= 0x10; bit <<= 1)
        {
            if ((flags & bit) == 0)
                continue;
            int nul = pos < p.Length ? p[pos..].IndexOf((byte)0) : -1;
            if (nul < 0)
                throw new KernelImageException("bzImage: unterminated gzip name/comment field");
            pos += nul + 1;
        }
        if ((flags & 0x02) != 0)
            pos += 2;
        if (pos >= p.Length - 8)
            throw new KernelImageException("bzImage: the gzip payload header runs past the payload");
        return pos;
    }

    private static ReadOnlyMemory<byte> StripAppendedSize(ReadOnlyMemory<byte> payload) =>
        payload.Length > 4 ? payload[..^4] : payload;

    private static string Quote(string s) => "'" + s.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
}
