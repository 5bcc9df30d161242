using System.Text;
using Vmi.Signatures.Patterns;

namespace Vmi.Signatures.Yara;

/// <summary>Options for compiling rules.</summary>
public sealed record YaraCompileOptions
{
    /// <summary>External variables (-d NAME=VALUE): long, double, bool or string values.</summary>
    public IReadOnlyDictionary<string, object> Externals { get; init; } = new Dictionary<string, object>();
    /// <summary>Whether "include" is allowed (relative to the including file).</summary>
    public bool AllowIncludes { get; init; } = true;
    /// <summary>Limits for each string's pattern.</summary>
    public PatternLimits Limits { get; init; } = PatternLimits.Default;
    /// <summary>Most strings one rule may declare (YARA's default is 10000).</summary>
    public int MaxStringsPerRule { get; init; } = 10_000;
}

/// <summary>One string of a compiled rule.</summary>
public sealed class YaraString
{
    internal YaraString(CompiledString pattern, int index)
    {
        Pattern = pattern;
        Index = index;
    }

    internal CompiledString Pattern { get; }
    /// <summary>Index in the rule set's string table.</summary>
    internal int Index { get; }
    public string Id => Pattern.Spec.Id;
    public bool IsPrivate => (Pattern.Spec.Modifiers & StringModifiers.Private) != 0;
    public bool IsHex => Pattern.Spec.Kind == StringKind.Hex;
    public StringKind Kind => Pattern.Spec.Kind;
}

/// <summary>One compiled rule.</summary>
public sealed class YaraRule
{
    internal YaraRule(RuleDecl decl, int index, IReadOnlyList<YaraString> strings, Node condition)
    {
        Name = decl.Name;
        IsPrivate = decl.IsPrivate;
        IsGlobal = decl.IsGlobal;
        Tags = decl.Tags;
        Meta = decl.Meta;
        Strings = strings;
        Index = index;
        Condition = condition;
        File = decl.Pos.File;
        Line = decl.Pos.Line;
    }

    public string Name { get; }
    public string Namespace => "default";
    public bool IsPrivate { get; }
    public bool IsGlobal { get; }
    public IReadOnlyList<string> Tags { get; }
    public IReadOnlyList<MetaEntry> Meta { get; }
    public IReadOnlyList<YaraString> Strings { get; }
    public string File { get; }
    public int Line { get; }
    internal int Index { get; }
    internal Node Condition { get; }

    /// <summary>The value of a meta key, or null.</summary>
    public object? GetMeta(string key) => Meta.FirstOrDefault(m => m.Key == key)?.Value;
}

/// <summary>
/// A compiled, immutable rule set: safe to share between threads and scans. Compile once with
/// <see cref="Compile"/> or <c>CompileFiles</c>, scan many times with <see cref="YaraScanner"/>.
/// </summary>
public sealed class YaraRules
{
    private YaraRules(IReadOnlyList<YaraRule> rules, CompiledString[] strings, string[] externalNames, Value[] externals, AtomIndex atoms, int maxVariables)
    {
        Rules = rules;
        Strings = strings;
        ExternalNames = externalNames;
        ExternalValues = externals;
        Atoms = atoms;
        MaxVariables = maxVariables;
    }

    public IReadOnlyList<YaraRule> Rules { get; }
    internal CompiledString[] Strings { get; }
    internal string[] ExternalNames { get; }
    internal Value[] ExternalValues { get; }
    internal AtomIndex Atoms { get; }
    internal int MaxVariables { get; }

    /// <summary>Number of strings across all rules.</summary>
    public int StringCount => Strings.Length;

    /// <summary>Compiles rule text. <paramref name="file"/> names it in errors and anchors relative includes.</summary>
    public static YaraRules Compile(string source, string file = "<rules>", YaraCompileOptions? options = null)
        => CompileFiles([(source, file)], options);

