using System.Text;
using Vmi.Signatures.Patterns;

namespace Vmi.Signatures.Yara;

/// <summary>Reads rule files (with includes) into rule declarations. Every problem is a <see cref="YaraCompileException"/> with file, line and column.</summary>
internal sealed class Parser
{
    private const int MaxIncludeDepth = 16;
    private const int MaxExprDepth = 200;
    private static readonly HashSet<string> Keywords = new(StringComparer.Ordinal)
    {
        "all", "and", "any", "ascii", "at", "base64", "base64wide", "condition", "contains", "defined", "endswith",
        "entrypoint", "false", "filesize", "for", "fullword", "global", "icontains", "iendswith", "iequals", "import",
        "in", "include", "int16", "int16be", "int32", "int32be", "int8", "int8be", "istartswith", "matches", "meta",
        "nocase", "none", "not", "of", "or", "private", "rule", "startswith", "strings", "them", "true", "uint16",
        "uint16be", "uint32", "uint32be", "uint8", "uint8be", "wide", "xor",
    };

    private readonly Lexer lexer;
    private readonly Func<string, string, string?>? resolveInclude;
    private readonly int includeDepth;
    private readonly HashSet<string> includeStack;
    private Token tok;
    private Token? peeked;
    private string? currentRule;
    private int depth;

    private Parser(string source, string file, Func<string, string, string?>? resolveInclude, int includeDepth, HashSet<string> includeStack)
    {
        lexer = new Lexer(source, file);
        this.resolveInclude = resolveInclude;
        this.includeDepth = includeDepth;
        this.includeStack = includeStack;
        tok = lexer.Next();
    }

    /// <summary>Parses one source. <paramref name="readInclude"/> maps (including file, include path) to the included file's path and is used to read it; null disables includes.</summary>
    public static List<RuleDecl> Parse(string source, string file, Func<string, string, string?>? readInclude)
    {
        var stack = new HashSet<string>(StringComparer.Ordinal) { Path.GetFullPath(file) };
        return new Parser(source, file, readInclude, 0, stack).ParseFile();
    }

    private YaraCompileException Error(SourcePos pos, string message) => new(pos, currentRule, message);

    private YaraCompileException Unexpected(string expected)
    {
        string got = tok.Kind == Tok.End ? "end of file" : $"\"{tok.Text}\"";
        return Error(tok.Pos, $"syntax error: expected {expected}, found {got}");
    }

    private void Advance()
    {
        if (peeked is not null)
        {
            tok = peeked;
            peeked = null;
        }
        else
        {
            tok = lexer.Next();
        }
    }

    private Token Peek() => peeked ??= lexer.Next();

    private bool IsWord(string w) => tok.Kind == Tok.Identifier && tok.Text == w;

    private void ExpectWord(string w)
    {
        if (!IsWord(w))
            throw Unexpected($"\"{w}\"");
        Advance();
    }

    private Token Expect(Tok kind, string what)
    {
        if (tok.Kind != kind)
            throw Unexpected(what);
        var t = tok;
        Advance();
        return t;
    }

    private List<RuleDecl> ParseFile()
    {
        var rules = new List<RuleDecl>();
        while (tok.Kind != Tok.End)
        {
            if (IsWord("import"))
            {
                var at = tok.Pos;
                Advance();
                var name = Expect(Tok.Text, "a module name in quotes");
                string module = Encoding.UTF8.GetString(name.Bytes);
                throw Error(at, $"module \"{module}\" is not supported: Vmi has no YARA modules (pe, elf, math, hash, …); remove the import and the conditions that use it");
            }
            if (IsWord("include"))
            {
                var at = tok.Pos;
                Advance();
                var name = Expect(Tok.Text, "a file name in quotes");
                rules.AddRange(Include(at, Encoding.UTF8.GetString(name.Bytes)));
                continue;
            }
            rules.Add(ParseRule());
        }
        return rules;
    }

    private List<RuleDecl> Include(SourcePos at, string path)
    {
        if (resolveInclude is null)
            throw Error(at, $"includes are disabled: cannot include \"{path}\"");
        if (includeDepth >= MaxIncludeDepth)
            throw Error(at, $"includes nested deeper than {MaxIncludeDepth} levels");
        string? full = resolveInclude(lexer.FileName, path);
        if (full is null || !File.Exists(full))
            throw Error(at, $"can't open include file: {path}");
        full = Path.GetFullPath(full);
        if (!includeStack.Add(full))
            throw Error(at, $"include loop: \"{path}\" includes itself");
        try
        {
            string text;
            try
            {
                text = File.ReadAllText(full);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw Error(at, $"can't open include file: {path}: {e.Message}");
            }
            return new Parser(text, full, resolveInclude, includeDepth + 1, includeStack).ParseFile();
        }
        finally
        {
            includeStack.Remove(full);
        }
    }

