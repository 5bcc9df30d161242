using System.Collections.Concurrent;
using Vmi.Detectors.Av;
using Vmi.Events;
using Vmi.Linux.Model;
using Vmi.Pipeline;
using Vmi.Signatures.Yara;
using Vmi.Updates;
using Xunit;

namespace Vmi.Detectors.Tests;

/// <summary>A signature source whose set the test switches, as a bundle swap would.</summary>
internal sealed class SwitchableSignatureSource(SignatureSet initial) : ISignatureSource
{
    private SignatureSet _current = initial;

    public SignatureSet Current
    {
        get => Volatile.Read(ref _current);
        set => Volatile.Write(ref _current, value);
    }
}

/// <summary>
/// A signed rule feed and a client state folder under one temporary folder: bundles are published with
/// <see cref="FeedPublisher"/> and installed by a new <see cref="RuleUpdateClient"/> over a new
/// <see cref="RuleStore"/> each time, as <c>vmi rules update</c> run from another process would.
/// </summary>
internal sealed class RuleFeedWorld : IDisposable
{
    private readonly SigningKey _root = SigningKey.Generate(), _targets = SigningKey.Generate(), _snapshot = SigningKey.Generate(), _timestamp = SigningKey.Generate();
    private int _published;

    public RuleFeedWorld()
    {
        Root = Directory.CreateTempSubdirectory("vmi-av-hot-reload-").FullName;
        var plan = new RootPlan(new Dictionary<Role, IReadOnlyList<UpdatePublicKey>>
        {
            [Role.Root] = [_root.Public],
            [Role.Targets] = [_targets.Public],
            [Role.Snapshot] = [_snapshot.Public],
            [Role.Timestamp] = [_timestamp.Public],
        }, new Dictionary<Role, int>());
        new FeedPublisher(Feed).Initialize(plan, [_root]);
    }

    public string Root { get; }
    public string Feed => Path.Combine(Root, "feed");
    public string State => Path.Combine(Root, "state");

    /// <summary>Publishes the next bundle made of these files; returns its version.</summary>
    public long Publish(params (string Name, string Text)[] files)
    {
        string dir = Path.Combine(Root, "sources", $"b{++_published}");
        Directory.CreateDirectory(dir);
        var inputs = new List<RuleFileInput>();
        foreach (var (name, text) in files)
        {
            string path = Path.Combine(dir, name);
            File.WriteAllText(path, text);
            inputs.Add(new RuleFileInput(path));
        }
        return new FeedPublisher(Feed).Publish(inputs, [_targets], [_snapshot], [_timestamp], validate: BundleSignatureSource.Validate).Version;
    }

    /// <summary>Runs an update with a client and store of its own (another process, as far as any source is concerned).</summary>
    public async Task<UpdateResult> InstallAsync()
    {
        var client = new RuleUpdateClient(RuleStore.Open(State), FeedFetchers.Create(Feed), new UpdateClientOptions { Validate = BundleSignatureSource.Validate });
        client.Initialize(await File.ReadAllBytesAsync(Path.Combine(Feed, "1.root.json")));
        return await client.UpdateAsync();
    }

    /// <summary>The installed copy of a bundle's file.</summary>
    public string InstalledFile(long version, string name) =>
        Path.Combine(State, "bundles", version.ToString(System.Globalization.CultureInfo.InvariantCulture), name);

    public void Dispose()
    {
        foreach (var k in new[] { _root, _targets, _snapshot, _timestamp })
            k.Dispose();
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
            // Best effort: a temporary folder.
        }
    }
}

/// <summary>The AV detector when its rules change while it runs, and how it coalesces triggers (on the lab dump).</summary>
[Collection(LabDumpCollection.Name)]
public sealed class AvHotReloadTests(LabDumpFixture lab)
{
    private const string RuleA = """
        rule Hot_Busybox_Banner
        {
            meta:
                severity = "low"
            strings:
                $banner = "BusyBox v1."
            condition:
                $banner
        }
        """;

    private const string RuleB = """
        rule Hot_Busybox_Copyright
        {
            meta:
                severity = "medium"
            strings:
                $c = "BusyBox is copyrighted"
            condition:
                $c
        }
        """;

    private static SignatureSet Set(string text, string version) => new(YaraRules.Compile(text, version + ".yar"), version, version + ".yar");

