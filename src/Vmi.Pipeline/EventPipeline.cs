using System.Collections.Concurrent;
using System.Reactive.Concurrency;
using System.Reactive.Disposables;
using System.Reactive.Linq;
using System.Reactive.Subjects;
using Vmi.Events;
using Vmi.Pipeline.Journal;

namespace Vmi.Pipeline;

/// <summary>
/// The event pipeline: per-VM ordered streams feeding isolated detectors.
/// </summary>
/// <remarks>
/// <para>
/// <b>Flow.</b> <see cref="Publish"/> gives the event the next <see cref="VmiEvent.Sequence"/> of its VM
/// and puts it on that VM's bounded ingress queue. A drain, scheduled on the pipeline's
/// <see cref="IScheduler"/>, takes the VM's events in sequence order, delivers each to
/// <see cref="Output"/> and then offers it to every detector attached to the VM. Each detector instance
/// has its own bounded queue and runs its events one at a time, in order, as work on the scheduler;
/// what it raises (alerts, findings, derived events) and its faults go back through the VM's ingress,
/// get their own sequence numbers and reach <see cref="Output"/> and the other detectors.
/// </para>
/// <para>
/// <b>Overload.</b> Queues are bounded for <see cref="EventClass.Telemetry"/> only: telemetry that finds
/// its queue full (the VM's ingress, <see cref="PipelineOptions.IngressCapacity"/>, or a detector's,
/// <see cref="DetectorInfo.QueueCapacity"/>) is shed and counted per stage, and the counts are reported
/// every <see cref="PipelineOptions.ShedReportInterval"/> as <see cref="TelemetryShed"/> events.
/// Control, finding, alert and health events are never dropped; they may exceed the bounds.
/// </para>
/// <para>
/// <b>Isolation.</b> A detector that throws gets a <see cref="DetectorFaultKind.Exception"/> fault and
/// goes on with its next event. One whose event takes longer than <see cref="DetectorInfo.TimeBudget"/>
/// (timed on the scheduler, so virtual time works) gets a <see cref="DetectorFaultKind.Timeout"/>
/// fault, its <see cref="DetectorContext.Cancellation"/> is signalled, and its queued and incoming
/// telemetry is shed until it returns, which reports <see cref="DetectorFaultKind.Recovered"/>. A
/// detector that blocks its thread synchronously cannot be preempted: its overrun is reported when it
/// returns. Faults appear on <see cref="Faults"/> (and <see cref="Output"/>); other detectors and VMs
/// are unaffected.
/// </para>
/// <para>
/// <b>Schedulers.</b> Use <see cref="DefaultScheduler"/> or <see cref="TaskPoolScheduler"/> live, and a
/// <see cref="VirtualClock"/> (or any <see cref="HistoricalScheduler"/>) in tests and replays. Not
/// <see cref="ImmediateScheduler"/>, which would sleep the publisher on time budgets.
/// </para>
/// </remarks>
public sealed class EventPipeline : IDisposable, IAsyncDisposable
{
    /// <summary>Stage name of the VMs' ingress queues in shed reports and statistics.</summary>
    public const string IngressStage = "ingress";

    private readonly ConcurrentDictionary<string, VmStream> _vms = new(StringComparer.Ordinal);
    private readonly List<Registration> _registrations = [];
    private readonly Lock _registrationGate = new();
    private readonly Subject<VmiEvent> _output = new();
    private readonly Lock _outputGate = new();
    private readonly Lock _shedGate = new();
    private readonly Dictionary<(string Vm, string Stage), long> _pendingShed = [];
    private readonly Dictionary<(string Vm, string Stage), long> _shedTotals = [];
    private readonly Dictionary<string, long> _shedByStage = new(StringComparer.Ordinal);
    private bool _shedReportScheduled;
    private volatile bool _disposed;

    internal readonly PipelineCounters Counters = new();

