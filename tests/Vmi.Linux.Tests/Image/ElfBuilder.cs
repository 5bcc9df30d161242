using System.Buffers.Binary;
using System.Text;

namespace Vmi.Linux.Tests.Image;

/// <summary>Writes a minimal little-endian ELF64 file: header, section data, .shstrtab, section headers, one PT_LOAD.</summary>
internal static class ElfBuilder
{
    public const int ShoffField = 40;
    public const int ShnumField = 60;
    public const int ShstrndxField = 62;

    public static byte[] Build(params (string Name, byte[] Data)[] sections)
    {
        var body = new MemoryStream();
        body.Write(new byte[64 + 56]); // ELF header + one program header
        var offsets = new List<long>();
        foreach (var (_, data) in sections)
        {
            offsets.Add(body.Length);
            body.Write(data);
        }
        var names = new MemoryStream();
        names.WriteByte(0);
        var nameOffsets = new List<uint>();
        foreach (string name in sections.Select(s => s.Name).Append(".shstrtab"))
        {
            nameOffsets.Add((uint)names.Length);
            names.Write(Encoding.ASCII.GetBytes(name));
            names.WriteByte(0);
        }
        long shstrOffset = body.Length;
        body.Write(names.ToArray());
        while (body.Length % 8 != 0)
            body.WriteByte(0);
        long shoff = body.Length;
        int shnum = sections.Length + 2;
        byte[] sh = new byte[shnum * 64];
        for (int i = 0; i <= sections.Length; i++)
        {
            Span<byte> e = sh.AsSpan((i + 1) * 64, 64);
            bool isStrtab = i == sections.Length;
            BinaryPrimitives.WriteUInt32LittleEndian(e, nameOffsets[i]);
            BinaryPrimitives.WriteUInt32LittleEndian(e[4..], isStrtab ? 3u : 1u); // SHT_STRTAB / SHT_PROGBITS
            BinaryPrimitives.WriteUInt64LittleEndian(e[24..], (ulong)(isStrtab ? shstrOffset : offsets[i]));
            BinaryPrimitives.WriteUInt64LittleEndian(e[32..], (ulong)(isStrtab ? names.Length : sections[i].Data.Length));
        }
        body.Write(sh);
        byte[] file = body.ToArray();
        Span<byte> h = file;
        "\u007fELF"u8.CopyTo(h);
        h[4] = 2; // ELFCLASS64
        h[5] = 1; // little-endian
        h[6] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(h[16..], 2);     // ET_EXEC
        BinaryPrimitives.WriteUInt16LittleEndian(h[18..], 62);    // EM_X86_64
        BinaryPrimitives.WriteUInt64LittleEndian(h[24..], 0xffffffff81000000);
        BinaryPrimitives.WriteUInt64LittleEndian(h[32..], 64);    // e_phoff
        BinaryPrimitives.WriteUInt64LittleEndian(h[ShoffField..], (ulong)shoff);
        BinaryPrimitives.WriteUInt16LittleEndian(h[52..], 64);
        BinaryPrimitives.WriteUInt16LittleEndian(h[54..], 56);
        BinaryPrimitives.WriteUInt16LittleEndian(h[56..], 1);
        BinaryPrimitives.WriteUInt16LittleEndian(h[58..], 64);
        BinaryPrimitives.WriteUInt16LittleEndian(h[ShnumField..], (ushort)shnum);
        BinaryPrimitives.WriteUInt16LittleEndian(h[ShstrndxField..], (ushort)(shnum - 1));
        Span<byte> ph = h.Slice(64, 56);
        BinaryPrimitives.WriteUInt32LittleEndian(ph, 1);             // PT_LOAD
        BinaryPrimitives.WriteUInt32LittleEndian(ph[4..], 5);        // R+X
        BinaryPrimitives.WriteUInt64LittleEndian(ph[8..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[16..], 0xffffffff81000000);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[24..], 0x1000000);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[32..], (ulong)file.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[40..], (ulong)file.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[48..], 0x200000);
        return file;
    }

    /// <summary>A fake bzImage: boot sector + <paramref name="setupSects"/> setup sectors, then the protected-mode part holding the payload.</summary>
    public static byte[] BzImage(byte[] payload, int setupSects = 4, int payloadOffsetInPm = 0x100, uint? payloadLength = null)
    {
        int pm = (setupSects + 1) * 512;
        byte[] image = new byte[pm + payloadOffsetInPm + payload.Length + 64];
        image[0x1f1] = (byte)setupSects;
        "HdrS"u8.CopyTo(image.AsSpan(0x202));
        BinaryPrimitives.WriteUInt16LittleEndian(image.AsSpan(0x206), 0x020f);
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(0x248), (uint)payloadOffsetInPm);
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(0x24c), payloadLength ?? (uint)payload.Length);
        payload.CopyTo(image, pm + payloadOffsetInPm);
        return image;
    }
}
