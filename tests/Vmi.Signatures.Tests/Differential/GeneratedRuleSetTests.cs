using Xunit;

namespace Vmi.Signatures.Tests.Differential;

/// <summary>
/// The ~3000-rule generated set (<see cref="RuleSetGenerator"/>): yara and ours must both compile it and print the same
/// output on 20 generated inputs; a good fraction of the rules must match something, so the comparison is not vacuous.
/// </summary>
public class GeneratedRuleSetTests
{
    private static readonly Lazy<(string Rules, string Inputs, int RuleCount)> Set = new(() =>
    {
        string dir = Path.Combine(AppContext.BaseDirectory, "GeneratedRuleSet");
        return Write(dir, RuleSetGenerator.DefaultRuleCount, RuleSetGenerator.DefaultInputCount);
    });

    /// <summary>Writes rules.yar and inputs/input_NN.bin under <paramref name="dir"/>.</summary>
    public static (string Rules, string Inputs, int RuleCount) Write(string dir, int ruleCount, int inputCount)
    {
        var (source, rules) = RuleSetGenerator.Generate(ruleCount);
        string inputs = Path.Combine(dir, "inputs");
        if (Directory.Exists(inputs))
            Directory.Delete(inputs, recursive: true);
        Directory.CreateDirectory(inputs);
        string rulesPath = Path.Combine(dir, "rules.yar");
        File.WriteAllText(rulesPath, source);
        for (int i = 0; i < inputCount; i++)
            File.WriteAllBytes(Path.Combine(inputs, $"input_{i:D2}.bin"), RuleSetGenerator.BuildInput(rules, i, inputCount));
        return (rulesPath, inputs, rules.Count);
    }

    /// <summary>
    /// yara needs ~7 s to compile the set, so in-order per-file comparisons (with -s) run on a few inputs; the folder test
    /// covers all of them.
    /// </summary>
    public static TheoryData<int> InputIndexes() => new(0, 1, 2, 3, 7);

    [YaraTheory]
    [MemberData(nameof(InputIndexes))]
    public void Generated_set_scans_like_yara(int index)
    {
        string target = Path.Combine(Set.Value.Inputs, $"input_{index:D2}.bin");
        string[] options = (index % 4) switch
        {
            0 => ["-s"],
            1 => ["-g", "-m"],
            2 => ["-s", "-g"],
            _ => [],
        };
        string[] args = [.. options, Set.Value.Rules, target];
        ScanResult yara = YaraProcess.RunReference(args);
        Assert.True(yara.ExitCode == 0, $"yara rejected the generated rule set (fix the generator):\n{yara.Stderr[..Math.Min(yara.Stderr.Length, 3000)]}");
        Assert.True(yara.Lines(false).Count > 0, $"yara matched nothing on {target}");
        ScanResult ours = YaraProcess.RunOurs(args);
        YaraProcess.AssertSame($"generated#{index}", args, yara, ours, sortLines: false);
    }

    [YaraFact]
    public void Generated_set_folder_scan_matches_yara_and_most_rules_fire()
    {
        string[] args = ["-g", Set.Value.Rules, Set.Value.Inputs];
        ScanResult yara = YaraProcess.RunReference(args);
        Assert.True(yara.ExitCode == 0, $"yara rejected the generated rule set:\n{yara.Stderr[..Math.Min(yara.Stderr.Length, 3000)]}");
        int matchedRules = yara.Lines(false).Select(l => l.Split(' ')[0]).Distinct(StringComparer.Ordinal).Count();
        Assert.Equal(RuleSetGenerator.DefaultInputCount, yara.Lines(false).Select(l => l.Split(' ')[^1]).Distinct(StringComparer.Ordinal).Count());
        Assert.True(matchedRules >= Set.Value.RuleCount * 6 / 10,
            $"only {matchedRules} of {Set.Value.RuleCount} generated rules match any generated input: the inputs no longer exercise the set");
        ScanResult ours = YaraProcess.RunOurs(args);
        YaraProcess.AssertSame("generated-folder", args, yara, ours, sortLines: true);
    }

    /// <summary>
    /// Not a check: writes the generated set (and a benchmark memory image) where bench/yara-compare.sh wants them, when
    /// VMI_YARA_EXPORT_DIR is set (VMI_YARA_EXPORT_IMAGE_MB: image size, default 256; 0 for none).
    /// </summary>
    [Fact]
    public void Export_generated_set_when_requested()
    {
        string? dir = Environment.GetEnvironmentVariable("VMI_YARA_EXPORT_DIR");
        if (string.IsNullOrEmpty(dir))
            return;
        Directory.CreateDirectory(dir);
        var (rules, inputs, _) = Write(dir, RuleSetGenerator.DefaultRuleCount, RuleSetGenerator.DefaultInputCount);
        int mb = int.TryParse(Environment.GetEnvironmentVariable("VMI_YARA_EXPORT_IMAGE_MB"), out int v) ? v : 256;
        if (mb > 0)
            BenchImage.Write(Path.Combine(dir, "image.bin"), mb, Directory.GetFiles(inputs).Order(StringComparer.Ordinal).ToArray());
        Assert.True(File.Exists(rules));
    }
}

/// <summary>A deterministic memory-image-like file: 1 MiB chunks of generated inputs, zero pages, random and text pages.</summary>
internal static class BenchImage
{
    public static void Write(string path, int megabytes, IReadOnlyList<string> inputs)
    {
        var rng = new SplitMix64(0xB0B);
        byte[] chunk = new byte[1 << 20];
        using var f = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        for (int i = 0; i < megabytes; i++)
        {
            RuleSetGenerator.FillBackground(ref rng, chunk);
            if (i % 4 == 0 && inputs.Count > 0)
            {
                // Embed the signature-bearing part of an input (past its header), like a mapped file in guest memory.
                byte[] input = File.ReadAllBytes(inputs[(i / 4) % inputs.Count]);
                int len = Math.Min(input.Length, chunk.Length);
                input.AsSpan(0, len).CopyTo(chunk);
            }
            f.Write(chunk);
        }
    }
}
