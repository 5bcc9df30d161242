namespace Vmi.Signatures.Patterns;

/// <summary>Verifies one tree-shaped pattern (a regular expression, a hex string, or one piece of a chained hex string).</summary>
internal sealed class TreeMatcher
{
    private readonly ReProgram forward;
    private readonly ReProgram backward;
    private readonly Anchor[] anchors;
    private readonly bool ascii;
    private readonly bool wide;
    private readonly bool fullword;
    private readonly bool greedy;
    private readonly bool shortest;
    private readonly int scanLimit;
    private readonly int prefixMaxWidth;

    [ThreadStatic]
    private static List<int>? lengthsScratch;
    [ThreadStatic]
    private static List<int>? laterScratch;
    [ThreadStatic]
    private static List<int>? startsScratch;
    [ThreadStatic]
    private static List<int>? endsScratch;

    private sealed record Anchor(int ForwardPc, int BackwardPc, bool BackwardTrivial, bool[] FirstBytes);

    public TreeMatcher(ReNode root, bool ascii, bool wide, bool fullword, bool greedy, bool shortest, PatternLimits limits, bool allowAtoms = true)
    {
        this.ascii = ascii;
        this.wide = wide;
        this.fullword = fullword;
        this.greedy = greedy;
        this.shortest = shortest;
        scanLimit = limits.MaxMatchLength;

        var choice = allowAtoms ? TreeAtoms.Choose(root) : null;
        var anchorNodes = new HashSet<ReNode>();
        if (choice is not null)
        {
            foreach (var w in choice.Windows)
                anchorNodes.Add(w.Anchor);
        }
        var fwdEntries = new Dictionary<ReNode, int>();
        var bwdEntries = new Dictionary<ReNode, int>();
        forward = ReProgram.Compile(root, backwards: false, anchorNodes, fwdEntries, limits.MaxProgramSize);
        backward = ReProgram.Compile(root, backwards: true, anchorNodes, bwdEntries, limits.MaxProgramSize);

        var (minW, maxW) = root.Width();
        MinWidth = minW;
        prefixMaxWidth = maxW < 0 ? scanLimit : Math.Min(maxW, scanLimit);
        long widthBytes = maxW < 0 ? long.MaxValue : (wide ? 2L : 1L) * maxW;
        MaxMatchLength = (int)Math.Min(widthBytes, 2L * scanLimit);

        var atoms = new List<Atom>();
        var anchorList = new List<Anchor>();
        if (choice is not null)
        {
            long variants = 0;
            foreach (var w in choice.Windows)
                variants += AtomQuality.Expand(w.Sets).Count * ((ascii ? 1 : 0) + (wide ? 1 : 0));
            if (variants <= limits.MaxVariants)
            {
                foreach (var w in choice.Windows)
                {
                    int id = anchorList.Count;
                    int bpc = bwdEntries[w.Anchor];
                    var first = new bool[256];
                    foreach (byte b in w.Sets[0].Members())
                        first[b] = true;
                    anchorList.Add(new Anchor(fwdEntries[w.Anchor], bpc, backward.Ops[bpc] == ReOp.Match, first));
                    foreach (var v in AtomQuality.Expand(w.Sets))
                    {
                        if (ascii)
                            atoms.Add(new Atom(v, id));
                        if (wide)
                            atoms.Add(new Atom(AtomQuality.ToWide(v), id));
                    }
                }
            }
        }
        Atoms = atoms;
        anchors = [.. anchorList];
        Quality = atoms.Count == 0 ? int.MinValue : choice!.Quality;
    }

    public IReadOnlyList<Atom> Atoms { get; }
    public int MaxMatchLength { get; }
    public int MinWidth { get; }
    public int Quality { get; }

    /// <summary>The forward match length at <paramref name="pos"/> (ascii first, then wide), or -1.</summary>
    private int RunForward(ReadOnlySpan<byte> data, int pc, int pos, ScanBudget budget, out bool usedWide)
    {
        usedWide = false;
        int f = -1;
        if (ascii)
            f = PikeVm.Forward(forward, pc, data, pos, wide: false, shortest, scanLimit, budget);
        if (f < 0 && wide)
        {
            f = PikeVm.Forward(forward, pc, data, pos, wide: true, shortest, scanLimit, budget);
            usedWide = f >= 0;
        }
        return f;
    }

    /// <summary>The match YARA records at exactly <paramref name="offset"/> when the whole pattern is run from there, or -1.</summary>
    public int MatchAt(ReadOnlySpan<byte> data, int offset, ScanBudget budget)
    {
        int f = RunForward(data, 0, offset, budget, out bool usedWide);
        if (f <= 0 || (fullword && !FullwordOk(data, offset, f, usedWide)))
            return -1;
        return f;
    }