    private RuleDecl ParseRule()
    {
        bool isPrivate = false, isGlobal = false;
        var start = tok.Pos;
        while (IsWord("private") || IsWord("global"))
        {
            if (tok.Text == "private")
                isPrivate = true;
            else
                isGlobal = true;
            Advance();
        }
        if (!IsWord("rule"))
            throw Unexpected("\"rule\", \"import\" or \"include\"");
        Advance();
        var nameTok = Expect(Tok.Identifier, "a rule name");
        if (Keywords.Contains(nameTok.Text))
            throw Error(nameTok.Pos, $"syntax error: \"{nameTok.Text}\" is a keyword and cannot name a rule");
        currentRule = nameTok.Text;
        var tags = new List<string>();
        if (tok.Kind == Tok.Colon)
        {
            Advance();
            while (tok.Kind == Tok.Identifier)
            {
                if (Keywords.Contains(tok.Text))
                    throw Error(tok.Pos, $"syntax error: \"{tok.Text}\" is a keyword and cannot be a tag");
                if (tags.Contains(tok.Text))
                    throw Error(tok.Pos, $"duplicated tag identifier \"{tok.Text}\"");
                tags.Add(tok.Text);
                Advance();
            }
            if (tags.Count == 0)
                throw Unexpected("a tag");
        }
        Expect(Tok.LBrace, "\"{\"");
        var meta = new List<MetaEntry>();
        var strings = new List<StringDecl>();
        if (IsWord("meta"))
        {
            Advance();
            Expect(Tok.Colon, "\":\" after meta");
            while (tok.Kind == Tok.Identifier && !IsWord("strings") && !IsWord("condition"))
                meta.Add(ParseMeta());
        }
        if (IsWord("strings"))
        {
            Advance();
            Expect(Tok.Colon, "\":\" after strings");
            if (tok.Kind != Tok.StringId)
                throw Unexpected("a string declaration");
            while (tok.Kind == Tok.StringId)
                strings.Add(ParseString(strings));
        }
        ExpectWord("condition");
        Expect(Tok.Colon, "\":\" after condition");
        var condition = ParseExpr();
        Expect(Tok.RBrace, "\"}\" at the end of the rule");
        var rule = new RuleDecl(nameTok.Text, isPrivate, isGlobal, tags, meta, strings, condition, start);
        currentRule = null;
        return rule;
    }

    private MetaEntry ParseMeta()
    {
        string key = tok.Text;
        Advance();
        Expect(Tok.Assign, "\"=\" in a meta declaration");
        object value;
        if (tok.Kind == Tok.Text)
        {
            value = Encoding.Latin1.GetString(tok.Bytes);
        }
        else if (tok.Kind == Tok.Integer)
        {
            value = tok.Int;
        }
        else if (tok.Kind == Tok.Minus && Peek().Kind == Tok.Integer)
        {
            Advance();
            value = -tok.Int;
        }
        else if (IsWord("true") || IsWord("false"))
        {
            value = tok.Text == "true";
        }
        else
        {
            throw Unexpected("a string, integer or boolean meta value");
        }
        Advance();
        return new MetaEntry(key, value);
    }

