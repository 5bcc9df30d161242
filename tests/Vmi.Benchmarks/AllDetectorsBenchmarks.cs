using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Reactive.Concurrency;
using BenchmarkDotNet.Attributes;
using Vmi.Events;
using Vmi.Lab;
using Vmi.Linux;
using Vmi.Linux.Model;
using Vmi.Memory;
using Vmi.Monitoring;
using Vmi.Pipeline;
using Vmi.Targets;

namespace Vmi.Benchmarks;

/// <summary>
/// The event pipeline with every real detector (<see cref="BuiltInDetectors.Create"/>: syscall-hook,
/// idt-hook, inline-hook, kernel-text-integrity, hidden-process, hidden-module, credential-escalation,
/// tmp-exec, process-anomaly) attached to the real lab guest: the ELF dump of
/// <see cref="LinuxModelBenchmarks"/> (build/bench/lab.elf or $VMI_BENCH_DUMP, made on first use the same
/// way) under a copy-on-write overlay, so the benchmarks can play the attacker. On the thread pool.
/// <list type="bullet">
/// <item><see cref="MixedThroughput"/>: events per second of a realistic mix: per 1000 events, 1 sweep,
/// 10 hooked writes (syscall-table, kernel-text, idt: each makes its detectors check at once) and 989
/// process events; mean per event.</item>
/// <item><see cref="TelemetryThroughput"/>: the same without sweeps (the pipeline and the cheap detectors).</item>
/// <item><see cref="FullSweep"/>: one sweep through every detector, publish until the last detector is
/// done; the per-detector cost is printed at cleanup.</item>
/// </list>
/// Hook→alert latency: <see cref="AllDetectorsLatencyBenchmarks"/>; 10× overload: <see cref="AllDetectorsOverloadBenchmarks"/>.
/// </summary>
[MemoryDiagnoser]
public class AllDetectorsBenchmarks
{
    private const int Batch = 10_000;

    private AllDetectorsLab? _lab;
    private AllDetectorsRig? _rig;
    private VmiEvent[] _mixed = [];
    private VmiEvent[] _telemetry = [];
    private long _sweep = 1000;

    [GlobalSetup]
    public void Setup()
    {
        _lab = AllDetectorsLab.Open();
        _rig = new AllDetectorsRig(_lab.Guest, DefaultScheduler.Instance, new PipelineOptions());
        _rig.WarmUp();
        _mixed = AllDetectorsLab.MakeMix(_lab, Batch, sweepEvery: 1000, hookEvery: 100, tmpExecEvery: 0);
        _telemetry = AllDetectorsLab.MakeMix(_lab, Batch, sweepEvery: 0, hookEvery: 100, tmpExecEvery: 0);
        _rig.ResetSweepTimes();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        if (_rig is not null)
        {
            _rig.PrintSweepCosts("AllDetectors");
            _rig.PrintStatistics("AllDetectors");
            _rig.Dispose();
        }
        _lab?.Dispose();
    }

    /// <summary>10,000 events (10 sweeps, 100 hooked writes, 9,890 process events), until every detector is done with them.</summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    public long MixedThroughput() => _rig!.PublishAndWait(_mixed);

    /// <summary>10,000 events (100 hooked writes, 9,900 process events), no sweep.</summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    public long TelemetryThroughput() => _rig!.PublishAndWait(_telemetry);

    /// <summary>One sweep: every integrity and anomaly detector over the whole guest, until the last one is done.</summary>
    [Benchmark]
    public long FullSweep() => _rig!.PublishAndWait([AllDetectorsLab.Sweep(++_sweep)]);
}

/// <summary>
/// Hook→alert latency with every detector attached: <see cref="HookToAlert"/> is one closed-loop round
/// trip (re-point sys_call_table[62] at a new module-area address, publish the write-hook event, wait
/// for the syscall-hook alert); <see cref="AllDetectorsProbes.Latency"/> (run at cleanup) prints
/// p50/p99/max over many such attacks while background telemetry (and sweeps) flow.
/// </summary>
[MemoryDiagnoser]
public class AllDetectorsLatencyBenchmarks
{
    private AllDetectorsLab? _lab;
    private AllDetectorsRig? _rig;
    private HookAttacker? _attacker;

