namespace Vmi.Signatures.Patterns;

/// <summary>Node kinds of the pattern tree shared by regular expressions and hex strings.</summary>
internal enum ReNodeKind
{
    /// <summary>Consumes one byte that belongs to <see cref="ReNode.Set"/>.</summary>
    Set,
    Concat,
    Alternation,
    /// <summary>Child repeated Min..Max times (Max = -1: unbounded).</summary>
    Repeat,
    AnchorStart,
    AnchorEnd,
    WordBoundary,
    NonWordBoundary,
}

/// <summary>A 256-bit byte set.</summary>
internal sealed class ByteSet : IEquatable<ByteSet>
{
    private readonly ulong[] bits = new ulong[4];

    public static ByteSet Of(byte b)
    {
        var s = new ByteSet();
        s.Add(b);
        return s;
    }

    public static ByteSet All()
    {
        var s = new ByteSet();
        s.bits.AsSpan().Fill(ulong.MaxValue);
        return s;
    }

    public void Add(int b) => bits[b >> 6] |= 1UL << (b & 63);

    public void AddRange(int from, int to)
    {
        for (int c = from; c <= to; c++)
            Add(c);
    }

    public void Remove(int b) => bits[b >> 6] &= ~(1UL << (b & 63));

    public bool Contains(int b) => ((bits[b >> 6] >> (b & 63)) & 1) != 0;

    public void UnionWith(ByteSet other)
    {
        for (int i = 0; i < 4; i++)
            bits[i] |= other.bits[i];
    }

    public void Invert()
    {
        for (int i = 0; i < 4; i++)
            bits[i] = ~bits[i];
    }

    /// <summary>Adds the other case of every ASCII letter in the set.</summary>
    public void FoldCase()
    {
        for (int c = 'a'; c <= 'z'; c++)
        {
            if (Contains(c) || Contains(c - 32))
            {
                Add(c);
                Add(c - 32);
            }
        }
    }

    public int Count => System.Numerics.BitOperations.PopCount(bits[0]) + System.Numerics.BitOperations.PopCount(bits[1])
        + System.Numerics.BitOperations.PopCount(bits[2]) + System.Numerics.BitOperations.PopCount(bits[3]);

    public ulong Word(int i) => bits[i];

    public IEnumerable<byte> Members()
    {
        for (int c = 0; c < 256; c++)
        {
            if (Contains(c))
                yield return (byte)c;
        }
    }

    public ByteSet Clone()
    {
        var s = new ByteSet();
        bits.CopyTo(s.bits, 0);
        return s;
    }

    public bool Equals(ByteSet? other) => other is not null && bits.AsSpan().SequenceEqual(other.bits);

    public override bool Equals(object? obj) => Equals(obj as ByteSet);

    public override int GetHashCode() => HashCode.Combine(bits[0], bits[1], bits[2], bits[3]);
}

/// <summary>One node of the pattern tree.</summary>
internal sealed class ReNode
{
    private ReNode(ReNodeKind kind) => Kind = kind;

    public ReNodeKind Kind { get; }
    public ByteSet? Set { get; private init; }
    public List<ReNode> Children { get; } = [];
    public int Min { get; private init; }
    /// <summary>-1 = unbounded.</summary>
    public int Max { get; private init; }
    public bool Greedy { get; private init; } = true;

    public static ReNode ForSet(ByteSet set) => new(ReNodeKind.Set) { Set = set };

    public static ReNode Concat(IEnumerable<ReNode> children)
    {
        var n = new ReNode(ReNodeKind.Concat);
        n.Children.AddRange(children);
        return n;
    }

    public static ReNode Alternation(IEnumerable<ReNode> children)
    {
        var n = new ReNode(ReNodeKind.Alternation);
        n.Children.AddRange(children);
        return n;
    }

    public static ReNode Repeat(ReNode child, int min, int max, bool greedy)
    {
        var n = new ReNode(ReNodeKind.Repeat) { Min = min, Max = max, Greedy = greedy };
        n.Children.Add(child);
        return n;
    }

    public static ReNode Assertion(ReNodeKind kind) => new(kind);

    public ReNode DeepClone()
    {
        var n = new ReNode(Kind) { Set = Set, Min = Min, Max = Max, Greedy = Greedy };
        foreach (var c in Children)
            n.Children.Add(c.DeepClone());
        return n;
    }

    /// <summary>Shortest and longest number of bytes a match of this node consumes (max -1: unbounded).</summary>
    public (int Min, int Max) Width()
    {
        switch (Kind)
        {
            case ReNodeKind.Set:
                return (1, 1);
            case ReNodeKind.Concat:
            {
                long lo = 0, hi = 0;
                foreach (var c in Children)
                {
                    var (a, b) = c.Width();
                    lo += a;
                    hi = hi < 0 || b < 0 ? -1 : hi + b;
                }
                return ((int)Math.Min(lo, int.MaxValue), hi > int.MaxValue ? -1 : (int)hi);
            }
            case ReNodeKind.Alternation:
            {
                int lo = int.MaxValue, hi = 0;
                foreach (var c in Children)
                {
                    var (a, b) = c.Width();
                    lo = Math.Min(lo, a);
                    hi = hi < 0 || b < 0 ? -1 : Math.Max(hi, b);
                }
                return (lo == int.MaxValue ? 0 : lo, hi);
            }
            case ReNodeKind.Repeat:
            {
                var (a, b) = Children[0].Width();
                long lo = (long)a * Min;
                long hi = Max < 0 || b < 0 ? -1 : (long)b * Max;
                return ((int)Math.Min(lo, int.MaxValue), hi > int.MaxValue ? -1 : (int)hi);
            }
            default:
                return (0, 0);
        }
    }
}
