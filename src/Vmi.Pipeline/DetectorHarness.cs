using Vmi.Events;

namespace Vmi.Pipeline;

/// <summary>What a detector produced in answer to one step of a <see cref="DetectorHarness"/>.</summary>
public sealed class DetectorOutput
{
    internal DetectorOutput(IReadOnlyList<VmiEvent> events) => Events = events;

    /// <summary>Everything produced, in sequence order.</summary>
    public IReadOnlyList<VmiEvent> Events { get; }

    public IReadOnlyList<Alert> Alerts => [.. Events.OfType<Alert>()];
    public IReadOnlyList<IntegrityFinding> Findings => [.. Events.OfType<IntegrityFinding>()];
    public IReadOnlyList<DetectorFault> Faults => [.. Events.OfType<DetectorFault>()];
}

/// <summary>
/// The detector SDK's test helper: runs one detector in a real <see cref="EventPipeline"/> on a
/// <see cref="VirtualClock"/>, for one guest, so a detector's xunit test is deterministic and needs no
/// sleeps. Every step runs everything due and returns what the detector produced; the pipeline's
/// rules apply (alert deduplication, time budget, isolation of exceptions).
/// </summary>
/// <example>
/// <code>
/// using var h = new DetectorHarness(new MyDetector(), new GuestView("vm1", GuestOs.Linux, memory));
/// Assert.Empty(h.Sweep().Alerts);
/// memory.Write(...);                       // plant the rootkit
/// var alert = Assert.Single(h.Sweep().Alerts);
/// </code>
/// </example>
public sealed class DetectorHarness : IDisposable
{
    private readonly List<VmiEvent> _produced = [];
    private readonly HashSet<Guid> _sent = [];
    private readonly IDisposable _subscription;
    private readonly IDisposable _registration;
    private long _sweeps;
    private int _taken;

    /// <param name="detector">The detector under test.</param>
    /// <param name="guest">Its guest; default: <c>test-vm</c>, Linux, no memory.</param>
    /// <param name="options">Pipeline options (deduplication, bounds).</param>
    /// <param name="start">Where the virtual clock starts; default <see cref="VirtualClock.DefaultStart"/>.</param>
    /// <exception cref="ArgumentException">The detector does not support the guest's OS.</exception>
    public DetectorHarness(IDetector detector, GuestView? guest = null, PipelineOptions? options = null, DateTimeOffset? start = null)
    {
        ArgumentNullException.ThrowIfNull(detector);
        Detector = detector;
        Clock = new VirtualClock(start ?? VirtualClock.DefaultStart);
        Guest = guest ?? new GuestView("test-vm", GuestOs.Linux);
        Pipeline = new EventPipeline(Clock, options);
        Vm = Pipeline.AddVm(Guest);
        _subscription = Pipeline.Output.Subscribe(e =>
        {
            if (!_sent.Contains(e.Id))
                _produced.Add(e);
        });
        _registration = Vm.AddDetector(detector);
    }

    public IDetector Detector { get; }

    /// <summary>The virtual clock: <see cref="VirtualClock.Advance"/> it to test time-based behaviour.</summary>
    public VirtualClock Clock { get; }

    public GuestView Guest { get; }

    public string VmId => Guest.VmId;

    /// <summary>The pipeline the detector runs in (for its statistics and streams).</summary>
    public EventPipeline Pipeline { get; }

    public VmStream Vm { get; }

    /// <summary>Everything the detector (and the pipeline, for it) produced so far.</summary>
    public IReadOnlyList<VmiEvent> Produced => _produced;

    public IReadOnlyList<Alert> Alerts => [.. _produced.OfType<Alert>()];
    public IReadOnlyList<IntegrityFinding> Findings => [.. _produced.OfType<IntegrityFinding>()];
    public IReadOnlyList<DetectorFault> Faults => [.. _produced.OfType<DetectorFault>()];