    /// <summary>Reads and compiles rule files as one set (like passing several files to yara).</summary>
    public static YaraRules CompileFiles(IEnumerable<string> paths, YaraCompileOptions? options = null)
    {
        var sources = new List<(string, string)>();
        foreach (var p in paths)
        {
            string text;
            try
            {
                text = File.ReadAllText(p);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new YaraCompileException(new SourcePos(p, 0, 0), null, $"could not open rule file: {e.Message}");
            }
            sources.Add((text, p));
        }
        return CompileFiles(sources, options);
    }

    private static YaraRules CompileFiles(IEnumerable<(string Source, string File)> sources, YaraCompileOptions? options)
    {
        options ??= new YaraCompileOptions();
        var decls = new List<RuleDecl>();
        Func<string, string, string?>? include = options.AllowIncludes
            ? (from, path) => Path.IsPathRooted(path) ? path : Path.Combine(Path.GetDirectoryName(Path.GetFullPath(from)) ?? ".", path)
            : null;
        foreach (var (source, file) in sources)
            decls.AddRange(Parser.Parse(source, file, include));
        return new RuleCompiler(options).Build(decls);
    }

    private sealed class RuleCompiler(YaraCompileOptions options)
    {
        private readonly List<CompiledString> strings = [];
        private readonly Dictionary<string, int> ruleIndex = new(StringComparer.Ordinal);
        private readonly string[] externalNames = [.. options.Externals.Keys];
        private RuleDecl rule = null!;
        private List<YaraString> ruleStrings = [];
        private bool[] referenced = [];
        private readonly List<string> loopVars = [];
        private int maxVars;
        private int forOfDepth;

        private YaraCompileException Error(SourcePos pos, string message) => new(pos, rule.Name, message);

        public YaraRules Build(List<RuleDecl> decls)
        {
            // Patterns are independent of one another: compile them on every core first. Errors are kept and
            // thrown below in rule order, so the first problem in the file is the one reported.
            var specs = decls.SelectMany(d => d.Strings).ToArray();
            var compiledSpecs = new CompiledString?[specs.Length];
            var failures = new PatternException?[specs.Length];
            Parallel.For(0, specs.Length, i =>
            {
                try
                {
                    compiledSpecs[i] = CompiledString.Compile(specs[i].Spec, options.Limits);
                }
                catch (PatternException e)
                {
                    failures[i] = e;
                }
            });
            int next = 0;
            var rules = new List<YaraRule>();
            foreach (var d in decls)
            {
                rule = d;
                if (ruleIndex.ContainsKey(d.Name))
                    throw new YaraCompileException(d.Pos, null, $"duplicated identifier \"{d.Name}\"");
                if (externalNames.Contains(d.Name))
                    throw new YaraCompileException(d.Pos, null, $"duplicated identifier \"{d.Name}\": it is also an external variable");
                if (d.Strings.Count > options.MaxStringsPerRule)
                    throw Error(d.Pos, $"too many strings: {d.Strings.Count} (the limit is {options.MaxStringsPerRule})");
                ruleStrings = [];
                foreach (var s in d.Strings)
                {
                    int k = next++;
                    if (failures[k] is { } e)
                    {
                        string what = s.Spec.Kind switch { StringKind.Hex => "hex string", StringKind.Regex => "regular expression", _ => "string" };
                        throw Error(s.Pos, $"invalid {what} \"{s.Spec.Id}\": {e.Message}");
                    }
                    CompiledString compiled = compiledSpecs[k]!;
                    ruleStrings.Add(new YaraString(compiled, strings.Count));
                    strings.Add(compiled);
                }
                referenced = new bool[ruleStrings.Count];
                TypeOf(d.Condition);
                var cond = Lower(d.Condition);
                for (int i = 0; i < ruleStrings.Count; i++)
                {
                    if (!referenced[i])
                        throw Error(d.Strings[i].Pos, $"unreferenced string \"{ruleStrings[i].Id}\"");
                }
                var compiledRule = new YaraRule(d, rules.Count, ruleStrings, cond);
                ruleIndex[d.Name] = rules.Count;
                rules.Add(compiledRule);
            }
            var externals = externalNames.Select(n => ToValue(options.Externals[n])).ToArray();
            var atoms = AtomIndex.Build(strings);
            return new YaraRules(rules, [.. strings], externalNames, externals, atoms, maxVars);
        }