    [GlobalSetup]
    public void Setup()
    {
        _lab = AllDetectorsLab.Open();
        _rig = new AllDetectorsRig(_lab.Guest, DefaultScheduler.Instance, AllDetectorsProbes.LatencyOptions);
        _rig.WarmUp();
        _attacker = new HookAttacker(_lab, _rig);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _attacker?.Dispose();
        _rig?.Dispose();
        _lab?.Dispose();
        AllDetectorsProbes.Latency(samples: 3000, telemetryPerMs: 10, sweepInterval: null);
        // 10× the monitor's default sweep rate (every 5 s), so that many attacks meet a sweep.
        AllDetectorsProbes.Latency(samples: 5000, telemetryPerMs: 10, sweepInterval: TimeSpan.FromMilliseconds(500));
    }

    [Benchmark]
    public double HookToAlert() => _attacker!.AttackOnce(TimeSpan.FromSeconds(30)).Microseconds;
}

/// <summary>
/// 10× overload with every detector attached: <see cref="Overload10x"/> publishes 10× the ingress
/// bound (the default 65,536) of telemetry as fast as possible and waits until every detector is done;
/// <see cref="AllDetectorsProbes.Overload"/> (run at cleanup) prints memory at the peak, shed counts and
/// alerts at 1× and 10×.
/// </summary>
[MemoryDiagnoser]
public class AllDetectorsOverloadBenchmarks
{
    private const int Capacity = 65_536;
    private AllDetectorsLab? _lab;
    private AllDetectorsRig? _rig;
    private VmiEvent[] _load = [];

    [GlobalSetup]
    public void Setup()
    {
        _lab = AllDetectorsLab.Open();
        _rig = new AllDetectorsRig(_lab.Guest, DefaultScheduler.Instance, new PipelineOptions { IngressCapacity = Capacity });
        _rig.WarmUp();
        _load = AllDetectorsProbes.OverloadLoad(_lab, 10 * Capacity, pidBase: 1_000_000);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _rig?.PrintStatistics("AllDetectorsOverload");
        _rig?.Dispose();
        _lab?.Dispose();
        _load = [];
        AllDetectorsProbes.Overload(Capacity);
    }

    [Benchmark]
    public long Overload10x() => _rig!.PublishAndWait(_load);
}

/// <summary>The figures printed by the benchmarks' cleanups (also callable on their own).</summary>
public static class AllDetectorsProbes
{
    /// <summary>Deduplication by the detectors only: each attack is a new handler, so a new key anyway.</summary>
    internal static PipelineOptions LatencyOptions => new() { AlertKeyExpirySweeps = -1 };

