using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Vmi.Detectors.Av;
using Vmi.Events;
using Vmi.Lab;
using Vmi.Monitoring;
using Vmi.Signatures.Yara;
using Vmi.Targets;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Integration.Tests;

/// <summary>Pids and regions of the lab's test malware (scenario "malware", program vmi-malware).</summary>
public sealed record MalwarePids(int Plain, int Unpack, int Rwx, ulong UnpackRegion, ulong RwxRegion)
{
    public static async Task<MalwarePids> WaitAsync(LabGuest guest)
    {
        string summary = await guest.Vm.Console.WaitForLineAsync(l => l.StartsWith("@@VMI-MALWARE-READY plain=", StringComparison.Ordinal), TimeSpan.FromMinutes(2));
        int Pid(string key) => int.Parse(Field(summary, key), CultureInfo.InvariantCulture);
        string unpack = await guest.Vm.Console.WaitForLineAsync(l => l.Contains("mode=unpack pid=", StringComparison.Ordinal), TimeSpan.FromSeconds(5));
        string rwx = await guest.Vm.Console.WaitForLineAsync(l => l.Contains("mode=rwx pid=", StringComparison.Ordinal), TimeSpan.FromSeconds(5));
        return new MalwarePids(Pid("plain"), Pid("unpack"), Pid("rwx"), Region(unpack), Region(rwx));
    }

    public static string Field(string line, string key) =>
        line.Split(' ').First(p => p.StartsWith(key + "=", StringComparison.Ordinal))[(key.Length + 1)..];

    public static ulong Region(string line) => ulong.Parse(Field(line, "region").AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
}

/// <summary>The malware scenario booted without monitoring: <c>vmi scan</c> runs against it like an analyst would.</summary>
public sealed class MalwareLabFixture : IAsyncLifetime
{
    public LabGuest Guest { get; private set; } = null!;
    public MalwarePids Pids { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        LabArtifacts artifacts = await LabArtifactsForTests.GetAsync("amd64");
        Guest = await LabGuest.StartAsync(artifacts, "malware-scan", "benign,malware");
        Pids = await MalwarePids.WaitAsync(Guest);
    }

    public async Task DisposeAsync()
    {
        if (Guest is not null)
            await Guest.DisposeAsync();
    }
}

[CollectionDefinition("malware lab")]
public sealed class MalwareLabCollection : ICollectionFixture<MalwareLabFixture>;

/// <summary>
/// Signature scanning of a live guest: the test program's plain signature is found in its process, and
/// the payload it unpacks into fresh executable memory is found there and nowhere on disk.
/// </summary>
[Collection("malware lab")]
public sealed class SignatureScanTests(MalwareLabFixture lab, ITestOutputHelper output)
{
    private static string RulesFile => Path.Combine(AppContext.BaseDirectory, "Signatures", "lab-malware.yar");