    /// <summary>The user processes running busybox (each maps the binary).</summary>
    private static List<int> BusyboxPids(AttackableGuest guest) =>
    [
        .. guest.Kernel.GetProcesses().Items
            .Where(p => p.Pid == p.Tgid && p.MmAddress != 0 && guest.Kernel.GetMappings(p).Items.Any(v => v.Path?.EndsWith("busybox", StringComparison.Ordinal) == true))
            .Select(p => p.Pid).Order(),
    ];

    private static List<int> PidsOf(IEnumerable<Alert> alerts) => [.. alerts.Select(a => a.Pid ?? -1).Order()];

    [Fact]
    public void A_new_rule_set_rescans_every_process_on_the_next_sweep_and_its_alerts_name_the_new_bundle()
    {
        using AttackableGuest guest = lab.Attack();
        List<int> busybox = BusyboxPids(guest);
        Assert.True(busybox.Count >= 2, $"busybox processes: {string.Join(", ", busybox)}");
        var source = new SwitchableSignatureSource(Set(RuleA, "A"));
        var detector = new AvDetector(null, source);
        using var h = new DetectorHarness(detector, guest.Guest);

        // Set A: rule A matches every busybox process.
        var first = h.Sweep();
        Assert.Empty(first.Faults);
        Assert.Equal(busybox, PidsOf(first.Alerts));
        Assert.All(first.Alerts, a =>
        {
            Assert.Equal("Hot_Busybox_Banner", a.Evidence["rule"]);
            Assert.Equal("A", a.BundleVersion);
            Assert.Equal("A", a.Evidence["bundle"]);
            Assert.Equal("A.yar", a.Evidence["rules_source"]);
            Assert.Equal("sweep", a.Evidence["trigger"]);
            Assert.Equal(Severity.Low, a.Severity);
        });
        int scans = detector.Scans;
        long bytes = detector.BytesScanned;
        Assert.True(scans > busybox.Count, $"{scans} scans"); // every user process, not only busybox ones

        // Same set, nothing changed: nothing is scanned again.
        var idle = h.Sweep();
        Assert.Empty(idle.Alerts);
        Assert.Equal(scans, detector.Scans);

        // Set B goes into force between two events: the very next sweep rescans every process, unchanged as
        // their memory is, with B, and names B.
        source.Current = Set(RuleB, "B");
        var second = h.Sweep();
        Assert.Empty(second.Faults);
        Assert.Equal(2 * scans, detector.Scans);
        Assert.Equal(2 * bytes, detector.BytesScanned);
        Assert.Equal(busybox, PidsOf(second.Alerts));
        Assert.All(second.Alerts, a =>
        {
            Assert.Equal("Hot_Busybox_Copyright", a.Evidence["rule"]);
            Assert.Equal("B", a.BundleVersion);
            Assert.Equal("B", a.Evidence["bundle"]);
            Assert.Equal("B.yar", a.Evidence["rules_source"]);
            Assert.Equal("sweep: rule bundle B", a.Evidence["trigger"]);
            Assert.Equal(Severity.Medium, a.Severity);
        });
        Assert.NotEmpty(second.Events.OfType<SignatureMatch>());
        Assert.All(second.Events.OfType<SignatureMatch>(), m =>
        {
            Assert.Equal("Hot_Busybox_Copyright", m.Rule);
            Assert.Equal("B", m.BundleVersion);
        });
        Assert.DoesNotContain(h.Alerts, a => a.Evidence["rule"] == "Hot_Busybox_Banner" && a.BundleVersion != "A");
        Assert.DoesNotContain(h.Alerts, a => a.Evidence["rule"] == "Hot_Busybox_Copyright" && a.BundleVersion != "B");

        // Every process was scanned with B: the next sweep scans nothing and raises nothing.
        var third = h.Sweep();
        Assert.Empty(third.Events.OfType<Alert>());
        Assert.Empty(third.Events.OfType<SignatureMatch>());
        Assert.Equal(2 * scans, detector.Scans);
    }

    private static BreakpointHit Hit(DetectorHarness h, LinuxProcess p, DateTimeOffset time, int i) => new()
    {
        VmId = h.VmId, Time = time, Hook = AvDetector.ExecutableMemoryHook, Rip = 0x401000 + (ulong)i,
        // As the CPU holds CR3: a PCID in the low bits, sometimes the no-flush bit.
        Cr3 = p.PageTablePhysical | (uint)(i % 7) | (i % 2 == 0 ? 1UL << 63 : 0UL),
    };

    private static ProcessExec Exec(DetectorHarness h, LinuxProcess p, DateTimeOffset time) =>
        new() { VmId = h.VmId, Time = time, Pid = p.Pid, Name = p.Name, Cmdline = [p.Name] };