    /// <summary>
    /// Attacks <paramref name="samples"/> times (each a new handler for sys_call_table[62], then its
    /// write-hook event) and prints publish→alert latency; meanwhile a background thread publishes about
    /// <paramref name="telemetryPerMs"/> telemetry events per millisecond (process events and 1% hooked
    /// writes of kernel text and the IDT) and, if <paramref name="sweepInterval"/> is set, a sweep at that interval.
    /// </summary>
    public static (double P50Us, double P99Us, double MaxUs) Latency(int samples, int telemetryPerMs, TimeSpan? sweepInterval)
    {
        using var lab = AllDetectorsLab.Open();
        using var rig = new AllDetectorsRig(lab.Guest, DefaultScheduler.Instance, LatencyOptions);
        rig.WarmUp();
        using var attacker = new HookAttacker(lab, rig);
        for (int i = 0; i < 20; i++)
            attacker.AttackOnce(TimeSpan.FromSeconds(30));

        using var stop = new CancellationTokenSource();
        long background = 0, sweeps = 0;
        var noise = AllDetectorsLab.MakeMix(lab, 100_000, sweepEvery: 0, hookEvery: 100, tmpExecEvery: 0, syscallHooks: false);
        var thread = new Thread(() =>
        {
            long nextSweep = sweepInterval is null ? long.MaxValue : Stopwatch.GetTimestamp() + (long)(sweepInterval.Value.TotalSeconds * Stopwatch.Frequency);
            int n = 0;
            while (!stop.IsCancellationRequested)
            {
                for (int k = 0; k < telemetryPerMs; k++)
                    rig.Pipeline.Publish(noise[n++ % noise.Length]);
                background += telemetryPerMs;
                if (Stopwatch.GetTimestamp() >= nextSweep)
                {
                    rig.Pipeline.Publish(AllDetectorsLab.Sweep(1_000_000 + ++sweeps));
                    nextSweep += (long)(sweepInterval!.Value.TotalSeconds * Stopwatch.Frequency);
                }
                Thread.Sleep(1);
            }
        }) { IsBackground = true, Name = "background telemetry" };
        var wall = Stopwatch.StartNew();
        thread.Start();
        var latency = new double[samples];
        int bySweep = 0;
        var random = new Random(42);
        for (int i = 0; i < samples; i++)
        {
            var (us, fromHook) = attacker.AttackOnce(TimeSpan.FromSeconds(60));
            latency[i] = us;
            if (!fromHook)
                bySweep++;
            // Spread the attacks over the background's phases.
            Thread.Sleep(random.Next(0, 3));
        }
        stop.Cancel();
        thread.Join();
        wall.Stop();
        Array.Sort(latency);
        var result = (latency[samples / 2], latency[(int)(samples * 0.99)], latency[^1]);
        var stats = rig.Pipeline.Statistics;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"// AllDetectors latency probe ({rig.Detectors.Length} detectors, thread pool, background {background / wall.Elapsed.TotalSeconds:F0} telemetry events/s"
            + $"{(sweepInterval is null ? ", no sweeps" : $" + a sweep every {sweepInterval.Value.TotalSeconds:F1} s ({sweeps} sweeps)")}): "
            + $"hook write -> syscall-hook alert over {samples} attacks (sys_call_table[62] -> {lab.HookRegion}; guest {lab.Processes} processes, {lab.Modules} modules): p50 {result.Item1:F0} us, p99 {result.Item2:F0} us, max {result.Item3:F0} us; "
            + $"{bySweep} alerts came from a sweep that saw the attack first; shed {stats.Shed}, faults {stats.Faults}"));
        rig.PrintFaults("AllDetectors latency");
        return result;
    }

    /// <summary>
    /// <paramref name="count"/> events for an overload: one sweep, then process events (0.5% execs from
    /// /tmp, each a new pid: an alert of tmp-exec each unless shed) and 1% hooked writes.
    /// </summary>
    internal static VmiEvent[] OverloadLoad(AllDetectorsLab lab, int count, int pidBase)
    {
        var load = AllDetectorsLab.MakeMix(lab, count, sweepEvery: 0, hookEvery: 100, tmpExecEvery: 200, pidBase: pidBase);
        load[0] = AllDetectorsLab.Sweep(500);
        return load;
    }

    /// <summary>At 1× and 10× the ingress bound: retained managed memory at the peak, shed counts, alerts kept.</summary>
    public static void Overload(int capacity)
    {
        foreach (int factor in new[] { 1, 10 })
        {
            using var lab = AllDetectorsLab.Open();
            using var rig = new AllDetectorsRig(lab.Guest, DefaultScheduler.Instance, new PipelineOptions { IngressCapacity = capacity });
            rig.WarmUp();
            var load = OverloadLoad(lab, factor * capacity, pidBase: 1_000_000);
            int tmpExecs = load.Count(AllDetectorsLab.IsTmpExec);
            var alertsByDetector = new Dictionary<string, long>(StringComparer.Ordinal);
            using var sub = rig.Pipeline.Alerts.Subscribe(a =>
            {
                lock (alertsByDetector)
                    alertsByDetector[a.Detector] = alertsByDetector.GetValueOrDefault(a.Detector) + 1;
            });
            var before = rig.Pipeline.Statistics;

            long baseline = GC.GetTotalMemory(forceFullCollection: true);
            long peakSampled = baseline;
            using var sampling = new CancellationTokenSource();
            var sampler = new Thread(() =>
            {
                while (!sampling.IsCancellationRequested)
                {
                    long now = GC.GetTotalMemory(false);
                    if (now > Volatile.Read(ref peakSampled))
                        Volatile.Write(ref peakSampled, now);
                    Thread.Sleep(1);
                }
            }) { IsBackground = true, Name = "memory sampler" };
            sampler.Start();
            var wall = Stopwatch.StartNew();
            int accepted = rig.Publish(load);
            double publishMs = wall.Elapsed.TotalMilliseconds;
            int queuedAtPeak = rig.Vm.Queued;
            // Right after the flood: the queues are at their fullest.
            long retained = GC.GetTotalMemory(forceFullCollection: true) - baseline;
            rig.WaitIdle(TimeSpan.FromMinutes(5));
            rig.WaitIngressEmpty();
            double drainMs = wall.Elapsed.TotalMilliseconds;
            sampling.Cancel();
            sampler.Join();
            long after = GC.GetTotalMemory(forceFullCollection: true) - baseline;
            GCMemoryInfo gc = GC.GetGCMemoryInfo(GCKind.Any);

            var stats = rig.Pipeline.Statistics;
            var tmpExec = rig.Detectors.Single(d => d.Info.Id == "tmp-exec");
            long tmpExecAlerts;
            lock (alertsByDetector)
                tmpExecAlerts = alertsByDetector.GetValueOrDefault("tmp-exec");
            string shedByStage = string.Join(", ", stats.ShedByStage.Where(kv => kv.Value > 0).OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key} {kv.Value}"));
            string alerts;
            lock (alertsByDetector)
                alerts = string.Join(", ", alertsByDetector.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key} {kv.Value}"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"// AllDetectors overload {factor,2}x ({load.Length} events incl. {tmpExecs} /tmp execs and 1 sweep, ingress bound {capacity}, {rig.Detectors.Length} detectors): "
                + $"published in {publishMs:F0} ms (accepted {accepted}, ingress queue {queuedAtPeak}), drained in {drainMs:F0} ms; "
                + $"retained at peak {retained / 1048576.0:F1} MiB (after drain {after / 1048576.0:F1} MiB), peak sampled heap +{(peakSampled - baseline) / 1048576.0:F1} MiB, "
                + $"GC heap {gc.HeapSizeBytes / 1048576.0:F0} MiB / committed {gc.TotalCommittedBytes / 1048576.0:F0} MiB; "
                + $"shed {stats.Shed - before.Shed} ({shedByStage}); "
                + $"alerts {stats.Alerts - before.Alerts} delivered, {stats.AlertsSuppressed - before.AlertsSuppressed} suppressed as duplicates ({alerts}); "
                + $"tmp-exec analyzed {tmpExec.TmpExecs} /tmp execs and delivered {tmpExecAlerts} alerts ({(tmpExecAlerts == tmpExec.TmpExecs ? "every one kept" : "MISMATCH")})"));
            rig.PrintFaults($"AllDetectors overload {factor}x");
        }
    }
}

