using System.Globalization;
using System.Text;

namespace Vmi.Signatures.Yara;

/// <summary>Where something is in a rule file: file name, 1-based line and column.</summary>
public readonly record struct SourcePos(string File, int Line, int Column)
{
    public override string ToString() => $"{File}({Line.ToString(CultureInfo.InvariantCulture)},{Column.ToString(CultureInfo.InvariantCulture)})";
}

/// <summary>A rule file that cannot be compiled: the first problem, with its position.</summary>
public sealed class YaraCompileException : Exception
{
    public YaraCompileException() { }
    public YaraCompileException(string message) : base(message) { }
    public YaraCompileException(string message, Exception inner) : base(message, inner) { }
    public YaraCompileException(SourcePos pos, string? rule, string message)
        : base(Format(pos, rule, message))
    {
        Pos = pos;
        Rule = rule;
        Detail = message;
    }

    public SourcePos Pos { get; }
    public string? Rule { get; }
    public string Detail { get; } = "";

    private static string Format(SourcePos pos, string? rule, string message) =>
        rule is null ? $"{pos}: error: {message}" : $"{pos}: error: rule \"{rule}\": {message}";
}

internal enum Tok
{
    End,
    Identifier,      // foo
    StringId,        // $a, $ ; Text holds the name incl. '$'
    StringIdWild,    // $a*
    StringCount,     // #a
    StringOffset,    // @a
    StringLength,    // !a
    Integer,
    Float,
    Text,            // "..." (Bytes holds the value)
    Regex,           // /.../is (Text holds the body, Flags the modifiers)
    HexString,       // { ... } (Text holds the body)
    LBrace, RBrace, LParen, RParen, LBracket, RBracket,
    Colon, Comma, Assign, DotDot, Dot,
    Plus, Minus, Star, Backslash, Percent, Amp, Pipe, Caret, Tilde, Shl, Shr,
    Lt, Le, Gt, Ge, Eq, Ne,
}

internal sealed record Token(Tok Kind, string Text, SourcePos Pos)
{
    public long Int { get; init; }
    public double Float { get; init; }
    public byte[] Bytes { get; init; } = [];
    public string Flags { get; init; } = "";
}

/// <summary>
/// Tokenizer for the YARA language. Context matters in one place: a '{' right after '=' in a strings
/// section starts a hex string, which the parser asks for with <see cref="NextHexOrBrace"/>.
/// </summary>
internal sealed class Lexer
{
    private const int MaxTextLength = 1 << 20;
    private readonly string src;
    private readonly string file;
    private int pos;
    private int line = 1;
    private int lineStart;

    public Lexer(string source, string file)
    {
        src = source;
        this.file = file;
    }

    public string FileName => file;

    private SourcePos Here(int at) => new(file, line, at - lineStart + 1);

    private YaraCompileException Error(int at, string message) => new(Here(at), null, message);

