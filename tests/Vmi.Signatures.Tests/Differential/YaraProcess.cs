using System.Diagnostics;
using System.Text;
using Vmi.Signatures.Yara;
using Xunit;

namespace Vmi.Signatures.Tests.Differential;

/// <summary>Exit code and captured output of one scan.</summary>
internal sealed record ScanResult(int ExitCode, string Stdout, string Stderr)
{
    public IReadOnlyList<string> Lines(bool sorted)
    {
        string[] lines = Stdout.Replace("\r\n", "\n", StringComparison.Ordinal)
            .Split('\n', StringSplitOptions.RemoveEmptyEntries);
        if (sorted)
            Array.Sort(lines, StringComparer.Ordinal);
        return lines;
    }
}

/// <summary>Runs the reference <c>yara</c> binary (Debian's yara 4.2.3) and our <see cref="YaraCli"/> on the same arguments.</summary>
internal static class YaraProcess
{
    /// <summary>Reference binary; <c>VMI_YARA</c> overrides the path.</summary>
    public static string Binary => Environment.GetEnvironmentVariable("VMI_YARA") is { Length: > 0 } p ? p : "/usr/bin/yara";

    public static bool Available => File.Exists(Binary);

    /// <summary>Set when the reference binary is missing and <c>VMI_ALLOW_NO_YARA=1</c> allows skipping.</summary>
    public static string? SkipReason =>
        !Available && Environment.GetEnvironmentVariable("VMI_ALLOW_NO_YARA") == "1"
            ? $"{Binary} is not installed and VMI_ALLOW_NO_YARA=1: differential tests against yara skipped"
            : null;

    public static ScanResult RunReference(IReadOnlyList<string> args, int timeoutSeconds = 300)
    {
        if (!Available)
        {
            Assert.Fail($"The reference yara binary {Binary} is missing. Install it (apt-get install yara; it is listed in "
                + "scripts/debian-packages.txt) or set VMI_ALLOW_NO_YARA=1 to skip the differential tests.");
        }
        var psi = new ProcessStartInfo(Binary)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            StandardOutputEncoding = Encoding.Latin1,
            StandardErrorEncoding = Encoding.Latin1,
        };
        foreach (string a in args)
            psi.ArgumentList.Add(a);
        using var process = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {Binary}");
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromSeconds(timeoutSeconds)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"yara {string.Join(' ', args)} did not finish within {timeoutSeconds} s");
        }
        process.WaitForExit();
        return new ScanResult(process.ExitCode, stdout.GetAwaiter().GetResult(), stderr.GetAwaiter().GetResult());
    }

    /// <summary>The single call into the implementation under test.</summary>
    public static ScanResult RunOurs(IReadOnlyList<string> args)
    {
        using var stdout = new StringWriter { NewLine = "\n" };
        using var stderr = new StringWriter { NewLine = "\n" };
        int rc = YaraCli.Run(args, stdout, stderr);
        return new ScanResult(rc, stdout.ToString(), stderr.ToString());
    }

    /// <summary>
    /// Asserts identical exit codes and stdout lines (in order, or as sorted sets for folder scans); the message shows the
    /// first difference and both outputs.
    /// </summary>
    public static void AssertSame(string label, IReadOnlyList<string> args, ScanResult yara, ScanResult ours, bool sortLines)
    {
        IReadOnlyList<string> expected = yara.Lines(sortLines);
        IReadOnlyList<string> actual = ours.Lines(sortLines);
        int firstDiff = -1;
        for (int i = 0; i < Math.Max(expected.Count, actual.Count); i++)
        {
            if (i >= expected.Count || i >= actual.Count || !string.Equals(expected[i], actual[i], StringComparison.Ordinal))
            {
                firstDiff = i;
                break;
            }
        }
        bool sameExit = (yara.ExitCode == 0) == (ours.ExitCode == 0) && yara.ExitCode == ours.ExitCode;
        if (firstDiff < 0 && sameExit)
            return;

        var m = new StringBuilder();
        m.AppendLine($"[{label}] ours differs from yara 4.2.3 for: yara {string.Join(' ', args.Select(Quote))}");
        m.AppendLine($"exit code: yara {yara.ExitCode}, ours {ours.ExitCode}");
        if (firstDiff >= 0)
        {
            m.AppendLine($"first difference at line {firstDiff + 1}{(sortLines ? " (lines sorted)" : "")} "
                + $"(yara has {expected.Count} lines, ours {actual.Count}):");
            m.AppendLine($"  yara: {(firstDiff < expected.Count ? expected[firstDiff] : "<no line>")}");
            m.AppendLine($"  ours: {(firstDiff < actual.Count ? actual[firstDiff] : "<no line>")}");
            var missing = expected.Except(actual, StringComparer.Ordinal).Take(15).ToList();
            var extra = actual.Except(expected, StringComparer.Ordinal).Take(15).ToList();
            if (missing.Count > 0)
                m.AppendLine("lines only yara printed (first 15):").AppendJoin('\n', missing.Select(l => "  - " + l)).AppendLine();
            if (extra.Count > 0)
                m.AppendLine("lines only ours printed (first 15):").AppendJoin('\n', extra.Select(l => "  + " + l)).AppendLine();
        }
        AppendOutput(m, "yara stdout", expected, firstDiff);
        AppendOutput(m, "ours stdout", actual, firstDiff);
        m.AppendLine("yara stderr:").AppendLine(Truncate(yara.Stderr));
        m.AppendLine("ours stderr:").AppendLine(Truncate(ours.Stderr));
        Assert.Fail(m.ToString());
    }

    private static void AppendOutput(StringBuilder m, string title, IReadOnlyList<string> lines, int around)
    {
        int start = Math.Max(0, around < 0 ? 0 : around - 10);
        int end = Math.Min(lines.Count, start + 40);
        m.AppendLine($"{title} (lines {start + 1}..{end} of {lines.Count}):");
        for (int i = start; i < end; i++)
            m.Append(i == around ? "> " : "  ").AppendLine(lines[i]);
    }

    private static string Truncate(string s) => s.Length <= 2000 ? s : s[..2000] + "…";

    private static string Quote(string a) => a.Length > 0 && a.All(c => char.IsAsciiLetterOrDigit(c) || "-_./=:".Contains(c, StringComparison.Ordinal)) ? a : $"'{a}'";
}

/// <summary>
/// A theory that needs the reference yara: skipped (with the reason) only when it is missing and VMI_ALLOW_NO_YARA=1;
/// when it is missing otherwise, the tests run and fail with an explanation.
/// </summary>
public sealed class YaraTheoryAttribute : TheoryAttribute
{
    public YaraTheoryAttribute()
    {
        if (YaraProcess.SkipReason is { } reason)
            Skip = reason;
    }
}

/// <summary>The <see cref="FactAttribute"/> counterpart of <see cref="YaraTheoryAttribute"/>.</summary>
public sealed class YaraFactAttribute : FactAttribute
{
    public YaraFactAttribute()
    {
        if (YaraProcess.SkipReason is { } reason)
            Skip = reason;
    }
}