/// <summary>The lab dump opened for detectors: kernel model over a private copy-on-write overlay.</summary>
internal sealed class AllDetectorsLab : IDisposable
{
    public const string VmId = "lab";
    public const int KillSyscall = 62;

    private readonly DumpTarget _dump;

    private AllDetectorsLab(DumpTarget dump, PagingContext paging)
    {
        _dump = dump;
        Paging = paging;
        var profile = LinuxProfile.Bootstrap(dump.Memory, paging);
        Memory = new OverlayPhysicalMemory(dump.Memory);
        Kernel = profile.CreateKernel(Memory, paging);
        KernelMemory = new VirtualMemory(Memory, paging);
        Guest = new GuestView(VmId, GuestOs.Linux, Memory, Kernel);
        SyscallTable = Symbol(profile, "sys_call_table");
        IdtTable = Symbol(profile, "idt_table");
        TextProbe = Symbol(profile, "__x64_sys_kill");
        IReadOnlyList<LinuxModule> modules = Kernel.GetModules().Items;
        if (modules.FirstOrDefault(m => m.Size >= 0x1000) is LinuxModule module)
        {
            HookBase = module.CoreBase;
            HookSlots = module.Size / 16;
            HookRegion = $"module {module.Name}";
        }
        else
        {
            // MODULES_VADDR (__START_KERNEL_map + 1 GiB): where a rootkit module's code would be.
            HookBase = 0xffffffffc0000000;
            HookSlots = 0x10000;
            HookRegion = "the module area (no module loaded)";
        }
        Processes = Kernel.GetProcesses().Items.Count;
        Modules = modules.Count;
        // Overlay the table's page now, so attacks are single atomic stores.
        KernelSlot = SyscallTable + KillSyscall * 8;
        OriginalHandler = ReadKernelUInt64(KernelSlot);
        WriteKernelUInt64(KernelSlot, OriginalHandler);
    }

