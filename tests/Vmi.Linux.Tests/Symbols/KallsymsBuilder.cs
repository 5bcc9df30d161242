using System.Buffers.Binary;
using System.Text;
using Vmi.Linux;

namespace Vmi.Linux.Tests.Symbols;

/// <summary>
/// A small re-implementation of scripts/kallsyms.c's output (Linux 6.1, 64-bit, base-relative): the tables
/// laid out in .rodata order with 8-byte ALGN, names compressed with a token table.
/// </summary>
internal sealed class KallsymsBuilder
{
    public const ulong UnslidText = 0xffffffff81000000;

    /// <summary>Table offsets inside <see cref="Image"/>, for corruption tests.</summary>
    public int Offsets, RelativeBase, NumSyms, Names, Markers, TokenTable, TokenIndex, End;

    public byte[] Image { get; private set; } = [];

    /// <summary>Symbols in table (address) order.</summary>
    public List<KernelSymbol> Symbols { get; } = [];

    /// <summary>Build with absolute per-CPU offsets (x86-64 SMP) rather than plain relative ones.</summary>
    public bool AbsolutePercpu { get; init; } = true;

    /// <summary>Emit kallsyms_seqs_of_names between the markers and the token table (6.2+, Debian 6.1 stable).</summary>
    public bool SeqsOfNames { get; init; }

    public int Seqs = -1;

    /// <summary>Bytes of "text" before the tables (holds a decoy "0\01\0…9\0" run).</summary>
    public int Prefix { get; init; } = 0x3000;