    /// <param name="scheduler">Clock and executor of all the pipeline's work and timers.</param>
    /// <param name="options">Limits and policies; defaults when null.</param>
    public EventPipeline(IScheduler scheduler, PipelineOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(scheduler);
        Options = options ?? new PipelineOptions();
        Options.Validate();
        Scheduler = scheduler;
        Output = _output.AsObservable();
        Alerts = _output.OfType<Alert>();
        Faults = _output.OfType<DetectorFault>();
    }

    /// <summary>The pipeline's clock and executor.</summary>
    public IScheduler Scheduler { get; }

    public PipelineOptions Options { get; }

    /// <summary>
    /// Everything, per VM in sequence order: published events that were not shed, and what the pipeline
    /// and detectors produced (alerts, findings, derived events, faults, shed reports). Calls are
    /// serialized; a subscriber must not block.
    /// </summary>
    public IObservable<VmiEvent> Output { get; }

    /// <summary>Alerts (after deduplication).</summary>
    public IObservable<Alert> Alerts { get; }

    /// <summary>The detectors' error stream: exceptions, timeouts, recoveries, overflows.</summary>
    public IObservable<DetectorFault> Faults { get; }

    /// <summary>The VMs in the pipeline.</summary>
    public IReadOnlyCollection<VmStream> Vms => [.. _vms.Values];

    /// <summary>A snapshot of the counters.</summary>
    public PipelineStatistics Statistics
    {
        get
        {
            Dictionary<string, long> byStage;
            lock (_shedGate)
                byStage = new Dictionary<string, long>(_shedByStage, StringComparer.Ordinal);
            var c = Counters;
            return new PipelineStatistics
            {
                Published = Interlocked.Read(ref c.Published),
                Emitted = Interlocked.Read(ref c.Emitted),
                Delivered = Interlocked.Read(ref c.Delivered),
                Analyzed = Interlocked.Read(ref c.Analyzed),
                Unrouted = Interlocked.Read(ref c.Unrouted),
                Alerts = Interlocked.Read(ref c.Alerts),
                AlertsSuppressed = Interlocked.Read(ref c.AlertsSuppressed),
                Findings = Interlocked.Read(ref c.Findings),
                Faults = Interlocked.Read(ref c.Faults),
                SinkErrors = Interlocked.Read(ref c.SinkErrors),
                ShedAtIngress = Interlocked.Read(ref c.ShedAtIngress),
                Shed = Interlocked.Read(ref c.Shed),
                ShedByStage = byStage,
            };
        }
    }

    /// <summary>The VM's stream, or null.</summary>
    public VmStream? FindVm(string vmId) => _vms.GetValueOrDefault(vmId);

    /// <summary>Adds a VM and attaches every registered detector that supports its OS.</summary>
    /// <exception cref="ArgumentException">A VM with that id is already in the pipeline.</exception>
    public VmStream AddVm(GuestView guest)
    {
        ArgumentNullException.ThrowIfNull(guest);
        ObjectDisposedException.ThrowIf(_disposed, this);
        lock (_registrationGate)
        {
            var vm = new VmStream(this, guest);
            if (!_vms.TryAdd(guest.VmId, vm))
                throw new ArgumentException($"VM {guest.VmId} is already in the pipeline", nameof(guest));
            foreach (var registration in _registrations)
                Attach(registration, vm);
            return vm;
        }
    }

    /// <summary>Removes a VM: its detectors are cancelled and detached, its queued events dropped, later events for it refused.</summary>
    public bool RemoveVm(string vmId) => RemoveVmCore(vmId) is not null;

    /// <summary>
    /// Removes a VM like <see cref="RemoveVm"/> and waits (at most <paramref name="wait"/>) until none of its
    /// detectors is still inside a call: after that no detector touches the guest, so its memory can be
    /// released. Returns false when the VM was not in the pipeline or a detector was still busy at the limit.
    /// </summary>
    public async Task<bool> RemoveVmAsync(string vmId, TimeSpan wait)
    {
        var idle = RemoveVmCore(vmId);
        if (idle is null)
            return false;
        try
        {
            await idle.WaitAsync(wait).ConfigureAwait(false);
            return true;
        }
        catch (TimeoutException)
        {
            return false;
        }
    }

