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
    /// <summary>One atom of one string. <see cref="Tail"/> must follow the 4-byte key (case-folded when <see cref="FoldTail"/>).</summary>
    internal readonly record struct Entry(int String, Atom Atom, byte[] Tail, bool FoldTail = false);

    /// <summary>
    /// The atoms that share one key. A large bucket (many strings with the same 4-byte window) also indexes
    /// its entries by the next four bytes, so a hit on a common key compares only the few tails that can match.
    /// </summary>
    internal sealed class Bucket
    {
        private const int IndexThreshold = 8;
        private const int MaxDiscriminator = 48;
        private readonly Dictionary<uint, Entry[]>? byTail;

        public Bucket(Entry[] entries)
        {
            All = entries;
            if (entries.Length < IndexThreshold)
                return;
            // Strings that share the key often share more ("Mozilla/5.0 (compatible; …"): index the bucket by the
            // four tail bytes, at the offset where the entries differ most, so a hit compares only the few that can match.
            int best = -1, bestDistinct = 1;
            var seen = new HashSet<uint>();
            for (int d = 0; d <= MaxDiscriminator; d++)
            {
                seen.Clear();
                int covered = 0;
                foreach (var e in entries)
                {
                    if (e.Tail.Length >= d + 4)
                    {
                        covered++;
                        seen.Add(Fold(BitConverter.ToUInt32(e.Tail, d)));
                    }
                }
                if (covered * 4 < entries.Length * 3)
                    break;
                if (seen.Count > bestDistinct)
                {
                    best = d;
                    bestDistinct = seen.Count;
                    if (bestDistinct == covered)
                        break; // every entry already has its own slot
                }
            }
            if (best < 0)
                return;
            Discriminator = best;
            Short = [.. entries.Where(e => e.Tail.Length < best + 4)];
            byTail = entries.Where(e => e.Tail.Length >= best + 4)
                .GroupBy(e => Fold(BitConverter.ToUInt32(e.Tail, best)))
                .ToDictionary(g => g.Key, g => g.ToArray());
        }

        public Entry[] All { get; }
        public Entry[] Short { get; } = [];

        /// <summary>Offset (after the 4-byte key) of the four bytes the index uses.</summary>
        public int Discriminator { get; }

        /// <summary>Entries whose tail has <paramref name="bytes"/> at <see cref="Discriminator"/> (compared case-folded).</summary>
        public Entry[] ByTail(uint bytes) => byTail!.TryGetValue(Fold(bytes), out var e) ? e : [];

        public bool Indexed => byTail is not null;
    }

    private readonly Bucket?[] table1 = new Bucket?[256];
    private readonly Bucket?[] table2 = new Bucket?[65536];
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

    /// <summary>ASCII lower-casing of four packed bytes at once (A–Z only).</summary>
    internal const int MaxLiteralTail = 64;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint Fold(uint x)
    {
        uint low7 = x & 0x7F7F7F7Fu;
        uint atLeastA = low7 + (0x80u - 0x41u) * 0x01010101u;
        uint pastZ = low7 + (0x80u - 0x5Bu) * 0x01010101u;
        uint upper = atLeastA & ~pastZ & ~x & 0x80808080u;
        return x | (upper >> 2);
    }

    public static AtomIndex Build(IReadOnlyList<CompiledString> strings)
    {
        var by1 = new Dictionary<uint, List<Entry>>();
        var by2 = new Dictionary<uint, List<Entry>>();
        var by3 = new Dictionary<uint, List<Entry>>();
        var by4 = new Dictionary<uint, List<Entry>>();
        var noAtoms = new List<int>();
        int count = 0;
        var tails = new Dictionary<int, (byte[] Tail, bool Nocase)?>();
        for (int s = 0; s < strings.Count; s++)
        {
            var atoms = strings[s].Atoms;
            tails.Clear();
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
                if (b.Length > 4)
                    list.Add(new Entry(s, atom, b[4..]));
                else if (b.Length == 4 && LiteralTail(strings[s], atom, tails) is { } t && t.Tail.Length > 0)
                    list.Add(new Entry(s, atom, t.Tail, t.Nocase));
                else if (b.Length == 4 && strings[s].XorTail(atom, MaxLiteralTail) is { } x && x.Tail.Length > 0)
                {
                    // An xor atom is the window xored with one key: the rest of the string is xored with it too.
                    byte xorKey = (byte)(b[0] ^ x.Window0);
                    var tail = new byte[x.Tail.Length];
                    for (int j = 0; j < tail.Length; j++)
                        tail[j] = (byte)(x.Tail[j] ^ xorKey);
                    list.Add(new Entry(s, atom, tail));
                }
                else
                    list.Add(new Entry(s, atom, []));
                count++;
            }
        }
        var index = new AtomIndex(new HashedTable(by3, 3), new HashedTable(by4, 4), [.. noAtoms.Distinct()]) { AtomCount = count };
        foreach (var (key, list) in by1)
            index.table1[key] = new Bucket([.. list]);
        foreach (var (key, list) in by2)
            index.table2[key] = new Bucket([.. list]);
        index.Has1 = by1.Count > 0;
        index.Has2 = by2.Count > 0;
        return index;
    }

    /// <summary>A text string's tail after an atom; the case variants of one atom share it, so it is computed once per atom id.</summary>
    private static (byte[] Tail, bool Nocase)? LiteralTail(CompiledString s, Atom atom, Dictionary<int, (byte[] Tail, bool Nocase)?> cache)
    {
        if (!cache.TryGetValue(atom.Id, out var t))
            cache[atom.Id] = t = s.LiteralTail(atom, MaxLiteralTail);
        return t;
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
    private static unsafe void Visit<TVisitor>(Bucket bucket, byte* data, int length, int pos, ref TVisitor visitor)
        where TVisitor : struct, IAtomVisitor
    {
        int keyLength = 4;
        if (bucket.Indexed)
        {
            Check(bucket.Short, data, length, pos, keyLength, ref visitor);
            int at = pos + 4 + bucket.Discriminator;
            if (at + 4 <= length)
                Check(bucket.ByTail(Unsafe.ReadUnaligned<uint>(data + at)), data, length, pos, keyLength, ref visitor);
            return;
        }
        Check(bucket.All, data, length, pos, keyLength, ref visitor);
    }

    private static unsafe void Check<TVisitor>(Entry[] entries, byte* data, int length, int pos, int keyLength, ref TVisitor visitor)
        where TVisitor : struct, IAtomVisitor
    {
        foreach (var e in entries)
        {
            if (e.Tail.Length > 0)
            {
                int at = pos + keyLength;
                if (at + e.Tail.Length > length)
                    continue;
                var next = new ReadOnlySpan<byte>(data + at, e.Tail.Length);
                if (e.FoldTail ? !EqualsFolded(next, e.Tail) : !next.SequenceEqual(e.Tail))
                    continue;
            }
            visitor.Hit(e.String, e.Atom, pos);
        }
    }

    private static bool EqualsFolded(ReadOnlySpan<byte> data, ReadOnlySpan<byte> lowerTail)
    {
        for (int i = 0; i < data.Length; i++)
        {
            byte b = data[i];
            if (b is >= (byte)'A' and <= (byte)'Z')
                b |= 0x20;
            if (b != lowerTail[i])
                return false;
        }
        return true;
    }

    /// <summary>Keys of 3 or 4 bytes: a hashed bitmap in front of an open-addressed table.</summary>
    private sealed class HashedTable
    {
        private readonly uint[] keys;
        private readonly Bucket?[] values;
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
            values = new Bucket?[size];
            foreach (var (key, list) in source)
            {
                uint h = (key * 0x9E3779B1u) >> Shift;
                Bitmap[h >> 6] |= 1UL << (int)(h & 63);
                uint slot = Slot(key);
                while (values[slot] is not null)
                    slot = (slot + 1) & mask;
                keys[slot] = key;
                values[slot] = new Bucket([.. list]);
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

        public Bucket? Lookup(uint key)
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
