namespace Vmi.Signatures.Patterns;

/// <summary>A window of consecutive byte sets starting at <see cref="Anchor"/>.</summary>
internal sealed record AtomWindow(ReNode Anchor, List<ByteSet> Sets);

/// <summary>A set of windows such that every match of the pattern contains one of them.</summary>
internal sealed record AtomChoice(List<AtomWindow> Windows, int Quality);

/// <summary>
/// Chooses atoms from a pattern tree the way YARA does in spirit: within a concatenation the best single
/// window wins; an alternation needs a window from every branch; optional parts give no atom.
/// </summary>
internal static class TreeAtoms
{
    /// <summary>Largest byte set that may take part in an atom window.</summary>
    private const int MaxSetSize = 16;
    /// <summary>Most byte sequences one window may expand into.</summary>
    private const int MaxWindowVariants = 64;

    public static AtomChoice? Choose(ReNode node)
    {
        switch (node.Kind)
        {
            case ReNodeKind.Set:
                return node.Set!.Count <= MaxSetSize ? Single(node, [node.Set!]) : null;
            case ReNodeKind.Concat:
                return FromConcat(node);
            case ReNodeKind.Alternation:
            {
                var windows = new List<AtomWindow>();
                int q = int.MaxValue;
                foreach (var c in node.Children)
                {
                    var sub = Choose(c);
                    if (sub is null)
                        return null;
                    windows.AddRange(sub.Windows);
                    q = Math.Min(q, sub.Quality);
                }
                return new AtomChoice(windows, q);
            }
            case ReNodeKind.Repeat:
                return node.Min >= 1 ? Choose(node.Children[0]) : null;
            default:
                return null;
        }
    }

    private static AtomChoice Single(ReNode anchor, List<ByteSet> sets) =>
        new([new AtomWindow(anchor, sets)], AtomQuality.Score(sets));

    private static AtomChoice? FromConcat(ReNode node)
    {
        AtomChoice? best = null;
        var kids = node.Children;
        for (int i = 0; i < kids.Count; i++)
        {
            var k = kids[i];
            if (k.Kind == ReNodeKind.Set)
            {
                if (k.Set!.Count > MaxSetSize)
                    continue;
                var sets = new List<ByteSet>();
                long variants = 1;
                for (int j = i; j < kids.Count && sets.Count < AtomQuality.MaxAtomLength; j++)
                {
                    if (kids[j].Kind != ReNodeKind.Set || kids[j].Set!.Count > MaxSetSize)
                        break;
                    if (variants * kids[j].Set!.Count > MaxWindowVariants)
                        break;
                    variants *= kids[j].Set!.Count;
                    sets.Add(kids[j].Set!);
                }
                var c = Single(k, sets);
                if (best is null || c.Quality > best.Quality)
                    best = c;
            }
            else
            {
                var c = Choose(k);
                if (c is not null && (best is null || c.Quality > best.Quality))
                    best = c;
            }
        }
        return best;
    }
}