        private static Value ToValue(object o) => o switch
        {
            bool b => Value.Bool(b),
            long l => Value.Int(l),
            int i => Value.Int(i),
            double d => Value.Float(d),
            string s => Value.Str(Encoding.UTF8.GetBytes(s)),
            byte[] bytes => Value.Str(bytes),
            _ => throw new ArgumentException($"external variable of unsupported type {o.GetType().Name}"),
        };

        private int StringIndex(string id, SourcePos pos)
        {
            if (id == "$")
            {
                if (forOfDepth == 0)
                    throw Error(pos, "\"$\" (the anonymous string) can only be used inside a for … of loop");
                return -1;
            }
            for (int i = 0; i < ruleStrings.Count; i++)
            {
                if (ruleStrings[i].Id == id)
                {
                    referenced[i] = true;
                    return ruleStrings[i].Index;
                }
            }
            throw Error(pos, $"undefined string \"{id}\"");
        }

        private int[] ResolveSet(StringSet set)
        {
            var result = new List<int>();
            if (set.Patterns is null)
            {
                if (ruleStrings.Count == 0)
                    throw Error(set.Pos, "\"them\" is used but the rule has no strings");
                for (int i = 0; i < ruleStrings.Count; i++)
                {
                    referenced[i] = true;
                    result.Add(ruleStrings[i].Index);
                }
                return [.. result];
            }
            foreach (var p in set.Patterns)
            {
                bool wild = p.EndsWith('*');
                string prefix = wild ? p[..^1] : p;
                bool any = false;
                for (int i = 0; i < ruleStrings.Count; i++)
                {
                    string id = ruleStrings[i].Id;
                    if (wild ? id.StartsWith(prefix, StringComparison.Ordinal) : id == prefix)
                    {
                        referenced[i] = true;
                        if (!result.Contains(ruleStrings[i].Index))
                            result.Add(ruleStrings[i].Index);
                        any = true;
                    }
                }
                if (!any)
                    throw Error(set.Pos, $"undefined string \"{p}\"");
            }
            return [.. result];
        }

