using System.Text.Json;
using Vmi.Detectors.Av;
using Vmi.Events;
using Vmi.Lab;
using Vmi.Updates;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Integration.Tests;

/// <summary>
/// The malware lab under monitoring whose AV detector takes its rules from a signed feed: bundle 1 holds
/// only the plain signature; the test publishes bundle 2 (adding the signature of the unpacked payload)
/// while the monitor runs and installs it with <c>vmi rules update</c> from another process.
/// </summary>
public sealed class MonitoredRuleFeedLabFixture() : MonitoredLabFixture("rules-feed", "benign,malware")
{
    public string Root { get; } = Directory.CreateTempSubdirectory("vmi-rules-lab-").FullName;
    public string Feed => Path.Combine(Root, "feed");
    public string State => Path.Combine(Root, "state");
    public MalwarePids Pids { get; private set; } = null!;
    public SigningKey RootKey { get; } = SigningKey.Generate();
    public SigningKey TargetsKey { get; } = SigningKey.Generate();
    public SigningKey SnapshotKey { get; } = SigningKey.Generate();
    public SigningKey TimestampKey { get; } = SigningKey.Generate();

    protected override TimeSpan SweepInterval => TimeSpan.FromSeconds(2);

    protected override JsonElement? DetectorConfig
    {
        get
        {
            using var doc = JsonDocument.Parse(JsonSerializer.Serialize(new Dictionary<string, object> { ["av-signature"] = new { rulesState = State } }));
            return doc.RootElement.Clone();
        }
    }

    /// <summary>Writes one of the two lab rules (from Signatures/lab-malware.yar) to its own file.</summary>
    public string RuleFile(string rule)
    {
        string all = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Signatures", "lab-malware.yar"));
        int start = all.IndexOf("rule " + rule, StringComparison.Ordinal);
        int end = all.IndexOf("\n}\n", start, StringComparison.Ordinal) + 3;
        string path = Path.Combine(Root, rule + ".yar");
        File.WriteAllText(path, all[start..end]);
        return path;
    }

    public TargetsMetadata Publish(params string[] rules) =>
        new FeedPublisher(Feed).Publish([.. rules.Select(r => new RuleFileInput(RuleFile(r)))], [TargetsKey], [SnapshotKey], [TimestampKey], validate: BundleSignatureSource.Validate);

    protected override async Task OnBootedAsync(LabGuest guest)
    {
        Pids = await MalwarePids.WaitAsync(guest);
        var plan = new RootPlan(new Dictionary<Role, IReadOnlyList<UpdatePublicKey>>
        {
            [Role.Root] = [RootKey.Public],
            [Role.Targets] = [TargetsKey.Public],
            [Role.Snapshot] = [SnapshotKey.Public],
            [Role.Timestamp] = [TimestampKey.Public],
        }, new Dictionary<Role, int>());
        new FeedPublisher(Feed).Initialize(plan, [RootKey]);
        Publish("Vmi_Test_Malware_Plain");
        var client = new RuleUpdateClient(RuleStore.Open(State), FeedFetchers.Create(Feed), new UpdateClientOptions { Validate = BundleSignatureSource.Validate });
        client.Initialize(await File.ReadAllBytesAsync(Path.Combine(Feed, "1.root.json")));
        await client.UpdateAsync();
    }
}

[CollectionDefinition("monitored rules feed lab")]
public sealed class MonitoredRuleFeedLabCollection : ICollectionFixture<MonitoredRuleFeedLabFixture>;

[Collection("monitored rules feed lab")]
public sealed class RuleUpdateLabTests(MonitoredRuleFeedLabFixture lab, ITestOutputHelper output)
{
    private static bool IsAv(Alert a, string rule, int pid) =>
        a.Detector == AvDetector.Id && a.Pid == pid && a.Evidence.TryGetValue("rule", out var r) && r == rule;

