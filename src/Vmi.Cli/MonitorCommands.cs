using System.CommandLine;
using System.Globalization;
using System.Reactive.Concurrency;
using System.Text.Json;
using Vmi.Detectors.Linux;
using Vmi.Events;
using Vmi.Linux;
using Vmi.Monitoring;
using Vmi.Pipeline;
using Vmi.Qemu;
using Vmi.Store;
using Vmi.Targets;

namespace Vmi.Cli;

/// <summary>`vmi monitor`, `vmi check`, `vmi alerts`: detectors on a VM, once or continuously, and the stored alerts.</summary>
internal static class MonitorCommands
{
    /// <summary>Exit code of <c>vmi check</c> when it found something.</summary>
    public const int ExitFindings = 4;

    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase, WriteIndented = false };

    public static IEnumerable<Command> Create() => [Monitor(), Check(), Alerts()];

    /// <summary>
    /// The embedded store: $VMI_STORE, else $XDG_DATA_HOME/vmi/vmi.db, else ~/.local/share/vmi/vmi.db.
    /// The default folder is created on first use (a path given by the user is taken as it is).
    /// </summary>
    public static string DefaultStorePath()
    {
        if (Environment.GetEnvironmentVariable("VMI_STORE") is { Length: > 0 } s)
            return s;
        string data = Environment.GetEnvironmentVariable("XDG_DATA_HOME") is { Length: > 0 } x
            ? x
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".local", "share");
        string dir = Path.Combine(data, "vmi");
        try
        {
            Directory.CreateDirectory(dir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new Vmi.Core.VmiException($"cannot create the default alert store folder {dir}: {e.Message}; pass --store PATH or set VMI_STORE.", e);
        }
        return Path.Combine(dir, "vmi.db");
    }

    private static Option<string> StoreOption() => new("--store") { Description = "SQLite file for alerts and events (default $VMI_STORE or ~/.local/share/vmi/vmi.db)." };

    private static Option<string> ConfigOption() => new("--config") { Description = "Monitor options JSON: sweepInterval, hooks, detectors' options (see detectors/README.md)." };

    private static MonitorOptions LoadOptions(string? path) => path is null ? new MonitorOptions() : MonitorOptions.Load(path);

    private static Command Monitor()
    {
        var cmd = new Command("monitor", "Watch a VM: hooks and periodic sweeps feed every detector; alerts are printed live and stored.");
        var target = new Option<string>("--target") { Description = "The VM: " + TargetSpec.Syntax + " (with gdb=… hooks are placed, else sweeps only).", Required = true };
        var config = ConfigOption();
        var store = StoreOption();
        var interval = new Option<double?>("--sweep-interval") { Description = "Seconds between sweeps (overrides the config)." };
        var noHooks = new Option<bool>("--no-hooks") { Description = "Sweeps only, even when the target has a gdb stub." };
        var duration = new Option<double?>("--duration") { Description = "Stop after this many seconds (default: until Ctrl+C)." };
        var json = new Option<bool>("--json") { Description = "Print each alert as one line of ECS JSON." };
        var name = new Option<string>("--vm-name") { Description = "The VM's name in events (default: from the target)." };
        var journal = new Option<string>("--journal") { Description = "Also record every event to this journal file (MessagePack, replayable in event time)." };
        var rulesState = new Option<string>("--rules-state") { Description = "Use the signed rule bundle in force in this state folder (vmi rules update), and switch to each new one as it is installed." };
        var feed = new Option<string>("--feed") { Description = "Check this rule feed (https:// or folder) while monitoring and install new bundles (needs a state with a trusted root; implies --rules-state, default folder if not given)." };
        var updateEvery = new Option<double>("--update-interval") { Description = "Minutes between feed checks (default 60; jitter ±10 %, backoff after failures).", DefaultValueFactory = _ => 60 };
        var ca = new Option<string>("--ca") { Description = "PEM certificate authority of the feed server." };
        var es = ExportWiring.Nodes();
        var esKey = ExportWiring.ApiKeyFile();
        var esUser = ExportWiring.User();
        var esPassword = ExportWiring.PasswordFile();
        var esCa = ExportWiring.Ca();
        var syslog = ExportWiring.Syslog();
        var syslogCa = ExportWiring.SyslogCa();
        var spool = ExportWiring.Spool();
        foreach (Option o in new Option[] { target, config, store, interval, noHooks, duration, json, name, journal, rulesState, feed, updateEvery, ca, es, esKey, esUser, esPassword, esCa, syslog, syslogCa, spool })
            cmd.Options.Add(o);
        cmd.SetAction(async (parse, ct) =>
        {
            _ = AuditTrail.Instance; // a half-configured audit trail stops here, before anything is watched
            MonitorOptions options = LoadOptions(parse.GetValue(config));
            string? rulesDir = parse.GetValue(rulesState) ?? (parse.GetValue(feed) is null ? null : Vmi.Updates.RuleStore.DefaultDirectory());
            if (rulesDir is not null)
                options = options with { Detectors = RulesCommands.WithRulesState(options.Detectors, rulesDir) };
            if (parse.GetValue(interval) is double secs)
            {
                if (secs < 0.1)
                    throw new UsageException("--sweep-interval must be at least 0.1 seconds.");
                options = options with { SweepInterval = TimeSpan.FromSeconds(secs) };
            }
            string storePath = parse.GetValue(store) ?? DefaultStorePath();
            using EventStore eventStore = EventStore.Open(storePath);
            await using StoreWriter writer = new(eventStore);
            ITarget t = await TargetFactory.OpenAsync(parse.GetValue(target)!, ct).ConfigureAwait(false);
            await using (t.ConfigureAwait(false))
            {
                string vmId = parse.GetValue(name) ?? VmIdOf(parse.GetValue(target)!);
                GdbRemoteClient? gdb = null;
                if (!parse.GetValue(noHooks) && t is QemuTarget { GdbEndpoint: (string host, int port) })
                {
                    // Registers first (the profile needs them), then the stub stays ours for the hooks.
                    gdb = await GdbRemoteClient.ConnectAsync(host, port, TimeSpan.FromSeconds(10), ct).ConfigureAwait(false);
                }
                using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
                if (parse.GetValue(duration) is double d)
                    stop.CancelAfter(TimeSpan.FromSeconds(d));
                await using var pipeline = new EventPipeline(TaskPoolScheduler.Default);
                using Vmi.Pipeline.Journal.JournalWriter? journalWriter = parse.GetValue(journal) is string jp ? Vmi.Pipeline.Journal.JournalWriter.Create(jp) : null;
                using IDisposable? recording = journalWriter is null ? null : pipeline.RecordTo(journalWriter);
                bool asJson = parse.GetValue(json);
                using IDisposable toStore = pipeline.Output.Subscribe(e => writer.Post(e));
                await using ExportWiring? export = ExportWiring.Start(parse, es, esKey, esUser, esPassword, esCa, syslog, syslogCa, spool, Console.Error);
                using IDisposable? toExport = export is null ? null : pipeline.Output.Subscribe(export.Post);
                using IDisposable toConsole = pipeline.Alerts.Subscribe(a => Console.Out.WriteLine(asJson ? a.ToEcs().ToNestedJson() : FormatAlert(a)));
                using IDisposable faults = pipeline.Faults.Subscribe(f => Console.Error.WriteLine($"vmi: detector {f.Detector}: {f.Fault}: {f.Message}"));
                // Security findings go to the audit trail too (when VMI_AUDIT_LOG/VMI_AUDIT_KEY are set).
                using IDisposable audited = pipeline.Alerts.Subscribe(a => AuditTrail.Record("alert.raised", a.VmId, Vmi.Audit.AuditOutcome.Success, new Dictionary<string, string>
                {
                    ["alert_id"] = a.Id.ToString(), ["detector"] = a.Detector, ["severity"] = a.Severity.ToString().ToLowerInvariant(), ["title"] = a.Title,
                    ["bundle"] = a.BundleVersion ?? "",
                }));
                JsonElement? detectorOptions = options.Detectors;
                await using MonitorSession session = await MonitorSession.StartAsync(vmId, t, gdb, options,
                    g => BuiltInDetectors.Create(g, detectorOptions), pipeline, Console.Error, stop.Token).ConfigureAwait(false);
                Console.Error.WriteLine($"vmi monitor: watching {vmId}; alerts go to {storePath}; Ctrl+C stops");
                AuditTrail.Record("monitor.start", vmId, Vmi.Audit.AuditOutcome.Success, new Dictionary<string, string> { ["target"] = parse.GetValue(target)!, ["store"] = storePath });
                Task updates = parse.GetValue(feed) is string feedLocation
                    ? RulesCommands.RunUpdatesAsync(rulesDir!, feedLocation, parse.GetValue(ca), TimeSpan.FromMinutes(parse.GetValue(updateEvery)), Console.Error, stop.Token)
                    : Task.CompletedTask;
                try
                {
                    await session.Completion.WaitAsync(stop.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    // Ctrl+C or --duration.
                }
                await stop.CancelAsync().ConfigureAwait(false);
                await updates.ConfigureAwait(false);
                Console.Error.WriteLine($"vmi monitor: {session.Monitor.Sweeps} sweeps, {session.Monitor.HookHits} hook hits, {pipeline.Statistics.Alerts} alerts");
                AuditTrail.Record("monitor.stop", vmId, Vmi.Audit.AuditOutcome.Success, new Dictionary<string, string>
                {
                    ["sweeps"] = session.Monitor.Sweeps.ToString(System.Globalization.CultureInfo.InvariantCulture),
                    ["alerts"] = pipeline.Statistics.Alerts.ToString(System.Globalization.CultureInfo.InvariantCulture),
                });
            }
            return CommandRunner.ExitOk;
        });
        return cmd;
    }

    /// <summary>
    /// Watches a VM Vmi started itself (<c>vmi lab run</c>): hooks through its gdb stub, every detector,
    /// alerts to the store and to standard error. Dispose to stop watching (the VM runs on).
    /// </summary>
    internal static async Task<IAsyncDisposable> WatchAsync(QemuVm vm, string vmId, string storePath, MonitorOptions options, CancellationToken ct)
    {
        var parts = new Stack<IAsyncDisposable>();
        try
        {
            EventStore store = EventStore.Open(storePath);
            parts.Push(new AsyncAction(() => { store.Dispose(); return ValueTask.CompletedTask; }));
            var writer = new StoreWriter(store);
            parts.Push(writer);
            GdbRemoteClient gdb = await vm.AttachGdbAsync(ct).ConfigureAwait(false);
            QemuTarget target = await QemuTarget.FromVmAsync(vm, gdb, ct).ConfigureAwait(false);
            parts.Push(target);
            var pipeline = new EventPipeline(TaskPoolScheduler.Default);
            parts.Push(pipeline);
            IDisposable a = pipeline.Output.Subscribe(e => writer.Post(e));
            IDisposable b = pipeline.Alerts.Subscribe(x => Console.Error.WriteLine("vmi: ALERT " + FormatAlert(x)));
            IDisposable c = pipeline.Faults.Subscribe(f => Console.Error.WriteLine($"vmi: detector {f.Detector}: {f.Fault}: {f.Message}"));
            parts.Push(new AsyncAction(() => { a.Dispose(); b.Dispose(); c.Dispose(); return ValueTask.CompletedTask; }));
            MonitorSession session = await MonitorSession.StartAsync(vmId, target, gdb, options,
                g => BuiltInDetectors.Create(g, options.Detectors), pipeline, Console.Error, ct).ConfigureAwait(false);
            parts.Push(session);
            Console.Error.WriteLine($"vmi: monitoring {vmId}: alerts are printed here and stored in {storePath} ('vmi alerts' lists them)");
            return new AsyncAction(() => DisposeAllAsync(parts));
        }
        catch
        {
            await DisposeAllAsync(parts).ConfigureAwait(false);
            throw;
        }
    }

    private static async ValueTask DisposeAllAsync(Stack<IAsyncDisposable> parts)
    {
        while (parts.TryPop(out IAsyncDisposable? p))
            await p.DisposeAsync().ConfigureAwait(false);
    }

    private sealed class AsyncAction(Func<ValueTask> action) : IAsyncDisposable
    {
        private int _done;

        public ValueTask DisposeAsync() => Interlocked.Exchange(ref _done, 1) == 0 ? action() : ValueTask.CompletedTask;
    }

    /// <summary>A VM name from its --target: the dump's file name, or the QMP socket's (its folder's when the socket has a generic name).</summary>
    internal static string VmIdOf(string target)
    {
        TargetSpec spec = TargetSpec.Parse(target);
        string? path = spec.DumpPath ?? spec.QmpPath;
        if (path is null)
            return "vm";
        string name = Path.GetFileNameWithoutExtension(path);
        if (name is "qmp" or "attach" or "monitor" && Path.GetFileName(Path.GetDirectoryName(path)) is { Length: > 0 } dir)
            name = dir;
        return name.Length == 0 ? "vm" : name;
    }

    internal static string FormatAlert(Alert a)
    {
        string who = a.Pid is int pid ? $" pid {pid}" + (a.ProcessName is null ? "" : $" ({a.ProcessName})") : "";
        string attack = a.Techniques.Count == 0 ? "" : " [" + string.Join(",", a.Techniques.Select(t => t.Id)) + "]";
        string evidence = string.Join(" ", a.Evidence.Select(kv => kv.Key + "=" + kv.Value));
        return string.Create(CultureInfo.InvariantCulture,
            $"{a.Time.UtcDateTime:yyyy-MM-dd HH:mm:ss.fff} {a.Severity.ToString().ToUpperInvariant(),-8} {a.VmId} {a.Detector}{attack}: {a.Title}{who} | {evidence}");
    }

    private static Command Check()
    {
        var cmd = new Command("check", "Run every integrity detector once on a VM or dump and print what it finds (exit 4 when something is found).");
        var target = new Option<string>("--target") { Description = "What to check: " + TargetSpec.Syntax, Required = true };
        var config = ConfigOption();
        var json = new Option<bool>("--json") { Description = "Print JSON: findings, alerts, faults." };
        foreach (Option o in new Option[] { target, config, json })
            cmd.Options.Add(o);
        cmd.SetAction(async (parse, ct) =>
        {
            MonitorOptions options = LoadOptions(parse.GetValue(config));
            ITarget t = await TargetFactory.OpenAsync(parse.GetValue(target)!, ct).ConfigureAwait(false);
            await using (t.ConfigureAwait(false))
            {
                VcpuRegisters regs = await t.GetRegistersAsync(0, ct).ConfigureAwait(false);
                LinuxProfile profile = LinuxProfile.Bootstrap(t.Memory, regs.Paging);
                var guest = new GuestView(VmIdOf(parse.GetValue(target)!), GuestOs.Linux, t.Memory, profile.CreateKernel(t.Memory, regs.Paging));
                IntegrityReport report = await IntegrityCheck.RunAsync(guest, BuiltInDetectors.Create(guest, options.Detectors), cancellationToken: ct).ConfigureAwait(false);
                if (parse.GetValue(json))
                {
                    Console.Out.WriteLine(JsonSerializer.Serialize(new
                    {
                        vm = guest.VmId,
                        detectors = report.DetectorsRun,
                        findings = report.Findings.Select(f => new { f.Detector, f.Subject, f.Problem, severity = f.Severity.ToString().ToLowerInvariant(), f.Expected, f.Actual, address = f.Address is ulong a ? $"0x{a:x}" : null, f.Evidence }),
                        alerts = report.Alerts.Select(a => new { a.Detector, a.Title, severity = a.Severity.ToString().ToLowerInvariant(), techniques = a.Techniques.Select(x => x.Id), a.Pid, a.Evidence }),
                        faults = report.Faults.Select(f => new { f.Detector, fault = f.Fault.ToString().ToLowerInvariant(), f.Message }),
                    }, Json));
                }
                else
                {
                    Console.Out.WriteLine($"{guest.VmId}: {report.DetectorsRun.Count} detectors, {report.Findings.Count} findings, {report.Alerts.Count} alerts");
                    foreach (IntegrityFinding f in report.Findings)
                        Console.Out.WriteLine($"{f.Severity.ToString().ToUpperInvariant(),-8} {f.Detector}: {f.Subject}: {f.Problem}" + (f.Actual is null ? "" : $" (actual {f.Actual}" + (f.Expected is null ? ")" : $", expected {f.Expected})")));
                    foreach (Alert a in report.Alerts)
                        Console.Out.WriteLine(FormatAlert(a));
                }
                foreach (DetectorFault f in report.Faults)
                    Console.Error.WriteLine($"vmi: warning: detector {f.Detector} did not finish: {f.Fault}: {f.Message}");
                return report.IsClean ? (report.Faults.Count == 0 ? CommandRunner.ExitOk : CommandRunner.ExitPartial) : ExitFindings;
            }
        });
        return cmd;
    }

    private static Command Alerts()
    {
        var cmd = new Command("alerts", "List stored alerts, newest first.");
        var store = StoreOption();
        var json = new Option<bool>("--json") { Description = "Print JSON (ECS fields per alert)." };
        var vm = new Option<string>("--vm") { Description = "Only this VM." };
        var severity = new Option<Severity?>("--min-severity") { Description = "Only this severity or worse (info, low, medium, high, critical)." };
        var detector = new Option<string>("--detector") { Description = "Only this detector id." };
        var limit = new Option<int>("--limit") { Description = "At most this many (default 100).", DefaultValueFactory = _ => 100 };
        foreach (Option o in new Option[] { store, json, vm, severity, detector, limit })
            cmd.Options.Add(o);
        cmd.SetAction((parse, ct) =>
        {
            string path = parse.GetValue(store) ?? DefaultStorePath();
            if (!File.Exists(path))
                throw new Vmi.Core.VmiException($"no alert store at {path}: run 'vmi monitor' first, or pass --store.");
            using EventStore s = EventStore.Open(path);
            var alerts = s.QueryAlerts(new AlertQuery
            {
                VmId = parse.GetValue(vm), MinSeverity = parse.GetValue(severity), Detector = parse.GetValue(detector), Limit = parse.GetValue(limit),
            });
            if (parse.GetValue(json))
            {
                Console.Out.WriteLine("[" + string.Join(",", alerts.Select(a => a.Alert.ToEcs().ToNestedJson())) + "]");
            }
            else
            {
                foreach (var a in alerts)
                    Console.Out.WriteLine(FormatAlert(a.Alert) + (a.Status == AlertStatus.Open ? "" : $" ({a.Status.ToString().ToLowerInvariant()})"));
                Console.Error.WriteLine($"{alerts.Count} alerts");
            }
            return Task.FromResult(CommandRunner.ExitOk);
        });
        return cmd;
    }
}
