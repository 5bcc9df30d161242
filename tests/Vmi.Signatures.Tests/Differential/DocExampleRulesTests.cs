using System.Text;
using System.Text.RegularExpressions;
using Xunit;

namespace Vmi.Signatures.Tests.Differential;

/// <summary>
/// The example rules of YARA's official documentation (Debian's yara-doc: /usr/share/doc/yara/html/_sources/**.rst.txt):
/// every code block that looks like a rule set and imports no module. Blocks yara itself rejects are fragments and are
/// not cases; every block yara accepts must compile with ours and scan a few inputs identically.
/// </summary>
public partial class DocExampleRulesTests
{
    private const string DocRoot = "/usr/share/doc/yara/html/_sources";

    private static readonly Lazy<IReadOnlyList<DocBlock>> AllBlocks = new(ExtractBlocks);

    private static readonly Lazy<IReadOnlyList<DocBlock>> Accepted = new(() =>
        YaraProcess.Available ? AllBlocks.Value.Where(YaraAccepts).ToList() : AllBlocks.Value);

    private static readonly Lazy<string> Workdir = new(() =>
    {
        string dir = Path.Combine(AppContext.BaseDirectory, "DocRules");
        Directory.CreateDirectory(dir);
        // One input holding every quoted literal and hex string of the documentation's examples, so that many of them match.
        var b = new CorpusInputs.Builder();
        b.Bytes(0x4D, 0x5A, 0x90, 0x00).Ascii("\n");
        foreach (DocBlock block in AllBlocks.Value)
        {
            foreach (Match m in QuotedLiteral().Matches(block.Text))
                b.Ascii(" ").Bytes(Unescape(m.Groups[1].Value)).Ascii(" ").Wide(Encoding.Latin1.GetString(Unescape(m.Groups[1].Value))).Ascii("\n");
            foreach (Match m in HexLiteral().Matches(block.Text))
                b.Bytes(HexBytes(m.Groups[1].Value)).Ascii("\n");
        }
        File.WriteAllBytes(Path.Combine(dir, "doc_strings.bin"), b.ToArray());
        return dir;
    });

    public static TheoryData<string> BlockNames()
    {
        var data = new TheoryData<string>();
        foreach (DocBlock b in Accepted.Value)
            data.Add(b.Name);
        return data;
    }

    [YaraTheory]
    [MemberData(nameof(BlockNames))]
    public void Doc_example_compiles_and_scans_like_yara(string name)
    {
        DocBlock block = AllBlocks.Value.Single(b => b.Name == name);
        string rules = block.WriteTo(Workdir.Value);
        foreach (string target in new[] { Path.Combine(Workdir.Value, "doc_strings.bin"), CorpusInputs.PathOf("text.bin"), CorpusInputs.PathOf("pe.bin") })
        {
            string[] args = ["-s", rules, target];
            ScanResult yara = YaraProcess.RunReference(args);
            Assert.True(yara.ExitCode == 0, $"yara rejected {name} although discovery accepted it:\n{yara.Stderr}");
            ScanResult ours = YaraProcess.RunOurs(args);
            Assert.True(ours.ExitCode == 0, $"[{name}] yara compiles this documentation example, ours does not:\n{block.Text}\n--- ours stderr:\n{ours.Stderr}");
            YaraProcess.AssertSame(name, args, yara, ours, sortLines: false);
        }
    }

    [YaraFact]
    public void Documentation_yields_enough_examples()
    {
        Assert.True(Directory.Exists(DocRoot), $"{DocRoot} is missing: install Debian's yara-doc package");
        Assert.True(AllBlocks.Value.Count >= 40, $"only {AllBlocks.Value.Count} rule-like code blocks found in {DocRoot}");
        Assert.True(Accepted.Value.Count >= 25, $"yara accepts only {Accepted.Value.Count} of {AllBlocks.Value.Count} documentation blocks");
    }

    private static bool YaraAccepts(DocBlock block)
    {
        string rules = block.WriteTo(Workdir.Value);
        return YaraProcess.RunReference(["-w", rules, CorpusInputs.PathOf("empty.bin")]).ExitCode == 0;
    }

