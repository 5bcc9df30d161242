using System.Diagnostics;
using System.Globalization;
using System.Reactive.Concurrency;
using BenchmarkDotNet.Attributes;
using Vmi.Events;
using Vmi.Pipeline;

namespace Vmi.Benchmarks;

/// <summary>
/// The event pipeline: events per second through one VM with N cheap detectors (1, or the realistic 8:
/// each filters on its own kinds and occasionally alerts), single-threaded on a virtual clock (the
/// pipeline's own cost) and on the thread pool; publish→alert latency (p50/p99 printed by
/// <see cref="LatencyProbe"/>); and a 10× overload, whose memory stays bounded (allocations per op from
/// MemoryDiagnoser, retained peak printed by <see cref="OverloadProbe"/>). Means are per event
/// (<c>OperationsPerInvoke</c>) except for the latency and overload benchmarks.
/// </summary>
[MemoryDiagnoser]
public class PipelineBenchmarks
{
    private const int Events = 100_000;

    private VmiEvent[] _events = [];
    private VirtualClock? _clock;
    private EventPipeline? _virtual;
    private EventPipeline? _threaded;
    private CountingDetector[] _threadedDetectors = [];
    private long _threadedTarget;

    [Params(1, 8)]
    public int Detectors { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _events = MakeEvents(Events);
        _clock = new VirtualClock();
        _virtual = NewPipeline(_clock, Detectors, out _);
        _threaded = NewPipeline(DefaultScheduler.Instance, Detectors, out _threadedDetectors);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _virtual?.Dispose();
        _threaded?.Dispose();
    }

    /// <summary>Publishes a batch and runs it to completion on one thread, in virtual time.</summary>
    [Benchmark(OperationsPerInvoke = Events)]
    public long VirtualClockThroughput()
    {
        for (int i = 0; i < _events.Length; i++)
        {
            _virtual!.Publish(_events[i]);
            if ((i & 1023) == 1023)
                _clock!.RunPending();
        }
        _clock!.RunPending();
        return _virtual!.FindVm("vm")!.LastSequence;
    }

    /// <summary>Publishes from one thread; VM drain and detectors run on the thread pool; waits until every detector saw every event it accepts.</summary>
    [Benchmark(OperationsPerInvoke = Events)]
    public long ThreadPoolThroughput()
    {
        _threadedTarget += Events;
        for (int i = 0; i < _events.Length; i++)
            _threaded!.Publish(_events[i]);
        var spin = new SpinWait();
        while (_threadedDetectors.Any(d => Volatile.Read(ref d.Seen) < _threadedTarget * d.Share / CountingDetector.Shares))
            spin.SpinOnce();
        return _threadedDetectors.Sum(d => d.Seen);
    }

    internal static VmiEvent[] MakeEvents(int count)
    {
        var events = new VmiEvent[count];
        var t = VirtualClock.DefaultStart;
        for (int i = 0; i < count; i++)
        {
            events[i] = (i % 8) switch
            {
                0 or 1 or 2 or 3 => new ProcessStarted { VmId = "vm", Time = t, Pid = i, Name = "p" },
                4 or 5 => new MemoryAccess { VmId = "vm", Time = t, Access = MemoryAccessKind.Write, Hook = "syscall-table", Gpa = (ulong)i * 8 },
                6 => new ModuleLoaded { VmId = "vm", Time = t, Name = "m" },
                _ => new SweepTick { VmId = "vm", Time = t, Reason = SweepReason.Periodic, Number = i },
            };
        }
        return events;
    }

    internal static EventPipeline NewPipeline(IScheduler scheduler, int detectors, out CountingDetector[] instances, PipelineOptions? options = null)
    {
        var pipeline = new EventPipeline(scheduler, options ?? new PipelineOptions { IngressCapacity = 4 * Events });
        var made = new CountingDetector[detectors];
        for (int i = 0; i < detectors; i++)
        {
            int index = i;
            made[i] = new CountingDetector(index, detectors == 1 ? CountingDetector.Kinds.All : (CountingDetector.Kinds)(1 << (index % 4)));
            pipeline.AddDetector(_ => made[index]);
        }
        pipeline.AddVm(new GuestView("vm", GuestOs.Linux));
        instances = made;
        return pipeline;
    }

    /// <summary>A cheap detector: accepts one kind of event (or all), counts, and alerts on one in 1000 (keys repeat, so most are deduplicated).</summary>
    internal sealed class CountingDetector(int index, CountingDetector.Kinds kinds) : IDetector
    {
        [Flags]
        public enum Kinds { Process = 1, Memory = 2, Module = 4, Sweep = 8, All = 15 }