    private void SkipTrivia()
    {
        while (pos < src.Length)
        {
            char c = src[pos];
            if (c == '\n')
            {
                pos++;
                line++;
                lineStart = pos;
            }
            else if (c is ' ' or '\t' or '\r' or '\f' or '\v')
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
                int start = pos;
                pos += 2;
                while (pos + 1 < src.Length && !(src[pos] == '*' && src[pos + 1] == '/'))
                {
                    if (src[pos] == '\n')
                    {
                        line++;
                        lineStart = pos + 1;
                    }
                    pos++;
                }
                if (pos + 1 >= src.Length)
                    throw Error(start, "unterminated comment");
                pos += 2;
            }
            else
            {
                return;
            }
        }
    }

    /// <summary>After '=' in a strings section: a hex string if the next token is '{'.</summary>
    public Token NextHexOrBrace()
    {
        SkipTrivia();
        if (pos < src.Length && src[pos] == '{')
        {
            var at = Here(pos);
            int start = ++pos;
            while (pos < src.Length && src[pos] != '}')
            {
                if (src[pos] == '\n')
                {
                    line++;
                    lineStart = pos + 1;
                }
                pos++;
            }
            if (pos >= src.Length)
                throw new YaraCompileException(at, null, "unterminated hex string");
            string body = src[start..pos];
            pos++;
            return new Token(Tok.HexString, body, at);
        }
        return Next();
    }

    public Token Next()
    {
        SkipTrivia();
        if (pos >= src.Length)
            return new Token(Tok.End, "", Here(pos));
        int start = pos;
        var at = Here(pos);
        char c = src[pos];
        if (char.IsAsciiLetter(c) || c == '_')
        {
            while (pos < src.Length && (char.IsAsciiLetterOrDigit(src[pos]) || src[pos] == '_'))
                pos++;
            string id = src[start..pos];
            if (id.Length > 128)
                throw Error(start, $"identifier too long: \"{id[..32]}…\"");
            return new Token(Tok.Identifier, id, at);
        }
        if (c is '$' or '#' or '@' or '!')
        {
            if (c == '!' && pos + 1 < src.Length && src[pos + 1] == '=')
            {
                pos += 2;
                return new Token(Tok.Ne, "!=", at);
            }
            pos++;
            while (pos < src.Length && (char.IsAsciiLetterOrDigit(src[pos]) || src[pos] == '_'))
                pos++;
            string name = src[start..pos];
            if (c == '$' && pos < src.Length && src[pos] == '*')
            {
                pos++;
                return new Token(Tok.StringIdWild, name, at);
            }
            var kind = c switch { '$' => Tok.StringId, '#' => Tok.StringCount, '@' => Tok.StringOffset, _ => Tok.StringLength };
            return new Token(kind, "$" + name[1..], at);
        }
        if (char.IsAsciiDigit(c))
            return Number(start, at);
        if (c == '"')
            return TextString(start, at);
        if (c == '/')
            return RegexLiteral(start, at);
        pos++;
        char n = pos < src.Length ? src[pos] : '\0';
        switch (c)
        {
            case '{': return new Token(Tok.LBrace, "{", at);
            case '}': return new Token(Tok.RBrace, "}", at);
            case '(': return new Token(Tok.LParen, "(", at);
            case ')': return new Token(Tok.RParen, ")", at);
            case '[': return new Token(Tok.LBracket, "[", at);
            case ']': return new Token(Tok.RBracket, "]", at);
            case ':': return new Token(Tok.Colon, ":", at);
            case ',': return new Token(Tok.Comma, ",", at);
            case '+': return new Token(Tok.Plus, "+", at);
            case '-': return new Token(Tok.Minus, "-", at);
            case '*': return new Token(Tok.Star, "*", at);
            case '\\': return new Token(Tok.Backslash, "\\", at);
            case '%': return new Token(Tok.Percent, "%", at);
            case '&': return new Token(Tok.Amp, "&", at);
            case '|': return new Token(Tok.Pipe, "|", at);
            case '^': return new Token(Tok.Caret, "^", at);
            case '~': return new Token(Tok.Tilde, "~", at);
            case '.':
                if (n == '.')
                {
                    pos++;
                    return new Token(Tok.DotDot, "..", at);
                }
                return new Token(Tok.Dot, ".", at);
            case '=':
                if (n == '=')
                {
                    pos++;
                    return new Token(Tok.Eq, "==", at);
                }
                return new Token(Tok.Assign, "=", at);
            case '<':
                if (n == '=') { pos++; return new Token(Tok.Le, "<=", at); }
                if (n == '<') { pos++; return new Token(Tok.Shl, "<<", at); }
                return new Token(Tok.Lt, "<", at);
            case '>':
                if (n == '=') { pos++; return new Token(Tok.Ge, ">=", at); }
                if (n == '>') { pos++; return new Token(Tok.Shr, ">>", at); }
                return new Token(Tok.Gt, ">", at);
            default:
                throw Error(start, $"unexpected character '{Printable(c)}'");
        }
    }

    private static string Printable(char c) =>
        c is >= ' ' and <= '~' ? c.ToString() : "\\u" + ((int)c).ToString("x4", CultureInfo.InvariantCulture);

    private Token Number(int start, SourcePos at)
    {
        long value;
        if (src[pos] == '0' && pos + 1 < src.Length && (src[pos + 1] is 'x' or 'X'))
        {
            pos += 2;
            int digits = pos;
            while (pos < src.Length && char.IsAsciiHexDigit(src[pos]))
                pos++;
            if (pos == digits)
                throw Error(start, "invalid hexadecimal number");
            if (!long.TryParse(src.AsSpan(digits, pos - digits), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value) || pos - digits > 16)
                throw Error(start, $"integer too large: {src[start..pos]}");
        }
        else if (src[pos] == '0' && pos + 1 < src.Length && src[pos + 1] == 'o')
        {
            pos += 2;
            int digits = pos;
            value = 0;
            while (pos < src.Length && src[pos] is >= '0' and <= '7')
            {
                if (value > (long.MaxValue >> 3))
                    throw Error(start, "integer too large");
                value = (value << 3) | (long)(src[pos] - '0');
                pos++;
            }
            if (pos == digits)
                throw Error(start, "invalid octal number");
        }
        else
        {
            while (pos < src.Length && char.IsAsciiDigit(src[pos]))
                pos++;
            if (pos + 1 < src.Length && src[pos] == '.' && char.IsAsciiDigit(src[pos + 1]))
            {
                pos++;
                while (pos < src.Length && char.IsAsciiDigit(src[pos]))
                    pos++;
                double d = double.Parse(src.AsSpan(start, pos - start), NumberStyles.Float, CultureInfo.InvariantCulture);
                return new Token(Tok.Float, src[start..pos], at) { Float = d };
            }
            if (!long.TryParse(src.AsSpan(start, pos - start), NumberStyles.None, CultureInfo.InvariantCulture, out value))
                throw Error(start, $"integer too large: {src[start..pos]}");
        }
        if (pos + 1 < src.Length && src[pos + 1] == 'B' && (src[pos] is 'K' or 'M'))
        {
            long mul = src[pos] == 'K' ? 1024 : 1024 * 1024;
            if (value > long.MaxValue / mul)
                throw Error(start, "integer too large");
            value *= mul;
            pos += 2;
        }
        if (pos < src.Length && (char.IsAsciiLetter(src[pos]) || src[pos] == '_'))
            throw Error(pos, $"invalid number: {src[start..(pos + 1)]}");
        return new Token(Tok.Integer, src[start..pos], at) { Int = value };
    }

    private Token TextString(int start, SourcePos at)
    {
        pos++;
        var bytes = new List<byte>();
        while (true)
        {
            if (pos >= src.Length || src[pos] == '\n')
                throw Error(start, "unterminated string");
            char c = src[pos];
            if (c == '"')
            {
                pos++;
                break;
            }
            if (c == '\\')
            {
                if (pos + 1 >= src.Length)
                    throw Error(start, "unterminated string");
                char e = src[pos + 1];
                switch (e)
                {
                    case '"': bytes.Add((byte)'"'); pos += 2; break;
                    case '\\': bytes.Add((byte)'\\'); pos += 2; break;
                    case 'n': bytes.Add((byte)'\n'); pos += 2; break;
                    case 't': bytes.Add((byte)'\t'); pos += 2; break;
                    case 'r': bytes.Add((byte)'\r'); pos += 2; break;
                    case 'x':
                        if (pos + 3 < src.Length && char.IsAsciiHexDigit(src[pos + 2]) && char.IsAsciiHexDigit(src[pos + 3]))
                        {
                            bytes.Add(byte.Parse(src.AsSpan(pos + 2, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture));
                            pos += 4;
                            break;
                        }
                        throw Error(pos, "illegal escape sequence: \\x needs two hexadecimal digits");
                    default:
                        throw Error(pos, $"illegal escape sequence \\{Printable(e)}");
                }
                continue;
            }
            if (c < 0x80)
            {
                bytes.Add((byte)c);
                pos++;
            }
            else
            {
                // Non-ASCII text is taken as its UTF-8 bytes, as YARA reads rule files byte by byte.
                int len = char.IsHighSurrogate(c) && pos + 1 < src.Length ? 2 : 1;
                bytes.AddRange(Encoding.UTF8.GetBytes(src.Substring(pos, len)));
                pos += len;
            }
            if (bytes.Count > MaxTextLength)
                throw Error(start, "string too long");
        }
        return new Token(Tok.Text, src[start..pos], at) { Bytes = [.. bytes] };
    }

    private Token RegexLiteral(int start, SourcePos at)
    {
        pos++;
        var body = new StringBuilder();
        while (true)
        {
            if (pos >= src.Length || src[pos] == '\n')
                throw Error(start, "unterminated regular expression");
            char c = src[pos];
            if (c == '\\' && pos + 1 < src.Length && src[pos + 1] != '\n')
            {
                if (src[pos + 1] == '/')
                {
                    body.Append('/');
                }
                else
                {
                    body.Append(c).Append(src[pos + 1]);
                }
                pos += 2;
                continue;
            }
            if (c == '/')
            {
                pos++;
                break;
            }
            body.Append(c);
            pos++;
        }
        int flagsStart = pos;
        while (pos < src.Length && src[pos] is 'i' or 's')
            pos++;
        if (body.Length == 0)
            throw Error(start, "empty regular expression");
        return new Token(Tok.Regex, body.ToString(), at) { Flags = src[flagsStart..pos] };
    }
}
