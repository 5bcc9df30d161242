using System.Buffers.Binary;

namespace Vmi.Signatures.Yara;

/// <summary>
/// The file offset of a PE or ELF entry point, for YARA's (deprecated) <c>entrypoint</c> keyword.
/// Every read is bounds-checked: a truncated or hostile header gives "undefined" (null).
/// </summary>
internal static class ExecutableFormats
{
    public static long? EntryPointOffset(ReadOnlySpan<byte> d)
    {
        if (d.Length >= 64 && d[0] == 'M' && d[1] == 'Z')
            return Pe(d);
        if (d.Length >= 52 && d[0] == 0x7f && d[1] == 'E' && d[2] == 'L' && d[3] == 'F')
            return Elf(d);
        return null;
    }

    private static uint U32(ReadOnlySpan<byte> d, long at) =>
        at >= 0 && at + 4 <= d.Length ? BinaryPrimitives.ReadUInt32LittleEndian(d[(int)at..]) : uint.MaxValue;

    private static ushort U16(ReadOnlySpan<byte> d, long at) =>
        at >= 0 && at + 2 <= d.Length ? BinaryPrimitives.ReadUInt16LittleEndian(d[(int)at..]) : ushort.MaxValue;

    private static ulong U64(ReadOnlySpan<byte> d, long at) =>
        at >= 0 && at + 8 <= d.Length ? BinaryPrimitives.ReadUInt64LittleEndian(d[(int)at..]) : ulong.MaxValue;

    private static long? Pe(ReadOnlySpan<byte> d)
    {
        long nt = U32(d, 0x3c);
        if (nt <= 0 || nt + 24 > d.Length || U32(d, nt) != 0x00004550)
            return null;
        int sections = U16(d, nt + 6);
        int optSize = U16(d, nt + 20);
        uint rva = U32(d, nt + 24 + 16);
        if (rva == uint.MaxValue)
            return null;
        long table = nt + 24 + optSize;
        long best = -1;
        uint bestVa = 0;
        for (int i = 0; i < Math.Min(sections, 96); i++)
        {
            long s = table + (i * 40L);
            if (s + 40 > d.Length)
                break;
            uint va = U32(d, s + 12), raw = U32(d, s + 16), ptr = U32(d, s + 20), vsize = U32(d, s + 8);
            uint size = Math.Max(vsize, raw);
            if (rva >= va && rva - va < size && va >= bestVa)
            {
                best = ptr + (rva - va);
                bestVa = va;
            }
        }
        if (best < 0)
            return rva < d.Length ? rva : null;
        return best < d.Length ? best : null;
    }

    private static long? Elf(ReadOnlySpan<byte> d)
    {
        bool is64 = d[4] == 2;
        if (d[5] != 1)
            return null; // big-endian ELF: not handled
        int type = U16(d, 16);
        ulong entry = is64 ? U64(d, 24) : U32(d, 24);
        if (type == 2)
        {
            // ET_EXEC: through the program headers.
            ulong phoff = is64 ? U64(d, 32) : U32(d, 28);
            int phentsize = U16(d, is64 ? 54 : 42), phnum = U16(d, is64 ? 56 : 44);
            for (int i = 0; i < Math.Min(phnum, 256); i++)
            {
                long p = (long)phoff + ((long)i * phentsize);
                if (phoff > (ulong)d.Length || p + (is64 ? 56 : 32) > d.Length)
                    break;
                uint ptype = U32(d, p);
                ulong off = is64 ? U64(d, p + 8) : U32(d, p + 4);
                ulong va = is64 ? U64(d, p + 16) : U32(d, p + 8);
                ulong memsz = is64 ? U64(d, p + 40) : U32(d, p + 20);
                if (ptype == 1 && entry >= va && entry - va < memsz)
                {
                    ulong r = entry - va + off;
                    return r < (ulong)d.Length ? (long)r : null;
                }
            }
            return null;
        }
        // Other types: through the section headers.
        ulong shoff = is64 ? U64(d, 40) : U32(d, 32);
        int shentsize = U16(d, is64 ? 58 : 46), shnum = U16(d, is64 ? 60 : 48);
        for (int i = 0; i < Math.Min(shnum, 1024); i++)
        {
            long s = (long)shoff + ((long)i * shentsize);
            if (shoff > (ulong)d.Length || s + (is64 ? 64 : 40) > d.Length)
                break;
            uint stype = U32(d, s + 4);
            ulong addr = is64 ? U64(d, s + 16) : U32(d, s + 12);
            ulong off = is64 ? U64(d, s + 24) : U32(d, s + 16);
            ulong size = is64 ? U64(d, s + 32) : U32(d, s + 20);
            if (stype != 8 && addr != 0 && entry >= addr && entry - addr < size)
            {
                ulong r = entry - addr + off;
                return r < (ulong)d.Length ? (long)r : null;
            }
        }
        return null;
    }
}