    /// <summary>YARA's "matches" operator: does the pattern match anywhere (an empty match counts) within the
    /// first scan-limit bytes of <paramref name="data"/>?</summary>
    public bool IsMatch(ReadOnlySpan<byte> data, ScanBudget budget)
    {
        int cap = Math.Min(data.Length, scanLimit);
        for (int o = 0; o <= cap; o++)
        {
            if ((ascii && PikeVm.Forward(forward, 0, data, o, wide: false, shortest: true, cap - o, budget) >= 0)
                || (wide && PikeVm.Forward(forward, 0, data, o, wide: true, shortest: true, cap - o, budget) >= 0))
                return true;
        }
        return false;
    }

    public void VerifyAll(ReadOnlySpan<byte> data, IMatchSink sink, ScanBudget budget)
    {
        for (int o = 0; o < data.Length; o++)
        {
            int f = MatchAt(data, o, budget);
            if (f > 0)
                sink.Add(o, f);
        }
    }

    /// <summary>Collects (offset, length) of every match this atom occurrence produces.</summary>
    public void Verify(ReadOnlySpan<byte> data, int atomId, int pos, IMatchSink sink, ScanBudget budget)
    {
        if ((uint)atomId >= (uint)anchors.Length || pos < 0 || pos >= data.Length)
            return;
        var a = anchors[atomId];
        int f = RunForward(data, a.ForwardPc, pos, budget, out bool usedWide);
        if (f < 0)
            return;
        if (a.BackwardTrivial)
        {
            if (f > 0 && (!fullword || FullwordOk(data, pos, f, usedWide)))
                sink.Add(pos, f);
            return;
        }
        var lengths = lengthsScratch ??= [];
        lengths.Clear();
        PikeVm.Backward(backward, a.BackwardPc, data, pos, usedWide, scanLimit, budget, lengths);
        if (lengths.Count == 0)
            return;
        if (!greedy)
        {
            foreach (int b in lengths)
            {
                int o = pos - b;
                if (b + f > 0 && (!fullword || FullwordOk(data, o, b + f, usedWide)))
                    sink.Add(o, b + f);
            }
            return;
        }
        ReportGreedy(data, a, pos, f, usedWide, lengths, sink, budget);
    }

    /// <summary>
    /// YARA replaces the length recorded at an offset when a later atom occurrence of a greedy regular
    /// expression reaches the same offset. Reproduce that: give each start the length from the last
    /// occurrence (in data order) that reaches it.
    /// </summary>
    private void ReportGreedy(ReadOnlySpan<byte> data, Anchor a, int pos, int f, bool usedWide, List<int> lengths, IMatchSink sink, ScanBudget budget)
    {
        var starts = startsScratch ??= [];
        var ends = endsScratch ??= [];
        starts.Clear();
        ends.Clear();
        for (int i = 0; i < lengths.Count; i++)
        {
            starts.Add(pos - lengths[i]);
            ends.Add(-1);
        }
        int pending;
        int maxStart = pos - lengths[0];
        int lastCandidate = (int)Math.Min(data.Length - 1L, (long)maxStart + prefixMaxWidth + 1);
        pending = lengths.Count;
        var later = laterScratch ??= [];
        for (int q = lastCandidate; q > pos && pending > 0; q--)
        {
            budget.Charge(1);
            foreach (var other in anchors)
            {
                if (!other.FirstBytes[data[q]])
                    continue;
                int fq = RunForward(data, other.ForwardPc, q, budget, out bool wq);
                if (fq < 0)
                    continue;
                later.Clear();
                if (other.BackwardTrivial)
                    later.Add(0);
                else
                    PikeVm.Backward(backward, other.BackwardPc, data, q, wq, scanLimit, budget, later);
                foreach (int b in later)
                {
                    int o = q - b;
                    int idx = starts.IndexOf(o);
                    if (idx >= 0 && ends[idx] < 0 && b + fq > 0 && (!fullword || FullwordOk(data, o, b + fq, wq)))
                    {
                        ends[idx] = q + fq;
                        pending--;
                    }
                }
            }
        }
        for (int i = 0; i < starts.Count; i++)
        {
            int o = starts[i];
            int len = ends[i] >= 0 ? ends[i] - o : lengths[i] + f;
            if (len > 0 && (ends[i] >= 0 || !fullword || FullwordOk(data, o, len, usedWide)))
                sink.Add(o, len);
        }
    }

    /// <summary>YARA's fullword test: the match may not touch an alphanumeric character (a wide one for wide matches).</summary>
    public static bool FullwordOk(ReadOnlySpan<byte> data, int offset, int length, bool isWide)
    {
        if (isWide)
        {
            if (offset >= 2 && data[offset - 1] == 0 && char.IsAsciiLetterOrDigit((char)data[offset - 2]))
                return false;
            int end = offset + length;
            if (end + 1 < data.Length && data[end + 1] == 0 && char.IsAsciiLetterOrDigit((char)data[end]))
                return false;
        }
        else
        {
            if (offset >= 1 && char.IsAsciiLetterOrDigit((char)data[offset - 1]))
                return false;
            int end = offset + length;
            if (end < data.Length && char.IsAsciiLetterOrDigit((char)data[end]))
                return false;
        }
        return true;
    }
}
