namespace Vmi.Signatures.Patterns;

/// <summary>
/// Hex strings with jumps wider than <see cref="Threshold"/> bytes: YARA cuts them into pieces at those jumps and
/// reports a match from the start of a first-piece match to the end of the earliest last-piece match that
/// completes a chain whose gaps fit the jumps. Every piece match counts with the length YARA records for it.
/// </summary>
internal sealed class ChainMatcher
{
    public const int Threshold = 200;
    /// <summary>Gap used for unbounded jumps (YARA's largest repeat).</summary>
    private const int UnboundedGap = short.MaxValue;

    private readonly TreeMatcher[] pieces;
    private readonly int[] gapMin;
    private readonly int[] gapMax;
    private readonly int[] pieceMin;
    private readonly int[] pieceMax;
    private readonly int atomPiece;

    private ChainMatcher(List<ReNode> pieceRoots, List<(int Min, int Max)> gaps, bool shortest, PatternLimits limits)
    {
        pieces = new TreeMatcher[pieceRoots.Count];
        pieceMin = new int[pieceRoots.Count];
        pieceMax = new int[pieceRoots.Count];
        for (int i = 0; i < pieceRoots.Count; i++)
        {
            pieces[i] = new TreeMatcher(pieceRoots[i], ascii: true, wide: false, fullword: false, greedy: false, shortest, limits);
            var (lo, hi) = pieceRoots[i].Width();
            pieceMin[i] = lo;
            pieceMax[i] = hi < 0 ? limits.MaxMatchLength : Math.Min(hi, limits.MaxMatchLength * 2);
        }
        gapMin = [.. gaps.Select(g => g.Min)];
        gapMax = [.. gaps.Select(g => g.Max < 0 ? UnboundedGap : g.Max)];
        atomPiece = 0;
        for (int i = 1; i < pieces.Length; i++)
        {
            if (pieces[i].Quality > pieces[atomPiece].Quality)
                atomPiece = i;
        }
        long total = pieceMax.Sum(x => (long)x) + gapMax.Sum(x => (long)x);
        MaxMatchLength = (int)Math.Min(int.MaxValue / 4, total);
    }

    public IReadOnlyList<Atom> Atoms => pieces[atomPiece].Atoms;
    public int MaxMatchLength { get; }

    /// <summary>Splits a hex tree at its wide top-level jumps; null when it has none.</summary>
    public static ChainMatcher? TryCreate(ReNode root, bool shortest, PatternLimits limits)
    {
        var kids = root.Children;
        var pieceRoots = new List<ReNode>();
        var gaps = new List<(int, int)>();
        var current = new List<ReNode>();
        for (int i = 0; i < kids.Count; i++)
        {
            var k = kids[i];
            bool wide = k.Kind == ReNodeKind.Repeat && !k.Greedy && i > 0 && i < kids.Count - 1
                && (k.Min > Threshold || k.Max > Threshold || k.Max < 0);
            if (wide)
            {
                pieceRoots.Add(ReNode.Concat(current));
                current = [];
                gaps.Add((k.Min, k.Max));
            }
            else
            {
                current.Add(k);
            }
        }
        if (gaps.Count == 0)
            return null;
        pieceRoots.Add(ReNode.Concat(current));
        return new ChainMatcher(pieceRoots, gaps, shortest, limits);
    }

    private sealed class Collector : IMatchSink
    {
        public List<int> Offsets { get; } = [];
        public void Add(int offset, int length) => Offsets.Add(offset);
    }

    public void Verify(ReadOnlySpan<byte> data, int atomId, int atomPosition, IMatchSink sink, ScanBudget budget)
    {
        var c = new Collector();
        pieces[atomPiece].Verify(data, atomId, atomPosition, c, budget);
        foreach (int y in c.Offsets)
        {
            if (pieces[atomPiece].MatchAt(data, y, budget) < 0)
                continue;
            foreach (int h in HeadsReaching(data, atomPiece, y, budget))
                ReportHead(data, h, sink, budget);
        }
    }

    public void VerifyAll(ReadOnlySpan<byte> data, IMatchSink sink, ScanBudget budget)
    {
        for (int h = 0; h < data.Length; h++)
            ReportHead(data, h, sink, budget);
    }

    /// <summary>Offsets of first-piece matches from which a chain reaches the match of piece k at y.</summary>
    private List<int> HeadsReaching(ReadOnlySpan<byte> data, int k, int y, ScanBudget budget)
    {
        var cur = new List<int> { y };
        for (int j = k - 1; j >= 0 && cur.Count > 0; j--)
        {
            var next = new List<int>();
            long from = Math.Max(0L, (long)cur[0] - gapMax[j] - pieceMax[j]);
            long to = Math.Min(data.Length - 1L, (long)cur[^1] - gapMin[j] - pieceMin[j]);
            for (long x = from; x <= to; x++)
            {
                budget.Charge(1);
                int lx = pieces[j].MatchAt(data, (int)x, budget);
                if (lx < 0)
                    continue;
                long lo = x + lx + gapMin[j], hi = x + lx + gapMax[j];
                int idx = cur.BinarySearch((int)Math.Min(lo, int.MaxValue));
                if (idx < 0)
                    idx = ~idx;
                if (idx < cur.Count && cur[idx] <= hi)
                    next.Add((int)x);
            }
            cur = next;
        }
        return cur;
    }

    /// <summary>Reports the chain starting with a first-piece match at h, ending at the earliest possible last piece.</summary>
    private void ReportHead(ReadOnlySpan<byte> data, int h, IMatchSink sink, ScanBudget budget)
    {
        int lh = pieces[0].MatchAt(data, h, budget);
        if (lh < 0)
            return;
        var ends = new List<(int Offset, int Length)> { (h, lh) };
        for (int j = 1; j < pieces.Length && ends.Count > 0; j++)
        {
            var next = new List<(int, int)>();
            var seen = new HashSet<int>();
            bool last = j == pieces.Length - 1;
            long minZ = long.MaxValue, maxZ = long.MinValue;
            foreach (var (x, lx) in ends)
            {
                minZ = Math.Min(minZ, (long)x + lx + gapMin[j - 1]);
                maxZ = Math.Max(maxZ, (long)x + lx + gapMax[j - 1]);
            }
            maxZ = Math.Min(maxZ, data.Length - 1L);
            for (long z = minZ; z <= maxZ; z++)
            {
                budget.Charge(1);
                bool inWindow = false;
                foreach (var (x, lx) in ends)
                {
                    if (z >= (long)x + lx + gapMin[j - 1] && z <= (long)x + lx + gapMax[j - 1])
                    {
                        inWindow = true;
                        break;
                    }
                }
                if (!inWindow || !seen.Add((int)z))
                    continue;
                int lz = pieces[j].MatchAt(data, (int)z, budget);
                if (lz < 0)
                    continue;
                if (last)
                {
                    sink.Add(h, (int)z + lz - h);
                    return;
                }
                next.Add(((int)z, lz));
            }
            ends = next;
        }
    }
}
