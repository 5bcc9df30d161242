using System.Reactive.Concurrency;
using System.Reactive.Linq;
using Vmi.Events;
using Vmi.Linux.Model;
using Vmi.Targets.Hooks;

namespace Vmi.Monitoring;

/// <summary>
/// Watches one VM: places the configured hooks (when the backend can hook), turns their hits into
/// events, runs periodic sweeps on the scheduler, and derives process start/exit telemetry from the
/// sweeps. Everything goes to <c>publish</c> (the pipeline's ingress), in the order it happened.
/// </summary>
public sealed class VmMonitor
{
    private readonly string _vmId;
    private readonly LinuxKernel _kernel;
    private readonly Func<VmiEvent, bool> _publish;
    private readonly MonitorOptions _options;
    private readonly IScheduler _scheduler;
    private readonly IHookBackend? _hooks;
    private readonly TextWriter _log;
    private readonly HitTranslator _translator;
    private readonly Lock _sweepLock = new();
    private readonly Dictionary<(ulong Task, ulong Start), LinuxProcess> _known = [];
    private long _sweeps;
    private DateTimeOffset _lastSweep = DateTimeOffset.MinValue;
    private bool _hookSweepPending;

    public VmMonitor(string vmId, LinuxKernel kernel, Func<VmiEvent, bool> publish, MonitorOptions options, IScheduler scheduler,
        IHookBackend? hooks = null, TextWriter? log = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(vmId);
        ArgumentNullException.ThrowIfNull(kernel);
        ArgumentNullException.ThrowIfNull(publish);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(scheduler);
        _vmId = vmId;
        _kernel = kernel;
        _publish = publish;
        _options = options;
        _scheduler = scheduler;
        _hooks = hooks;
        _log = log ?? TextWriter.Null;
        _translator = new HitTranslator(vmId, kernel);
    }

    /// <summary>Sweeps done so far.</summary>
    public long Sweeps => Interlocked.Read(ref _sweeps);

    /// <summary>One line on the sweeps and the hook loop, for diagnostics of a stalled session.</summary>
    public string State
    {
        get
        {
            DateTimeOffset last;
            lock (_sweepLock)
                last = _lastSweep;
            string sweeps = FormattableString.Invariant($"sweeps {Sweeps} (last {(_scheduler.Now - last).TotalSeconds:0.0} s ago)");
            return _hooks is null ? sweeps : $"{sweeps}; hook hits {HookHits}; hook loop: {_hooks.State}";
        }
    }

    /// <summary>Hook hits seen so far.</summary>
    public long HookHits { get; private set; }

    /// <summary>The hooks in force after <see cref="RunAsync"/> placed them.</summary>
    public IReadOnlyList<HookHandle> PlacedHooks => _hooks?.Hooks ?? [];

    /// <summary>Raised when the hooks are placed and the baseline sweep is done: the VM is under watch.</summary>
    public Task Ready => _ready.Task;

