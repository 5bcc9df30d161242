using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Integration.Tests;

/// <summary>
/// <c>vmi monitor --feed</c> as an operator runs it: the monitor checks the feed on its own schedule, installs
/// the bundle the owner publishes while it runs, and its next alerts come from the new rules.
/// </summary>
[Collection("malware lab")]
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class RulesMonitorCliTests(MalwareLabFixture lab, ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vmi-rules-monitor-").FullName;

    private string P(string name) => Path.Combine(_dir, name);

    private static string Rule(string name)
    {
        string all = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Signatures", "lab-malware.yar"));
        int start = all.IndexOf("rule " + name, StringComparison.Ordinal);
        return all[start..(all.IndexOf("\n}\n", start, StringComparison.Ordinal) + 3)];
    }

    private async Task Ok(params string[] args)
    {
        CliResult r = await VmiCli.RunAsync(args);
        output.WriteLine($"$ vmi {string.Join(' ', args)}\n{r.StandardOutput}{r.StandardError}");
        Assert.True(r.ExitCode == 0, r.StandardError);
    }

    private Task Publish(params string[] files) => Ok([
        "rules", "publish", "--feed", P("feed"), "--rules", .. files,
        "--targets-key", P("targets.key"), "--snapshot-key", P("snapshot.key"), "--timestamp-key", P("timestamp.key")]);

    [Fact]
    public async Task Monitor_with_a_feed_installs_a_bundle_published_while_it_runs_and_alerts_with_its_rules()
    {
        foreach (string k in new[] { "root", "targets", "snapshot", "timestamp" })
            await Ok("rules", "keygen", "--out", P(k + ".key"));
        await Ok("rules", "init", "--feed", P("feed"), "--root-key", P("root.key"), "--targets-key", P("targets.key.pub"),
            "--snapshot-key", P("snapshot.key.pub"), "--timestamp-key", P("timestamp.key.pub"));
        await File.WriteAllTextAsync(P("plain.yar"), Rule("Vmi_Test_Malware_Plain"));
        await File.WriteAllTextAsync(P("unpacked.yar"), Rule("Vmi_Test_Malware_Unpacked"));
        await Publish(P("plain.yar"));
        await Ok("rules", "update", "--feed", P("feed"), "--root", P("feed/1.root.json"), "--state", P("state"));

        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        var psi = VmiCli.StartInfo("monitor", "--target", lab.Guest.Vm.TargetSpec, "--no-hooks", "--json", "--sweep-interval", "1",
            "--feed", P("feed"), "--rules-state", P("state"), "--update-interval", "0.05", "--duration", "90");
        using var monitor = Process.Start(psi)!;
        monitor.StandardInput.Close();
        monitor.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (stdout) stdout.AppendLine(e.Data); };
        monitor.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) stderr.AppendLine(e.Data); };
        monitor.BeginOutputReadLine();
        monitor.BeginErrorReadLine();
        try
        {
            // Bundle 1 is in force: the plain signature, named with bundle 1.
            await WaitForAsync(() => Alerts(stdout).Any(a => a.Rule == "Vmi_Test_Malware_Plain" && a.Bundle == "1"), stdout, stderr, "a bundle 1 alert");
            Assert.DoesNotContain(Alerts(stdout), a => a.Rule == "Vmi_Test_Malware_Unpacked");

            await Publish(P("plain.yar"), P("unpacked.yar"));
            await WaitForAsync(() => Text(stderr).Contains("vmi rules: installed bundle 2", StringComparison.Ordinal), stdout, stderr, "the monitor installing bundle 2");
            Assert.Contains("the detectors use it from their next event", Text(stderr), StringComparison.Ordinal);
            await WaitForAsync(() => Alerts(stdout).Any(a => a.Rule == "Vmi_Test_Malware_Unpacked" && a.Bundle == "2"), stdout, stderr, "a bundle 2 alert of the new rule");
        }
        finally
        {
            if (!monitor.HasExited)
                monitor.Kill(entireProcessTree: true);
            await monitor.WaitForExitAsync();
        }
        output.WriteLine(Text(stderr));
    }

    private static string Text(StringBuilder b)
    {
        lock (b)
            return b.ToString();
    }

    private static List<(string Rule, string Bundle)> Alerts(StringBuilder stdout)
    {
        var alerts = new List<(string, string)>();
        foreach (string line in Text(stdout).Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            if (!line.StartsWith('{'))
                continue;
            using var doc = JsonDocument.Parse(line);
            JsonElement root = doc.RootElement;
            if (root.TryGetProperty("vmi", out var vmi) && vmi.TryGetProperty("evidence", out var ev) && ev.TryGetProperty("rule", out var rule)
                && root.TryGetProperty("rule", out var r) && r.TryGetProperty("version", out var version))
                alerts.Add((rule.GetString()!, version.GetString()!));
        }
        return alerts;
    }

    private static async Task WaitForAsync(Func<bool> condition, StringBuilder stdout, StringBuilder stderr, string what)
    {
        var deadline = Stopwatch.StartNew();
        while (!condition())
        {
            if (deadline.Elapsed > TimeSpan.FromSeconds(60))
                throw new Xunit.Sdk.XunitException($"no {what} within 60 s.\nstdout:\n{Text(stdout)}\nstderr:\n{Text(stderr)}");
            await Task.Delay(200);
        }
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
            // Temporary folder.
        }
    }
}