    public PagingContext Paging { get; }
    public OverlayPhysicalMemory Memory { get; }
    public LinuxKernel Kernel { get; }
    public VirtualMemory KernelMemory { get; }
    public GuestView Guest { get; }
    public ulong SyscallTable { get; }
    public ulong IdtTable { get; }
    public ulong TextProbe { get; }
    public ulong HookBase { get; }
    public ulong HookSlots { get; }
    public string HookRegion { get; }
    public ulong KernelSlot { get; }
    public ulong OriginalHandler { get; }
    public int Processes { get; }
    public int Modules { get; }

    public static AllDetectorsLab Open()
    {
        string path = Environment.GetEnvironmentVariable("VMI_BENCH_DUMP") is { Length: > 0 } env ? env : DefaultDumpPath();
        if (!File.Exists(path))
        {
            // The same dump as LinuxModelBenchmarks, made by it.
            var maker = new LinuxModelBenchmarks();
            maker.Setup();
            maker.Dispose();
        }
        var dump = DumpTarget.Open(path);
        try
        {
            VcpuRegisters registers = dump.GetRegistersAsync(0).GetAwaiter().GetResult();
            return new AllDetectorsLab(dump, registers.Paging);
        }
        catch
        {
            dump.DisposeAsync().AsTask().GetAwaiter().GetResult();
            throw;
        }
    }

    private static string DefaultDumpPath()
    {
        string lab = LabBuilder.DefaultLabDirectory();
        return Path.Combine(Path.GetDirectoryName(lab)!, "bench", "lab.elf");
    }

    private static ulong Symbol(LinuxProfile profile, string name) =>
        profile.Symbols.TryGetAddress(name, out ulong a) ? a : throw new InvalidOperationException($"no kernel symbol {name}");

    /// <summary>A module-area address for attack number <paramref name="i"/> (consecutive ones differ).</summary>
    public ulong HookAddress(long i) => HookBase + 16 * (ulong)(i % (long)HookSlots) + 0x10;

    public ulong ReadKernelUInt64(ulong va) =>
        KernelMemory.TryReadUInt64(va, out ulong v) ? v : throw new InvalidOperationException($"kernel address 0x{va:x} is unreadable");

    /// <summary>Writes kernel virtual memory into the overlay, as a rootkit would.</summary>
    public void WriteKernelUInt64(ulong va, ulong value)
    {
        if (!KernelMemory.TryTranslate(va, out Translation t, out WalkStatus status))
            throw new InvalidOperationException($"kernel address 0x{va:x} is not mapped ({status})");
        Memory.WriteUInt64(t.PhysicalAddress, value);
    }

    public static SweepTick Sweep(long number) => new() { VmId = VmId, Time = default, Reason = SweepReason.Periodic, Number = number };

    public static bool IsTmpExec(VmiEvent e) => e is ProcessExec { Path: string p } && p.StartsWith("/tmp/", StringComparison.Ordinal);

    private static readonly string[] Programs = ["/usr/bin/bash", "/usr/sbin/sshd", "/usr/bin/python3", "/usr/bin/cron", "/usr/lib/systemd/systemd-journald", "/usr/bin/grep"];