    private StringDecl ParseString(List<StringDecl> previous)
    {
        var idTok = tok;
        string id = idTok.Text;
        if (id != "$" && previous.Any(s => s.Spec.Id == id))
            throw Error(idTok.Pos, $"duplicated string identifier \"{id}\"");
        Advance();
        if (tok.Kind != Tok.Assign)
            throw Unexpected("\"=\" after the string identifier");
        var value = lexer.NextHexOrBrace();
        tok = value;
        StringKind kind;
        byte[] text = [];
        string source = "";
        string flags = "";
        switch (value.Kind)
        {
            case Tok.Text:
                kind = StringKind.Text;
                text = value.Bytes;
                if (text.Length == 0)
                    throw Error(idTok.Pos, $"empty string \"{id}\"");
                break;
            case Tok.HexString:
                kind = StringKind.Hex;
                source = value.Text;
                break;
            case Tok.Regex:
                kind = StringKind.Regex;
                source = value.Text;
                flags = value.Flags;
                break;
            default:
                throw Unexpected("a text string, hex string or regular expression");
        }
        Advance();
        var mods = StringModifiers.None;
        int xorMin = 0, xorMax = 255;
        byte[]? alphabet = null;
        while (tok.Kind == Tok.Identifier)
        {
            var modTok = tok;
            StringModifiers m = tok.Text switch
            {
                "ascii" => StringModifiers.Ascii,
                "wide" => StringModifiers.Wide,
                "nocase" => StringModifiers.Nocase,
                "fullword" => StringModifiers.Fullword,
                "private" => StringModifiers.Private,
                "xor" => StringModifiers.Xor,
                "base64" => StringModifiers.Base64,
                "base64wide" => StringModifiers.Base64Wide,
                _ => StringModifiers.None,
            };
            if (m == StringModifiers.None)
                break;
            if ((mods & m) != 0)
                throw Error(modTok.Pos, $"duplicated modifier \"{modTok.Text}\" on \"{id}\"");
            bool allowed = kind switch
            {
                StringKind.Hex => m == StringModifiers.Private,
                StringKind.Regex => m is StringModifiers.Ascii or StringModifiers.Wide or StringModifiers.Nocase or StringModifiers.Fullword or StringModifiers.Private,
                _ => true,
            };
            if (!allowed)
                throw Error(modTok.Pos, $"modifier \"{modTok.Text}\" is not allowed on a {(kind == StringKind.Hex ? "hex string" : "regular expression")} (\"{id}\")");
            mods |= m;
            Advance();
            if (m == StringModifiers.Xor && tok.Kind == Tok.LParen)
            {
                Advance();
                var lo = Expect(Tok.Integer, "an xor key (0-255)");
                xorMin = xorMax = checked((int)Math.Min(lo.Int, 1000));
                if (tok.Kind == Tok.Minus)
                {
                    Advance();
                    var hi = Expect(Tok.Integer, "the upper xor key (0-255)");
                    xorMax = (int)Math.Min(hi.Int, 1000);
                }
                if (xorMin > 255 || xorMax > 255)
                    throw Error(lo.Pos, $"invalid xor range for \"{id}\": keys must be 0-255");
                if (xorMin > xorMax)
                    throw Error(lo.Pos, $"invalid xor range for \"{id}\": lower bound {xorMin} exceeds upper bound {xorMax}");
                Expect(Tok.RParen, "\")\" after the xor range");
            }
            else if (m is StringModifiers.Base64 or StringModifiers.Base64Wide && tok.Kind == Tok.LParen)
            {
                Advance();
                var a = Expect(Tok.Text, "a base64 alphabet in quotes");
                if (a.Bytes.Length != 64)
                    throw Error(a.Pos, $"invalid base64 alphabet for \"{id}\": it must have 64 characters, it has {a.Bytes.Length}");
                if (alphabet is not null && !alphabet.AsSpan().SequenceEqual(a.Bytes))
                    throw Error(a.Pos, $"\"{id}\": base64 and base64wide must use the same alphabet");
                alphabet = a.Bytes;
                Expect(Tok.RParen, "\")\" after the base64 alphabet");
            }
        }
        bool b64 = (mods & (StringModifiers.Base64 | StringModifiers.Base64Wide)) != 0;
        if ((mods & StringModifiers.Xor) != 0 && (mods & StringModifiers.Nocase) != 0)
            throw Error(idTok.Pos, "invalid modifier combination: xor nocase");
        if (b64 && (mods & StringModifiers.Nocase) != 0)
            throw Error(idTok.Pos, "invalid modifier combination: base64 nocase");
        if (b64 && (mods & StringModifiers.Xor) != 0)
            throw Error(idTok.Pos, "invalid modifier combination: base64 xor");
        if (b64 && (mods & StringModifiers.Fullword) != 0)
            throw Error(idTok.Pos, "invalid modifier combination: base64 fullword");
        if (b64 && text.Length < 3)
            throw Error(idTok.Pos, $"string \"{id}\" is too short for base64: it needs at least 3 bytes");
        var spec = new StringSpec(id, kind, text, source, mods, xorMin, xorMax, alphabet,
            RegexNocase: flags.Contains('i', StringComparison.Ordinal), RegexDotAll: flags.Contains('s', StringComparison.Ordinal));
        return new StringDecl(spec, idTok.Pos);
    }

    // ---- conditions ----

    private Expr ParseExpr()
    {
        if (++depth > MaxExprDepth)
            throw Error(tok.Pos, $"condition nested deeper than {MaxExprDepth} levels");
        try
        {
            return ParseOr();
        }
        finally
        {
            depth--;
        }
    }

