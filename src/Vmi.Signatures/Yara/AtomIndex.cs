using System.Numerics;
using System.Runtime.CompilerServices;
using Vmi.Signatures.Patterns;

namespace Vmi.Signatures.Yara;

/// <summary>
/// The multi-pattern prefilter: every atom of every string in one structure, found in a single pass over
/// the data. Atoms are keyed by their first 1–4 bytes: 1- and 2-byte keys index direct tables; 3- and
/// 4-byte keys go through a hashed bitmap (one bit test per position, sized so that few positions pass)
/// and then an exact open-addressed table. Longer atoms compare their remaining bytes before verification.
/// </summary>
internal sealed class AtomIndex
{
    internal readonly record struct Entry(int String, Atom Atom, byte[] Tail);

    private readonly Entry[]?[] table1 = new Entry[]?[256];
    private readonly Entry[]?[] table2 = new Entry[]?[65536];
    private readonly HashedTable table3;
    private readonly HashedTable table4;
    private readonly int[] noAtomStrings;

    private AtomIndex(HashedTable t3, HashedTable t4, int[] noAtoms)
    {
        table3 = t3;
        table4 = t4;
        noAtomStrings = noAtoms;
    }

    public bool Has1 { get; private set; }
    public bool Has2 { get; private set; }
    public bool Has3 => table3.Count > 0;
    public bool Has4 => table4.Count > 0;
    /// <summary>Strings without atoms: verified at every offset.</summary>
    public IReadOnlyList<int> NoAtomStrings => noAtomStrings;
    public int AtomCount { get; private set; }

    public static AtomIndex Build(IReadOnlyList<CompiledString> strings)
    {
        var by1 = new Dictionary<uint, List<Entry>>();
        var by2 = new Dictionary<uint, List<Entry>>();
        var by3 = new Dictionary<uint, List<Entry>>();
        var by4 = new Dictionary<uint, List<Entry>>();
        var noAtoms = new List<int>();
        int count = 0;
        for (int s = 0; s < strings.Count; s++)
        {
            var atoms = strings[s].Atoms;
            if (atoms.Count == 0)
            {
                noAtoms.Add(s);
                continue;
            }
            foreach (var atom in atoms)
            {
                var b = atom.Bytes;
                if (b.Length == 0)
                {
                    noAtoms.Add(s);
                    break;
                }
                int k = Math.Min(b.Length, 4);
                uint key = 0;
                for (int i = 0; i < k; i++)
                    key |= (uint)b[i] << (8 * i);
                var dict = k switch { 1 => by1, 2 => by2, 3 => by3, _ => by4 };
                if (!dict.TryGetValue(key, out var list))
                    dict[key] = list = [];
                list.Add(new Entry(s, atom, b.Length > 4 ? b[4..] : []));
                count++;
            }
        }
        var index = new AtomIndex(new HashedTable(by3, 3), new HashedTable(by4, 4), [.. noAtoms.Distinct()]) { AtomCount = count };
        foreach (var (key, list) in by1)
            index.table1[key] = [.. list];
        foreach (var (key, list) in by2)
            index.table2[key] = [.. list];
        index.Has1 = by1.Count > 0;
        index.Has2 = by2.Count > 0;
        return index;
    }