        /// <summary>Out of 8 events of <see cref="MakeEvents"/>: 4 process, 2 memory, 1 module, 1 sweep.</summary>
        public const long Shares = 8;

#pragma warning disable CA1051 // Updated with Volatile/Interlocked by the benchmark.
        public long Seen;
#pragma warning restore CA1051

        public DetectorInfo Info { get; } = new("bench-" + index, "bench", "benchmark detector", GuestOs.Linux, []) { QueueCapacity = 4 * Events };

        public long Share => (kinds.HasFlag(Kinds.Process) ? 4 : 0) + (kinds.HasFlag(Kinds.Memory) ? 2 : 0) + (kinds.HasFlag(Kinds.Module) ? 1 : 0) + (kinds.HasFlag(Kinds.Sweep) ? 1 : 0);

        public bool Accepts(VmiEvent e) => e switch
        {
            ProcessStarted => kinds.HasFlag(Kinds.Process),
            MemoryAccess => kinds.HasFlag(Kinds.Memory),
            ModuleLoaded => kinds.HasFlag(Kinds.Module),
            SweepTick => kinds.HasFlag(Kinds.Sweep),
            _ => false,
        };

        public ValueTask AnalyzeAsync(VmiEvent e, DetectorContext context)
        {
            long seen = Volatile.Read(ref Seen) + 1;
            Volatile.Write(ref Seen, seen); // one instance runs one event at a time
            if (e.Sequence % 1000 == index)
                context.Raise("bench:" + (e.Sequence % 16000 / 1000), "benchmark alert", Severity.Low, EmptyEvidence);
            return ValueTask.CompletedTask;
        }

        private static readonly Dictionary<string, string> EmptyEvidence = [];
    }
}

/// <summary>Publish→alert latency on the thread pool, with the 8 detectors and background telemetry.</summary>
[MemoryDiagnoser]
public class PipelineLatencyBenchmarks
{
    private EventPipeline? _pipeline;
    private readonly SemaphoreSlim _alerted = new(0);
    private IDisposable? _subscription;
    private int _pid;

    [GlobalSetup]
    public void Setup()
    {
        _pipeline = LatencyProbe.NewPipeline(out _);
        _subscription = _pipeline.Alerts.Subscribe(_ => _alerted.Release());
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _subscription?.Dispose();
        _pipeline?.Dispose();
        LatencyProbe.Run(samples: 20_000, noisePerSample: 8);
    }

    /// <summary>One closed-loop round trip: publish the triggering event, wait for its alert.</summary>
    [Benchmark]
    public void PublishToAlert()
    {
        _pipeline!.Publish(LatencyProbe.Trigger(++_pid));
        _alerted.Wait();
    }
}

/// <summary>Measures publish→alert latency with Stopwatch timestamps and prints p50/p99/max.</summary>
public static class LatencyProbe
{
    internal static EventPipeline NewPipeline(out PipelineBenchmarks.CountingDetector[] detectors)
    {
        // Deduplication off: every trigger must alert.
        var pipeline = PipelineBenchmarks.NewPipeline(DefaultScheduler.Instance, 8, out detectors,
            new PipelineOptions { AlertKeyExpirySweeps = -1, IngressCapacity = 1 << 20 });
        pipeline.AddDetector(_ => new TriggerDetector());
        return pipeline;
    }

    internal static ProcessExec Trigger(int pid) =>
        new() { VmId = "vm", Time = VirtualClock.DefaultStart, Pid = pid, Name = "trigger", Euid = 0, SetUid = true };