    public static List<KernelSymbol> SampleSymbols(int count, ulong text, bool withPercpu = true, int seed = 1)
    {
        var rng = new Random(seed);
        string[] words = ["sys", "read", "write", "open", "close", "mmap", "task", "cred", "page", "alloc", "free", "init", "exit", "irq", "x86", "pci", "dev", "net", "tcp", "ip4", "v6", "do", "get", "put"];
        var list = new List<KernelSymbol>();
        if (withPercpu)
        {
            list.Add(new KernelSymbol("fixed_percpu_data", 0, 'A'));
            list.Add(new KernelSymbol("__per_cpu_start", 0, 'A'));
            list.Add(new KernelSymbol("cpu_debug_store", 0x1000, 'A'));
        }
        list.Add(new KernelSymbol("_text", text, 'T'));
        list.Add(new KernelSymbol("startup_64", text, 'T'));
        ulong address = text + 0x40;
        const string types = "TtTtDdBbRrWV";
        for (int i = list.Count; i < count - 1; i++)
        {
            var name = new StringBuilder();
            int parts = 1 + rng.Next(4);
            for (int p = 0; p < parts; p++)
                name.Append(p == 0 ? "" : "_").Append(words[rng.Next(words.Length)]);
            name.Append(CultureInfo(i));
            if (i % 101 == 0)
                name.Append(".constprop.").Append(i % 7).Append("$Z");
            if (i == 77)
                name.Append('_', 1).Append(new string('q', 300)); // compressed length > 0x7f: the two-byte length form
            list.Add(new KernelSymbol(name.ToString(), address, types[rng.Next(types.Length)]));
            address += (ulong)rng.Next(0, 200);
        }
        list.Add(new KernelSymbol("_end", address + 0x1000, 'B'));
        return list;

        static string CultureInfo(int i) => i.ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    public KallsymsBuilder Build(IReadOnlyList<KernelSymbol> symbols, ulong relativeBase)
    {
        Symbols.Clear();
        Symbols.AddRange(symbols);
        byte[][] tokens = MakeTokens(symbols);
        var img = new List<byte>(new byte[Prefix]);
        // Decoy: a "0\01\0…9\0" run in plain text that is not a token table.
        byte[] decoy = Encoding.ASCII.GetBytes("\0" + "0\u00001\u00002\u00003\u00004\u00005\u00006\u00007\u00008\u00009\0" + "trailing");
        for (int i = 0; i < Prefix; i++)
            img[i] = (byte)(0x90 + (i % 7));
        for (int i = 0; i < decoy.Length; i++)
            img[0x100 + i] = decoy[i];

        Align(img);
        Offsets = img.Count;
        foreach (KernelSymbol s in symbols)
        {
            long offset;
            if (!AbsolutePercpu)
                offset = (long)(s.Address - relativeBase);
            else if (s.Address < 0x8000_0000)
                offset = (long)s.Address;
            else
                offset = (long)(relativeBase - s.Address) - 1;
            AddU32(img, unchecked((uint)(int)offset));
        }
        Align(img);
        RelativeBase = img.Count;
        AddU64(img, relativeBase);
        Align(img);
        NumSyms = img.Count;
        AddU32(img, (uint)symbols.Count);
        Align(img);
        Names = img.Count;
        var markers = new List<uint>();
        foreach ((KernelSymbol s, int i) in symbols.Select((s, i) => (s, i)))
        {
            if ((i & 0xFF) == 0)
                markers.Add((uint)(img.Count - Names));
            byte[] compressed = Compress(Encoding.ASCII.GetBytes(s.Type + s.Name), tokens);
            if (compressed.Length > 0x7F)
            {
                img.Add((byte)(0x80 | (compressed.Length & 0x7F)));
                img.Add((byte)(compressed.Length >> 7));
            }
            else
            {
                img.Add((byte)compressed.Length);
            }
            img.AddRange(compressed);
        }
        Align(img);
        Markers = img.Count;
        foreach (uint m in markers)
            AddU32(img, m);
        Align(img);
        if (SeqsOfNames)
        {
            Seqs = img.Count;
            foreach (int seq in Enumerable.Range(0, symbols.Count).OrderBy(i => symbols[i].Name, StringComparer.Ordinal))
            {
                img.Add((byte)(seq >> 16));
                img.Add((byte)(seq >> 8));
                img.Add((byte)seq);
            }
            Align(img);
        }
        TokenTable = img.Count;
        var index = new List<ushort>();
        foreach (byte[] t in tokens)
        {
            index.Add((ushort)(img.Count - TokenTable));
            img.AddRange(t);
            img.Add(0);
        }
        Align(img);
        TokenIndex = img.Count;
        foreach (ushort i in index)
        {
            img.Add((byte)i);
            img.Add((byte)(i >> 8));
        }
        Align(img);
        End = img.Count;
        img.AddRange(Encoding.ASCII.GetBytes("Linux version 6.1.0-test\n\0"));
        Align(img);
        Image = [.. img];
        return this;
    }

    public void PokeU32(int offset, uint value) => BinaryPrimitives.WriteUInt32LittleEndian(Image.AsSpan(offset), value);

    public void PokeU16(int offset, ushort value) => BinaryPrimitives.WriteUInt16LittleEndian(Image.AsSpan(offset), value);

    private static byte[][] MakeTokens(IReadOnlyList<KernelSymbol> symbols)
    {
        var used = new bool[256];
        var bigrams = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (KernelSymbol s in symbols)
        {
            string text = s.Type + s.Name;
            foreach (char c in text)
                used[c] = true;
            for (int i = 0; i + 3 <= text.Length; i++)
                bigrams[text.Substring(i, 3)] = bigrams.GetValueOrDefault(text.Substring(i, 3)) + 1;
            for (int i = 0; i + 2 <= text.Length; i++)
                bigrams[text.Substring(i, 2)] = bigrams.GetValueOrDefault(text.Substring(i, 2)) + 1;
        }
        Queue<string> best = new(bigrams.OrderByDescending(kv => kv.Value * (kv.Key.Length - 1)).ThenBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Key));
        var tokens = new byte[256][];
        for (int b = 0; b < 256; b++)
        {
            if (used[b])
                tokens[b] = [(byte)b];
            else
                tokens[b] = best.Count > 0 ? Encoding.ASCII.GetBytes(best.Dequeue()) : []; // scripts/kallsyms leaves spare tokens empty
        }
        return tokens;
    }

    private static byte[] Compress(byte[] text, byte[][] tokens)
    {
        var output = new List<byte>();
        int pos = 0;
        while (pos < text.Length)
        {
            int bestToken = text[pos], bestLength = 1;
            for (int t = 0; t < 256; t++)
            {
                byte[] tok = tokens[t];
                if (tok.Length > bestLength && text.AsSpan(pos).StartsWith(tok))
                {
                    bestToken = t;
                    bestLength = tok.Length;
                }
            }
            output.Add((byte)bestToken);
            pos += bestLength;
        }
        return [.. output];
    }

    private static void Align(List<byte> img)
    {
        while (img.Count % 8 != 0)
            img.Add(0);
    }

    private static void AddU32(List<byte> img, uint v)
    {
        for (int i = 0; i < 4; i++)
            img.Add((byte)(v >> (8 * i)));
    }

    private static void AddU64(List<byte> img, ulong v)
    {
        for (int i = 0; i < 8; i++)
            img.Add((byte)(v >> (8 * i)));
    }
}
