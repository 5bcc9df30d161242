using System.Text.Json;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Integration.Tests;

/// <summary>`vmi check`, `vmi monitor` and `vmi alerts` as a user runs them, on the live lab guest.</summary>
[Collection(LabCollection.Name)]
public sealed class MonitorCliTests(LabFixture lab, ITestOutputHelper output)
{
    [Fact]
    public async Task Check_runs_every_integrity_detector_once_and_prints_json()
    {
        var r = await VmiCli.RunAsync("check", "--target", lab.Guest.Vm.TargetSpec, "--json");
        output.WriteLine(r.StandardError);
        using var doc = JsonDocument.Parse(r.StandardOutput);
        string[] detectors = [.. doc.RootElement.GetProperty("detectors").EnumerateArray().Select(e => e.GetString()!)];
        foreach (string id in new[] { "syscall-hook", "idt-hook", "inline-hook", "kernel-text-integrity", "hidden-process", "hidden-module", "credential-escalation" })
            Assert.Contains(id, detectors);
        Assert.Empty(doc.RootElement.GetProperty("faults").EnumerateArray());
        // No rootkit in this guest: no integrity finding. (The crowd scenario runs programs from /tmp,
        // which the example detector reports as an alert, not an integrity finding.)
        Assert.Empty(doc.RootElement.GetProperty("findings").EnumerateArray());
        int alerts = doc.RootElement.GetProperty("alerts").GetArrayLength();
        Assert.Equal(alerts == 0 ? 0 : 4, r.ExitCode);
    }

    [Fact]
    public async Task Monitor_prints_alerts_live_and_alerts_lists_them_from_the_store()
    {
        string store = Path.Combine(Directory.CreateTempSubdirectory("vmi-monitor-").FullName, "alerts.db");
        string journal = Path.ChangeExtension(store, ".journal");
        var m = await VmiCli.RunAsync("monitor", "--target", lab.Guest.Vm.TargetSpec, "--store", store, "--duration", "8", "--sweep-interval", "1", "--json", "--journal", journal);
        output.WriteLine(m.StandardError);
        Assert.Equal(0, m.ExitCode);
        Assert.Contains("hooks through the qemu gdb stub", m.StandardError, StringComparison.Ordinal);
        // The crowd scenario's programs run from /tmp/crowd: the example detector (tmp-exec) reports them.
        string[] lines = m.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.NotEmpty(lines);
        foreach (string line in lines)
        {
            using var ecs = JsonDocument.Parse(line);
            Assert.Equal("alert", ecs.RootElement.GetProperty("event").GetProperty("kind").GetString());
            Assert.Equal("tmp-exec", ecs.RootElement.GetProperty("rule").GetProperty("name").GetString());
        }

        // The journal holds what the pipeline saw: the sweeps and the same alerts, readable back.
        using (var reader = Vmi.Pipeline.Journal.JournalReader.Open(journal))
        {
            var recorded = reader.ReadAll().ToList();
            Assert.Null(reader.Problem);
            Assert.True(recorded.OfType<Vmi.Events.SweepTick>().Count() >= 5);
            Assert.Equal(lines.Length, recorded.OfType<Vmi.Events.Alert>().Count());
        }

        var a = await VmiCli.RunAsync("alerts", "--store", store, "--json");
        Assert.Equal(0, a.ExitCode);
        using var stored = JsonDocument.Parse(a.StandardOutput);
        Assert.Equal(lines.Length, stored.RootElement.GetArrayLength());
        var t = await VmiCli.RunAsync("alerts", "--store", store, "--detector", "tmp-exec", "--min-severity", "medium");
        Assert.Equal(lines.Length, t.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);

        var missing = await VmiCli.RunAsync("alerts", "--store", store + ".nope");
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("no alert store", missing.StandardError, StringComparison.Ordinal);
    }
}