        private Node Lower(Expr e)
        {
            switch (e)
            {
                case BoolLit b:
                    return new ConstNode(Value.Bool(b.Value));
                case IntLit i:
                    return new ConstNode(Value.Int(i.Value));
                case FloatLit f:
                    return new ConstNode(Value.Float(f.Value));
                case TextLit t:
                    return new ConstNode(Value.Str(t.Value));
                case FilesizeExpr:
                    return new FilesizeNode();
                case EntrypointExpr:
                    return new EntrypointNode();
                case StringMatchExpr s:
                    return new StringMatchNode(StringIndex(s.Id, s.Pos));
                case StringAtExpr s:
                    return new StringAtNode(StringIndex(s.Id, s.Pos), Lower(s.Offset));
                case StringInExpr s:
                    return new StringInNode(StringIndex(s.Id, s.Pos), Lower(s.Lo), Lower(s.Hi));
                case StringCountExpr s:
                    return new StringCountNode(StringIndex(s.Id, s.Pos), s.Lo is null ? null : Lower(s.Lo), s.Hi is null ? null : Lower(s.Hi));
                case StringOffsetExpr s:
                    return new StringOffsetNode(StringIndex(s.Id, s.Pos), s.Index is null ? null : Lower(s.Index), length: false);
                case StringLengthExpr s:
                    return new StringOffsetNode(StringIndex(s.Id, s.Pos), s.Index is null ? null : Lower(s.Index), length: true);
                case ReadIntExpr r:
                    return new ReadIntNode(r.Size, r.Signed, r.BigEndian, Lower(r.Offset));
                case IdentExpr id:
                    return LowerIdent(id);
                case UnaryExpr u:
                {
                    var operand = Lower(u.Operand);
                    Node n = u.Op switch
                    {
                        "not" => new NotNode(operand),
                        "-" => new NegNode(operand),
                        _ => new BitNotNode(operand),
                    };
                    if (u.Op != "not" && operand.Constant is Value c)
                        return new ConstNode(n.Eval(new EvalContext()));
                    return n;
                }
                case DefinedExpr d:
                    return new DefinedNode(Lower(d.Operand));
                case BinaryExpr b:
                    return LowerBinary(b);
                case OfExpr o:
                {
                    var set = ResolveSet(o.Set);
                    return new OfNode(o.Quant.Kind, o.Quant.Value is null ? null : Lower(o.Quant.Value), set,
                        o.InLo is null ? null : Lower(o.InLo), o.InHi is null ? null : Lower(o.InHi), o.At is null ? null : Lower(o.At));
                }
                case ForOfExpr f:
                {
                    var set = ResolveSet(f.Set);
                    var n = f.Quant.Value is null ? null : Lower(f.Quant.Value);
                    forOfDepth++;
                    var body = Lower(f.Body);
                    forOfDepth--;
                    return new ForOfNode(f.Quant.Kind, n, set, body);
                }
                case ForInExpr f:
                {
                    var n = f.Quant.Value is null ? null : Lower(f.Quant.Value);
                    var lo = f.RangeLo is null ? null : Lower(f.RangeLo);
                    var hi = f.RangeHi is null ? null : Lower(f.RangeHi);
                    if (lo?.Constant is Value lc && hi?.Constant is Value hc && lc.Kind == ValueKind.Int && hc.Kind == ValueKind.Int && lc.I > hc.I)
                        throw Error(f.Pos, $"invalid range: the lower bound {lc.I} is greater than the upper bound {hc.I}");
                    var items = f.Items?.Select(Lower).ToArray();
                    if (loopVars.Contains(f.Var) || ruleIndex.ContainsKey(f.Var) || externalNames.Contains(f.Var))
                        throw Error(f.Pos, $"duplicated identifier \"{f.Var}\"");
                    int slot = loopVars.Count;
                    loopVars.Add(f.Var);
                    maxVars = Math.Max(maxVars, loopVars.Count);
                    var body = Lower(f.Body);
                    loopVars.RemoveAt(loopVars.Count - 1);
                    return new ForInNode(f.Quant.Kind, n, slot, lo, hi, items, body);
                }
                default:
                    throw Error(e.Pos, $"unsupported expression {e.GetType().Name}");
            }
        }

        private enum Ty { Bool, Int, Float, Str, Any }

        private readonly List<(string Name, Ty Type)> typedVars = [];

        private static string Name(Ty t) => t switch { Ty.Int => "integer", Ty.Float => "float", Ty.Str => "string", Ty.Bool => "boolean", _ => "value" };

        private static bool Numeric(Ty t) => t is Ty.Int or Ty.Float or Ty.Bool or Ty.Any;

        private void Expect(Expr e, Ty want, string where)
        {
            Ty got = TypeOf(e);
            bool ok = got == Ty.Any || want == Ty.Any || got == want || (want == Ty.Int && got == Ty.Bool) || (want == Ty.Bool && got != Ty.Str);
            if (!ok)
                throw Error(e.Pos, $"wrong type for {where}: expected {Name(want)}, got {Name(got)}");
        }

