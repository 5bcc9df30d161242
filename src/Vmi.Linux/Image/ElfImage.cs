using System.Buffers.Binary;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace Vmi.Linux.Image;

/// <summary>One ELF64 section header.</summary>
public sealed record ElfSection(int Index, string Name, uint Type, ulong Flags, ulong Address, ulong Offset, ulong Size, uint Link, uint Info)
{
    /// <summary>SHT_NOBITS: occupies no file space (.bss).</summary>
    public const uint NoBits = 8;
    public bool HasFileData => Type != NoBits && Type != 0;
}

/// <summary>One ELF64 program header.</summary>
public sealed record ElfSegment(uint Type, uint Flags, ulong Offset, ulong VirtualAddress, ulong PhysicalAddress, ulong FileSize, ulong MemorySize, ulong Align)
{
    public const uint Load = 1;
}

/// <summary>
/// A minimal little-endian ELF64 reader (vmlinux) over a file or a byte array. Headers are validated as
/// hostile input: every table and section must lie inside the file; section data is read on demand.
/// </summary>
public sealed class ElfImage : IDisposable
{
    private const int HeaderSize = 64;
    private const int SectionHeaderSize = 64;
    private const int ProgramHeaderSize = 56;
    private const ushort ShnXindex = 0xffff;

    private readonly ReadOnlyMemory<byte> _bytes;
    private readonly SafeFileHandle? _file;
    private readonly long _length;

    /// <summary>File length in bytes.</summary>
    public long Length => _length;
    /// <summary>e_machine (62 = x86-64).</summary>
    public ushort Machine { get; private set; }
    public ushort FileType { get; private set; }
    public ulong Entry { get; private set; }
    public IReadOnlyList<ElfSection> Sections { get; private set; } = [];
    public IReadOnlyList<ElfSegment> Segments { get; private set; } = [];

    private ElfImage(ReadOnlyMemory<byte> bytes)
    {
        _bytes = bytes;
        _length = bytes.Length;
        Load();
    }

    private ElfImage(SafeFileHandle file)
    {
        _file = file;
        _length = RandomAccess.GetLength(file);
        Load();
    }

    /// <summary>Parses an ELF image held in memory.</summary>
    /// <exception cref="KernelImageException">The image is not a valid little-endian ELF64 file.</exception>
    public static ElfImage FromBytes(ReadOnlyMemory<byte> bytes) => new(bytes);

