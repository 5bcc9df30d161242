namespace Vmi.Signatures.Patterns;

/// <summary>A parsed regular expression: its tree and which kinds of quantifiers it uses.</summary>
internal sealed record ParsedPattern(ReNode Root, bool Greedy, bool Ungreedy);

/// <summary>
/// Parses YARA's regular-expression dialect into a <see cref="ReNode"/> tree. Case folding (i / nocase)
/// and dot-all (s) are applied to the byte sets here; wide matching is a property of execution.
/// </summary>
internal sealed class RegexParser
{
    /// <summary>Largest repeat bound YARA accepts.</summary>
    public const int MaxRepeat = short.MaxValue;

    private readonly string src;
    private readonly bool nocase;
    private readonly bool dotAll;
    private int pos;
    private bool greedy;
    private bool ungreedy;

    private RegexParser(string source, bool nocase, bool dotAll)
    {
        src = source;
        this.nocase = nocase;
        this.dotAll = dotAll;
    }

    public static ParsedPattern Parse(string source, bool nocase, bool dotAll)
    {
        var p = new RegexParser(source, nocase, dotAll);
        var root = p.ParseAlternation();
        if (p.pos < p.src.Length)
            throw new PatternException("syntax error", p.pos);
        if (p.greedy && p.ungreedy)
            throw new PatternException("greedy and ungreedy quantifiers can't be mixed in a regular expression", 0);
        return new ParsedPattern(root, p.greedy, p.ungreedy);
    }

    private bool AtEnd => pos >= src.Length;

    private char Peek => src[pos];

    private ReNode ParseAlternation()
    {
        var first = ParseConcat();
        if (first.Children.Count == 0)
            throw new PatternException("syntax error", pos);
        if (AtEnd || Peek != '|')
            return first;
        var alts = new List<ReNode> { first };
        while (!AtEnd && Peek == '|')
        {
            pos++;
            alts.Add(ParseConcat());
        }
        return ReNode.Alternation(alts);
    }

    private ReNode ParseConcat()
    {
        var items = new List<ReNode>();
        while (!AtEnd && Peek != '|' && Peek != ')')
            items.Add(ParseRepeat());
        return ReNode.Concat(items);
    }

    private ReNode ParseRepeat()
    {
        int start = pos;
        var single = ParseSingle();
        if (AtEnd)
            return single;
        int min, max;
        char c = Peek;
        if (c == '*')
        {
            (min, max) = (0, -1);
            pos++;
        }
        else if (c == '+')
        {
            (min, max) = (1, -1);
            pos++;
        }
        else if (c == '?')
        {
            (min, max) = (0, 1);
            pos++;
        }
        else if (c == '{' && TryParseRange(out min, out max))
        {
        }
        else
        {
            return single;
        }

        if (single.Kind is ReNodeKind.AnchorStart or ReNodeKind.AnchorEnd or ReNodeKind.WordBoundary or ReNodeKind.NonWordBoundary)
            throw new PatternException("syntax error", start);
        bool isGreedy = true;
        if (!AtEnd && Peek == '?')
        {
            isGreedy = false;
            pos++;
        }
        if (isGreedy)
            greedy = true;
        else
            ungreedy = true;
        if (!AtEnd && (Peek is '*' or '+' or '?' || (Peek == '{' && LooksLikeRange())))
            throw new PatternException("syntax error", pos);
        return ReNode.Repeat(single, min, max, isGreedy);
    }

    private bool LooksLikeRange()
    {
        int save = pos;
        bool ok = TryScanRange(out _, out _, out _);
        pos = save;
        return ok;
    }

    /// <summary>Scans {n}, {n,}, {,m}, {n,m} at pos (no validation). Advances past it when it is one.</summary>
    private bool TryScanRange(out long lo, out long hi, out bool hiOpen)
    {
        lo = 0;
        hi = 0;
        hiOpen = false;
        int i = pos + 1;
        int d1 = i;
        while (i < src.Length && char.IsAsciiDigit(src[i]))
            i++;
        string a = src[d1..i];
        if (i < src.Length && src[i] == '}')
        {
            if (a.Length == 0)
                return false;
            lo = hi = ParseBound(a);
            pos = i + 1;
            return true;
        }
        if (i >= src.Length || src[i] != ',')
            return false;
        i++;
        int d2 = i;
        while (i < src.Length && char.IsAsciiDigit(src[i]))
            i++;
        string b = src[d2..i];
        if (i >= src.Length || src[i] != '}')
            return false;
        lo = a.Length == 0 ? 0 : ParseBound(a);
        hiOpen = b.Length == 0;
        hi = hiOpen ? MaxRepeat : ParseBound(b);
        pos = i + 1;
        return true;
    }

    private static long ParseBound(string digits) =>
        digits.Length > 9 ? long.MaxValue : long.Parse(digits, System.Globalization.CultureInfo.InvariantCulture);

    private bool TryParseRange(out int min, out int max)
    {
        int start = pos;
        if (!TryScanRange(out long lo, out long hi, out bool open))
        {
            min = max = 0;
            return false;
        }
        if (hi > MaxRepeat || lo > MaxRepeat)
            throw new PatternException("repeat interval too large", start);
        if (hi < lo || hi == 0)
            throw new PatternException("bad repeat interval", start);
        min = (int)lo;
        max = open ? -1 : (int)hi;
        return true;
    }