        /// <summary>YARA's compile-time type rules: mixing strings and numbers, or a string where an offset goes, is an error.</summary>
        private Ty TypeOf(Expr e)
        {
            switch (e)
            {
                case BoolLit:
                    return Ty.Bool;
                case IntLit or FilesizeExpr or EntrypointExpr:
                    return Ty.Int;
                case FloatLit:
                    return Ty.Float;
                case TextLit:
                    return Ty.Str;
                case RegexLit:
                    return Ty.Any;
                case StringMatchExpr:
                    return Ty.Bool;
                case StringAtExpr a:
                    Expect(a.Offset, Ty.Int, "\"at\"");
                    return Ty.Bool;
                case StringInExpr i:
                    Expect(i.Lo, Ty.Int, "a range");
                    Expect(i.Hi, Ty.Int, "a range");
                    return Ty.Bool;
                case StringCountExpr c:
                    if (c.Lo is not null)
                        Expect(c.Lo, Ty.Int, "a range");
                    if (c.Hi is not null)
                        Expect(c.Hi, Ty.Int, "a range");
                    return Ty.Int;
                case StringOffsetExpr o:
                    if (o.Index is not null)
                        Expect(o.Index, Ty.Int, "an index");
                    return Ty.Int;
                case StringLengthExpr l:
                    if (l.Index is not null)
                        Expect(l.Index, Ty.Int, "an index");
                    return Ty.Int;
                case ReadIntExpr r:
                    Expect(r.Offset, Ty.Int, "an offset");
                    return Ty.Int;
                case IdentExpr id:
                {
                    for (int i = typedVars.Count - 1; i >= 0; i--)
                    {
                        if (typedVars[i].Name == id.Name)
                            return typedVars[i].Type;
                    }
                    if (options.Externals.TryGetValue(id.Name, out object? v))
                        return v switch { bool => Ty.Bool, long or int => Ty.Int, double => Ty.Float, string or byte[] => Ty.Str, _ => Ty.Any };
                    return Ty.Bool; // a rule (resolved, or reported as undefined, by Lower)
                }
                case UnaryExpr u:
                {
                    Ty t = TypeOf(u.Operand);
                    if (u.Op == "not")
                        return Ty.Bool;
                    if (t == Ty.Str || (u.Op == "~" && t == Ty.Float))
                        throw Error(u.Pos, $"wrong type for \"{u.Op}\": {Name(t)}");
                    return u.Op == "-" && t == Ty.Float ? Ty.Float : Ty.Int;
                }
                case DefinedExpr d:
                    TypeOf(d.Operand);
                    return Ty.Bool;
                case BinaryExpr b:
                    return TypeOfBinary(b);
                case OfExpr o:
                    CheckQuantifier(o.Quant);
                    if (o.InLo is not null)
                        Expect(o.InLo, Ty.Int, "a range");
                    if (o.InHi is not null)
                        Expect(o.InHi, Ty.Int, "a range");
                    if (o.At is not null)
                        Expect(o.At, Ty.Int, "\"at\"");
                    return Ty.Bool;
                case ForOfExpr f:
                    CheckQuantifier(f.Quant);
                    TypeOf(f.Body);
                    return Ty.Bool;
                case ForInExpr f:
                {
                    CheckQuantifier(f.Quant);
                    Ty item = Ty.Int;
                    if (f.RangeLo is not null)
                    {
                        Expect(f.RangeLo, Ty.Int, "a range");
                        Expect(f.RangeHi!, Ty.Int, "a range");
                    }
                    else
                    {
                        var types = f.Items!.Select(TypeOf).Distinct().ToList();
                        if (types.Contains(Ty.Str) && types.Any(t => t != Ty.Str && t != Ty.Any))
                            throw Error(f.Pos, "wrong type in the loop's list: integers and strings mixed");
                        item = types.Contains(Ty.Str) ? Ty.Str : Ty.Int;
                    }
                    typedVars.Add((f.Var, item));
                    TypeOf(f.Body);
                    typedVars.RemoveAt(typedVars.Count - 1);
                    return Ty.Bool;
                }
                default:
                    return Ty.Any;
            }
        }

        private void CheckQuantifier(Quantifier q)
        {
            if (q.Value is null)
                return;
            Expect(q.Value, Ty.Int, "a quantifier");
            if (q.Kind == QuantKind.Percent && q.Value is IntLit { Value: < 1 or > 100 } p)
                throw Error(p.Pos, $"percentage must be between 1 and 100, not {p.Value}");
        }

