using System.Buffers.Binary;
using System.Text;

namespace Vmi.Signatures.Tests.Differential;

/// <summary>
/// The scan targets of the differential corpus, built in code so the repository holds no opaque blobs.
/// Each input is laid out for the rule files in Corpus/ (their header comments name the inputs they expect);
/// every byte is deterministic.
/// </summary>
internal static class CorpusInputs
{
    /// <summary>File name → builder. Order is the order cases use them in.</summary>
    public static readonly IReadOnlyDictionary<string, Func<byte[]>> Files = new Dictionary<string, Func<byte[]>>
    {
        ["text.bin"] = Text,
        ["encoded.bin"] = Encoded,
        ["hex.bin"] = Hex,
        ["regex.bin"] = Regex,
        ["pe.bin"] = Pe,
        ["elf.bin"] = Elf,
        ["repeat.bin"] = Repeat,
        ["tiny.bin"] = () => [0x4D],
        ["empty.bin"] = () => [],
    };

    private static readonly Lazy<string> Root = new(WriteAll, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Folder holding every input plus the <c>tree/</c> folder used by directory scans.</summary>
    public static string Directory => Root.Value;

    public static string PathOf(string name) => Path.Combine(Directory, name);

    private static string WriteAll()
    {
        string dir = Path.Combine(AppContext.BaseDirectory, "CorpusInputs");
        if (System.IO.Directory.Exists(dir))
            System.IO.Directory.Delete(dir, recursive: true);
        System.IO.Directory.CreateDirectory(dir);
        foreach (var (name, build) in Files)
            File.WriteAllBytes(Path.Combine(dir, name), build());

        // A small tree for folder scans: yara without -r only scans the top level, with -r everything.
        string tree = Path.Combine(dir, "tree");
        System.IO.Directory.CreateDirectory(Path.Combine(tree, "sub", "deeper"));
        File.WriteAllBytes(Path.Combine(tree, "top_text.bin"), Text());
        File.WriteAllBytes(Path.Combine(tree, "top_pe.bin"), Pe());
        File.WriteAllBytes(Path.Combine(tree, "sub", "repeat.bin"), Repeat());
        File.WriteAllBytes(Path.Combine(tree, "sub", "empty.bin"), []);
        File.WriteAllBytes(Path.Combine(tree, "sub", "deeper", "regex.bin"), Regex());
        File.WriteAllBytes(Path.Combine(tree, "sub", "deeper", "elf.bin"), Elf());
        return dir;
    }

    private static byte[] Text()
    {
        var b = new Builder();
        b.Ascii("Hello World! This is a TEST of the scanner.\n");
        b.Ascii("helloworld xhello hello_world (hello) HELLO hello.\n");
        b.Wide("PassWord").Ascii("\n");
        b.Ascii("Both ").Wide("Both").Ascii("\n");
        b.Ascii("MiXeD CaSe NoCaSe\n");
        b.Wide(" fullword ").Wide("xfullwordx").Ascii(" fullwordy\n");
        b.Ascii("private_marker visible_marker\n");
        b.Ascii("say \"hi\" C:\\Windows\\System32\n");
        b.Ascii("\tTab\tSeparated\r\n");
        b.Ascii("line one\nline two\n");
        b.Bytes(0x00, 0x01, 0x02, 0x03, 0x7F, 0x80, 0xFE, 0xFF).Ascii("ABCD\n");
        b.Ascii(" COMBO ").Wide(" Combo ").Ascii(" combos ").Wide("xcombo").Ascii("\n");
        b.Utf8("café € naïve\n");
        for (int i = 0; i < 32; i++)
            b.Bytes((byte)i);
        for (int i = 0x7F; i < 0x100; i += 3)
            b.Bytes((byte)i);
        b.Ascii("\nEnd of text input.");
        return b.ToArray();
    }

    private static byte[] Encoded()
    {
        const string program = "This program cannot";
        const string custom = "!@#$%^&*(){}[].,|ABCDEFGHIJ\tLMNOPQRSTUVWXYZabcdefghijklmnopqrstu";
        var b = new Builder();
        b.Ascii("encoded input\n");
        foreach (byte key in new byte[] { 0x00, 0x01, 0x20, 0x41, 0xE0 })
            b.Bytes(Xor(Encoding.ASCII.GetBytes(program), key)).Ascii(" | ");
        b.Bytes(Xor(Utf16("wide xor secret"), 0x55)).Ascii(" | ");
        b.Bytes(Xor(Encoding.ASCII.GetBytes("dual xor secret"), 0x12)).Ascii(" | ");
        b.Bytes(Xor(Utf16("dual xor secret"), 0x34)).Ascii(" | ");
        b.Ascii("ab").Bytes(Xor(Encoding.ASCII.GetBytes("fwkey"), 0x10)).Ascii("cd | ");
        foreach (string prefix in new[] { "", "x", "xy" })
            b.Ascii(Base64(prefix + "This program cannot be run")).Ascii(" | ");
        b.Ascii(Base64(Utf16("wide then base64"))).Ascii(" | ");
        b.Wide(Base64("base64wide payload")).Ascii(" | ");
        b.Ascii(Base64("both encodings here")).Ascii(" | ").Wide(Base64("both encodings here")).Ascii(" | ");
        b.Ascii(Translate(Base64("custom alphabet text"), custom)).Ascii(" | ");
        b.Wide(Translate(Base64("custom wide alphabet"), custom)).Ascii(" | ");
        b.Ascii("Hello World\n");
        return b.ToArray();
    }

    private static byte[] Hex()
    {
        var rng = new SplitMix64(0x4E58);
        byte[] d = new byte[12 * 1024];
        rng.Fill(d);
        void Put(int offset, params byte[] bytes) => bytes.CopyTo(d, offset);
        Put(0, 0x4D, 0x5A, 0x90, 0x00);
        Put(0x100, 0xDE, 0xAD, 0xBE, 0xEF);
        Put(0x100 + 4 + 300, 0xCA, 0xFE, 0xBA, 0xBE);
        Put(0x300, 0xE8, 0x11, 0x22, 0x33, 0x44, 0x5D, 0xC3);
        Put(0x320, 0x41, 0x52, 0x6A);
        Put(0x328, 0x12, 0x02, 0x34);
        Put(0x340, 0xAA, 0xBB, 0, 0, 0, 0, 0xCC, 0xDD);
        Put(0x360, 0x11, 0x22, 0, 0, 0, 0x33, 0x44);
        Put(0x380, 0x55, 0x66);
        Put(0x380 + 2 + 20, 0x77, 0x88);
        Put(0x3C0, 0x99, 0xAA);
        Put(0x3C0 + 2 + 100, 0xBB, 0xCC);
        Put(0x500, 0x0F, 0x1E, 0x2D);
        Put(0x500 + 3 + 300, 0x3C, 0x4B, 0x5A);
        Put(0x700, 0xF1, 0xF2, 0xF3);
        Put(0x700 + 3 + 2000, 0xF4, 0xF5, 0xF6);
        Put(0x1000, 0x21, 0x43, 0, 0, 0, 0x65, 0x87);
        Put(0x1020, 0x01, 0x02, 0x03, 0x05);
        Put(0x1030, 0x01, 0x02, 0x04, 0x05);
        Put(0x1038, 0x01, 0x02, 0x06, 0x05);
        Put(0x1040, 0xA1, 0xB2, 0x07, 0x00, 0xA1, 0xC3, 0xD4, 0x07, 0x00, 0xA1, 0xC3, 0xE5, 0x07, 0x00, 0xA1, 0xF6, 0x99, 0x07);
        Put(0x1060, 0x5E, 0x6F, 0x00, 0x00, 0x7A, 0xAD, 0x00, 0x5E, 0x8B, 0x9C, 0xAD);
        Put(0x1080, Encoding.ASCII.GetBytes("Hello World"));
        Put(0x1100, 0x7F, 0x45, 0x4C, 0x46);
        Put(d.Length - 4, 0x45, 0x4E, 0x44, 0x21);
        return d;
    }

    private static byte[] Regex()
    {
        var b = new Builder();
        b.Ascii("REGEX-INPUT\n");
        b.Ascii("GET /index.php?id=1 HTTP/1.1\n");
        b.Ascii("contact: alice@example.com, bob.smith@test.org\n");
        b.Ascii("url=https://www.example.com/path key=abcdef123;x\n");
        b.Ascii("]-x ]]- A5_ B9x\n");
        b.Ascii("user:admin token   abc123 id=123x\n");
        b.Ascii("cat concatenate scatter cat.\n");
        b.Ascii("line notatstart\n");
        b.Ascii("<tag>one</tag><tag>two</tag>\n");
        b.Ascii("abbbc ac colour color xxy y\n");
        b.Ascii("zzzzz qqqq mmm NyyN NN kkkkk\n");
        b.Ascii("run cmd.exe then POWERSHELL.EXE or PowerShell.exe\n");
        b.Ascii("see https://test.org/ and http://example.com\n");
        b.Bytes(0x00, 0x01, 0x03).Ascii(" col1\tcol2 first\nsecond C:\\temp\\ \n");
        b.Ascii("MixedCase mixedcase MIXEDCASE\n");
        b.Ascii("begin\nend  BEGIN\nEND\n");
        b.Wide("Wide123Regex").Ascii("\n");
        b.Ascii("dual7regex ").Wide("dual8regex").Ascii("\n");
        b.Ascii(" admin42 xadmin admin\n");
        b.Ascii("secret-0123abcd visible-89abcdef\n");
        b.Ascii("192.0.2.1 198.51.100.254 999.1.1.1 256.1.1.1\n");
        b.Ascii("a/b Hello World\n");
        b.Bytes(0xFE, 0x41, 0xFF, 0xFE, 0x0A, 0xFF).Ascii("\n");
        b.Ascii("TRAILER");
        return b.ToArray();
    }

    /// <summary>A minimal PE32 whose entry point (RVA 0x1010 in .text, raw 0x200) is file offset 0x210.</summary>
    private static byte[] Pe()
    {
        byte[] d = new byte[1024];
        var s = d.AsSpan();
        s[0] = 0x4D; s[1] = 0x5A; s[2] = 0x90; s[3] = 0x00;
        BinaryPrimitives.WriteInt32LittleEndian(s[0x3C..], 0x80);
        new byte[] { 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, 0x00, 0x00 }.CopyTo(s[0x40..]);
        Encoding.ASCII.GetBytes("This program cannot be run in DOS mode.\r\r\n$").CopyTo(s[0x4C..]);
        Encoding.ASCII.GetBytes("PE\0\0").CopyTo(s[0x80..]);
        BinaryPrimitives.WriteUInt16LittleEndian(s[0x84..], 0x14C);    // Machine: i386
        BinaryPrimitives.WriteUInt16LittleEndian(s[0x86..], 1);        // NumberOfSections
        BinaryPrimitives.WriteUInt16LittleEndian(s[0x94..], 0xE0);     // SizeOfOptionalHeader
        BinaryPrimitives.WriteUInt16LittleEndian(s[0x96..], 0x102);    // Characteristics
        const int opt = 0x98;
        BinaryPrimitives.WriteUInt16LittleEndian(s[opt..], 0x10B);                 // PE32
        BinaryPrimitives.WriteUInt32LittleEndian(s[(opt + 16)..], 0x1010);         // AddressOfEntryPoint
        BinaryPrimitives.WriteUInt32LittleEndian(s[(opt + 28)..], 0x400000);       // ImageBase
        BinaryPrimitives.WriteUInt32LittleEndian(s[(opt + 32)..], 0x1000);         // SectionAlignment
        BinaryPrimitives.WriteUInt32LittleEndian(s[(opt + 36)..], 0x200);          // FileAlignment
        BinaryPrimitives.WriteUInt32LittleEndian(s[(opt + 92)..], 16);             // NumberOfRvaAndSizes
        const int sec = opt + 0xE0;
        Encoding.ASCII.GetBytes(".text").CopyTo(s[sec..]);
        BinaryPrimitives.WriteUInt32LittleEndian(s[(sec + 8)..], 0x1000);   // VirtualSize
        BinaryPrimitives.WriteUInt32LittleEndian(s[(sec + 12)..], 0x1000);  // VirtualAddress
        BinaryPrimitives.WriteUInt32LittleEndian(s[(sec + 16)..], 0x200);   // SizeOfRawData
        BinaryPrimitives.WriteUInt32LittleEndian(s[(sec + 20)..], 0x200);   // PointerToRawData
        new byte[] { 0x55, 0x8B, 0xEC, 0xE8, 0x10, 0x20, 0x30, 0x40, 0x5D, 0xC3 }.CopyTo(s[0x210..]);
        Encoding.ASCII.GetBytes("Hello World scanner TEST").CopyTo(s[0x300..]);
        Encoding.ASCII.GetBytes("END!").CopyTo(s[(d.Length - 4)..]);
        return d;
    }

    /// <summary>A minimal ELF64 ET_EXEC with one PT_LOAD at 0x400000: entry 0x4000B0 is file offset 0xB0.</summary>
    private static byte[] Elf()
    {
        byte[] d = new byte[512];
        var s = d.AsSpan();
        new byte[] { 0x7F, 0x45, 0x4C, 0x46, 2, 1, 1 }.CopyTo(s);
        BinaryPrimitives.WriteUInt16LittleEndian(s[0x10..], 2);          // ET_EXEC
        BinaryPrimitives.WriteUInt16LittleEndian(s[0x12..], 0x3E);       // x86-64
        BinaryPrimitives.WriteUInt32LittleEndian(s[0x14..], 1);
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x18..], 0x4000B0);   // e_entry
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x20..], 0x40);       // e_phoff
        BinaryPrimitives.WriteUInt16LittleEndian(s[0x34..], 64);         // e_ehsize
        BinaryPrimitives.WriteUInt16LittleEndian(s[0x36..], 56);         // e_phentsize
        BinaryPrimitives.WriteUInt16LittleEndian(s[0x38..], 1);          // e_phnum
        BinaryPrimitives.WriteUInt16LittleEndian(s[0x3A..], 64);         // e_shentsize
        BinaryPrimitives.WriteUInt32LittleEndian(s[0x40..], 1);          // PT_LOAD
        BinaryPrimitives.WriteUInt32LittleEndian(s[0x44..], 5);          // R+X
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x50..], 0x400000);   // p_vaddr
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x58..], 0x400000);   // p_paddr
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x60..], (ulong)d.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x68..], (ulong)d.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x70..], 0x1000);
        new byte[] { 0x55, 0x48, 0x89, 0xE5, 0x31, 0xC0, 0x5D, 0xC3 }.CopyTo(s[0xB0..]);
        Encoding.ASCII.GetBytes("Hello World from ELF").CopyTo(s[0x100..]);
        return d;
    }

    private static byte[] Repeat()
    {
        var b = new Builder();
        b.Ascii("START").PadTo(0x10);
        b.Ascii("abc-abc.xxxy xy abbbb ").PadTo(0x30);
        b.Ascii("abc").PadTo(0x40).Ascii("xyzxyzxyz ").PadTo(0x50).Ascii("abc").PadTo(0x60).Ascii("abc").PadTo(0x70);
        b.Ascii(new string('A', 300)).Ascii(" ");
        b.Ascii(string.Concat(Enumerable.Repeat("ab", 20))).Ascii(" ");
        b.Ascii(new string('a', 10)).Ascii(" ");
        b.Wide(new string('B', 12)).Ascii("\n");
        b.Ascii(string.Concat(Enumerable.Repeat("0123456789", 300)));
        b.Bytes(new byte[64]);
        b.Ascii("END!");
        return b.ToArray();
    }

    private static byte[] Utf16(string s) => Encoding.Unicode.GetBytes(s);

    private static byte[] Xor(byte[] data, byte key) => data.Select(x => (byte)(x ^ key)).ToArray();

    private static string Base64(string text) => Convert.ToBase64String(Encoding.ASCII.GetBytes(text)).TrimEnd('=');

    private static string Base64(byte[] data) => Convert.ToBase64String(data).TrimEnd('=');

    private static string Translate(string standardBase64, string alphabet)
    {
        const string standard = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        return string.Concat(standardBase64.Select(c => alphabet[standard.IndexOf(c, StringComparison.Ordinal)]));
    }

    /// <summary>Appends ASCII, UTF-16LE and raw bytes.</summary>
    internal sealed class Builder
    {
        private readonly List<byte> _data = [];

        public int Length => _data.Count;

        public Builder Ascii(string s)
        {
            foreach (char c in s)
                _data.Add(checked((byte)c));
            return this;
        }

        public Builder Utf8(string s)
        {
            _data.AddRange(Encoding.UTF8.GetBytes(s));
            return this;
        }

        public Builder Wide(string s)
        {
            _data.AddRange(Encoding.Unicode.GetBytes(s));
            return this;
        }

        public Builder Bytes(params byte[] bytes)
        {
            _data.AddRange(bytes);
            return this;
        }

        public Builder PadTo(int offset, byte fill = 0)
        {
            if (_data.Count > offset)
                throw new InvalidOperationException($"layout overflow: at {_data.Count:x}, wanted {offset:x}");
            while (_data.Count < offset)
                _data.Add(fill);
            return this;
        }

        public byte[] ToArray() => [.. _data];
    }
}

/// <summary>SplitMix64: a tiny PRNG whose sequence is fixed forever (System.Random's is not a contract).</summary>
internal struct SplitMix64(ulong seed)
{
    private ulong _state = seed;

    public ulong Next()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, max).</summary>
    public int Below(int max) => (int)(Next() % (ulong)max);

    /// <summary>Uniform in [min, max] (inclusive).</summary>
    public int Between(int min, int max) => min + Below(max - min + 1);

    public bool Chance(int percent) => Below(100) < percent;

    public T Pick<T>(IReadOnlyList<T> items) => items[Below(items.Count)];

    public void Fill(Span<byte> span)
    {
        int i = 0;
        for (; i + 8 <= span.Length; i += 8)
            BinaryPrimitives.WriteUInt64LittleEndian(span[i..], Next());
        if (i < span.Length)
        {
            Span<byte> last = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(last, Next());
            last[..(span.Length - i)].CopyTo(span[i..]);
        }
    }
}