    /// <summary>
    /// <paramref name="count"/> events: a sweep every <paramref name="sweepEvery"/> (0: none), a hooked
    /// write every <paramref name="hookEvery"/> (cycling syscall-table — unless <paramref name="syscallHooks"/>
    /// is false — kernel-text and idt, each at a real address, with the bytes now there: no attack), an exec
    /// from /tmp every <paramref name="tmpExecEvery"/> (0: none), and otherwise process starts and execs of
    /// ordinary programs.
    /// </summary>
    public static VmiEvent[] MakeMix(AllDetectorsLab lab, int count, int sweepEvery, int hookEvery, int tmpExecEvery, bool syscallHooks = true, int pidBase = 1000)
    {
        var events = new VmiEvent[count];
        int hooks = 0;
        string[] hookNames = syscallHooks ? ["syscall-table", "kernel-text", "idt"] : ["kernel-text", "idt"];
        for (int i = 0; i < count; i++)
        {
            int pid = pidBase + i;
            if (sweepEvery > 0 && i % sweepEvery == 0)
            {
                events[i] = Sweep(i);
            }
            else if (hookEvery > 0 && i % hookEvery == hookEvery / 2)
            {
                string hook = hookNames[hooks++ % hookNames.Length];
                ulong gva = hook switch
                {
                    "syscall-table" => lab.SyscallTable + (ulong)(hooks % 300) * 8,
                    "kernel-text" => lab.TextProbe,
                    _ => lab.IdtTable + (ulong)(hooks % 256) * 16,
                };
                ulong value = lab.ReadKernelUInt64(gva);
                byte[] bytes = new byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(bytes, value);
                events[i] = new MemoryAccess
                {
                    VmId = VmId, Time = default, Access = MemoryAccessKind.Write, Hook = hook, Gva = gva, Size = 8, Rip = lab.TextProbe + 0x10, NewValue = bytes, OldValue = bytes,
                };
            }
            else if (tmpExecEvery > 0 && i % tmpExecEvery == tmpExecEvery / 3)
            {
                events[i] = new ProcessExec { VmId = VmId, Time = default, Pid = pid, Name = "payload", Path = $"/tmp/.x/payload{i}", Cmdline = ["/tmp/.x/payload"], Uid = 1000, Euid = 1000 };
            }
            else
            {
                string program = Programs[i % Programs.Length];
                string name = Path.GetFileName(program);
                events[i] = (i & 1) == 0
                    ? new ProcessStarted { VmId = VmId, Time = default, Pid = pid, Ppid = 1, Name = name, ExePath = program, Cmdline = [program] }
                    : new ProcessExec { VmId = VmId, Time = default, Pid = pid, Name = name, Path = program, Cmdline = [program, "-c", "true"] };
            }
        }
        return events;
    }

    public void Dispose()
    {
        Memory.Dispose();
        _dump.DisposeAsync().AsTask().GetAwaiter().GetResult();
    }
}

/// <summary>A pipeline with <see cref="BuiltInDetectors.Create"/>'s detectors, each wrapped to count and time what it did.</summary>
internal sealed class AllDetectorsRig : IDisposable
{
    private readonly List<string> _faults = [];
    private readonly IDisposable _faultSubscription;
    private readonly IDisposable _alertSubscription;
    private readonly List<string> _firstAlerts = [];
    private long _nextSweep;

    public AllDetectorsRig(GuestView guest, IScheduler scheduler, PipelineOptions options)
    {
        Pipeline = new EventPipeline(scheduler, options);
        Vm = Pipeline.AddVm(guest);
        Detectors = [.. BuiltInDetectors.Create(guest, null).Select(d => new TrackedDetector(d))];
        foreach (var d in Detectors)
            Vm.AddDetector(d);
        _faultSubscription = Pipeline.Faults.Subscribe(f =>
        {
            lock (_faults)
            {
                if (_faults.Count < 20)
                    _faults.Add($"{f.Detector} {f.Fault}: {f.Message}");
            }
        });
        _alertSubscription = Pipeline.Alerts.Subscribe(a =>
        {
            lock (_firstAlerts)
            {
                if (_firstAlerts.Count < 8)
                    _firstAlerts.Add($"{a.Detector}: {a.Title}");
            }
        });
    }

    public EventPipeline Pipeline { get; }
    public VmStream Vm { get; }
    public TrackedDetector[] Detectors { get; }

    /// <summary>Sweeps until every detector has its baseline and the anomaly detector its model.</summary>
    public void WarmUp(int sweeps = 4)
    {
        for (int i = 0; i < sweeps; i++)
            PublishAndWait([AllDetectorsLab.Sweep(++_nextSweep)]);
        ResetSweepTimes();
    }

    /// <summary>Publishes; returns how many were accepted (not shed at the ingress). Counts each detector's work to wait for.</summary>
    public int Publish(VmiEvent[] events)
    {
        int accepted = 0;
        foreach (var e in events)
        {
            // Count first: a detector may finish the event before Publish returns.
            foreach (var d in Detectors)
            {
                if (d.Accepts(e))
                    Interlocked.Increment(ref d.Target);
            }
            if (Pipeline.Publish(e))
            {
                accepted++;
            }
            else
            {
                foreach (var d in Detectors)
                {
                    if (d.Accepts(e))
                        Interlocked.Decrement(ref d.Target);
                }
            }
        }
        return accepted;
    }

    public long PublishAndWait(VmiEvent[] events)
    {
        Publish(events);
        WaitIdle(TimeSpan.FromMinutes(5));
        return Vm.LastSequence;
    }

