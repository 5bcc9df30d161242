namespace Vmi.Signatures.Patterns;

/// <summary>
/// One YARA string compiled for scanning: the atoms the multi-pattern scanner looks for, and the verifier
/// that turns an atom occurrence into the matches YARA would report (offset and length).
/// </summary>
public sealed class CompiledString
{
    private readonly LiteralMatcher? literal;
    private readonly Base64Matcher? base64;
    private readonly TreeMatcher? tree;
    private readonly ChainMatcher? chain;

    private CompiledString(StringSpec spec, LiteralMatcher? literal, Base64Matcher? base64, TreeMatcher? tree, ChainMatcher? chain)
    {
        Spec = spec;
        this.literal = literal;
        this.base64 = base64;
        this.tree = tree;
        this.chain = chain;
        Atoms = literal?.Atoms ?? base64?.Atoms ?? chain?.Atoms ?? tree!.Atoms;
        MaxMatchLength = literal?.MaxMatchLength ?? base64?.MaxMatchLength ?? chain?.MaxMatchLength ?? tree!.MaxMatchLength;
    }

    public StringSpec Spec { get; }

    /// <summary>For text strings: the bytes that must follow an atom (see <see cref="LiteralMatcher.TailAfter"/>).</summary>
    internal (byte[] Tail, bool Nocase)? LiteralTail(Atom atom, int max) => literal?.TailAfter(atom, max);

    /// <summary>For xor text strings: the unxored window start and tail after an atom.</summary>
    internal (byte Window0, byte[] Tail)? XorTail(Atom atom, int max) => literal?.XorTailAfter(atom, max);

    /// <summary>Exact byte sequences; every match contains at least one. Empty only when no atom is possible.</summary>
    public IReadOnlyList<Atom> Atoms { get; }

    /// <summary>Upper bound of a match length (for sizing the overlap between chunks).</summary>
    public int MaxMatchLength { get; }

    /// <summary>Compiles a string declaration. Throws <see cref="PatternException"/> for an invalid pattern.</summary>
    public static CompiledString Compile(StringSpec spec, PatternLimits limits)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(limits);
        var m = spec.Modifiers;
        bool wide = (m & StringModifiers.Wide) != 0;
        bool ascii = (m & StringModifiers.Ascii) != 0 || !wide;
        bool fullword = (m & StringModifiers.Fullword) != 0;
        switch (spec.Kind)
        {
            case StringKind.Text:
                if ((m & (StringModifiers.Base64 | StringModifiers.Base64Wide)) != 0)
                    return new CompiledString(spec, null, new Base64Matcher(spec), null, null);
                return new CompiledString(spec, new LiteralMatcher(spec, limits), null, null, null);
            case StringKind.Hex:
            {
                var hex = HexParser.Parse(spec.Source);
                bool shortest = !hex.HasAlternatives;
                var chain = ChainMatcher.TryCreate(hex.Root, shortest, limits);
                if (chain is not null)
                    return new CompiledString(spec, null, null, null, chain);
                var t = new TreeMatcher(hex.Root, ascii: true, wide: false, fullword: false, greedy: false, shortest, limits);
                return new CompiledString(spec, null, null, t, null);
            }
            case StringKind.Regex:
            {
                if (spec.Source.Length == 0)
                    throw new PatternException("empty regular expression", 0);
                bool nocase = spec.RegexNocase || (m & StringModifiers.Nocase) != 0;
                var re = RegexParser.Parse(spec.Source, nocase, spec.RegexDotAll);
                var t = new TreeMatcher(re.Root, ascii, wide, fullword, re.Greedy, shortest: false, limits);
                return new CompiledString(spec, null, null, t, null);
            }
            default:
                throw new PatternException($"unknown string kind {spec.Kind}", 0);
        }
    }

    /// <summary>
    /// Reports every match YARA would record for the occurrence of <paramref name="atom"/> at
    /// <paramref name="atomPosition"/> in <paramref name="data"/>.
    /// </summary>
    public void Verify(ReadOnlySpan<byte> data, Atom atom, int atomPosition, IMatchSink sink, ScanBudget budget)
    {
        ArgumentNullException.ThrowIfNull(atom);
        ArgumentNullException.ThrowIfNull(sink);
        ArgumentNullException.ThrowIfNull(budget);
        if (literal is not null)
            literal.Verify(data, atom.Id, atomPosition, sink);
        else if (base64 is not null)
            base64.Verify(data, atom.Id, atomPosition, sink);
        else if (chain is not null)
            chain.Verify(data, atom.Id, atomPosition, sink, budget);
        else
            tree!.Verify(data, atom.Id, atomPosition, sink, budget);
    }

    /// <summary>
    /// YARA's <c>matches</c> operator for a regular expression: true when it matches anywhere in
    /// <paramref name="data"/> (empty matches count; like YARA only the first 4096 bytes are searched).
    /// For other kinds of string: true when <see cref="VerifyAll"/> finds a match.
    /// </summary>
    public bool IsMatch(ReadOnlySpan<byte> data, ScanBudget budget)
    {
        ArgumentNullException.ThrowIfNull(budget);
        if (tree is not null)
            return tree.IsMatch(data, budget);
        var first = new AnyMatchSink();
        VerifyAll(data, first, budget);
        return first.Found;
    }

    private sealed class AnyMatchSink : IMatchSink
    {
        public bool Found { get; private set; }
        public void Add(int offset, int length) => Found = true;
    }

    /// <summary>For strings without atoms: examines every offset of <paramref name="data"/>.</summary>
    public void VerifyAll(ReadOnlySpan<byte> data, IMatchSink sink, ScanBudget budget)
    {
        ArgumentNullException.ThrowIfNull(sink);
        ArgumentNullException.ThrowIfNull(budget);
        if (literal is not null)
            literal.VerifyAll(data, sink);
        else if (base64 is not null)
            base64.VerifyAll(data, sink);
        else if (chain is not null)
            chain.VerifyAll(data, sink, budget);
        else
            tree!.VerifyAll(data, sink, budget);
    }
}