    private static List<DocBlock> ExtractBlocks()
    {
        var blocks = new List<DocBlock>();
        if (!Directory.Exists(DocRoot))
            return blocks;
        foreach (string file in Directory.EnumerateFiles(DocRoot, "*.rst.txt", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            string[] lines = File.ReadAllLines(file);
            string stem = Path.GetRelativePath(DocRoot, file).Replace(".rst.txt", "", StringComparison.Ordinal).Replace('/', '.');
            for (int i = 0; i < lines.Length; i++)
            {
                string l = lines[i].TrimEnd();
                bool opens = l.TrimStart().StartsWith(".. code-block::", StringComparison.Ordinal) || (l.EndsWith("::", StringComparison.Ordinal) && !l.TrimStart().StartsWith("..", StringComparison.Ordinal));
                if (!opens)
                    continue;
                int start = i + 1;
                while (start < lines.Length && (lines[start].Trim().Length == 0 || lines[start].TrimStart().StartsWith(':')))
                    start++;
                if (start >= lines.Length || !char.IsWhiteSpace(lines[start].FirstOrDefault('x')))
                    continue;
                int indent = lines[start].Length - lines[start].TrimStart().Length;
                int end = start;
                var body = new StringBuilder();
                while (end < lines.Length && (lines[end].Trim().Length == 0 || lines[end].Length - lines[end].TrimStart().Length >= indent))
                {
                    body.AppendLine(lines[end].Length >= indent ? lines[end][indent..] : "");
                    end++;
                }
                string text = body.ToString();
                if (RuleHeader().IsMatch(text) && text.Contains("condition", StringComparison.Ordinal) && !text.Contains("import", StringComparison.Ordinal))
                    blocks.Add(new DocBlock($"{stem}#{blocks.Count(b => b.Name.StartsWith(stem + "#", StringComparison.Ordinal)) + 1}@L{start + 1}", text));
                i = end - 1;
            }
        }
        return blocks;
    }

    private static byte[] Unescape(string s)
    {
        var bytes = new List<byte>();
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] != '\\' || i + 1 >= s.Length)
            {
                bytes.Add((byte)s[i]);
                continue;
            }
            char e = s[++i];
            switch (e)
            {
                case 'n': bytes.Add(10); break;
                case 't': bytes.Add(9); break;
                case 'r': bytes.Add(13); break;
                case 'x' when i + 2 < s.Length && Uri.IsHexDigit(s[i + 1]) && Uri.IsHexDigit(s[i + 2]):
                    bytes.Add(Convert.ToByte(s.Substring(i + 1, 2), 16));
                    i += 2;
                    break;
                default: bytes.Add((byte)e); break;
            }
        }
        return [.. bytes];
    }

    /// <summary>Concrete bytes for a hex string: wildcard nibbles become 0, jumps their minimum, alternatives their first branch.</summary>
    private static byte[] HexBytes(string hex)
    {
        string s = JumpToken().Replace(hex, m => m.Groups[1].Success ? string.Concat(Enumerable.Repeat("00", int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture))) : "");
        s = FirstAlternative().Replace(s, "$1");
        s = s.Replace("?", "0", StringComparison.Ordinal);
        string digits = new([.. s.Where(Uri.IsHexDigit)]);
        return digits.Length % 2 == 0 ? Convert.FromHexString(digits) : [];
    }

    [GeneratedRegex(@"(?m)^\s*(private\s+|global\s+)*rule\s+\w+")]
    private static partial Regex RuleHeader();

    [GeneratedRegex("=\\s*\"((?:[^\"\\\\]|\\\\.)+)\"")]
    private static partial Regex QuotedLiteral();

    [GeneratedRegex(@"=\s*\{([0-9A-Fa-f?\s\[\]\-()|]+)\}")]
    private static partial Regex HexLiteral();

    [GeneratedRegex(@"\[(\d+)(?:-\d*)?\]|\[-\]")]
    private static partial Regex JumpToken();

    [GeneratedRegex(@"\(([^|()]*)(?:\|[^()]*)\)")]
    private static partial Regex FirstAlternative();

    private sealed record DocBlock(string Name, string Text)
    {
        public string WriteTo(string dir)
        {
            string path = Path.Combine(dir, Name.Replace('#', '_').Replace('@', '_') + ".yar");
            File.WriteAllText(path, Text);
            return path;
        }
    }
}
