using System.Diagnostics;
using System.Text;
using Vmi.Signatures.Yara;
using Xunit;

namespace Vmi.Signatures.Tests.Rules;

/// <summary>
/// Every kind of bad rule a user can write: each gives one clear error naming the file, line and column,
/// and none hangs the compiler or the scanner.
/// </summary>
public sealed class MalformedRuleTests
{
    private static YaraCompileException Fails(string source)
    {
        var sw = Stopwatch.StartNew();
        var e = Assert.Throws<YaraCompileException>(() => YaraRules.Compile(source, "bad.yar"));
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(10), $"compiling took {sw.Elapsed}");
        return e;
    }

    public static TheoryData<string, string, int, int> Cases => new()
    {
        // source, expected message part, line, column
        { "rule a { condition: true and }", "syntax error: expected an expression, found \"}\"", 1, 30 },
        { "rule a { condition: 1 = 2 }", "syntax error", 1, 23 },
        { "rule a {\n  strings:\n    $a = \"x\"\n  condition:\n    $b\n}", "undefined string \"$b\"", 5, 5 },
        { "rule a {\n  strings:\n    $a = \"x\"\n  condition:\n    true\n}", "unreferenced string \"$a\"", 3, 5 },
        { "rule a { condition: b }", "undefined identifier \"b\"", 1, 21 },
        { "rule a { condition: true }\nrule a { condition: true }", "duplicated identifier \"a\"", 2, 1 },
        { "rule a { strings: $a = \"x\" $a = \"y\" condition: $a }", "duplicated string identifier \"$a\"", 1, 28 },
        { "import \"pe\"\nrule a { condition: pe.is_pe }", "module \"pe\" is not supported", 1, 1 },
        { "import \"math\"", "module \"math\" is not supported", 1, 1 },
        { "rule a { condition: hash.md5(0, 10) == \"x\" }", "modules are not supported", 1, 21 },
        { "rule a { strings: $a = { 41 [5-2] 42 } condition: $a }", "invalid hex string \"$a\"", 1, 19 },
        { "rule a { strings: $a = { 41 4 } condition: $a }", "invalid hex string \"$a\"", 1, 19 },
        { "rule a { strings: $a = { [2] 41 } condition: $a }", "invalid hex string \"$a\"", 1, 19 },
        { "rule a { strings: $a = { 41 ( 42 | [2-] 43 ) } condition: $a }", "invalid hex string \"$a\"", 1, 19 },
        { "rule a { strings: $a = /ab{1,99999}/ condition: $a }", "invalid regular expression \"$a\"", 1, 19 },
        { "rule a { strings: $a = /a(b/ condition: $a }", "invalid regular expression \"$a\"", 1, 19 },
        { "rule a { strings: $a = /[a-/ condition: $a }", "invalid regular expression \"$a\"", 1, 19 },
        { "rule a { strings: $a = \"x\" nocase xor condition: $a }", "invalid modifier combination: xor nocase", 1, 19 },
        { "rule a { strings: $a = \"xyz\" base64 fullword condition: $a }", "invalid modifier combination: base64 fullword", 1, 19 },
        { "rule a { strings: $a = \"x\" xor(300) condition: $a }", "invalid xor range", 1, 32 },
        { "rule a { strings: $a = \"x\" xor(9-3) condition: $a }", "invalid xor range", 1, 32 },
        { "rule a { strings: $a = \"xyz\" base64(\"short\") condition: $a }", "invalid base64 alphabet", 1, 37 },
        { "rule a { strings: $a = { 41 } nocase condition: $a }", "not allowed on a hex string", 1, 31 },
        { "rule a { strings: $a = /x/ xor condition: $a }", "not allowed on a regular expression", 1, 28 },
        { "rule a { strings: $a = \"\" condition: $a }", "empty string \"$a\"", 1, 19 },
        { "rule a { strings: $a = \"x\\q\" condition: $a }", "illegal escape sequence", 1, 26 },
        { "rule a { strings: $a = \"x condition: $a }", "unterminated string", 1, 24 },
        { "rule a { condition: 1 \\ 0 == 1 }", "division by zero", 1, 23 },
        { "rule a { condition: 0x7fffffffffffffff + 1 > 0 }", "integer overflow", 1, 40 },
        { "rule a { condition: 99999999999999999999 > 0 }", "integer too large", 1, 21 },
        { "rule a { condition: for all i in (5..1) : (true) }", "invalid range", 1, 21 },
        { "rule a { condition: $ }", "anonymous string", 1, 21 },
        { "rule a { condition: them }", "\"them\" can only follow \"of\"", 1, 21 },
        { "rule a { condition: any of them }", "\"them\" is used but the rule has no strings", 1, 28 },
        { "rule a { condition: true } /* never closed", "unterminated comment", 1, 28 },
        { "rule rule { condition: true }", "is a keyword", 1, 6 },
        { "rule a { condition: true }\nrule b { condition: a and c }", "undefined identifier \"c\"", 2, 27 },
        { "include \"does-not-exist.yar\"", "can't open include file", 1, 1 },
        { "rule a { condition: uint32(0) == 1 and foo(1) }", "unknown function", 1, 40 },
        { "rule a { meta: x = condition: true }", "meta value", 1, 20 },
        { "rule a : t t { condition: true }", "duplicated tag", 1, 12 },
        { "rule a { condition: true", "expected \"}\"", 1, 25 },
        { "rule a { condition: true } @", "syntax error", 1, 28 },
        { "rule a { condition: true } `", "unexpected character", 1, 28 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Bad_rules_give_one_clear_error_with_file_line_and_column(string source, string message, int line, int column)
    {
        var e = Fails(source);
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
        Assert.Equal("bad.yar", e.Pos.File);
        Assert.Equal(line, e.Pos.Line);
        Assert.Equal(column, e.Pos.Column);
        Assert.StartsWith($"bad.yar({line},{column}): error: ", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Deeply_nested_conditions_are_an_error_not_a_stack_overflow()
    {
        string deep = "rule a { condition: " + new string('(', 5000) + "true" + new string(')', 5000) + " }";
        Assert.Contains("nested deeper", Fails(deep).Message, StringComparison.Ordinal);
        string nots = "rule a { condition: " + string.Concat(Enumerable.Repeat("not ", 5000)) + "true }";
        Assert.Contains("nested deeper", Fails(nots).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void An_include_loop_is_an_error()
    {
        string dir = Directory.CreateTempSubdirectory("vmi-yara-include-").FullName;
        File.WriteAllText(Path.Combine(dir, "a.yar"), "include \"b.yar\"\nrule a { condition: true }");
        File.WriteAllText(Path.Combine(dir, "b.yar"), "include \"a.yar\"\nrule b { condition: true }");
        var e = Assert.Throws<YaraCompileException>(() => YaraRules.CompileFiles([Path.Combine(dir, "a.yar")]));
        Assert.Contains("include loop", e.Message, StringComparison.Ordinal);
        Assert.EndsWith("b.yar", e.Pos.File, StringComparison.Ordinal);
    }

    [Fact]
    public void An_absurd_jump_range_compiles_or_fails_quickly_and_scans_within_its_budget()
    {
        var sw = Stopwatch.StartNew();
        YaraRules rules;
        try
        {
            rules = YaraRules.Compile("rule a { strings: $a = { 41 [0-2000000000] 42 } condition: $a }", "jump.yar");
        }
        catch (YaraCompileException e)
        {
            Assert.Contains("invalid hex string \"$a\": invalid jump length", e.Message, StringComparison.Ordinal);
            rules = YaraRules.Compile("rule a { strings: $a = { 41 [0-] 42 } condition: $a }", "jump.yar");
        }
        var data = new byte[1 << 20];
        Array.Fill(data, (byte)'A');
        try
        {
            var r = YaraScanner.Scan(rules, data, new YaraScanOptions { MaxSteps = 50_000_000, Timeout = TimeSpan.FromSeconds(20) });
            Assert.Empty(r.Matches); // no 'B' anywhere
        }
        catch (YaraScanException e)
        {
            Assert.Contains("budget", e.Message + e.InnerException?.Message, StringComparison.Ordinal);
        }
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), $"took {sw.Elapsed}");
    }

    [Fact]
    public void A_catastrophic_regex_is_stopped_by_the_scan_budget()
    {
        var rules = YaraRules.Compile("rule a { strings: $a = /(a+)+(b+)+(a|aa)*c/ condition: $a }", "evil.yar");
        var data = Encoding.ASCII.GetBytes(new string('a', 200_000));
        var sw = Stopwatch.StartNew();
        try
        {
            var r = YaraScanner.Scan(rules, data, new YaraScanOptions { MaxSteps = 20_000_000 });
            Assert.Empty(r.Matches);
        }
        catch (YaraScanException e)
        {
            Assert.Contains("budget", e.Message, StringComparison.Ordinal);
        }
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), $"took {sw.Elapsed}");
    }

    [Fact]
    public void A_huge_loop_is_stopped_by_the_scan_budget()
    {
        var rules = YaraRules.Compile("rule a { condition: for all i in (0..0x7fffffffffff) : (i >= 0) }", "loop.yar");
        var e = Assert.Throws<YaraScanException>(() => YaraScanner.Scan(rules, new byte[16], new YaraScanOptions { MaxSteps = 1_000_000 }));
        Assert.Contains("step budget", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_cli_reports_compile_errors_on_stderr_and_exits_1()
    {
        string dir = Directory.CreateTempSubdirectory("vmi-yara-cli-").FullName;
        string rules = Path.Combine(dir, "r.yar");
        File.WriteAllText(rules, "rule a {\n condition: $x\n}\n");
        string target = Path.Combine(dir, "t.bin");
        File.WriteAllBytes(target, [1, 2, 3]);
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        Assert.Equal(1, YaraCli.Run([rules, target], stdout, stderr));
        Assert.Equal("", stdout.ToString());
        Assert.Contains("r.yar(2,13): error: rule \"a\": undefined string \"$x\"", stderr.ToString(), StringComparison.Ordinal);
        stderr.GetStringBuilder().Clear();
        Assert.Equal(1, YaraCli.Run([rules], stdout, stderr));
        Assert.Contains("wrong number of arguments", stderr.ToString(), StringComparison.Ordinal);
        stderr.GetStringBuilder().Clear();
        Assert.Equal(1, YaraCli.Run(["-q", rules, target], stdout, stderr));
        Assert.Contains("unknown option -q", stderr.ToString(), StringComparison.Ordinal);
        stderr.GetStringBuilder().Clear();
        Assert.Equal(1, YaraCli.Run([Path.Combine(dir, "missing.yar"), target], stdout, stderr));
        Assert.Contains("could not open rule file", stderr.ToString(), StringComparison.Ordinal);
    }
}
