using System.Reactive.Concurrency;
using System.Reactive.Disposables;
using System.Reactive.Linq;
using Vmi.Events;

namespace Vmi.Pipeline;

/// <summary>
/// One VM's ordered stream in an <see cref="EventPipeline"/>: its ingress queue, its sequence
/// numbers, its detectors and its alert keys. Made by <see cref="EventPipeline.AddVm"/>.
/// </summary>
public sealed class VmStream
{
    private readonly Lock _gate = new();
    private readonly Queue<Envelope> _ingress = new();
    private readonly Lock _dedupGate = new();
    private readonly Dictionary<string, RaisedKey> _raised = new(StringComparer.Ordinal);
    private DetectorInstance[] _detectors = [];
    private long _sequence;
    private long _sweeps;
    private bool _draining;
    private bool _removed;

    internal VmStream(EventPipeline pipeline, GuestView guest)
    {
        Pipeline = pipeline;
        Guest = guest;
        string id = guest.VmId;
        Events = pipeline.Output.Where(e => string.Equals(e.VmId, id, StringComparison.Ordinal));
    }

    internal EventPipeline Pipeline { get; }

    public string VmId => Guest.VmId;

    public GuestView Guest { get; }

    /// <summary>This VM's part of <see cref="EventPipeline.Output"/>, in sequence order.</summary>
    public IObservable<VmiEvent> Events { get; }

    /// <summary>The detectors attached to this VM.</summary>
    public IReadOnlyList<DetectorInfo> Detectors => [.. Volatile.Read(ref _detectors).Select(d => d.Info)];

    /// <summary>One line per detector on what it is doing (for diagnostics of a stalled VM).</summary>
    public IReadOnlyList<string> DetectorStates => [.. Volatile.Read(ref _detectors).Select(d => d.State)];

    /// <summary>The last sequence number given (0 before the first event).</summary>
    public long LastSequence
    {
        get
        {
            lock (_gate)
                return _sequence;
        }
    }

    /// <summary>Events waiting in the ingress queue.</summary>
    public int Queued
    {
        get
        {
            lock (_gate)
                return _ingress.Count;
        }
    }

    /// <summary>Sweeps delivered so far (the clock of alert-key expiry).</summary>
    internal long Sweeps => Volatile.Read(ref _sweeps);

    /// <summary>Publishes an event of this VM; see <see cref="EventPipeline.Publish"/>.</summary>
    public bool Publish(VmiEvent e)
    {
        ArgumentNullException.ThrowIfNull(e);
        if (!string.Equals(e.VmId, VmId, StringComparison.Ordinal))
            throw new ArgumentException($"event is for VM {e.VmId}, not {VmId}", nameof(e));
        return Enqueue(e, null, external: true);
    }

    /// <summary>
    /// Attaches one detector instance to this VM only (the per-VM counterpart of
    /// <see cref="EventPipeline.AddDetector"/>).
    /// </summary>
    /// <returns>Disposing it detaches and cancels the instance.</returns>
    /// <exception cref="ArgumentException">The detector does not support this VM's OS.</exception>
    public IDisposable AddDetector(IDetector detector)
    {
        ArgumentNullException.ThrowIfNull(detector);
        if (!EventPipeline.Supports(detector.Info, Guest.Os))
            throw new ArgumentException($"detector {detector.Info.Id} supports {detector.Info.SupportedOs}, not VM {VmId}'s {Guest.Os}", nameof(detector));
        var instance = Attach(detector);
        return Disposable.Create(() => Detach(instance));
    }

    /// <summary>Forgets an alert key, so the next alert with it is delivered even while it would still be live.</summary>
    public bool ResetAlertKey(string key)
    {
        lock (_dedupGate)
            return _raised.Remove(key);
    }

    /// <summary>Forgets every alert key of this VM.</summary>
    public void ResetAlertKeys()
    {
        lock (_dedupGate)
            _raised.Clear();
    }

    internal DetectorInstance Attach(IDetector detector)
    {
        var instance = new DetectorInstance(this, detector);
        lock (_gate)
        {
            if (_removed)
                throw new InvalidOperationException($"VM {VmId} was removed from the pipeline");
            _detectors = [.. _detectors, instance];
        }
        return instance;
    }

    internal void Detach(DetectorInstance instance)
    {
        lock (_gate)
            _detectors = [.. _detectors.Where(d => !ReferenceEquals(d, instance))];
        instance.Remove();
    }

    /// <returns>Completes when none of the VM's detectors is still running a call.</returns>
    internal Task Remove()
    {
        DetectorInstance[] detectors;
        lock (_gate)
        {
            _removed = true;
            _ingress.Clear();
            detectors = _detectors;
            _detectors = [];
        }
        return Task.WhenAll(detectors.Select(d => d.Remove()));
    }