    /// <summary>Calls the visitor for every atom occurrence starting in [start, end).</summary>
    public unsafe void Find<TVisitor>(byte* data, int length, int start, int end, ref TVisitor visitor)
        where TVisitor : struct, IAtomVisitor
    {
        bool has1 = Has1, has2 = Has2, has3 = Has3, has4 = Has4;
        int fastEnd = Math.Min(end, length - 3);
        int i = start;
        if (has4 && !has1 && !has2 && !has3)
        {
            // The common case for well-written rules: only 4-byte keys. One load, one multiply, one bit test.
            ulong[] bits = table4.Bitmap;
            int shift = table4.Shift;
            fixed (ulong* bp = bits)
            {
                for (; i < fastEnd; i++)
                {
                    uint w = Unsafe.ReadUnaligned<uint>(data + i);
                    uint h = (w * 0x9E3779B1u) >> shift;
                    if ((bp[h >> 6] & (1UL << (int)(h & 63))) != 0)
                    {
                        var e = table4.Lookup(w);
                        if (e is not null)
                            Visit(e, data, length, i, ref visitor);
                    }
                }
            }
        }
        else
        {
            for (; i < fastEnd; i++)
            {
                uint w = Unsafe.ReadUnaligned<uint>(data + i);
                if (has1 && table1[w & 0xFF] is { } e1)
                    Visit(e1, data, length, i, ref visitor);
                if (has2 && table2[w & 0xFFFF] is { } e2)
                    Visit(e2, data, length, i, ref visitor);
                if (has3 && table3.Test(w & 0xFFFFFF) && table3.Lookup(w & 0xFFFFFF) is { } e3)
                    Visit(e3, data, length, i, ref visitor);
                if (has4 && table4.Test(w) && table4.Lookup(w) is { } e4)
                    Visit(e4, data, length, i, ref visitor);
            }
        }
        // The last positions, where fewer than four bytes remain.
        for (; i < end; i++)
        {
            int left = length - i;
            if (has1 && table1[data[i]] is { } e1)
                Visit(e1, data, length, i, ref visitor);
            if (left >= 2 && has2 && table2[data[i] | (data[i + 1] << 8)] is { } e2)
                Visit(e2, data, length, i, ref visitor);
            if (left >= 3 && has3)
            {
                uint w3 = (uint)(data[i] | (data[i + 1] << 8) | (data[i + 2] << 16));
                if (table3.Test(w3) && table3.Lookup(w3) is { } e3)
                    Visit(e3, data, length, i, ref visitor);
            }
            if (left >= 4 && has4)
            {
                uint w = Unsafe.ReadUnaligned<uint>(data + i);
                if (table4.Test(w) && table4.Lookup(w) is { } e4)
                    Visit(e4, data, length, i, ref visitor);
            }
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static unsafe void Visit<TVisitor>(Entry[] entries, byte* data, int length, int pos, ref TVisitor visitor)
        where TVisitor : struct, IAtomVisitor
    {
        foreach (var e in entries)
        {
            if (e.Tail.Length > 0)
            {
                int at = pos + 4;
                if (at + e.Tail.Length > length || !new ReadOnlySpan<byte>(data + at, e.Tail.Length).SequenceEqual(e.Tail))
                    continue;
            }
            visitor.Hit(e.String, e.Atom, pos);
        }
    }

    /// <summary>Keys of 3 or 4 bytes: a hashed bitmap in front of an open-addressed table.</summary>
    private sealed class HashedTable
    {
        private readonly uint[] keys;
        private readonly Entry[]?[] values;
        private readonly uint mask;

        public HashedTable(Dictionary<uint, List<Entry>> source, int keyBytes)
        {
            _ = keyBytes;
            Count = source.Count;
            // ~1 in 64 random positions pass the bitmap: 64 bits per key, at least 2^16 and at most 2^26 bits.
            int bitsLog = Math.Clamp(BitOperations.Log2((uint)Math.Max(1, source.Count)) + 7, 16, 26);
            Shift = 32 - bitsLog;
            Bitmap = new ulong[(1 << bitsLog) / 64];
            int size = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(16, source.Count * 2));
            mask = (uint)size - 1;
            keys = new uint[size];
            values = new Entry[]?[size];
            foreach (var (key, list) in source)
            {
                uint h = (key * 0x9E3779B1u) >> Shift;
                Bitmap[h >> 6] |= 1UL << (int)(h & 63);
                uint slot = Slot(key);
                while (values[slot] is not null)
                    slot = (slot + 1) & mask;
                keys[slot] = key;
                values[slot] = [.. list];
            }
        }

        public int Count { get; }
        public ulong[] Bitmap { get; }
        public int Shift { get; }

        private uint Slot(uint key) => ((key * 0x85EBCA6Bu) ^ (key >> 13)) & mask;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public bool Test(uint key)
        {
            if (Count == 0)
                return false;
            uint h = (key * 0x9E3779B1u) >> Shift;
            return (Bitmap[h >> 6] & (1UL << (int)(h & 63))) != 0;
        }

        public Entry[]? Lookup(uint key)
        {
            uint slot = Slot(key);
            while (true)
            {
                var v = values[slot];
                if (v is null)
                    return null;
                if (keys[slot] == key)
                    return v;
                slot = (slot + 1) & mask;
            }
        }
    }
}

/// <summary>Receives atom hits during <see cref="AtomIndex.Find"/>.</summary>
internal interface IAtomVisitor
{
    void Hit(int stringIndex, Atom atom, int position);
}