        private Ty TypeOfBinary(BinaryExpr b)
        {
            if (b.Op is "and" or "or")
            {
                TypeOf(b.Left);
                TypeOf(b.Right);
                return Ty.Bool;
            }
            Ty l = TypeOf(b.Left);
            Ty r = b.Op == "matches" ? Ty.Any : TypeOf(b.Right);
            switch (b.Op)
            {
                case "==" or "!=" or "<" or "<=" or ">" or ">=":
                    if ((l == Ty.Str) != (r == Ty.Str) && l != Ty.Any && r != Ty.Any)
                        throw Error(b.Pos, $"wrong types for \"{b.Op}\": {Name(l)} and {Name(r)}");
                    return Ty.Bool;
                case "contains" or "icontains" or "startswith" or "istartswith" or "endswith" or "iendswith" or "iequals" or "matches":
                    if (l is not (Ty.Str or Ty.Any) || r is not (Ty.Str or Ty.Any))
                        throw Error(b.Pos, $"wrong types for \"{b.Op}\": {Name(l)} and {Name(r)} (both must be strings)");
                    return Ty.Bool;
                case "%" or "&" or "|" or "^" or "<<" or ">>":
                    if (l is Ty.Str or Ty.Float || r is Ty.Str or Ty.Float)
                        throw Error(b.Pos, $"wrong types for \"{b.Op}\": {Name(l)} and {Name(r)} (integers only)");
                    return Ty.Int;
                default:
                    if (!Numeric(l) || !Numeric(r))
                        throw Error(b.Pos, $"wrong types for \"{b.Op}\": {Name(l)} and {Name(r)}");
                    return l == Ty.Float || r == Ty.Float ? Ty.Float : Ty.Int;
            }
        }

        private Node LowerIdent(IdentExpr id)
        {
            int v = loopVars.LastIndexOf(id.Name);
            if (v >= 0)
                return new VariableNode(v);
            if (ruleIndex.TryGetValue(id.Name, out int r))
                return new RuleRefNode(r);
            int x = Array.IndexOf(externalNames, id.Name);
            if (x >= 0)
                return new ExternalNode(x);
            if (id.Name == rule.Name)
                throw Error(id.Pos, $"rule \"{id.Name}\" refers to itself");
            throw Error(id.Pos, $"undefined identifier \"{id.Name}\"");
        }

        private Node LowerBinary(BinaryExpr b)
        {
            var l = Lower(b.Left);
            if (b.Op == "matches")
            {
                var re = (RegexLit)b.Right;
                var spec = new StringSpec("matches", StringKind.Regex, [], re.Body, StringModifiers.None,
                    RegexNocase: re.Flags.Contains('i', StringComparison.Ordinal), RegexDotAll: re.Flags.Contains('s', StringComparison.Ordinal));
                try
                {
                    return new MatchesNode(l, CompiledString.Compile(spec, options.Limits));
                }
                catch (PatternException ex)
                {
                    throw Error(re.Pos, $"invalid regular expression: {ex.Message}");
                }
            }
            var r = Lower(b.Right);
            Node n = b.Op switch
            {
                "and" => new AndNode(l, r),
                "or" => new OrNode(l, r),
                "==" or "!=" or "<" or "<=" or ">" or ">=" => new CompareNode(b.Op, l, r),
                "contains" or "icontains" or "startswith" or "istartswith" or "endswith" or "iendswith" or "iequals" => new StringOpNode(b.Op, l, r),
                _ => new ArithNode(b.Op, l, r),
            };
            if (n is ArithNode && l.Constant is Value lc && r.Constant is Value rc && lc.Kind == ValueKind.Int && rc.Kind == ValueKind.Int)
            {
                if (b.Op is "\\" or "%" && rc.I == 0)
                    throw Error(b.Pos, "division by zero");
                bool overflow = b.Op switch
                {
                    "+" => (lc.I > 0 && rc.I > long.MaxValue - lc.I) || (lc.I < 0 && rc.I < long.MinValue - lc.I),
                    "-" => (rc.I < 0 && lc.I > long.MaxValue + rc.I) || (rc.I > 0 && lc.I < long.MinValue + rc.I),
                    "*" => MulOverflows(lc.I, rc.I),
                    _ => false,
                };
                if (overflow)
                    throw Error(b.Pos, $"integer overflow in \"{lc.I} {b.Op} {rc.I}\"");
            }
            if (n is ArithNode && l.Constant is Value a && r.Constant is Value c)
                return new ConstNode(ArithNode.Apply(b.Op, a, c));
            return n;
        }

        private static bool MulOverflows(long a, long b)
        {
            long r;
            try
            {
                r = checked(a * b);
            }
            catch (OverflowException)
            {
                return true;
            }
            return r != unchecked(a * b);
        }
    }
}