    private static LinuxProcess Victim(AttackableGuest guest)
    {
        List<int> busybox = BusyboxPids(guest);
        return guest.Kernel.GetProcesses().Items.First(p => busybox.Contains(p.Pid) && p.PageTablePhysical != 0 && p.Pid != 1);
    }

    [Fact]
    public void A_burst_of_triggers_without_delay_scans_a_process_at_most_once_and_a_scan_since_the_trigger_covers_it()
    {
        using AttackableGuest guest = lab.Attack();
        var detector = new AvDetector(new AvDetectorOptions { TriggerDelay = TimeSpan.Zero }, new FixedSignatureSource(Set(RuleA, "A")));
        using var h = new DetectorHarness(detector, guest.Guest);
        LinuxProcess victim = Victim(guest);

        Assert.Empty(h.Sweep().Faults);
        int scans = detector.Scans;
        DateTimeOffset t0 = h.Clock.Now;

        // Hits and an exec at the time of the sweep: the sweep's full scan (with the same rules) already saw them.
        for (int i = 0; i < 50; i++)
            Assert.Empty(h.Send(Hit(h, victim, t0, i)).Events);
        Assert.Empty(h.Send(Exec(h, victim, t0)).Events);
        Assert.Equal(scans, detector.Scans);

        // A burst of hits after the sweep: the first scans the process's executable memory, the rest are covered by it.
        h.Advance(TimeSpan.FromSeconds(1));
        DateTimeOffset t1 = h.Clock.Now;
        for (int i = 0; i < 50; i++)
            Assert.Empty(h.Send(Hit(h, victim, t1, i)).Faults);
        Assert.Equal(scans + 1, detector.Scans);
        for (int i = 0; i < 20; i++)
            h.Send(Hit(h, victim, t1, i));
        Assert.Equal(scans + 1, detector.Scans);

        // An exec asks for a full scan: the executable-memory scan does not count as one; a burst of execs gives one scan.
        for (int i = 0; i < 20; i++)
            Assert.Empty(h.Send(Exec(h, victim, t1)).Faults);
        Assert.Equal(scans + 2, detector.Scans);
        // And the full scan covers later hits of the same instant.
        h.Send(Hit(h, victim, t1, 99));
        Assert.Equal(scans + 2, detector.Scans);
        Assert.Empty(h.Faults);
    }

    [Fact]
    public void With_the_default_trigger_delay_a_burst_is_scanned_once_when_due_and_an_exec_already_covered_by_a_scan_is_skipped()
    {
        using AttackableGuest guest = lab.Attack();
        var options = new AvDetectorOptions();
        TimeSpan delay = options.TriggerDelay;
        Assert.Equal(TimeSpan.FromMilliseconds(500), delay);
        var detector = new AvDetector(options, new FixedSignatureSource(Set(RuleA, "A")));
        using var h = new DetectorHarness(detector, guest.Guest);
        LinuxProcess victim = Victim(guest);

        Assert.Empty(h.Sweep().Faults);
        int scans = detector.Scans;
        DateTimeOffset t0 = h.Clock.Now;

        // Execs that happened before the sweep, with their delay over by the time the sweep scanned the process: skipped.
        h.Send(Exec(h, victim, t0 - TimeSpan.FromSeconds(3)));
        h.Send(Exec(h, victim, t0 - delay));
        h.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(scans, detector.Scans);

        // An exec whose delay ends after the sweep's scan started: scanned once its delay is over, not before.
        DateTimeOffset t1 = h.Clock.Now;
        h.Send(Exec(h, victim, t1 - TimeSpan.FromMilliseconds(400)));
        Assert.Equal(scans, detector.Scans);
        h.Advance(TimeSpan.FromMilliseconds(50));
        Assert.Equal(scans, detector.Scans);
        h.Advance(TimeSpan.FromMilliseconds(50));
        Assert.Equal(scans + 1, detector.Scans);

        // A burst of executable-memory hits at one instant: nothing before the delay, then one scan for all.
        h.Advance(TimeSpan.FromSeconds(1));
        DateTimeOffset t2 = h.Clock.Now;
        for (int i = 0; i < 50; i++)
            h.Send(Hit(h, victim, t2, i));
        Assert.Equal(scans + 1, detector.Scans);
        h.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(scans + 2, detector.Scans);

        // A burst of execs: one full scan, after the delay.
        DateTimeOffset t3 = h.Clock.Now;
        for (int i = 0; i < 20; i++)
            h.Send(Exec(h, victim, t3));
        Assert.Equal(scans + 2, detector.Scans);
        h.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(scans + 3, detector.Scans);
        Assert.Empty(h.Faults);
    }

