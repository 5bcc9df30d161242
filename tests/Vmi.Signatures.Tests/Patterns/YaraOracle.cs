using System.Diagnostics;
using System.Globalization;
using System.Text;
using Vmi.Signatures.Patterns;
using Xunit;

namespace Vmi.Signatures.Tests.Patterns;

/// <summary>Runs only when the reference yara binary is installed.</summary>
public sealed class YaraFactAttribute : FactAttribute
{
    public YaraFactAttribute()
    {
        if (!File.Exists(YaraOracle.YaraPath))
            Skip = $"{YaraOracle.YaraPath} is not installed; the differential pattern tests need the reference yara 4.2.3";
    }
}

/// <summary>Feeds one string declaration to the real yara and to the pattern engine and compares the matches.</summary>
internal static class YaraOracle
{
    public const string YaraPath = "/usr/bin/yara";
    private static readonly string Dir = Path.Combine(Path.GetTempPath(), "vmi-pattern-tests-" + Environment.ProcessId.ToString(CultureInfo.InvariantCulture));
    private static int counter;

    /// <summary>Rule-file text of a string declaration.</summary>
    public static string Declaration(StringSpec s)
    {
        var sb = new StringBuilder();
        sb.Append("$a = ");
        switch (s.Kind)
        {
            case StringKind.Text:
                sb.Append('"');
                foreach (byte b in s.Text)
                {
                    if (b is >= 0x20 and < 0x7f && b != '"' && b != '\\')
                        sb.Append((char)b);
                    else
                        sb.Append(CultureInfo.InvariantCulture, $"\\x{b:x2}");
                }
                sb.Append('"');
                break;
            case StringKind.Hex:
                sb.Append("{ ").Append(s.Source).Append(" }");
                break;
            default:
                sb.Append('/').Append(s.Source).Append('/');
                if (s.RegexNocase)
                    sb.Append('i');
                if (s.RegexDotAll)
                    sb.Append('s');
                break;
        }
        var m = s.Modifiers;
        if ((m & StringModifiers.Ascii) != 0) sb.Append(" ascii");
        if ((m & StringModifiers.Wide) != 0) sb.Append(" wide");
        if ((m & StringModifiers.Nocase) != 0) sb.Append(" nocase");
        if ((m & StringModifiers.Fullword) != 0) sb.Append(" fullword");
        if ((m & StringModifiers.Xor) != 0)
            sb.Append(s.XorMin == 0 && s.XorMax == 255 ? " xor" : $" xor({s.XorMin}-{s.XorMax})");
        string alphabet = s.Base64Alphabet is null ? "" : $"(\"{Encoding.Latin1.GetString(s.Base64Alphabet)}\")";
        if ((m & StringModifiers.Base64) != 0) sb.Append(" base64").Append(alphabet);
        if ((m & StringModifiers.Base64Wide) != 0) sb.Append(" base64wide").Append(alphabet);
        return sb.ToString();
    }

    /// <summary>yara's output for the declaration: matches (offset, length), or the error text.</summary>
    public static (List<(int Offset, int Length)> Matches, string? Error) RunYara(StringSpec spec, byte[] input)
    {
        Directory.CreateDirectory(Dir);
        int n = Interlocked.Increment(ref counter);
        string rule = Path.Combine(Dir, $"r{n}.yar");
        string data = Path.Combine(Dir, $"d{n}.bin");
        File.WriteAllText(rule, "rule t { strings: " + Declaration(spec) + " condition: any of them }\n");
        File.WriteAllBytes(data, input);
        var psi = new ProcessStartInfo(YaraPath) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "-s", "-L", "-w", rule, data })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd();
        string stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        File.Delete(rule);
        File.Delete(data);
        if (stderr.Contains("error", StringComparison.Ordinal))
            return ([], stderr.Trim());
        var result = new List<(int, int)>();
        foreach (var line in stdout.Split('\n'))
        {
            if (!line.StartsWith("0x", StringComparison.Ordinal))
                continue;
            var parts = line.Split(':');
            result.Add((int.Parse(parts[0].AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture), int.Parse(parts[1], CultureInfo.InvariantCulture)));
        }
        result.Sort();
        return (result, null);
    }

    private sealed class FirstPerOffsetSink : IMatchSink
    {
        public Dictionary<int, int> Matches { get; } = [];
        public void Add(int offset, int length) => Matches.TryAdd(offset, length);
    }

    /// <summary>Scans the way the scanner does: atom hits in order of where they end, one match per offset.</summary>
    public static List<(int Offset, int Length)> RunEngine(CompiledString cs, byte[] input)
    {
        var sink = new FirstPerOffsetSink();
        var budget = new ScanBudget(500_000_000);
        if (cs.Atoms.Count == 0)
        {
            cs.VerifyAll(input, sink, budget);
        }
        else
        {
            var hits = new List<(int End, int Order, int Pos, Atom Atom)>();
            for (int k = 0; k < cs.Atoms.Count; k++)
            {
                var atom = cs.Atoms[k];
                for (int i = 0; i + atom.Bytes.Length <= input.Length; i++)
                {
                    if (input.AsSpan(i, atom.Bytes.Length).SequenceEqual(atom.Bytes))
                        hits.Add((i + atom.Bytes.Length, k, i, atom));
                }
            }
            hits.Sort((x, y) => x.End != y.End ? x.End.CompareTo(y.End) : x.Order.CompareTo(y.Order));
            foreach (var h in hits)
                cs.Verify(input, h.Atom, h.Pos, sink, budget);
        }
        var list = sink.Matches.Select(kv => (kv.Key, kv.Value)).ToList();
        list.Sort();
        return list;
    }

    private const int MaxMatchData = 512;

    private static string Show(List<(int Offset, int Length)> list, int from) =>
        string.Join(' ', list.Skip(Math.Max(0, from - 2)).Take(12).Select(m => $"{m.Offset}:{m.Length}"));

    public static int AssertSame(StringSpec spec, byte[] input)
    {
        var (expected, error) = RunYara(spec, input);
        string decl = Declaration(spec);
        if (error is not null)
        {
            PatternException? ex = null;
            try
            {
                CompiledString.Compile(spec, PatternLimits.Default);
            }
            catch (PatternException e)
            {
                ex = e;
            }
            Assert.True(ex is not null, $"{decl}: yara says '{error}', the engine compiled it");
            Assert.True(error.Contains(ex.Message, StringComparison.Ordinal), $"{decl}: yara says '{error}', engine says '{ex.Message}'");
            return 1;
        }
        var cs = CompiledString.Compile(spec, PatternLimits.Default);
        var full = RunEngine(cs, input);
        // yara -L prints the length of the stored match data, which is capped at 512 bytes.
        var actual = full.Select(m => (m.Offset, Math.Min(m.Length, MaxMatchData))).ToList();
        if (!expected.SequenceEqual(actual))
        {
            int first = 0;
            while (first < Math.Min(expected.Count, actual.Count) && expected[first] == actual[first])
                first++;
            Assert.Fail($"{decl}\n first difference at #{first} of {expected.Count} (yara) / {actual.Count} (engine)\n yara:   {Show(expected, first)}\n engine: {Show(actual, first)}");
        }
        foreach (var (_, len) in full)
            Assert.True(len <= cs.MaxMatchLength, $"{decl}: match of {len} exceeds MaxMatchLength {cs.MaxMatchLength}");
        return expected.Count;
    }
}
