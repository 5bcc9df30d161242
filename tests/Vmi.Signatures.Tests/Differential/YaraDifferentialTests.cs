using Xunit;

namespace Vmi.Signatures.Tests.Differential;

/// <summary>
/// One case of the differential corpus: the yara command line <c>OPTIONS RULES... TARGET</c>, run by the real yara and by
/// <see cref="Vmi.Signatures.Yara.YaraCli"/>. Rule paths are relative to Corpus/, targets to the generated inputs folder.
/// </summary>
public sealed record DifferentialCase(string Name, string[] Options, string[] Rules, string Target)
{
    /// <summary>Folder scans print in thread order: compare sorted lines.</summary>
    public bool SortLines { get; init; }

    /// <summary>yara must reject the rules (compile error); ours must fail too.</summary>
    public bool ExpectError { get; init; }

    /// <summary>The case is meaningful even when yara prints nothing (otherwise an empty yara output means a broken corpus).</summary>
    public bool AllowEmpty { get; init; }

    public string[] Args()
    {
        string corpus = Path.Combine(AppContext.BaseDirectory, "Corpus");
        return [.. Options, .. Rules.Select(r => Path.Combine(corpus, r)), CorpusInputs.PathOf(Target)];
    }

    public override string ToString() => Name;
}

/// <summary>
/// Differential tests against Debian's yara 4.2.3: every corpus case runs through /usr/bin/yara and through YaraCli
/// in-process, and stdout (line by line) and exit codes must be identical.
/// </summary>
public class YaraDifferentialTests
{
    private const string Ext =
        "ext_int=42|ext_str=C:\\Windows\\evil.exe|ext_bool=true|ext_float=1.5|ext_hexstr=0x10";

    public static readonly IReadOnlyList<DifferentialCase> Cases = BuildCases();

    public static TheoryData<string> CaseNames() => new(Cases.Select(c => c.Name));

    [YaraTheory]
    [MemberData(nameof(CaseNames))]
    public void Ours_matches_yara(string name)
    {
        DifferentialCase c = Cases.Single(x => x.Name == name);
        string[] args = c.Args();
        ScanResult yara = YaraProcess.RunReference(args);
        if (c.ExpectError)
        {
            Assert.True(yara.ExitCode != 0, $"corpus error: yara accepted {string.Join(' ', c.Rules)} although the case expects a compile error:\n{yara.Stdout}");
            ScanResult oursErr = YaraProcess.RunOurs(args);
            Assert.True(oursErr.ExitCode != 0,
                $"[{name}] yara rejects the rules (exit {yara.ExitCode}: {yara.Stderr.Trim()}), ours accepted them (exit 0):\n{oursErr.Stdout}");
            YaraProcess.AssertSame(name, args, yara, oursErr, c.SortLines);
            return;
        }
        Assert.True(yara.ExitCode == 0, $"corpus error: yara failed on case {name} (exit {yara.ExitCode}):\n{yara.Stderr}");
        Assert.True(c.AllowEmpty || yara.Stdout.Trim().Length > 0, $"corpus error: yara printed nothing for case {name}; the case tests nothing");
        ScanResult ours = YaraProcess.RunOurs(args);
        YaraProcess.AssertSame(name, args, yara, ours, c.SortLines);
    }

    [Fact]
    public void Every_corpus_rule_file_is_used_by_a_case()
    {
        string corpus = Path.Combine(AppContext.BaseDirectory, "Corpus");
        var used = Cases.SelectMany(c => c.Rules).Select(r => r.Replace('\\', '/')).ToHashSet(StringComparer.Ordinal);
        var files = Directory.EnumerateFiles(corpus, "*.yar", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(corpus, f).Replace('\\', '/'))
            .Where(f => !f.StartsWith("include/", StringComparison.Ordinal))
            .ToList();
        Assert.NotEmpty(files);
        var unused = files.Where(f => !used.Contains(f)).ToList();
        Assert.True(unused.Count == 0, "corpus files no case uses: " + string.Join(", ", unused));
        Assert.Equal(Cases.Count, Cases.Select(c => c.Name).Distinct(StringComparer.Ordinal).Count());
    }