    [Fact]
    public async Task The_unpacked_payload_is_nowhere_on_disk()
    {
        string programFile = Path.Combine((await LabArtifactsForTests.GetAsync("amd64")).Directory, "programs", "vmi-malware");
        // The program file (what the initramfs carries) has the plain signature but not the unpacked one.
        Assert.True(File.Exists(programFile), $"lab program missing: {programFile}");
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int rc = YaraCli.Run(["-s", RulesFile, programFile], stdout, stderr);
        output.WriteLine(stdout.ToString() + stderr);
        Assert.Equal(0, rc);
        Assert.Contains("Vmi_Test_Malware_Plain " + programFile, stdout.ToString(), StringComparison.Ordinal);
        Assert.DoesNotContain("Vmi_Test_Malware_Unpacked", stdout.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Vmi_scan_finds_the_unpacked_payload_in_process_memory_with_its_vma()
    {
        foreach (var (pid, region, perms) in new[] { (lab.Pids.Unpack, lab.Pids.UnpackRegion, "r-xp"), (lab.Pids.Rwx, lab.Pids.RwxRegion, "rwxp") })
        {
            var r = await VmiCli.RunAsync("scan", "--target", lab.Guest.Vm.TargetSpec, "--rules", RulesFile, "--pid", pid.ToString(CultureInfo.InvariantCulture), "--json");
            output.WriteLine(r.StandardError);
            output.WriteLine(r.StandardOutput);
            Assert.Equal(SignatureCommandsExit.Matches, r.ExitCode);
            using var doc = JsonDocument.Parse(r.StandardOutput);
            var proc = Assert.Single(doc.RootElement.EnumerateArray());
            Assert.Equal(pid, proc.GetProperty("pid").GetInt32());
            var unpacked = proc.GetProperty("matches").EnumerateArray().Single(m => m.GetProperty("rule").GetString() == "Vmi_Test_Malware_Unpacked");
            var strings = unpacked.GetProperty("strings").EnumerateArray().ToList();
            var code = strings.Single(s => s.GetProperty("id").GetString() == "$code");
            var marker = strings.Single(s => s.GetProperty("id").GetString() == "$marker");
            Assert.Equal($"0x{region:x}", code.GetProperty("address").GetString());
            Assert.Equal($"0x{region + 0x20:x}", marker.GetProperty("address").GetString());
            Assert.Equal("0x20", marker.GetProperty("offset").GetString());
            Assert.Equal("48b8eeffc0115a2e1d4b48354433221148c1c00dc3", code.GetProperty("data").GetString());
            // The VMA is named as /proc/PID/maps would show it: anonymous, executable.
            Assert.StartsWith($"{region:x}-", code.GetProperty("region").GetString(), StringComparison.Ordinal);
            Assert.EndsWith($" {perms} [anon]", code.GetProperty("region").GetString(), StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Vmi_scan_of_the_whole_guest_names_only_the_malware_processes()
    {
        var sw = Stopwatch.StartNew();
        var r = await VmiCli.RunAsync("scan", "--target", lab.Guest.Vm.TargetSpec, "--rules", RulesFile, "-s");
        sw.Stop();
        output.WriteLine(r.StandardError);
        output.WriteLine(r.StandardOutput);
        Assert.Equal(SignatureCommandsExit.Matches, r.ExitCode);
        var lines = r.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var ruleLines = lines.Where(l => !l.StartsWith("0x", StringComparison.Ordinal)).ToList();
        Assert.Contains($"Vmi_Test_Malware_Plain pid {lab.Pids.Plain} (vmi-malware)", ruleLines);
        Assert.Contains($"Vmi_Test_Malware_Unpacked pid {lab.Pids.Unpack} (vmi-malware)", ruleLines);
        Assert.Contains($"Vmi_Test_Malware_Unpacked pid {lab.Pids.Rwx} (vmi-malware)", ruleLines);
        Assert.DoesNotContain($"Vmi_Test_Malware_Unpacked pid {lab.Pids.Plain} (vmi-malware)", ruleLines);
        // Only vmi-malware processes match: no other process, and not the kernel.
        Assert.All(ruleLines, l => Assert.Contains("(vmi-malware)", l, StringComparison.Ordinal));
        Assert.Contains("and kernel memory", r.StandardError, StringComparison.Ordinal);
        ResultsFile.Append("signature-scan.txt", [$"vmi scan of the whole lab guest (all processes + kernel): {sw.Elapsed.TotalSeconds:F1} s wall, {r.StandardError.Trim()}"]);
    }

    [Fact]
    public async Task A_malformed_rule_file_is_a_clear_error_and_no_scan()
    {
        string bad = Path.Combine(Directory.CreateTempSubdirectory("vmi-bad-rules-").FullName, "bad.yar");
        await File.WriteAllTextAsync(bad, "rule broken {\n  strings: $a = { 41 [5-2] 42 }\n  condition: $a\n}\n");
        var r = await VmiCli.RunAsync("scan", "--target", lab.Guest.Vm.TargetSpec, "--rules", bad);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("bad.yar(2,", r.StandardError, StringComparison.Ordinal);
        Assert.Contains("invalid hex string \"$a\"", r.StandardError, StringComparison.Ordinal);
    }
}

internal static class SignatureCommandsExit
{
    public const int Matches = 4;
}

/// <summary>The malware scenario under full monitoring: the AV detector is fed by exec and executable-memory breakpoints and sweeps.</summary>
public sealed class MonitoredMalwareLabFixture() : MonitoredLabFixture("malware-monitor", "benign,malware")
{
    public MalwarePids Pids { get; private set; } = null!;

    protected override TimeSpan SweepInterval => TimeSpan.FromSeconds(2);

    protected override JsonElement? DetectorConfig
    {
        get
        {
            string rules = Path.Combine(AppContext.BaseDirectory, "Signatures", "lab-malware.yar");
            using var doc = JsonDocument.Parse(JsonSerializer.Serialize(new Dictionary<string, object> { ["av-signature"] = new { ruleFiles = new[] { rules } } }));
            return doc.RootElement.Clone();
        }
    }

    protected override async Task OnBootedAsync(LabGuest guest) => Pids = await MalwarePids.WaitAsync(guest);
}

[CollectionDefinition("monitored malware lab")]
public sealed class MonitoredMalwareLabCollection : ICollectionFixture<MonitoredMalwareLabFixture>;

/// <summary>The AV detector in the live pipeline.</summary>
[Collection("monitored malware lab")]
public sealed class AvDetectorLabTests(MonitoredMalwareLabFixture lab, ITestOutputHelper output)
{
    private static bool IsAv(Alert a, string rule, int pid) =>
        a.Detector == AvDetector.Id && a.Pid == pid && a.Evidence.TryGetValue("rule", out var r) && r == rule;

    [Fact]
    public async Task Running_malware_is_alerted_with_rule_process_vma_offset_and_bytes()
    {
        var (alert, _) = await lab.WaitForAlertAsync(AvDetector.Id, TimeSpan.Zero, a => IsAv(a, "Vmi_Test_Malware_Unpacked", lab.Pids.Unpack), TimeSpan.FromSeconds(90));
        output.WriteLine(string.Join("\n", alert.Evidence.Select(kv => $"{kv.Key}: {kv.Value}")));
        Assert.Equal(Severity.High, alert.Severity);
        Assert.Contains(alert.Techniques, t => t.Id == "T1027.002");
        Assert.Equal(string.Create(CultureInfo.InvariantCulture, $"0x{lab.Pids.UnpackRegion:x}"), alert.Evidence["address"]);
        Assert.Equal("0x0", alert.Evidence["offset"]);
        Assert.EndsWith("r-xp [anon]", alert.Evidence["vma"], StringComparison.Ordinal);
        Assert.Contains(alert.Evidence, kv => kv.Key.EndsWith("_hex", StringComparison.Ordinal) && kv.Value == "48b8eeffc0115a2e1d4b48354433221148c1c00dc3");
        Assert.Equal("file", alert.BundleVersion);
        await lab.WaitForAlertAsync(AvDetector.Id, TimeSpan.Zero, a => IsAv(a, "Vmi_Test_Malware_Unpacked", lab.Pids.Rwx), TimeSpan.FromSeconds(60));
        await lab.WaitForAlertAsync(AvDetector.Id, TimeSpan.Zero, a => IsAv(a, "Vmi_Test_Malware_Plain", lab.Pids.Plain), TimeSpan.FromSeconds(60));
        Assert.DoesNotContain(lab.Alerts, x => IsAv(x.Alert, "Vmi_Test_Malware_Unpacked", lab.Pids.Plain));
    }

    [Fact]
    public async Task Unpacking_while_monitored_is_alerted_soon_after_the_memory_becomes_executable()
    {
        // Wait for the detector's first pass over the running processes, then start a new copy that unpacks on a signal.
        await lab.WaitForAlertAsync(AvDetector.Id, TimeSpan.Zero, a => IsAv(a, "Vmi_Test_Malware_Unpacked", lab.Pids.Unpack), TimeSpan.FromSeconds(90));
        long from = lab.Guest.Vm.Console.Position;
        await lab.Guest.ShellAsync("/lab/bin/vmi-malware wait >/run/vmi-malware.wait 2>&1 &");
        string waiting = await lab.Guest.Vm.Console.WaitForLineAsync(l => l.Contains("mode=wait pid=", StringComparison.Ordinal) && l.Contains("state=waiting", StringComparison.Ordinal), TimeSpan.FromSeconds(30), from);
        int pid = int.Parse(MalwarePids.Field(waiting, "pid"), CultureInfo.InvariantCulture);
        // Let a few sweeps see the waiting process: nothing unpacked yet, so no Unpacked alert.
        await Task.Delay(TimeSpan.FromSeconds(5));
        Assert.DoesNotContain(lab.Alerts, x => IsAv(x.Alert, "Vmi_Test_Malware_Unpacked", pid));
        var since = lab.Now;
        await lab.Guest.ShellAsync($"kill -USR1 {pid}");
        string unpacked = await lab.Guest.Vm.Console.WaitForLineAsync(l => l.Contains($"mode=wait pid={pid} state=unpacked", StringComparison.Ordinal), TimeSpan.FromSeconds(30), from);
        ulong region = MalwarePids.Region(unpacked);
        var (alert, latency) = await lab.WaitForAlertAsync(AvDetector.Id, since, a => IsAv(a, "Vmi_Test_Malware_Unpacked", pid), TimeSpan.FromSeconds(60));
        output.WriteLine($"latency {latency.TotalSeconds:F2} s, trigger {alert.Evidence["trigger"]}");
        Assert.Equal(string.Create(CultureInfo.InvariantCulture, $"0x{region:x}"), alert.Evidence["address"]);
        Assert.Contains(alert.Evidence["trigger"], new[] { "executable memory", "sweep: executable memory changed" });
        ResultsFile.Append("signature-scan.txt", [$"unpack-in-memory → AV alert: {latency.TotalSeconds:F2} s (trigger: {alert.Evidence["trigger"]})"]);
    }
}