    /// <summary>Opens an ELF file; section data is read from the file on demand.</summary>
    /// <exception cref="KernelImageException">The file is not a valid little-endian ELF64 file.</exception>
    public static ElfImage Open(string path)
    {
        SafeFileHandle handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        try
        {
            return new ElfImage(handle);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    public void Dispose() => _file?.Dispose();

    /// <summary>The first section named <paramref name="name"/>.</summary>
    public bool TryGetSectionHeader(string name, out ElfSection section)
    {
        foreach (ElfSection s in Sections)
        {
            if (s.Name == name)
            {
                section = s;
                return true;
            }
        }
        section = null!;
        return false;
    }

    /// <summary>The file contents of the first section named <paramref name="name"/> (empty for SHT_NOBITS).</summary>
    /// <exception cref="KernelImageException">The section is larger than 2 GiB.</exception>
    public bool TryGetSection(string name, out ReadOnlyMemory<byte> data)
    {
        if (!TryGetSectionHeader(name, out ElfSection s))
        {
            data = default;
            return false;
        }
        data = s.HasFileData ? Read(s.Offset, s.Size, $"section {name}") : ReadOnlyMemory<byte>.Empty;
        return true;
    }

    /// <summary>Reads <paramref name="size"/> bytes at file offset <paramref name="offset"/>, bounds-checked.</summary>
    /// <exception cref="KernelImageException">The range lies outside the file or exceeds 2 GiB.</exception>
    public ReadOnlyMemory<byte> Read(ulong offset, ulong size, string what = "range")
    {
        CheckRange(offset, size, what);
        if (size > int.MaxValue)
            throw new KernelImageException($"ELF: {what} is {size} bytes, too large to read");
        if (_file is null)
            return _bytes.Slice((int)offset, (int)size);
        byte[] buffer = new byte[size];
        int done = 0;
        while (done < buffer.Length)
        {
            int n = RandomAccess.Read(_file, buffer.AsSpan(done), (long)offset + done);
            if (n <= 0)
                throw new KernelImageException($"ELF: the file ended while reading {what}");
            done += n;
        }
        return buffer;
    }

    private void CheckRange(ulong offset, ulong size, string what)
    {
        // Overflow-safe: offset + size may wrap, so compare against the remaining length.
        if (offset > (ulong)_length || size > (ulong)_length - offset)
            throw new KernelImageException($"ELF: {what} [0x{offset:x}, +0x{size:x}) lies outside the {_length}-byte file");
    }

    private void Load()
    {
        if (_length < HeaderSize)
            throw new KernelImageException($"ELF: the file is {_length} bytes, shorter than an ELF64 header");
        ReadOnlySpan<byte> h = Read(0, HeaderSize, "the ELF header").Span;
        if (h[0] != 0x7f || h[1] != (byte)'E' || h[2] != (byte)'L' || h[3] != (byte)'F')
            throw new KernelImageException("ELF: bad magic (not an ELF file)");
        if (h[4] != 2)
            throw new KernelImageException($"ELF: class {h[4]} is not ELFCLASS64");
        if (h[5] != 1)
            throw new KernelImageException($"ELF: data encoding {h[5]} is not little-endian");
        FileType = BinaryPrimitives.ReadUInt16LittleEndian(h[16..]);
        Machine = BinaryPrimitives.ReadUInt16LittleEndian(h[18..]);
        Entry = BinaryPrimitives.ReadUInt64LittleEndian(h[24..]);
        ulong phoff = BinaryPrimitives.ReadUInt64LittleEndian(h[32..]);
        ulong shoff = BinaryPrimitives.ReadUInt64LittleEndian(h[40..]);
        ushort phentsize = BinaryPrimitives.ReadUInt16LittleEndian(h[54..]);
        uint phnum = BinaryPrimitives.ReadUInt16LittleEndian(h[56..]);
        ushort shentsize = BinaryPrimitives.ReadUInt16LittleEndian(h[58..]);
        ulong shnum = BinaryPrimitives.ReadUInt16LittleEndian(h[60..]);
        uint shstrndx = BinaryPrimitives.ReadUInt16LittleEndian(h[62..]);

        if (phnum != 0)
        {
            if (phentsize != ProgramHeaderSize)
                throw new KernelImageException($"ELF: e_phentsize {phentsize} is not {ProgramHeaderSize}");
            ReadOnlySpan<byte> ph = Read(phoff, phnum * ProgramHeaderSize, "the program header table").Span;
            var segments = new ElfSegment[phnum];
            for (int i = 0; i < segments.Length; i++)
            {
                ReadOnlySpan<byte> e = ph.Slice(i * ProgramHeaderSize, ProgramHeaderSize);
                segments[i] = new ElfSegment(
                    BinaryPrimitives.ReadUInt32LittleEndian(e), BinaryPrimitives.ReadUInt32LittleEndian(e[4..]),
                    BinaryPrimitives.ReadUInt64LittleEndian(e[8..]), BinaryPrimitives.ReadUInt64LittleEndian(e[16..]),
                    BinaryPrimitives.ReadUInt64LittleEndian(e[24..]), BinaryPrimitives.ReadUInt64LittleEndian(e[32..]),
                    BinaryPrimitives.ReadUInt64LittleEndian(e[40..]), BinaryPrimitives.ReadUInt64LittleEndian(e[48..]));
            }
            Segments = segments;
        }

        if (shoff == 0)
            return;
        if (shentsize != SectionHeaderSize)
            throw new KernelImageException($"ELF: e_shentsize {shentsize} is not {SectionHeaderSize}");
        // With many sections, e_shnum / e_shstrndx live in section header 0 (sh_size / sh_link).
        ReadOnlySpan<byte> first = Read(shoff, SectionHeaderSize, "section header 0").Span;
        if (shnum == 0)
            shnum = BinaryPrimitives.ReadUInt64LittleEndian(first[32..]);
        if (shstrndx == ShnXindex)
            shstrndx = BinaryPrimitives.ReadUInt32LittleEndian(first[40..]);
        if (shnum == 0)
            return;
        if (shnum > (ulong)_length / SectionHeaderSize)
            throw new KernelImageException($"ELF: {shnum} section headers cannot fit in the {_length}-byte file");
        ReadOnlySpan<byte> sh = Read(shoff, shnum * SectionHeaderSize, "the section header table").Span;
        if (shstrndx >= shnum)
            throw new KernelImageException($"ELF: e_shstrndx {shstrndx} is not below the section count {shnum}");
        ReadOnlySpan<byte> names = ReadOnlySpan<byte>.Empty;
        ReadOnlySpan<byte> shstr = sh.Slice((int)shstrndx * SectionHeaderSize, SectionHeaderSize);
        if (shstrndx != 0 && BinaryPrimitives.ReadUInt32LittleEndian(shstr[4..]) != ElfSection.NoBits)
        {
            names = Read(BinaryPrimitives.ReadUInt64LittleEndian(shstr[24..]), BinaryPrimitives.ReadUInt64LittleEndian(shstr[32..]),
                "the section name table").Span;
        }
        var sections = new ElfSection[shnum];
        for (int i = 0; i < sections.Length; i++)
        {
            ReadOnlySpan<byte> e = sh.Slice(i * SectionHeaderSize, SectionHeaderSize);
            uint nameOff = BinaryPrimitives.ReadUInt32LittleEndian(e);
            uint type = BinaryPrimitives.ReadUInt32LittleEndian(e[4..]);
            ulong offset = BinaryPrimitives.ReadUInt64LittleEndian(e[24..]);
            ulong size = BinaryPrimitives.ReadUInt64LittleEndian(e[32..]);
            string name = SectionName(names, nameOff, i);
            if (i != 0 && type != ElfSection.NoBits && type != 0)
                CheckRange(offset, size, $"section {i} ({name})");
            sections[i] = new ElfSection(i, name, type, BinaryPrimitives.ReadUInt64LittleEndian(e[8..]),
                BinaryPrimitives.ReadUInt64LittleEndian(e[16..]), offset, size,
                BinaryPrimitives.ReadUInt32LittleEndian(e[40..]), BinaryPrimitives.ReadUInt32LittleEndian(e[44..]));
        }
        Sections = sections;
    }

    private static string SectionName(ReadOnlySpan<byte> names, uint offset, int index)
    {
        if (offset == 0 && names.IsEmpty)
            return string.Empty;
        if (offset >= (uint)names.Length)
            throw new KernelImageException($"ELF: section {index} has name offset {offset} outside the name table");
        ReadOnlySpan<byte> s = names[(int)offset..];
        int end = s.IndexOf((byte)0);
        if (end < 0)
            throw new KernelImageException($"ELF: section {index}'s name is not NUL-terminated");
        return Encoding.UTF8.GetString(s[..end]);
    }
}