    [Fact]
    public async Task A_running_monitor_switches_to_a_new_signed_bundle_without_losing_events_and_its_rules_match()
    {
        // Bundle 1 is in force: the plain signature is found and the alert names bundle 1.
        var (plain, _) = await lab.WaitForAlertAsync(AvDetector.Id, TimeSpan.Zero, a => IsAv(a, "Vmi_Test_Malware_Plain", lab.Pids.Plain), TimeSpan.FromSeconds(90));
        Assert.Equal("1", plain.BundleVersion);
        Assert.Equal("1", plain.Evidence["bundle"]);
        // Let the sweeps scan every process with bundle 1: it has no rule for the unpacked payload.
        await lab.WaitForSweepsAsync(4);
        Assert.DoesNotContain(lab.Alerts, x => x.Alert.Evidence.GetValueOrDefault("rule") == "Vmi_Test_Malware_Unpacked");
        long sweepsBefore = lab.Session.Monitor.Sweeps;

        // Bundle 2 is published and installed by another process while events flow (sweeps, process
        // telemetry from a burst of short-lived processes in the guest).
        TargetsMetadata v2 = lab.Publish("Vmi_Test_Malware_Plain", "Vmi_Test_Malware_Unpacked");
        Assert.Equal(2, v2.Version);
        Task burst = lab.Guest.ShellAsync("for i in $(seq 1 30); do /bin/true; done", TimeSpan.FromSeconds(60));
        TimeSpan installedAt = lab.Now;
        var update = await VmiCli.RunAsync("rules", "update", "--state", lab.State);
        output.WriteLine(update.StandardOutput + update.StandardError);
        Assert.Equal(0, update.ExitCode);
        Assert.Contains("installed bundle 2", update.StandardOutput, StringComparison.Ordinal);
        await burst;

        // The new rule matches the unpacked payload; the alert names bundle 2.
        var (unpacked, latency) = await lab.WaitForAlertAsync(AvDetector.Id, installedAt, a => IsAv(a, "Vmi_Test_Malware_Unpacked", lab.Pids.Unpack), TimeSpan.FromSeconds(60));
        Assert.Equal("2", unpacked.BundleVersion);
        output.WriteLine($"install to first alert of the new rule: {latency.TotalSeconds:0.0} s");
        ResultsFile.Append("rule-update.txt", [$"bundle 2 installed by vmi rules update to its first alert in the running monitor: {latency.TotalSeconds:0.00} s"]);

        // Nothing was lost across the switch: every sweep reached the pipeline in order, nothing was shed,
        // no detector faulted.
        await lab.WaitForSweepsAsync(2);
        var ticks = lab.Events.OfType<SweepTick>().Select(t => t.Number).ToList();
        Assert.Equal(Enumerable.Range(1, ticks.Count).Select(n => (long)n), ticks);
        Assert.True(lab.Session.Monitor.Sweeps > sweepsBefore);
        var stats = lab.Session.Pipeline.Statistics;
        Assert.Equal(0, stats.Shed);
        Assert.Equal(0, stats.Faults);
        Assert.DoesNotContain(lab.Events.OfType<DetectorFault>(), f => f.Detector == AvDetector.Id);
        // Only one bundle per alert: everything the AV raised before the install names bundle 1.
        Assert.All(lab.Alerts.Where(x => x.Alert.Detector == AvDetector.Id && x.At < installedAt), x => Assert.Equal("1", x.Alert.BundleVersion));
    }

    [Fact]
    public async Task A_rejected_update_while_monitoring_keeps_the_bundle_in_force()
    {
        await lab.WaitForAlertAsync(AvDetector.Id, TimeSpan.Zero, a => IsAv(a, "Vmi_Test_Malware_Plain", lab.Pids.Plain), TimeSpan.FromSeconds(90));
        long before = RuleStore.Open(lab.State).Active!.Version;
        // An attacker replaces the timestamp with one signed by a key the root does not trust.
        using var rogue = SigningKey.Generate();
        string ts = Path.Combine(lab.Feed, "timestamp.json");
        byte[] good = await File.ReadAllBytesAsync(ts);
        var parsed = MetadataFormat.Parse<TimestampMetadata>(good, "timestamp.json").Signed;
        await File.WriteAllBytesAsync(ts, MetadataFormat.Sign(parsed with { Version = parsed.Version + 1 }, [rogue]));
        try
        {
            var update = await VmiCli.RunAsync("rules", "update", "--state", lab.State);
            output.WriteLine(update.StandardOutput + update.StandardError);
            Assert.Equal(1, update.ExitCode);
            Assert.Contains("update rejected (untrusted-key)", update.StandardError, StringComparison.Ordinal);
            Assert.Contains($"bundle {before} stays in force", update.StandardError, StringComparison.Ordinal);
        }
        finally
        {
            await File.WriteAllBytesAsync(ts, good);
        }
        Assert.Equal(before, RuleStore.Open(lab.State).Active!.Version);
        var status = await VmiCli.RunAsync("rules", "status", "--state", lab.State, "--json");
        using var doc = JsonDocument.Parse(status.StandardOutput);
        Assert.Equal(before, doc.RootElement.GetProperty("active").GetProperty("version").GetInt64());
        Assert.Contains(doc.RootElement.GetProperty("recentChecks").EnumerateArray(), c => c.GetProperty("rejection").GetString() == "untrusted-key");
    }
}