    private const string LabBannerFile = """
        rule Feed_Busybox_Banner
        {
            meta:
                severity = "low"
            strings:
                $banner = "BusyBox v1."
            condition:
                $banner
        }
        """;

    private const string LabCopyrightFile = """
        rule Feed_Busybox_Copyright
        {
            strings:
                $c = "BusyBox is copyrighted"
            condition:
                $c
        }
        """;

    [Fact]
    public async Task A_detector_given_a_rule_state_folder_uses_the_bundle_in_force_and_names_its_version()
    {
        using var world = new RuleFeedWorld();
        Assert.Equal(1L, world.Publish(("banner.yar", LabBannerFile), ("c2.rules", "alert tcp any any -> 203.0.113.1 443 (msg:\"c2\"; sid:1001; rev:1;)\n")));
        Assert.True((await world.InstallAsync()).Installed);

        using AttackableGuest guest = lab.Attack();
        List<int> busybox = BusyboxPids(guest);
        var detector = new AvDetector(new AvDetectorOptions { RulesState = world.State });
        using var h = new DetectorHarness(detector, guest.Guest);
        var output = h.Sweep();
        Assert.Empty(output.Faults);
        Assert.Equal(busybox, PidsOf(output.Alerts));
        Assert.All(output.Alerts, a =>
        {
            Assert.Equal("Feed_Busybox_Banner", a.Evidence["rule"]);
            Assert.Equal("1", a.BundleVersion);
            Assert.Equal("1", a.Evidence["bundle"]);
            Assert.Contains("(bundle 1, signed by ", a.Evidence["rules_source"], StringComparison.Ordinal);
        });
    }

    [Fact]
    public async Task A_detector_given_a_rule_state_folder_without_a_bundle_uses_the_built_in_rules_until_one_is_installed()
    {
        using var world = new RuleFeedWorld();
        using AttackableGuest guest = lab.Attack();
        List<int> busybox = BusyboxPids(guest);
        var detector = new AvDetector(new AvDetectorOptions { RulesState = world.State });
        using var h = new DetectorHarness(detector, guest.Guest);
        // The built-in rules: nothing in the benign lab.
        var output = h.Sweep();
        Assert.Empty(output.Faults);
        Assert.Empty(output.Alerts);
        int scans = detector.Scans;

        // A bundle installed while the detector runs; the detector's shared source picks it up (here without
        // waiting for its check interval).
        Assert.Equal(1L, world.Publish(("banner.yar", LabBannerFile), ("copyright.yara", LabCopyrightFile)));
        Assert.True((await world.InstallAsync()).Installed);
        BundleSignatureSource shared = BundleSignatureSource.For(world.State, SignatureSet.BuiltIn);
        shared.Reload();
        await shared.WaitForReloadAsync();
        Assert.Equal("1", shared.Current.Version);
        Assert.Null(shared.LastError);

        output = h.Sweep();
        Assert.Empty(output.Faults);
        Assert.Equal(2 * scans, detector.Scans);
        List<int> twice = [.. busybox.Concat(busybox).Order()];
        Assert.Equal(twice, PidsOf(output.Alerts));
        Assert.Equal(["Feed_Busybox_Banner", "Feed_Busybox_Copyright"], output.Alerts.Select(a => a.Evidence["rule"]).Distinct().Order());
        Assert.All(output.Alerts, a =>
        {
            Assert.Equal("1", a.BundleVersion);
            Assert.Equal("sweep: rule bundle 1", a.Evidence["trigger"]);
        });
        Assert.Empty(h.Sweep().Alerts);
    }
}

/// <summary><see cref="BundleSignatureSource"/> over a real rule store fed by a signed feed.</summary>
public sealed class AvHotReloadBundleSourceTests
{
    private static (string Name, string Text)[] Bundle(int n) =>
    [
        ("one.yar", $"rule Bundle{n}_One {{ strings: $a = \"bundle-{n}-one\" condition: $a }}\n"),
        ("two.yara", $"rule Bundle{n}_Two {{ meta: severity = \"low\" strings: $a = \"bundle-{n}-two\" condition: $a }}\n"),
        ("c2.rules", $"alert tcp any any -> 203.0.113.{n} 443 (msg:\"c2 beacon {n}\"; sid:{1000 + n}; rev:1;)\n"),
    ];

