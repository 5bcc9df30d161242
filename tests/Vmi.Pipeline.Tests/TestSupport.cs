using System.Reactive.Concurrency;
using Vmi.Events;

namespace Vmi.Pipeline.Tests;

/// <summary>A detector made of lambdas, recording what it saw and when (scheduler time).</summary>
internal sealed class TestDetector : IDetector
{
    private readonly Func<VmiEvent, DetectorContext, ValueTask> _analyze;
    private readonly Func<VmiEvent, bool> _accepts;

    public TestDetector(string id, Func<VmiEvent, DetectorContext, ValueTask>? analyze = null, Func<VmiEvent, bool>? accepts = null,
        GuestOs os = GuestOs.Any, TimeSpan? budget = null, int capacity = 4096)
    {
        _analyze = analyze ?? ((_, _) => ValueTask.CompletedTask);
        _accepts = accepts ?? (e => e.Class is EventClass.Telemetry or EventClass.Control);
        Info = new DetectorInfo(id, id, "test detector " + id, os, []) { TimeBudget = budget ?? TimeSpan.FromSeconds(5), QueueCapacity = capacity };
    }

    public DetectorInfo Info { get; }

    public List<(VmiEvent Event, DateTimeOffset Now, string VmId)> Seen { get; } = [];

    public List<CancellationToken> Tokens { get; } = [];

    public bool Accepts(VmiEvent e) => _accepts(e);

    public ValueTask AnalyzeAsync(VmiEvent e, DetectorContext context)
    {
        Seen.Add((e, context.Scheduler.Now, context.VmId));
        Tokens.Add(context.Cancellation);
        return _analyze(e, context);
    }

    public IEnumerable<int> Pids => Seen.Select(s => s.Event).OfType<ProcessStarted>().Select(p => p.Pid);
}

internal static class Ev
{
    public static readonly DateTimeOffset T0 = VirtualClock.DefaultStart;

    public static ProcessStarted Proc(string vm, int pid, DateTimeOffset? time = null) =>
        new() { VmId = vm, Time = time ?? T0, Pid = pid, Name = "p" + pid };

    public static SweepTick Sweep(string vm, long number, DateTimeOffset? time = null) =>
        new() { VmId = vm, Time = time ?? T0, Reason = SweepReason.Periodic, Number = number };

    public static Alert Alert(string vm, string key, DateTimeOffset? time = null) =>
        new() { VmId = vm, Time = time ?? T0, Detector = "external", Key = key, Title = "external " + key, Severity = Severity.High };

    /// <summary>An alert from the context with evidence naming the event.</summary>
    public static void RaiseFor(this DetectorContext c, VmiEvent e, string key) =>
        c.Raise(key, "alert " + key, Severity.High, new Dictionary<string, string> { ["seq"] = e.Sequence.ToString(System.Globalization.CultureInfo.InvariantCulture) },
            relatedEvents: [e.Id]);

    /// <summary>Waits virtual time on the context's scheduler (no token: it cannot be cut short).</summary>
    public static async ValueTask SleepAsync(this DetectorContext c, TimeSpan time) =>
        await c.Scheduler.Sleep(time).ConfigureAwait(false);
}

/// <summary>A pipeline on a virtual clock with everything it outputs collected.</summary>
internal sealed class Rig : IDisposable
{
    private readonly IDisposable _subscription;

    public Rig(PipelineOptions? options = null)
    {
        Clock = new VirtualClock();
        Pipeline = new EventPipeline(Clock, options);
        _subscription = Pipeline.Output.Subscribe(Output.Add);
    }

    public VirtualClock Clock { get; }
    public EventPipeline Pipeline { get; }
    public List<VmiEvent> Output { get; } = [];

    public IEnumerable<Alert> Alerts => Output.OfType<Alert>();
    public IEnumerable<DetectorFault> Faults => Output.OfType<DetectorFault>();
    public IEnumerable<TelemetryShed> ShedReports => Output.OfType<TelemetryShed>();

    public VmStream Linux(string id) => Pipeline.AddVm(new GuestView(id, GuestOs.Linux));

    public void Run() => Clock.RunPending();

    public void Dispose()
    {
        _subscription.Dispose();
        Pipeline.Dispose();
    }
}