    private Expr ParseOr()
    {
        var left = ParseAnd();
        while (IsWord("or"))
        {
            var at = tok.Pos;
            Advance();
            left = new BinaryExpr("or", left, ParseAnd(), at);
        }
        return left;
    }

    private Expr ParseAnd()
    {
        var left = ParseNot();
        while (IsWord("and"))
        {
            var at = tok.Pos;
            Advance();
            left = new BinaryExpr("and", left, ParseNot(), at);
        }
        return left;
    }

    private Expr ParseNot()
    {
        if (IsWord("not") || IsWord("defined"))
        {
            var at = tok.Pos;
            bool isNot = tok.Text == "not";
            Advance();
            if (++depth > MaxExprDepth)
                throw Error(at, $"condition nested deeper than {MaxExprDepth} levels");
            var operand = ParseNot();
            depth--;
            return isNot ? new UnaryExpr("not", operand, at) : new DefinedExpr(operand, at);
        }
        var e = ParseEquality();
        if (IsWord("of"))
            return ParseOf(new Quantifier(QuantKind.Count, e), e.Pos);
        if (tok.Kind == Tok.Percent && Peek().Kind == Tok.Identifier && Peek().Text == "of")
        {
            Advance();
            return ParseOf(new Quantifier(QuantKind.Percent, e), e.Pos);
        }
        return e;
    }

    private static readonly HashSet<string> StringOps = new(StringComparer.Ordinal)
    {
        "contains", "icontains", "startswith", "istartswith", "endswith", "iendswith", "iequals", "matches",
    };

    private Expr ParseEquality()
    {
        var left = ParseRelational();
        while (true)
        {
            var at = tok.Pos;
            if (tok.Kind is Tok.Eq or Tok.Ne)
            {
                string op = tok.Text;
                Advance();
                left = new BinaryExpr(op, left, ParseRelational(), at);
            }
            else if (tok.Kind == Tok.Identifier && StringOps.Contains(tok.Text))
            {
                string op = tok.Text;
                Advance();
                if (op == "matches")
                {
                    var re = Expect(Tok.Regex, "a regular expression after \"matches\"");
                    left = new BinaryExpr(op, left, new RegexLit(re.Text, re.Flags, re.Pos), at);
                }
                else
                {
                    left = new BinaryExpr(op, left, ParseRelational(), at);
                }
            }
            else
            {
                return left;
            }
        }
    }

    private Expr ParseRelational()
    {
        var left = ParseBitOr();
        while (tok.Kind is Tok.Lt or Tok.Le or Tok.Gt or Tok.Ge)
        {
            var at = tok.Pos;
            string op = tok.Text;
            Advance();
            left = new BinaryExpr(op, left, ParseBitOr(), at);
        }
        return left;
    }

    private Expr ParseBitOr()
    {
        var left = ParseBitXor();
        while (tok.Kind == Tok.Pipe)
        {
            var at = tok.Pos;
            Advance();
            left = new BinaryExpr("|", left, ParseBitXor(), at);
        }
        return left;
    }

    private Expr ParseBitXor()
    {
        var left = ParseBitAnd();
        while (tok.Kind == Tok.Caret)
        {
            var at = tok.Pos;
            Advance();
            left = new BinaryExpr("^", left, ParseBitAnd(), at);
        }
        return left;
    }

    private Expr ParseBitAnd()
    {
        var left = ParseShift();
        while (tok.Kind == Tok.Amp)
        {
            var at = tok.Pos;
            Advance();
            left = new BinaryExpr("&", left, ParseShift(), at);
        }
        return left;
    }

    private Expr ParseShift()
    {
        var left = ParseAdditive();
        while (tok.Kind is Tok.Shl or Tok.Shr)
        {
            var at = tok.Pos;
            string op = tok.Text;
            Advance();
            left = new BinaryExpr(op, left, ParseAdditive(), at);
        }
        return left;
    }

    private Expr ParseAdditive()
    {
        var left = ParseMultiplicative();
        while (tok.Kind is Tok.Plus or Tok.Minus)
        {
            var at = tok.Pos;
            string op = tok.Text;
            Advance();
            left = new BinaryExpr(op, left, ParseMultiplicative(), at);
        }
        return left;
    }