    /// <summary>
    /// Sends an event and runs everything due. The event is moved to the harness's VM; a time later
    /// than the clock's moves the clock there first (event time, as in a replay), a default time
    /// becomes the clock's.
    /// </summary>
    public DetectorOutput Send(VmiEvent e)
    {
        ArgumentNullException.ThrowIfNull(e);
        if (!string.Equals(e.VmId, VmId, StringComparison.Ordinal))
            e = e with { VmId = VmId };
        if (e.Time > Clock.Now)
            Clock.AdvanceTo(e.Time);
        _sent.Add(e.Id);
        Pipeline.Publish(e);
        Clock.RunPending();
        return Take();
    }

    /// <summary>Lets virtual time pass (timers, time budgets) and returns what was produced meanwhile.</summary>
    public DetectorOutput Advance(TimeSpan time)
    {
        Clock.Advance(time);
        return Take();
    }

    /// <summary>Sends the next sweep (numbered from 1).</summary>
    public DetectorOutput Sweep(SweepReason reason = SweepReason.Periodic, Guid? cause = null) =>
        Send(new SweepTick { VmId = VmId, Time = Clock.Now, Reason = reason, Number = ++_sweeps, Cause = cause });

    public DetectorOutput ProcessStarted(int pid, string name, int ppid = 1, uint uid = 0, uint euid = 0, IReadOnlyList<string>? cmdline = null,
        string? exePath = null, ulong taskAddress = 0) =>
        Send(new ProcessStarted
        {
            VmId = VmId, Time = Clock.Now, Pid = pid, Name = name, Ppid = ppid, Uid = uid, Euid = euid, Cmdline = cmdline ?? [name],
            ExePath = exePath, TaskAddress = taskAddress,
        });

    public DetectorOutput ProcessExited(int pid, string name, ulong taskAddress = 0) =>
        Send(new ProcessExited { VmId = VmId, Time = Clock.Now, Pid = pid, Name = name, TaskAddress = taskAddress });

    public DetectorOutput ProcessExec(int pid, string name, string? path = null, uint uid = 0, uint euid = 0, bool? setUid = null,
        IReadOnlyList<string>? cmdline = null) =>
        Send(new ProcessExec
        {
            VmId = VmId, Time = Clock.Now, Pid = pid, Name = name, Path = path, Uid = uid, Euid = euid, SetUid = setUid, Cmdline = cmdline ?? [name],
        });

    public DetectorOutput ModuleLoaded(string name, ulong address = 0, ulong coreBase = 0, ulong size = 0) =>
        Send(new ModuleLoaded { VmId = VmId, Time = Clock.Now, Name = name, Address = address, CoreBase = coreBase, Size = size });

    /// <summary>A hooked write to guest memory.</summary>
    public DetectorOutput MemoryWrite(string hook, ulong? gpa = null, ulong? gva = null, ulong rip = 0, byte[]? oldValue = null, byte[]? newValue = null,
        string? ripSymbol = null, int vcpu = 0) =>
        Send(new MemoryAccess
        {
            VmId = VmId, Time = Clock.Now, Access = MemoryAccessKind.Write, Hook = hook, Gpa = gpa, Gva = gva, Rip = rip, RipSymbol = ripSymbol,
            Vcpu = vcpu, Size = newValue?.Length ?? oldValue?.Length ?? 0, OldValue = oldValue, NewValue = newValue,
        });

    public DetectorOutput BreakpointHit(string hook, ulong rip, string? symbol = null, IReadOnlyDictionary<string, ulong>? registers = null, int vcpu = 0) =>
        Send(new BreakpointHit
        {
            VmId = VmId, Time = Clock.Now, Hook = hook, Rip = rip, Symbol = symbol, Vcpu = vcpu, Registers = registers ?? new Dictionary<string, ulong>(),
        });

    private DetectorOutput Take()
    {
        var events = _produced.GetRange(_taken, _produced.Count - _taken);
        _taken = _produced.Count;
        return new DetectorOutput(events);
    }

    public void Dispose()
    {
        _registration.Dispose();
        _subscription.Dispose();
        Pipeline.Dispose();
    }
}