    private Task? RemoveVmCore(string vmId)
    {
        lock (_registrationGate)
        {
            if (!_vms.TryRemove(vmId, out var vm))
                return null;
            foreach (var registration in _registrations)
                registration.Instances.RemoveAll(i => ReferenceEquals(i.Vm, vm));
            return vm.Remove();
        }
    }

    /// <summary>
    /// Registers a detector: the one registration call. <paramref name="factory"/> is called once per VM,
    /// now for the VMs in the pipeline and later for each VM added, and returns that VM's instance or
    /// null to skip it; an instance whose <see cref="DetectorInfo.SupportedOs"/> does not include the VM's
    /// OS is never attached. A factory that throws is reported as a fault of detector <c>(factory)</c>.
    /// Works while the pipeline runs: new instances see the events delivered after they were attached.
    /// </summary>
    /// <returns>Disposing it detaches (and cancels) every instance the registration made.</returns>
    public IDisposable AddDetector(Func<GuestView, IDetector?> factory)
    {
        ArgumentNullException.ThrowIfNull(factory);
        ObjectDisposedException.ThrowIf(_disposed, this);
        var registration = new Registration(factory);
        lock (_registrationGate)
        {
            _registrations.Add(registration);
            foreach (var vm in _vms.Values)
                Attach(registration, vm);
        }
        return Disposable.Create(() =>
        {
            lock (_registrationGate)
            {
                _registrations.Remove(registration);
                foreach (var instance in registration.Instances)
                    instance.Vm.Detach(instance);
                registration.Instances.Clear();
            }
        });
    }