    private static SignatureSet Fallback { get; } = new(YaraRules.Compile("rule Fallback { strings: $a = \"fallback\" condition: $a }", "fallback.yar"), "fallback", "fallback.yar");

    private static IEnumerable<string> RuleNames(SignatureSet set) => set.Rules.Rules.Select(r => r.Name).Order(StringComparer.Ordinal);

    [Fact]
    public async Task The_source_loads_the_bundle_in_force_and_swaps_in_one_another_client_installs()
    {
        using var world = new RuleFeedWorld();

        // No bundle yet: the fallback.
        var early = new BundleSignatureSource(RuleStore.Open(world.State), Fallback, checkInterval: TimeSpan.Zero);
        Assert.Same(Fallback, early.Current);
        await early.WaitForReloadAsync();
        Assert.Same(Fallback, early.Current);
        Assert.Equal(0, early.Swaps);
        Assert.Null(early.LastError);

        Assert.Equal(1L, world.Publish(Bundle(1)));
        UpdateResult installed = await world.InstallAsync();
        Assert.True(installed.Installed);
        Assert.Equal(1L, installed.Active?.Version);

        // A source made now loads bundle 1 at once: its YARA files, not its network rules.
        var source = new BundleSignatureSource(RuleStore.Open(world.State), Fallback, checkInterval: TimeSpan.Zero);
        SignatureSet one = source.Current;
        Assert.Equal("1", one.Version);
        Assert.Equal(["Bundle1_One", "Bundle1_Two"], RuleNames(one));
        Assert.Contains("(bundle 1, signed by ", one.Source, StringComparison.Ordinal);
        Assert.Equal(1, source.Swaps);
        Assert.Null(source.LastError);

        // The source made before the install notices the new state on a read and reloads in the background.
        _ = early.Current;
        await early.WaitForReloadAsync();
        Assert.Equal("1", early.Current.Version);
        Assert.Equal(1, early.Swaps);

        // Bundle 2, installed through another client and store: a read starts the reload, the swap follows.
        var swapped = new ConcurrentQueue<SignatureSet>();
        source.Swapped += swapped.Enqueue;
        Assert.Equal(2L, world.Publish(Bundle(2)));
        Assert.True((await world.InstallAsync()).Installed);
        SignatureSet read = source.Current;
        Assert.True(read.Version is "1" or "2", read.Version);
        await source.WaitForReloadAsync();
        SignatureSet two = source.Current;
        Assert.Equal("2", two.Version);
        Assert.Equal(["Bundle2_One", "Bundle2_Two"], RuleNames(two));
        Assert.Equal(2, source.Swaps);
        Assert.Same(two, Assert.Single(swapped));
        Assert.Null(source.LastError);

        // Nothing new: reads do not reload, the set stays the same object (the detector compares by reference).
        Assert.False(source.Reload());
        await source.WaitForReloadAsync();
        Assert.Same(two, source.Current);
        Assert.Equal(2, source.Swaps);

        _ = early.Current;
        await early.WaitForReloadAsync();
        Assert.Equal("2", early.Current.Version);
        Assert.Equal(2, early.Swaps);
    }

    [Fact]
    public async Task A_bundle_whose_installed_rules_do_not_compile_is_never_swapped_in()
    {
        using var world = new RuleFeedWorld();
        world.Publish(Bundle(1));
        await world.InstallAsync();
        var running = new BundleSignatureSource(RuleStore.Open(world.State), Fallback, checkInterval: TimeSpan.Zero);
        SignatureSet one = running.Current;
        Assert.Equal("1", one.Version);

        // Bundle 2 is installed, then its YARA file is damaged on disk before any source reads it.
        world.Publish(Bundle(2));
        Assert.True((await world.InstallAsync()).Installed);
        await File.WriteAllTextAsync(world.InstalledFile(2, "two.yara"), "rule Broken { strings: $a = /(/ condition: $a ");

        // A fresh source: the fallback stays in force, the error names the bundle and the file; nothing throws.
        var fresh = new BundleSignatureSource(RuleStore.Open(world.State), Fallback, checkInterval: TimeSpan.Zero);
        Assert.Same(Fallback, fresh.Current);
        Assert.Equal(0, fresh.Swaps);
        Assert.NotNull(fresh.LastError);
        Assert.Contains("bundle 2 does not load", fresh.LastError, StringComparison.Ordinal);
        Assert.Contains("two.yara", fresh.LastError, StringComparison.Ordinal);
        // The broken bundle is not retried on every read.
        Assert.False(fresh.Reload());
        Assert.Same(Fallback, fresh.Current);

        // The running source keeps bundle 1.
        var swapped = new ConcurrentQueue<SignatureSet>();
        running.Swapped += swapped.Enqueue;
        Assert.Same(one, running.Current);
        await running.WaitForReloadAsync();
        Assert.Same(one, running.Current);
        Assert.Equal(1, running.Swaps);
        Assert.Empty(swapped);
        Assert.Contains("bundle 2 does not load", running.LastError, StringComparison.Ordinal);

        // Bundle 3, good again, replaces it.
        world.Publish(Bundle(3));
        Assert.True((await world.InstallAsync()).Installed);
        _ = running.Current;
        await running.WaitForReloadAsync();
        Assert.Equal("3", running.Current.Version);
        Assert.Null(running.LastError);
        Assert.Equal(2, running.Swaps);
    }