    private Expr ParseMultiplicative()
    {
        var left = ParseUnary();
        while (tok.Kind is Tok.Star or Tok.Backslash or Tok.Percent)
        {
            if (tok.Kind == Tok.Percent && Peek().Kind == Tok.Identifier && Peek().Text == "of")
                return left;
            var at = tok.Pos;
            string op = tok.Text;
            Advance();
            left = new BinaryExpr(op, left, ParseUnary(), at);
        }
        return left;
    }

    private Expr ParseUnary()
    {
        if (tok.Kind is Tok.Minus or Tok.Tilde)
        {
            var at = tok.Pos;
            string op = tok.Text;
            Advance();
            if (++depth > MaxExprDepth)
                throw Error(at, $"condition nested deeper than {MaxExprDepth} levels");
            var operand = ParseUnary();
            depth--;
            return new UnaryExpr(op, operand, at);
        }
        return ParsePrimary();
    }

    private (Expr Lo, Expr Hi) ParseRange()
    {
        Expect(Tok.LParen, "\"(\" to start a range");
        var lo = ParseExpr();
        Expect(Tok.DotDot, "\"..\" in a range");
        var hi = ParseExpr();
        Expect(Tok.RParen, "\")\" to end a range");
        return (lo, hi);
    }

    private Expr? ParseIndex()
    {
        if (tok.Kind != Tok.LBracket)
            return null;
        Advance();
        var e = ParseExpr();
        Expect(Tok.RBracket, "\"]\"");
        return e;
    }

    private Expr ParsePrimary()
    {
        var t = tok;
        var at = t.Pos;
        switch (t.Kind)
        {
            case Tok.LParen:
            {
                Advance();
                var e = ParseExpr();
                Expect(Tok.RParen, "\")\"");
                return e;
            }
            case Tok.Integer:
                Advance();
                return new IntLit(t.Int, at);
            case Tok.Float:
                Advance();
                return new FloatLit(t.Float, at);
            case Tok.Text:
                Advance();
                return new TextLit(t.Bytes, at);
            case Tok.StringId:
            {
                Advance();
                if (IsWord("at"))
                {
                    Advance();
                    return new StringAtExpr(t.Text, ParseBitOr(), at);
                }
                if (IsWord("in"))
                {
                    Advance();
                    var (lo, hi) = ParseRange();
                    return new StringInExpr(t.Text, lo, hi, at);
                }
                return new StringMatchExpr(t.Text, at);
            }
            case Tok.StringCount:
            {
                Advance();
                if (IsWord("in"))
                {
                    Advance();
                    var (lo, hi) = ParseRange();
                    return new StringCountExpr(t.Text, lo, hi, at);
                }
                return new StringCountExpr(t.Text, null, null, at);
            }
            case Tok.StringOffset:
                Advance();
                return new StringOffsetExpr(t.Text, ParseIndex(), at);
            case Tok.StringLength:
                Advance();
                return new StringLengthExpr(t.Text, ParseIndex(), at);
            case Tok.Regex:
                throw Error(at, "a regular expression can only follow \"matches\"");
            case Tok.StringIdWild:
                throw Error(at, $"\"{t.Text}*\" names a set of strings: use it inside an \"of\" expression, e.g. any of ({t.Text}*)");
            case Tok.Identifier:
                return ParseWord();
            default:
                throw Unexpected("an expression");
        }
    }

    private Expr ParseWord()
    {
        var t = tok;
        var at = t.Pos;
        switch (t.Text)
        {
            case "true":
                Advance();
                return new BoolLit(true, at);
            case "false":
                Advance();
                return new BoolLit(false, at);
            case "filesize":
                Advance();
                return new FilesizeExpr(at);
            case "entrypoint":
                Advance();
                return new EntrypointExpr(at);
            case "all":
            case "any":
            case "none":
            {
                var kind = t.Text switch { "all" => QuantKind.All, "any" => QuantKind.Any, _ => QuantKind.None };
                Advance();
                return ParseOf(new Quantifier(kind, null), at);
            }
            case "for":
                return ParseFor();
            case "them":
                throw Error(at, "\"them\" can only follow \"of\"");
        }
        if (TryIntFunction(t.Text, out int size, out bool signed, out bool be))
        {
            Advance();
            Expect(Tok.LParen, $"\"(\" after {t.Text}");
            var offset = ParseExpr();
            Expect(Tok.RParen, "\")\"");
            return new ReadIntExpr(size, signed, be, offset, at);
        }
        if (Keywords.Contains(t.Text))
            throw Error(at, $"syntax error: unexpected keyword \"{t.Text}\"");
        Advance();
        if (tok.Kind == Tok.Dot)
            throw Error(at, $"\"{t.Text}.{Peek().Text}\": modules are not supported (there is no module \"{t.Text}\")");
        if (tok.Kind == Tok.LParen)
            throw Error(at, $"\"{t.Text}(…)\": unknown function");
        return new IdentExpr(t.Text, at);
    }