    /// <summary>Waits until every detector analyzed (or shed) every event it accepted.</summary>
    public void WaitIdle(TimeSpan timeout)
    {
        long deadline = Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        long nextShedCheck = 0;
        IReadOnlyDictionary<string, long> shed = new Dictionary<string, long>();
        int spins = 0;
        while (true)
        {
            bool behind = false;
            foreach (var d in Detectors)
            {
                long target = Volatile.Read(ref d.Target);
                long finished = Volatile.Read(ref d.Finished);
                if (finished >= target)
                    continue;
                long now = Stopwatch.GetTimestamp();
                if (now >= nextShedCheck)
                {
                    shed = Pipeline.Statistics.ShedByStage;
                    nextShedCheck = now + Stopwatch.Frequency / 1000;
                }
                if (finished + shed.GetValueOrDefault(d.Info.Id) < target)
                {
                    behind = true;
                    break;
                }
            }
            if (!behind)
                return;
            if (Stopwatch.GetTimestamp() > deadline)
                throw new TimeoutException("detectors still busy: " + string.Join(", ", Detectors.Select(d => $"{d.Info.Id} {d.Finished}/{d.Target}")));
            if (++spins < 50)
                Thread.Yield();
            else
                Thread.Sleep(spins < 200 ? 0 : 1);
        }
    }

    /// <summary>Waits until what the detectors raised has been delivered.</summary>
    public void WaitIngressEmpty()
    {
        SpinWait.SpinUntil(() => Vm.Queued == 0, TimeSpan.FromSeconds(30));
        Thread.Sleep(20);
    }

    public void ResetSweepTimes()
    {
        foreach (var d in Detectors)
            d.ResetSweepTimes();
    }

    public void PrintSweepCosts(string label)
    {
        double sum = 0;
        var parts = new List<string>();
        foreach (var d in Detectors.OrderByDescending(d => d.MeanSweepMs))
        {
            if (d.Sweeps == 0)
                continue;
            sum += d.MeanSweepMs;
            parts.Add(string.Create(CultureInfo.InvariantCulture, $"{d.Info.Id} {d.MeanSweepMs:F1} (max {d.MaxSweepMs:F1})"));
        }
        long sweeps = Detectors.Max(d => d.Sweeps);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"// {label}: one sweep's cost per detector over {sweeps} sweeps, ms (mean, max): {string.Join(", ", parts)}; sum {sum:F1} ms (wall time inside each detector, on 2 cores shared with the others)"));
    }

    public void PrintStatistics(string label)
    {
        var s = Pipeline.Statistics;
        string shed = string.Join(", ", s.ShedByStage.Where(kv => kv.Value > 0).Select(kv => $"{kv.Key} {kv.Value}"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"// {label}: published {s.Published}, analyzed {s.Analyzed}, alerts {s.Alerts}, findings {s.Findings}, faults {s.Faults}, shed {s.Shed} ({(shed.Length == 0 ? "none" : shed)})"));
        PrintFaults(label);
        lock (_firstAlerts)
        {
            foreach (string a in _firstAlerts)
                Console.WriteLine($"// {label} alert: {a}");
        }
    }

    public void PrintFaults(string label)
    {
        lock (_faults)
        {
            foreach (string f in _faults)
                Console.WriteLine($"// {label} fault: {f}");
        }
    }

    public void Dispose()
    {
        _faultSubscription.Dispose();
        _alertSubscription.Dispose();
        Pipeline.Dispose();
    }
}

/// <summary>A real detector, unchanged, plus counters: events finished, time per sweep, /tmp execs seen.</summary>
internal sealed class TrackedDetector(IDetector inner) : IDetector
{
#pragma warning disable CA1051 // Updated with Interlocked by the rig.
    public long Target;
    public long Finished;
#pragma warning restore CA1051
    private long _sweeps;
    private long _sweepTicks;
    private long _maxSweepTicks;
    private long _tmpExecs;

    public DetectorInfo Info { get; } = inner.Info;

    public long Sweeps => Volatile.Read(ref _sweeps);
    public double MeanSweepMs => _sweeps == 0 ? 0 : _sweepTicks * 1000.0 / Stopwatch.Frequency / _sweeps;
    public double MaxSweepMs => _maxSweepTicks * 1000.0 / Stopwatch.Frequency;
    public long TmpExecs => Volatile.Read(ref _tmpExecs);