    /// <summary>
    /// Publishes an event into its VM's stream. The event is copied with the VM's next
    /// <see cref="VmiEvent.Sequence"/> (and the scheduler's time if its <see cref="VmiEvent.Time"/> is default).
    /// Thread-safe and non-blocking: the work happens on the scheduler.
    /// </summary>
    /// <returns>False when the event was shed (telemetry over the ingress bound; counted) or its VM is not in the pipeline (counted as unrouted).</returns>
    public bool Publish(VmiEvent e)
    {
        ArgumentNullException.ThrowIfNull(e);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_vms.TryGetValue(e.VmId, out var vm))
        {
            Interlocked.Increment(ref Counters.Unrouted);
            return false;
        }
        return vm.Publish(e);
    }

    /// <summary>Appends everything delivered to <see cref="Output"/> to <paramref name="journal"/> until disposed.</summary>
    public IDisposable RecordTo(JournalWriter journal)
    {
        ArgumentNullException.ThrowIfNull(journal);
        return _output.Subscribe(journal.Append);
    }

    /// <summary>True when the detector may watch a guest with this OS.</summary>
    public static bool Supports(DetectorInfo info, GuestOs os)
    {
        ArgumentNullException.ThrowIfNull(info);
        // A guest of unknown OS gets only the detectors that support every OS.
        return os == GuestOs.None ? info.SupportedOs == GuestOs.Any : (info.SupportedOs & os) == os;
    }

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        lock (_registrationGate)
        {
            foreach (var vm in _vms.Values)
                vm.Remove();
            _vms.Clear();
            _registrations.Clear();
        }
        lock (_outputGate)
        {
            _output.OnCompleted();
            _output.Dispose();
        }
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }

    /// <summary>Whether the pipeline was disposed.</summary>
    public bool IsDisposed => _disposed;

    /// <summary>Hands an event to the subscribers (called by the VMs' drains, one event at a time per VM).</summary>
    internal void Deliver(VmiEvent e)
    {
        Interlocked.Increment(ref Counters.Delivered);
        switch (e.Class)
        {
            case EventClass.Alert:
                Interlocked.Increment(ref Counters.Alerts);
                break;
            case EventClass.Finding:
                Interlocked.Increment(ref Counters.Findings);
                break;
            case EventClass.Health when e is DetectorFault:
                Interlocked.Increment(ref Counters.Faults);
                break;
        }
        lock (_outputGate)
        {
            if (_disposed)
                return;
            try
            {
                _output.OnNext(e);
            }
#pragma warning disable CA1031 // A sink's failure must not stop the VM's stream; it is counted instead.
            catch (Exception)
#pragma warning restore CA1031
            {
                Interlocked.Increment(ref Counters.SinkErrors);
            }
        }
    }

    /// <summary>Counts telemetry shed at a stage and makes sure a report is coming.</summary>
    internal void CountShed(VmStream vm, string stage, long count)
    {
        if (count <= 0)
            return;
        bool schedule = false;
        lock (_shedGate)
        {
            var key = (vm.VmId, stage);
            _pendingShed[key] = _pendingShed.GetValueOrDefault(key) + count;
            _shedTotals[key] = _shedTotals.GetValueOrDefault(key) + count;
            _shedByStage[stage] = _shedByStage.GetValueOrDefault(stage) + count;
            if (!_shedReportScheduled && !_disposed)
                _shedReportScheduled = schedule = true;
        }
        Interlocked.Add(ref Counters.Shed, count);
        if (stage == IngressStage)
            Interlocked.Add(ref Counters.ShedAtIngress, count);
        if (schedule)
            Scheduler.Schedule(this, Options.ShedReportInterval, static (_, self) => self.ReportShed());
    }

    private IDisposable ReportShed()
    {
        List<(string Vm, string Stage, long Count, long Total)> reports;
        lock (_shedGate)
        {
            reports = new(_pendingShed.Count);
            foreach (var ((vmId, stage), count) in _pendingShed)
                reports.Add((vmId, stage, count, _shedTotals[(vmId, stage)]));
            _pendingShed.Clear();
            _shedReportScheduled = false;
        }
        reports.Sort((a, b) => (string.CompareOrdinal(a.Vm, b.Vm), string.CompareOrdinal(a.Stage, b.Stage)) switch
        {
            (0, var s) => s,
            (var v, _) => v,
        });
        var now = Scheduler.Now;
        foreach (var (vmId, stage, count, total) in reports)
        {
            if (_vms.TryGetValue(vmId, out var vm))
                vm.Emit(null, new TelemetryShed { VmId = vmId, Time = now, Stage = stage, Count = count, Total = total }, vm.Sweeps);
        }
        return Disposable.Empty;
    }

    private static void Attach(Registration registration, VmStream vm)
    {
        IDetector? detector;
        try
        {
            detector = registration.Factory(vm.Guest);
        }
#pragma warning disable CA1031 // One detector's factory failing must not stop the VM or the other detectors.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            vm.Emit(null, new DetectorFault
            {
                VmId = vm.VmId, Time = vm.Pipeline.Scheduler.Now, Detector = "(factory)", Fault = DetectorFaultKind.Exception,
                Message = $"detector factory threw {ex.GetType().Name}: {ex.Message}",
            }, vm.Sweeps);
            return;
        }
        if (detector is null || !Supports(detector.Info, vm.Guest.Os))
            return;
        registration.Instances.Add(vm.Attach(detector));
    }

    private sealed class Registration(Func<GuestView, IDetector?> factory)
    {
        public Func<GuestView, IDetector?> Factory { get; } = factory;
        public List<DetectorInstance> Instances { get; } = [];
    }
}

/// <summary>The pipeline's counters, updated with <see cref="Interlocked"/>.</summary>
internal sealed class PipelineCounters
{
#pragma warning disable CA1051 // Fields, so Interlocked can update them in place; internal only.
    public long Published, Emitted, Delivered, Analyzed, Unrouted, Alerts, AlertsSuppressed, Findings, Faults, SinkErrors, ShedAtIngress, Shed;
#pragma warning restore CA1051
}