    [Fact]
    public async Task A_bundle_installed_while_a_background_reload_runs_is_loaded_after_it()
    {
        using var world = new RuleFeedWorld();
        world.Publish(Bundle(1));
        await world.InstallAsync();
        var source = new BundleSignatureSource(RuleStore.Open(world.State), Fallback, checkInterval: TimeSpan.Zero);
        Assert.Equal("1", source.Current.Version);
        // Holds the background reload of bundle 2 (the handler runs on its thread, before it ends).
        using var inSwap = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        source.Swapped += set =>
        {
            if (set.Version == "2")
            {
                inSwap.Set();
                release.Wait(TimeSpan.FromSeconds(30));
            }
        };
        try
        {
            world.Publish(Bundle(2));
            await world.InstallAsync();
            _ = source.Current; // starts the reload of bundle 2
            Assert.True(inSwap.Wait(TimeSpan.FromSeconds(30)), "the reload of bundle 2 did not start");

            // Bundle 3 is installed while that reload runs, and a read sees the state change.
            world.Publish(Bundle(3));
            Assert.True((await world.InstallAsync()).Installed);
            Assert.Equal("2", source.Current.Version);
        }
        finally
        {
            release.Set();
        }
        await source.WaitForReloadAsync();
        _ = source.Current;
        await source.WaitForReloadAsync();
        // The change seen during the running reload is not lost: bundle 3 goes into force.
        Assert.Equal("3", source.Current.Version);
        Assert.Equal(3, source.Swaps);
    }

    [Fact]
    public void Validate_compiles_the_yara_files_together_and_leaves_network_rules_alone()
    {
        string dir = Directory.CreateTempSubdirectory("vmi-av-validate-").FullName;
        try
        {
            BundleFile F(string name, string kind, string text)
            {
                string path = Path.Combine(dir, name);
                File.WriteAllText(path, text);
                return new BundleFile(name, kind, text.Length, "") { Path = path };
            }
            BundleFile good = F("good.yar", "yara", "rule Good { strings: $a = \"good\" condition: $a }\n");
            BundleFile other = F("other.yara", "yara", "rule Other { condition: Good }\n");
            BundleFile network = F("c2.rules", "network", "alert tcp any any -> any 443 (msg:\"not yara at all {\"; sid:1; rev:1;)\n");
            BundleFile broken = F("broken.yar", "yara", "rule Broken {\n  strings: $a = /(/\n  condition: $a\n}\n");
            BundleFile duplicate = F("duplicate.yar", "yara", "rule Good { condition: true }\n");

            Assert.Null(BundleSignatureSource.Validate([]));
            Assert.Null(BundleSignatureSource.Validate([good]));
            Assert.Null(BundleSignatureSource.Validate([good, other, network]));
            Assert.Null(BundleSignatureSource.Validate([network]));
            // A network rules file is not even opened.
            Assert.Null(BundleSignatureSource.Validate([good, new BundleFile("gone.rules", "network", 1, "") { Path = Path.Combine(dir, "gone.rules") }]));

            string? message = BundleSignatureSource.Validate([good, broken, network]);
            Assert.NotNull(message);
            Assert.Contains("broken.yar(2,", message, StringComparison.Ordinal);
            Assert.Contains("invalid regular expression", message, StringComparison.Ordinal);
            // Compiled together: a rule name defined in two files is an error too.
            Assert.NotNull(BundleSignatureSource.Validate([good, duplicate]));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