    private static bool TryIntFunction(string name, out int size, out bool signed, out bool bigEndian)
    {
        size = 0;
        signed = name.StartsWith("int", StringComparison.Ordinal);
        bigEndian = name.EndsWith("be", StringComparison.Ordinal);
        string core = signed ? name[3..] : name.StartsWith("uint", StringComparison.Ordinal) ? name[4..] : "";
        if (bigEndian)
            core = core[..^2];
        size = core switch { "8" => 1, "16" => 2, "32" => 4, _ => 0 };
        return size != 0 && (signed || name.StartsWith("uint", StringComparison.Ordinal));
    }

    private StringSet ParseStringSet()
    {
        var at = tok.Pos;
        if (IsWord("them"))
        {
            Advance();
            return new StringSet(null, at);
        }
        Expect(Tok.LParen, "\"them\" or a list of strings in parentheses");
        var items = new List<string>();
        while (true)
        {
            if (tok.Kind == Tok.StringId)
                items.Add(tok.Text);
            else if (tok.Kind == Tok.StringIdWild)
                items.Add(tok.Text + "*");
            else
                throw Unexpected("a string identifier like $a or $a*");
            Advance();
            if (tok.Kind == Tok.Comma)
            {
                Advance();
                continue;
            }
            Expect(Tok.RParen, "\")\" after the list of strings");
            return new StringSet(items, at);
        }
    }

    private Expr ParseOf(Quantifier quant, SourcePos at)
    {
        ExpectWord("of");
        var set = ParseStringSet();
        if (IsWord("in"))
        {
            Advance();
            var (lo, hi) = ParseRange();
            return new OfExpr(quant, set, lo, hi, null, at);
        }
        if (IsWord("at"))
        {
            Advance();
            return new OfExpr(quant, set, null, null, ParseBitOr(), at);
        }
        return new OfExpr(quant, set, null, null, null, at);
    }

    private Quantifier ParseQuantifier()
    {
        if (IsWord("all") || IsWord("any") || IsWord("none"))
        {
            var kind = tok.Text switch { "all" => QuantKind.All, "any" => QuantKind.Any, _ => QuantKind.None };
            Advance();
            return new Quantifier(kind, null);
        }
        var e = ParseEquality();
        if (tok.Kind == Tok.Percent)
        {
            Advance();
            return new Quantifier(QuantKind.Percent, e);
        }
        return new Quantifier(QuantKind.Count, e);
    }

    private Expr ParseFor()
    {
        var at = tok.Pos;
        Advance();
        var quant = ParseQuantifier();
        if (IsWord("of"))
        {
            Advance();
            var set = ParseStringSet();
            Expect(Tok.Colon, "\":\" in a for … of loop");
            Expect(Tok.LParen, "\"(\" around the loop body");
            var body = ParseExpr();
            Expect(Tok.RParen, "\")\" after the loop body");
            return new ForOfExpr(quant, set, body, at);
        }
        var v = Expect(Tok.Identifier, "a loop variable or \"of\"");
        if (Keywords.Contains(v.Text))
            throw Error(v.Pos, $"syntax error: \"{v.Text}\" is a keyword and cannot be a loop variable");
        if (tok.Kind == Tok.Comma)
            throw Error(tok.Pos, "loops over several variables need a module's dictionary, and modules are not supported");
        ExpectWord("in");
        Expect(Tok.LParen, "\"(\" to start the loop's range or list");
        var first = ParseExpr();
        Expr? lo = null, hi = null;
        List<Expr>? items = null;
        if (tok.Kind == Tok.DotDot)
        {
            Advance();
            lo = first;
            hi = ParseExpr();
        }
        else
        {
            items = [first];
            while (tok.Kind == Tok.Comma)
            {
                Advance();
                items.Add(ParseExpr());
            }
        }
        Expect(Tok.RParen, "\")\" to end the loop's range or list");
        Expect(Tok.Colon, "\":\" in a for … in loop");
        Expect(Tok.LParen, "\"(\" around the loop body");
        var loopBody = ParseExpr();
        Expect(Tok.RParen, "\")\" after the loop body");
        return new ForInExpr(quant, v.Text, lo, hi, items, loopBody, at);
    }
}