    /// <summary>
    /// Emits an event produced inside the pipeline (by <paramref name="origin"/>, or by the pipeline when
    /// null): fills in the VM and time, deduplicates alerts, and queues it behind the VM's other events.
    /// </summary>
    internal void Emit(DetectorInstance? origin, VmiEvent e, long sweep)
    {
        if (!string.Equals(e.VmId, VmId, StringComparison.Ordinal) || e.Time == default)
            e = e with { VmId = VmId, Time = e.Time == default ? Pipeline.Scheduler.Now : e.Time };
        if (e is Alert alert && IsLiveKey(alert.Key, sweep))
        {
            Interlocked.Increment(ref Pipeline.Counters.AlertsSuppressed);
            return;
        }
        Enqueue(e, origin, external: false);
    }

    private bool IsLiveKey(string key, long sweep)
    {
        var options = Pipeline.Options;
        if (options.AlertKeyExpirySweeps < 0)
            return false;
        var now = Pipeline.Scheduler.Now;
        lock (_dedupGate)
        {
            bool live = _raised.TryGetValue(key, out var last)
                && sweep - last.Sweep <= options.AlertKeyExpirySweeps
                && (options.AlertKeyExpiry is not { } expiry || now - last.Time <= expiry);
            // Raising a live key again keeps it alive: it is the condition lasting.
            _raised[key] = new RaisedKey(Math.Max(sweep, last?.Sweep ?? 0), now);
            return live;
        }
    }

    private void PruneKeys()
    {
        // Keys far past expiry go, so the table does not grow with every condition ever seen. The
        // margin keeps a lagging detector (still on an older sweep) from re-alerting a live key.
        long horizon = Volatile.Read(ref _sweeps) - Pipeline.Options.AlertKeyExpirySweeps - 64;
        if (horizon <= 0)
            return;
        var expiry = Pipeline.Options.AlertKeyExpiry;
        var now = Pipeline.Scheduler.Now;
        lock (_dedupGate)
        {
            foreach (var (key, raised) in _raised)
            {
                if (raised.Sweep < horizon && (expiry is null || now - raised.Time > expiry))
                    _raised.Remove(key);
            }
        }
    }

    private bool Enqueue(VmiEvent e, DetectorInstance? origin, bool external)
    {
        bool queued, schedule = false;
        lock (_gate)
        {
            if (_removed)
            {
                Interlocked.Increment(ref Pipeline.Counters.Unrouted);
                return false;
            }
            queued = e.Class != EventClass.Telemetry || _ingress.Count < Pipeline.Options.IngressCapacity;
            if (queued)
            {
                long sequence = ++_sequence;
                // The copy is the one allocation per event: events are immutable once published.
                var stamped = e.Time == default
                    ? e with { Sequence = sequence, Time = Pipeline.Scheduler.Now }
                    : e with { Sequence = sequence };
                _ingress.Enqueue(new Envelope(stamped, origin));
                schedule = !_draining;
                _draining = true;
            }
        }
        if (!queued)
        {
            Pipeline.CountShed(this, EventPipeline.IngressStage, 1);
            return false;
        }
        Interlocked.Increment(ref external ? ref Pipeline.Counters.Published : ref Pipeline.Counters.Emitted);
        if (schedule)
            ScheduleDrain();
        return true;
    }

    private void ScheduleDrain() => Pipeline.Scheduler.Schedule(this, static (_, vm) => vm.Drain());

    private IDisposable Drain()
    {
        int budget = Pipeline.Options.DrainBatch;
        while (true)
        {
            Envelope next;
            lock (_gate)
            {
                if (_removed || _ingress.Count == 0)
                {
                    _draining = false;
                    return Disposable.Empty;
                }
                if (budget-- == 0)
                {
                    // Yield to other VMs; _draining stays set so nobody else schedules a drain.
                    ScheduleDrain();
                    return Disposable.Empty;
                }
                next = _ingress.Dequeue();
            }
            Deliver(next);
        }
    }

    private void Deliver(Envelope envelope)
    {
        var e = envelope.Event;
        if (e is SweepTick)
        {
            Interlocked.Increment(ref _sweeps);
            PruneKeys();
        }
        Pipeline.Deliver(e);
        long sweep = Volatile.Read(ref _sweeps);
        foreach (var detector in Volatile.Read(ref _detectors))
        {
            // A detector does not get back what it produced itself.
            if (!ReferenceEquals(detector, envelope.Origin))
                detector.Offer(e, sweep);
        }
    }

    private readonly record struct Envelope(VmiEvent Event, DetectorInstance? Origin);

    private sealed record RaisedKey(long Sweep, DateTimeOffset Time);
}
