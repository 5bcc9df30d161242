namespace Vmi.Signatures.Patterns;

/// <summary>A parsed hex string: its tree (a top-level concatenation) and whether it has alternatives.</summary>
internal sealed record ParsedHex(ReNode Root, bool HasAlternatives);

/// <summary>Parses the text between the braces of a YARA hex string.</summary>
internal sealed class HexParser
{
    private readonly string src;
    private int pos;
    private bool hasAlternatives;

    private HexParser(string source) => src = source;

    public static ParsedHex Parse(string source)
    {
        var p = new HexParser(source);
        p.SkipSpace();
        var root = p.ParseTokens(insideAlternative: false);
        p.SkipSpace();
        if (p.pos < p.src.Length)
            throw new PatternException("syntax error", p.pos);
        return new ParsedHex(root, p.hasAlternatives);
    }

    private bool AtEnd => pos >= src.Length;

    private void SkipSpace()
    {
        while (pos < src.Length)
        {
            char c = src[pos];
            if (c is ' ' or '\t' or '\r' or '\n' or '\v' or '\f')
            {
                pos++;
            }
            else if (c == '/' && pos + 1 < src.Length && src[pos + 1] == '/')
            {
                while (pos < src.Length && src[pos] != '\n')
                    pos++;
            }
            else if (c == '/' && pos + 1 < src.Length && src[pos + 1] == '*')
            {
                int end = src.IndexOf("*/", pos + 2, StringComparison.Ordinal);
                if (end < 0)
                    throw new PatternException("syntax error", pos);
                pos = end + 2;
            }
            else
            {
                return;
            }
        }
    }

    /// <summary>A sequence of bytes, alternatives and jumps that neither starts nor ends with a jump.</summary>
    private ReNode ParseTokens(bool insideAlternative)
    {
        var items = new List<ReNode>();
        bool lastWasJump = false;
        while (true)
        {
            SkipSpace();
            if (AtEnd)
                break;
            char c = src[pos];
            if (c is '|' or ')')
                break;
            if (c == '[')
            {
                int at = pos;
                if (items.Count == 0)
                    throw new PatternException("syntax error", at);
                var jump = ParseJump(insideAlternative);
                items.Add(jump);
                lastWasJump = true;
                continue;
            }
            if (c == '(')
            {
                items.Add(ParseAlternatives());
            }
            else
            {
                items.Add(ParseByte());
            }
            lastWasJump = false;
        }
        if (items.Count == 0 || lastWasJump)
            throw new PatternException("syntax error", pos);
        return ReNode.Concat(items);
    }

    private ReNode ParseAlternatives()
    {
        hasAlternatives = true;
        int open = pos;
        pos++;
        var alts = new List<ReNode> { ParseTokens(insideAlternative: true) };
        while (true)
        {
            SkipSpace();
            if (AtEnd)
                throw new PatternException("syntax error", open);
            if (src[pos] == ')')
            {
                pos++;
                break;
            }
            if (src[pos] != '|')
                throw new PatternException("syntax error", pos);
            pos++;
            alts.Add(ParseTokens(insideAlternative: true));
        }
        return alts.Count == 1 ? alts[0] : ReNode.Alternation(alts);
    }

    private static int Nibble(char c) => c switch
    {
        >= '0' and <= '9' => c - '0',
        >= 'a' and <= 'f' => c - 'a' + 10,
        >= 'A' and <= 'F' => c - 'A' + 10,
        _ => -1,
    };

    private ReNode ParseByte()
    {
        int at = pos;
        char c1 = src[pos];
        if (c1 != '?' && Nibble(c1) < 0)
            throw new PatternException("syntax error", at);
        pos++;
        if (AtEnd || (src[pos] != '?' && Nibble(src[pos]) < 0))
        {
            if (!AtEnd && !char.IsWhiteSpace(src[pos]) && src[pos] is not ('[' or '(' or ')' or '|' or '/'))
                throw new PatternException("syntax error", pos);
            throw new PatternException("uneven number of digits in hex string", at);
        }
        char c2 = src[pos++];
        int mask = (c1 == '?' ? 0 : 0xF0) | (c2 == '?' ? 0 : 0x0F);
        int value = ((c1 == '?' ? 0 : Nibble(c1)) << 4) | (c2 == '?' ? 0 : Nibble(c2));
        var set = new ByteSet();
        for (int b = 0; b < 256; b++)
        {
            if ((b & mask) == value)
                set.Add(b);
        }
        return ReNode.ForSet(set);
    }

    private ReNode ParseJump(bool insideAlternative)
    {
        int at = pos;
        pos++;
        SkipSpace();
        long lo;
        long hi;
        if (!AtEnd && src[pos] == '-')
        {
            pos++;
            lo = 0;
            hi = -1;
        }
        else
        {
            lo = ParseNumber();
            SkipSpace();
            if (!AtEnd && src[pos] == '-')
            {
                pos++;
                SkipSpace();
                hi = !AtEnd && char.IsAsciiDigit(src[pos]) ? ParseNumber() : -1;
            }
            else
            {
                // YARA rejects the empty jump [0] (but accepts [0-0]).
                if (lo == 0)
                    throw new PatternException("invalid jump length", at);
                hi = lo;
            }
        }
        SkipSpace();
        if (AtEnd || src[pos] != ']')
            throw new PatternException("syntax error", pos);
        pos++;
        if (hi >= 0 && lo > hi)
            throw new PatternException("invalid jump range", at);
        if (hi < 0 && insideAlternative)
            throw new PatternException("unbounded jumps not allowed inside alternation (|)", at);
        if (lo > int.MaxValue / 2 || hi > int.MaxValue / 2)
            throw new PatternException("invalid jump length", at);
        return ReNode.Repeat(ReNode.ForSet(ByteSet.All()), (int)lo, (int)hi, greedy: false);
    }

    private long ParseNumber()
    {
        int start = pos;
        while (pos < src.Length && char.IsAsciiDigit(src[pos]))
            pos++;
        if (pos == start)
            throw new PatternException("syntax error", start);
        return pos - start > 12 ? long.MaxValue : long.Parse(src.AsSpan(start, pos - start), System.Globalization.CultureInfo.InvariantCulture);
    }
}