    public void ResetSweepTimes()
    {
        _sweeps = 0;
        _sweepTicks = 0;
        _maxSweepTicks = 0;
    }

    public bool Accepts(VmiEvent e) => inner.Accepts(e);

    public ValueTask AnalyzeAsync(VmiEvent e, DetectorContext context)
    {
        long start = Stopwatch.GetTimestamp();
        ValueTask pending;
        try
        {
            pending = inner.AnalyzeAsync(e, context);
        }
        catch
        {
            Done(e, start);
            throw;
        }
        if (pending.IsCompleted)
        {
            Done(e, start);
            return pending;
        }
        return AwaitAsync(pending, e, start);
    }

    private async ValueTask AwaitAsync(ValueTask pending, VmiEvent e, long start)
    {
        try
        {
            await pending.ConfigureAwait(false);
        }
        finally
        {
            Done(e, start);
        }
    }

    private void Done(VmiEvent e, long start)
    {
        if (e is SweepTick)
        {
            // One instance runs one event at a time: plain updates are safe.
            long ticks = Stopwatch.GetTimestamp() - start;
            _sweepTicks += ticks;
            _maxSweepTicks = Math.Max(_maxSweepTicks, ticks);
            Volatile.Write(ref _sweeps, _sweeps + 1);
        }
        else if (AllDetectorsLab.IsTmpExec(e))
        {
            Interlocked.Increment(ref _tmpExecs);
        }
        Interlocked.Increment(ref Finished);
    }
}

/// <summary>Re-points sys_call_table[62] at a new module-area address and times publish of its write hook → the syscall-hook alert.</summary>
internal sealed class HookAttacker : IDisposable
{
    private readonly AllDetectorsLab _lab;
    private readonly AllDetectorsRig _rig;
    private readonly IDisposable _subscription;
    private readonly SemaphoreSlim _alerted = new(0);
    private string? _expectedKey;
    private Guid _hookEvent;
    private long _arrival;
    private bool _fromHook;
    private long _attacks;

    public HookAttacker(AllDetectorsLab lab, AllDetectorsRig rig)
    {
        _lab = lab;
        _rig = rig;
        _subscription = rig.Pipeline.Alerts.Subscribe(a =>
        {
            if (a.Detector == "syscall-hook" && string.Equals(a.Key, Volatile.Read(ref _expectedKey), StringComparison.Ordinal))
            {
                Volatile.Write(ref _arrival, Stopwatch.GetTimestamp());
                _fromHook = a.RelatedEvents.Contains(_hookEvent);
                Volatile.Write(ref _expectedKey, null);
                _alerted.Release();
            }
        });
    }

    /// <summary>One attack: microseconds from publishing the write-hook event to the alert; whether the alert names that event.</summary>
    public (double Microseconds, bool FromHook) AttackOnce(TimeSpan timeout)
    {
        ulong handler = _lab.HookAddress(++_attacks);
        ulong slot = _lab.KernelSlot;
        var write = new MemoryAccess
        {
            VmId = AllDetectorsLab.VmId, Time = default, Access = MemoryAccessKind.Write, Hook = "syscall-table", Gva = slot, Size = 8,
            Rip = handler + 0x20, OldValue = BitConverter.GetBytes(_lab.ReadKernelUInt64(slot)), NewValue = BitConverter.GetBytes(handler),
        };
        _hookEvent = write.Id;
        Volatile.Write(ref _expectedKey, "syscall-hook:" + AllDetectorsLab.KillSyscall.ToString(CultureInfo.InvariantCulture) + ":0x" + handler.ToString("x", CultureInfo.InvariantCulture));
        _lab.WriteKernelUInt64(slot, handler);
        long sent = Stopwatch.GetTimestamp();
        _rig.Publish([write]);
        if (!_alerted.Wait(timeout))
            throw new TimeoutException($"no syscall-hook alert for handler 0x{handler:x} within {timeout}");
        return (Stopwatch.GetElapsedTime(sent, Volatile.Read(ref _arrival)).TotalMicroseconds, _fromHook);
    }

    public void Dispose()
    {
        _subscription.Dispose();
        _lab.WriteKernelUInt64(_lab.KernelSlot, _lab.OriginalHandler);
        _alerted.Dispose();
    }
}