    [Fact]
    public void Every_corpus_rule_file_documents_its_coverage()
    {
        string corpus = Path.Combine(AppContext.BaseDirectory, "Corpus");
        foreach (string f in Directory.EnumerateFiles(corpus, "*.yar", SearchOption.AllDirectories))
        {
            string head = File.ReadAllText(f).TrimStart();
            Assert.True(head.StartsWith("/*", StringComparison.Ordinal) && (head.Contains("Covers:", StringComparison.Ordinal)
                || head.Contains("Error case:", StringComparison.Ordinal) || head.Contains("Included by", StringComparison.Ordinal)),
                $"{f} must start with a comment saying what it covers");
        }
    }

    private static List<DifferentialCase> BuildCases()
    {
        var cases = new List<DifferentialCase>();
        void Add(string name, string options, string rules, string target, bool sort = false, bool allowEmpty = false) =>
            cases.Add(new DifferentialCase(name, Split(options), rules.Split(' '), target) { SortLines = sort, AllowEmpty = allowEmpty });

        // Each feature file on its main input with -s (strings and offsets), and on the other inputs it names.
        (string Rules, string[] Targets)[] files =
        [
            ("text_strings.yar", ["text.bin", "pe.bin", "encoded.bin", "empty.bin"]),
            ("xor_base64.yar", ["encoded.bin", "text.bin"]),
            ("hex_strings.yar", ["hex.bin", "pe.bin", "elf.bin", "repeat.bin"]),
            ("regex.yar", ["regex.bin", "text.bin", "hex.bin"]),
            ("string_conditions.yar", ["repeat.bin", "text.bin", "hex.bin", "empty.bin"]),
            ("arithmetic.yar", ["pe.bin", "elf.bin", "text.bin", "empty.bin", "tiny.bin"]),
            ("string_operators.yar", ["text.bin"]),
            ("rules_meta_tags.yar", ["text.bin", "pe.bin", "empty.bin"]),
            ("many_matches.yar", ["repeat.bin", "empty.bin", "tiny.bin"]),
            ("edge_cases.yar", ["text.bin", "hex.bin", "regex.bin"]),
        ];
        foreach (var (rules, targets) in files)
        {
            string stem = Path.GetFileNameWithoutExtension(rules);
            foreach (string target in targets)
            {
                string t = Path.GetFileNameWithoutExtension(target);
                bool allowEmpty = target != targets[0]; // the main input must match something; the others may not
                Add($"{stem}.{t}.plain", "", rules, target, allowEmpty: allowEmpty);
                Add($"{stem}.{t}.s", "-s", rules, target, allowEmpty: allowEmpty);
            }
        }

        // Output options: tags, metadata, counts, negation, rule and tag filters, and their combinations.
        Add("options.g", "-g", "rules_meta_tags.yar", "text.bin");
        Add("options.m", "-m", "rules_meta_tags.yar", "text.bin");
        Add("options.g_m_s", "-g -m -s", "rules_meta_tags.yar", "text.bin");
        Add("options.c", "-c", "rules_meta_tags.yar", "text.bin");
        Add("options.c_empty", "-c", "rules_meta_tags.yar", "empty.bin");
        Add("options.c_no_match", "-c", "text_strings.yar", "empty.bin");
        Add("options.n", "-n", "rules_meta_tags.yar", "text.bin");
        Add("options.n_global_fails", "-n -g", "rules_meta_tags.yar", "empty.bin");
        Add("options.n_c", "-n -c", "rules_meta_tags.yar", "text.bin");
        Add("options.n_s", "-n -s", "text_strings.yar", "text.bin");
        Add("options.i", "-i meta_all_types -s -m", "rules_meta_tags.yar", "text.bin");
        Add("options.i_included_rule", "-i inc_tagged -g", "rules_meta_tags.yar", "text.bin");
        Add("options.i_private_rule", "-i priv_has_scanner", "rules_meta_tags.yar", "text.bin", allowEmpty: true);
        Add("options.i_unknown_rule", "-i no_such_rule", "rules_meta_tags.yar", "text.bin", allowEmpty: true);
        Add("options.t", "-t trojan -g", "rules_meta_tags.yar", "text.bin");
        Add("options.t_included", "-t shared", "rules_meta_tags.yar", "text.bin");
        Add("options.t_case_sensitive", "-t tagcase", "rules_meta_tags.yar", "text.bin", allowEmpty: true);
        Add("options.t_n", "-t family_a -n -g", "rules_meta_tags.yar", "text.bin");
        Add("options.m_s_arith", "-m -g -s", "many_matches.yar", "repeat.bin");
        Add("options.s_m_xor", "-s -m", "xor_base64.yar", "encoded.bin");

        // External variables.
        Add("externals.set1", Defines(Ext), "externals.yar", "text.bin");
        Add("externals.set1_s", "-s " + Defines(Ext), "externals.yar", "text.bin");
        Add("externals.set2", Defines("ext_int=-7|ext_str=|ext_bool=false|ext_float=3|ext_hexstr=abc"), "externals.yar", "text.bin");
        Add("externals.set3", Defines("ext_int=007|ext_str=c:\\WINDOWS\\EVIL.EXE|ext_bool=TRUE|ext_float=1.25|ext_hexstr=0x10"),
            "externals.yar", "text.bin", allowEmpty: true);
        Add("externals.unused_defines", Defines("unused=1|other=text"), "string_operators.yar", "text.bin");
        cases.Add(new DifferentialCase("externals.missing_definition", [], ["externals.yar"], "text.bin") { ExpectError = true });
        cases.Add(new DifferentialCase("externals.int_where_string_expected",
            Split(Defines("ext_int=42|ext_str=x|ext_bool=true|ext_float=1.5|ext_hexstr=16")), ["externals.yar"], "text.bin") { ExpectError = true });

        // Several rule files in one run (one namespace: rules of later files may reference earlier ones).
        Add("multi.two_files", "-s", "text_strings.yar regex.yar", "regex.bin");
        Add("multi.three_files_g", "-g", "rules_meta_tags.yar hex_strings.yar many_matches.yar", "repeat.bin");
        cases.Add(new DifferentialCase("multi.same_file_twice", [], ["text_strings.yar", "text_strings.yar"], "text.bin") { ExpectError = true });

        // Folder targets: top level only without -r, the whole tree with -r (thread order: compare sorted lines).
        Add("folder.flat", "", "rules_meta_tags.yar", "tree", sort: true);
        Add("folder.flat_s", "-s", "text_strings.yar", "tree", sort: true);
        Add("folder.recursive", "-r", "rules_meta_tags.yar", "tree", sort: true);
        Add("folder.recursive_g_m", "-r -g -m", "rules_meta_tags.yar", "tree", sort: true);
        Add("folder.recursive_c", "-r -c", "hex_strings.yar", "tree", sort: true);
        // Not arithmetic.yar: yara 4.2.3 evaluates uint8(entrypoint) nondeterministically in threaded folder scans (~1 run in 10).
        Add("folder.recursive_regex", "-r", "regex.yar", "tree", sort: true);
        Add("folder.recursive_n", "-r -n", "string_conditions.yar", "tree", sort: true);

        // Compile errors: yara rejects every file in errors/, and so must we.
        string errors = Path.Combine(AppContext.BaseDirectory, "Corpus", "errors");
        foreach (string f in Directory.EnumerateFiles(errors, "*.yar").Order(StringComparer.Ordinal))
        {
            string rel = "errors/" + Path.GetFileName(f);
            cases.Add(new DifferentialCase("error." + Path.GetFileNameWithoutExtension(f), [], [rel], "text.bin") { ExpectError = true });
        }
        return cases;
    }

    private static string Defines(string pipeSeparated) =>
        string.Join(' ', pipeSeparated.Split('|').Select(d => "-d\u0001" + d));

    /// <summary>Splits options on spaces; "\u0001" glues an option to its value so values may hold spaces or be empty.</summary>
    private static string[] Split(string options) =>
        options.Split(' ', StringSplitOptions.RemoveEmptyEntries).SelectMany(o => o.Split('\u0001')).ToArray();
}
