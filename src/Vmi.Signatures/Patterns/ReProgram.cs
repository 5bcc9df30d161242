namespace Vmi.Signatures.Patterns;

internal enum ReOp : byte
{
    /// <summary>Consume one byte in set A.</summary>
    Set,
    /// <summary>Fork: A first (higher priority), then B.</summary>
    Split,
    Jump,
    Match,
    AssertStart,
    AssertEnd,
    WordBoundary,
    NonWordBoundary,
}

/// <summary>
/// A compiled pattern program for <see cref="PikeVm"/>. Built either forwards (matching from an atom to the
/// end of the pattern) or backwards (matching, right to left, everything that precedes an atom).
/// </summary>
internal sealed class ReProgram
{
    private ReProgram(ReOp[] ops, int[] a, int[] b, ulong[] sets)
    {
        Ops = ops;
        A = a;
        B = b;
        Sets = sets;
    }

    public ReOp[] Ops { get; }
    public int[] A { get; }
    public int[] B { get; }
    /// <summary>Four words per byte set, indexed by A of a Set instruction.</summary>
    public ulong[] Sets { get; }
    public int Length => Ops.Length;

    /// <summary>Compiles <paramref name="root"/>. <paramref name="entries"/> receives, for every node marked as an atom
    /// anchor, the program counter where matching continues: forwards, the node's own instruction; backwards,
    /// the instruction after the node (matching what precedes it).</summary>
    public static ReProgram Compile(ReNode root, bool backwards, ISet<ReNode> anchors, Dictionary<ReNode, int> entries, int maxSize)
    {
        var e = new Emitter(backwards, anchors, entries, maxSize);
        e.Emit(root, record: true);
        e.Add(ReOp.Match, 0, 0);
        return new ReProgram([.. e.Ops], [.. e.A], [.. e.B], [.. e.SetWords]);
    }

    private sealed class Emitter(bool backwards, ISet<ReNode> anchors, Dictionary<ReNode, int> entries, int maxSize)
    {
        public List<ReOp> Ops { get; } = [];
        public List<int> A { get; } = [];
        public List<int> B { get; } = [];
        public List<ulong> SetWords { get; } = [];
        private readonly Dictionary<ByteSet, int> setIndex = [];

        public int Add(ReOp op, int a, int b)
        {
            if (Ops.Count >= maxSize)
                throw new PatternException("pattern is too complex (program too large)", 0);
            Ops.Add(op);
            A.Add(a);
            B.Add(b);
            return Ops.Count - 1;
        }

        private int SetId(ByteSet s)
        {
            if (!setIndex.TryGetValue(s, out int id))
            {
                id = SetWords.Count / 4;
                for (int i = 0; i < 4; i++)
                    SetWords.Add(s.Word(i));
                setIndex[s] = id;
            }
            return id;
        }

        public void Emit(ReNode n, bool record)
        {
            switch (n.Kind)
            {
                case ReNodeKind.Set:
                {
                    int pc = Add(ReOp.Set, SetId(n.Set!), 0);
                    if (record && anchors.Contains(n))
                        entries[n] = backwards ? pc + 1 : pc;
                    break;
                }
                case ReNodeKind.Concat:
                    if (backwards)
                    {
                        for (int i = n.Children.Count - 1; i >= 0; i--)
                            Emit(n.Children[i], record);
                    }
                    else
                    {
                        foreach (var c in n.Children)
                            Emit(c, record);
                    }
                    break;
                case ReNodeKind.Alternation:
                {
                    var jumps = new List<int>();
                    for (int i = 0; i < n.Children.Count; i++)
                    {
                        if (i < n.Children.Count - 1)
                        {
                            int split = Add(ReOp.Split, 0, 0);
                            A[split] = Ops.Count;
                            Emit(n.Children[i], record);
                            jumps.Add(Add(ReOp.Jump, 0, 0));
                            B[split] = Ops.Count;
                        }
                        else
                        {
                            Emit(n.Children[i], record);
                        }
                    }
                    foreach (int j in jumps)
                        A[j] = Ops.Count;
                    break;
                }
                case ReNodeKind.Repeat:
                    EmitRepeat(n, record);
                    break;
                case ReNodeKind.AnchorStart:
                    Add(ReOp.AssertStart, 0, 0);
                    break;
                case ReNodeKind.AnchorEnd:
                    Add(ReOp.AssertEnd, 0, 0);
                    break;
                case ReNodeKind.WordBoundary:
                    Add(ReOp.WordBoundary, 0, 0);
                    break;
                case ReNodeKind.NonWordBoundary:
                    Add(ReOp.NonWordBoundary, 0, 0);
                    break;
            }
        }

        private void EmitRepeat(ReNode n, bool record)
        {
            var child = n.Children[0];
            int mandatory = n.Min;
            // The copy that may hold atom anchors: the first one matched forwards, which is the last one
            // matched when running backwards.
            bool designated = record && mandatory > 0;
            if (designated && !backwards)
            {
                Emit(child, true);
                mandatory--;
            }
            else if (designated)
            {
                mandatory--;
            }
            for (int i = 0; i < mandatory; i++)
                Emit(child, false);
            int optional = n.Max < 0 ? -1 : n.Max - n.Min;
            if (optional < 0)
            {
                int loop = Add(ReOp.Split, 0, 0);
                int body = Ops.Count;
                Emit(child, false);
                Add(ReOp.Jump, loop, 0);
                int exit = Ops.Count;
                (A[loop], B[loop]) = n.Greedy ? (body, exit) : (exit, body);
            }
            else if (optional > 0)
            {
                var splits = new List<int>(optional);
                for (int i = 0; i < optional; i++)
                {
                    splits.Add(Add(ReOp.Split, 0, 0));
                    Emit(child, false);
                }
                int exit = Ops.Count;
                foreach (int s in splits)
                {
                    int body = s + 1;
                    (A[s], B[s]) = n.Greedy ? (body, exit) : (exit, body);
                }
            }
            if (designated && backwards)
                Emit(child, true);
        }
    }
}