    private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Watches until cancelled.</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        // The baseline sweep first, so detectors know the clean state before any hook fires.
        Sweep(SweepReason.Requested, cause: null);
        using IDisposable timer = Observable.Interval(_options.SweepInterval, _scheduler)
            .Subscribe(_ => Sweep(SweepReason.Periodic, cause: null));
        if (_hooks is null)
        {
            _ready.TrySetResult();
            await WaitCancelledAsync(cancellationToken).ConfigureAwait(false);
            return;
        }
        HookPlan plan = HookPlan.Resolve(_kernel, _options.Hooks);
        foreach (string p in plan.Problems)
            _log.WriteLine($"vmi monitor: {_vmId}: {p}");
        foreach (HookRequest r in plan.Requests)
        {
            try
            {
                await _hooks.AddAsync(r, cancellationToken).ConfigureAwait(false);
            }
            catch (Vmi.Core.TargetException e)
            {
                _log.WriteLine($"vmi monitor: {_vmId}: {e.Message}");
            }
        }
        _log.WriteLine($"vmi monitor: {_vmId}: {_hooks.Hooks.Count} hooks through the {_hooks.Name}, sweeps every {_options.SweepInterval.TotalSeconds:0.###} s");
        _ready.TrySetResult();
        await _hooks.RunAsync(OnHitAsync, cancellationToken).ConfigureAwait(false);
    }

    private static async Task WaitCancelledAsync(CancellationToken ct)
    {
        try
        {
            await Task.Delay(Timeout.Infinite, ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Done watching.
        }
    }

    private ValueTask OnHitAsync(HookHit hit)
    {
        HookHits++;
        IReadOnlyList<VmiEvent> events;
        lock (_sweepLock)
        {
            events = _translator.Translate(hit);
            foreach (VmiEvent e in events)
            {
                if (e is ProcessStarted ps && _kernel.ReadTask(ps.TaskAddress) is LinuxProcess p)
                    _known.TryAdd((p.TaskAddress, p.StartTimeNs), p);
                _publish(e);
            }
        }
        // A changed table or text page, or a new module: look at the whole state soon.
        string hook = hit.Hook.Request.Name;
        if (hook is HookPlan.SyscallTable or HookPlan.Idt or HookPlan.KernelText or HookPlan.ModuleLoad)
            RequestHookSweep(events[0].Id);
        return ValueTask.CompletedTask;
    }

    private void RequestHookSweep(Guid cause)
    {
        lock (_sweepLock)
        {
            if (_hookSweepPending)
                return;
            TimeSpan wait = _lastSweep + _options.HookSweepCoalesce - _scheduler.Now;
            _hookSweepPending = true;
            _scheduler.Schedule(wait > TimeSpan.Zero ? wait : TimeSpan.Zero, () =>
            {
                lock (_sweepLock)
                    _hookSweepPending = false;
                Sweep(SweepReason.Hook, cause);
            });
        }
    }

    /// <summary>Looks at the process list (start/exit telemetry), then asks every detector to sweep.</summary>
    public void Sweep(SweepReason reason, Guid? cause)
    {
        lock (_sweepLock)
        {
            DateTimeOffset now = _scheduler.Now;
            _lastSweep = now;
            bool baseline = Interlocked.Read(ref _sweeps) == 0;
            try
            {
                KernelList<LinuxProcess> list = _kernel.GetProcesses();
                var seen = new HashSet<(ulong, ulong)>();
                foreach (LinuxProcess p in list.Items)
                {
                    var key = (p.TaskAddress, p.StartTimeNs);
                    seen.Add(key);
                    if (_known.TryAdd(key, p) && !baseline)
                    {
                        _publish(new ProcessStarted
                        {
                            VmId = _vmId, Time = now, Pid = p.Pid, Ppid = p.Ppid, Name = p.Name, Uid = p.Uid, Euid = p.Euid,
                            Cmdline = p.Cmdline, ExePath = p.ExePath, TaskAddress = p.TaskAddress,
                        });
                    }
                }
                // Only a complete walk can say a process is gone (a broken list would "end" everything).
                if (list.IsComplete)
                {
                    foreach (var key in _known.Keys.Where(k => !seen.Contains(k)).ToList())
                    {
                        LinuxProcess gone = _known[key];
                        _known.Remove(key);
                        _publish(new ProcessExited { VmId = _vmId, Time = now, Pid = gone.Pid, Name = gone.Name, TaskAddress = gone.TaskAddress });
                    }
                }
            }
            catch (Vmi.Core.GuestMemoryException e)
            {
                _log.WriteLine($"vmi monitor: {_vmId}: process list unreadable this sweep: {e.Message}");
            }
            long n = Interlocked.Increment(ref _sweeps);
            _publish(new SweepTick { VmId = _vmId, Time = now, Reason = reason, Number = n, Cause = cause });
        }
    }
}