    /// <summary>Sends <paramref name="samples"/> triggers, each after <paramref name="noisePerSample"/> telemetry events, and prints the latency distribution.</summary>
    public static (double P50Us, double P99Us, double MaxUs) Run(int samples, int noisePerSample)
    {
        using var pipeline = NewPipeline(out _);
        var sent = new long[samples + 1];
        var latency = new double[samples];
        int received = 0;
        using var done = new ManualResetEventSlim();
        using var sub = pipeline.Alerts.Subscribe(a =>
        {
            if (a.Pid is int pid && pid > 0)
            {
                latency[pid - 1] = Stopwatch.GetElapsedTime(sent[pid]).TotalMicroseconds;
                if (Interlocked.Increment(ref received) == samples)
                    done.Set();
            }
        });
        var noise = PipelineBenchmarks.MakeEvents(noisePerSample);
        for (int i = 1; i <= samples; i++)
        {
            foreach (var e in noise)
                pipeline.Publish(e);
            sent[i] = Stopwatch.GetTimestamp();
            pipeline.Publish(Trigger(i));
            // Pace the load so the figure is latency, not a queue's length: wait for the alert now and then.
            if (i % 64 == 0)
                SpinWait.SpinUntil(() => Volatile.Read(ref received) >= i - 8);
        }
        done.Wait(TimeSpan.FromMinutes(1));
        Array.Sort(latency);
        var result = (latency[samples / 2], latency[(int)(samples * 0.99)], latency[^1]);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"// LatencyProbe: publish->alert over {samples} alerts ({noisePerSample} telemetry events before each, 9 detectors, thread pool): p50 {result.Item1:F1} us, p99 {result.Item2:F1} us, max {result.Item3:F1} us"));
        return result;
    }

    private sealed class TriggerDetector : IDetector
    {
        public DetectorInfo Info { get; } = new("trigger", "trigger", "alerts on set-uid exec", GuestOs.Linux, []);

        public bool Accepts(VmiEvent e) => e is ProcessExec;

        public ValueTask AnalyzeAsync(VmiEvent e, DetectorContext context)
        {
            var exec = (ProcessExec)e;
            context.Raise("trigger:" + exec.Pid, "set-uid exec", Severity.High, Empty, pid: exec.Pid);
            return ValueTask.CompletedTask;
        }

        private static readonly Dictionary<string, string> Empty = [];
    }
}

/// <summary>10× overload: memory stays bounded by the queues, telemetry is shed and counted, alerts are kept.</summary>
[MemoryDiagnoser]
public class PipelineOverloadBenchmarks
{
    private const int Capacity = 4096;
    private VmiEvent[] _load = [];

    [GlobalSetup]
    public void Setup() => _load = OverloadProbe.Load(10 * Capacity);

    [GlobalCleanup]
    public void Cleanup() => OverloadProbe.Run(Capacity);

    /// <summary>Publishes 10× the ingress bound into a VM whose detector is slow, then lets it drain (virtual time).</summary>
    [Benchmark]
    public long Overload10x() => OverloadProbe.Once(_load, Capacity, measure: false, out _).Shed;
}

/// <summary>Retained memory at the peak of an overload, at 1× and 10× the bound.</summary>
public static class OverloadProbe
{
    internal static VmiEvent[] Load(int count) => PipelineBenchmarks.MakeEvents(count);

    internal static PipelineStatistics Once(VmiEvent[] load, int capacity, bool measure, out long peakBytes)
    {
        var clock = new VirtualClock();
        using var pipeline = new EventPipeline(clock, new PipelineOptions { IngressCapacity = capacity });
        pipeline.AddDetector(_ => new SlowDetector(capacity / 4));
        pipeline.AddVm(new GuestView("vm", GuestOs.Linux));
        long before = measure ? GC.GetTotalMemory(forceFullCollection: true) : 0;
        foreach (var e in load)
            pipeline.Publish(e);
        clock.RunPending();   // everything is now queued at the ingress or the detector: the peak
        peakBytes = measure ? GC.GetTotalMemory(forceFullCollection: true) - before : 0;
        clock.Advance(TimeSpan.FromMinutes(10));
        return pipeline.Statistics;
    }

    public static void Run(int capacity)
    {
        foreach (int factor in new[] { 1, 10 })
        {
            var load = Load(factor * capacity);
            var stats = Once(load, capacity, measure: true, out long peak);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"// OverloadProbe {factor,2}x ({load.Length} events, ingress bound {capacity}): retained at peak {peak / 1024.0:F0} KiB, published {stats.Published}, shed {stats.Shed} (ingress {stats.ShedAtIngress}), alerts {stats.Alerts}, sweeps kept {load.Count(e => e is SweepTick)}"));
        }
    }

    /// <summary>Takes 1 ms of (virtual) time per event and alerts on every sweep.</summary>
    private sealed class SlowDetector(int capacity) : IDetector
    {
        public DetectorInfo Info { get; } = new("slow", "slow", "slow benchmark detector", GuestOs.Linux, []) { QueueCapacity = capacity };

        public bool Accepts(VmiEvent e) => e is SweepTick or ProcessStarted;

        public async ValueTask AnalyzeAsync(VmiEvent e, DetectorContext context)
        {
            await context.DelayAsync(TimeSpan.FromMilliseconds(1));
            if (e is SweepTick s)
                context.Raise("sweep:" + s.Number, "sweep", Severity.Low, Empty);
        }

        private static readonly Dictionary<string, string> Empty = [];
    }
}