    private ReNode ParseSingle()
    {
        int start = pos;
        char c = Peek;
        switch (c)
        {
            case '(':
            {
                pos++;
                if (AtEnd)
                    throw new PatternException("syntax error", pos);
                var inner = ParseAlternation();
                if (AtEnd || Peek != ')')
                    throw new PatternException("syntax error", pos);
                pos++;
                return inner;
            }
            case ')':
            case '|':
            case '*':
            case '+':
            case '?':
                throw new PatternException("syntax error", start);
            case '.':
            {
                pos++;
                var s = ByteSet.All();
                if (!dotAll)
                    s.Remove('\n');
                return ReNode.ForSet(s);
            }
            case '^':
                pos++;
                return ReNode.Assertion(ReNodeKind.AnchorStart);
            case '$':
                pos++;
                return ReNode.Assertion(ReNodeKind.AnchorEnd);
            case '[':
                return ReNode.ForSet(ParseClass());
            case '\\':
                return ParseEscapeOutsideClass();
            default:
                pos++;
                return Literal(CharByte(c, start));
        }
    }

    private static byte CharByte(char c, int at) =>
        c > 0xFF ? throw new PatternException("non-ascii character", at) : (byte)c;

    private ReNode Literal(byte b)
    {
        var s = ByteSet.Of(b);
        if (nocase)
            s.FoldCase();
        return ReNode.ForSet(s);
    }

    private ReNode ParseEscapeOutsideClass()
    {
        int start = pos;
        pos++;
        if (AtEnd)
            throw new PatternException("illegal escape sequence", start);
        char e = Peek;
        switch (e)
        {
            case 'w':
            case 'W':
            case 's':
            case 'S':
            case 'd':
            case 'D':
                pos++;
                return ReNode.ForSet(ShorthandClass(e));
            case 'b':
                pos++;
                return ReNode.Assertion(ReNodeKind.WordBoundary);
            case 'B':
                pos++;
                return ReNode.Assertion(ReNodeKind.NonWordBoundary);
            default:
                pos--;
                return Literal(ReadEscapedChar());
        }
    }

    /// <summary>Reads an escape sequence starting at the backslash (pos) and returns the byte it denotes.</summary>
    private byte ReadEscapedChar()
    {
        int start = pos;
        pos++;
        if (AtEnd)
            throw new PatternException("illegal escape sequence", start);
        char e = src[pos++];
        switch (e)
        {
            case 'x':
            {
                if (pos + 2 > src.Length || !char.IsAsciiHexDigit(src[pos]) || !char.IsAsciiHexDigit(src[pos + 1]))
                    throw new PatternException("illegal escape sequence", start);
                byte v = byte.Parse(src.AsSpan(pos, 2), System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture);
                pos += 2;
                return v;
            }
            case 'n': return (byte)'\n';
            case 't': return (byte)'\t';
            case 'r': return (byte)'\r';
            case 'f': return (byte)'\f';
            case 'a': return 0x07;
            default: return CharByte(e, start);
        }
    }

    private static ByteSet ShorthandClass(char e)
    {
        var s = new ByteSet();
        switch (char.ToLowerInvariant(e))
        {
            case 'w':
                s.AddRange('a', 'z');
                s.AddRange('A', 'Z');
                s.AddRange('0', '9');
                s.Add('_');
                break;
            case 's':
                foreach (char c in " \t\r\n\v\f")
                    s.Add(c);
                break;
            default:
                s.AddRange('0', '9');
                break;
        }
        if (char.IsUpper(e))
            s.Invert();
        return s;
    }

    private ByteSet ParseClass()
    {
        int start = pos;
        pos++;
        bool negated = false;
        var s = new ByteSet();
        if (!AtEnd && Peek == '^')
        {
            negated = true;
            pos++;
        }
        if (!AtEnd && Peek == ']')
        {
            s.Add(']');
            pos++;
        }
        while (true)
        {
            if (AtEnd)
                throw new PatternException("missing terminating ] for character class", start);
            char c = Peek;
            if (c == ']')
            {
                pos++;
                break;
            }
            int lo;
            if (c == '\\')
            {
                if (pos + 1 < src.Length && "wWsSdD".Contains(src[pos + 1], StringComparison.Ordinal))
                {
                    s.UnionWith(ShorthandClass(src[pos + 1]));
                    pos += 2;
                    continue;
                }
                lo = ReadEscapedChar();
            }
            else
            {
                lo = CharByte(c, pos);
                pos++;
            }
            if (pos + 1 < src.Length && src[pos] == '-' && src[pos + 1] != ']')
            {
                int rangeAt = pos;
                pos++;
                int hi;
                if (src[pos] == '\\')
                    hi = ReadEscapedChar();
                else
                {
                    hi = CharByte(src[pos], pos);
                    pos++;
                }
                if (hi < lo)
                    throw new PatternException("bad character range", rangeAt);
                s.AddRange(lo, hi);
            }
            else
            {
                s.Add(lo);
            }
        }
        if (nocase)
            s.FoldCase();
        if (negated)
            s.Invert();
        return s;
    }
}
