using System.Globalization;
using System.Reactive.Concurrency;
using System.Reactive.Disposables;
using Vmi.Events;

namespace Vmi.Pipeline;

/// <summary>
/// One detector watching one VM: its bounded queue, run serially as work on the pipeline's scheduler,
/// with exceptions caught and the time budget enforced by a watchdog on the same scheduler.
/// </summary>
internal sealed class DetectorInstance
{
    private readonly IDetector _detector;
    private readonly Lock _gate = new();
    private readonly Queue<Work> _queue = new();
    private readonly int _capacity;
    private readonly TimeSpan _budget;
    private CancellationTokenSource _cancellation = new();
    private DetectorContext _context;
    private bool _running;   // a Run is scheduled, executing, or waiting for an asynchronous call
    private bool _stalled;   // the call in flight ran over its budget
    private bool _removed;
    private long _call;      // id of the asynchronous call in flight, 0 when none
    private long _calls;
    private VmiEvent? _current;
    private long _currentSweep;
    private DateTimeOffset _callStart;
    private DateTimeOffset _currentStart;
    private IDisposable? _watchdog;
    private long _shedThisEpisode;
    private TaskCompletionSource? _busy; // set while a call (synchronous or asynchronous) is in progress

    public DetectorInstance(VmStream vm, IDetector detector)
    {
        Vm = vm;
        _detector = detector;
        Info = detector.Info;
        ArgumentException.ThrowIfNullOrEmpty(Info.Id, "detector.Info.Id");
        ArgumentOutOfRangeException.ThrowIfLessThan(Info.QueueCapacity, 1, "detector.Info.QueueCapacity");
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(Info.TimeBudget, TimeSpan.Zero, "detector.Info.TimeBudget");
        _capacity = Info.QueueCapacity;
        _budget = Info.TimeBudget;
        _context = NewContext();
    }

    public VmStream Vm { get; }

    public DetectorInfo Info { get; }

    private EventPipeline Pipeline => Vm.Pipeline;

    /// <summary>One line for diagnostics: queued events, the event in progress and for how long.</summary>
    public string State
    {
        get
        {
            lock (_gate)
            {
                string current = _busy is null || _current is null
                    ? "idle"
                    : string.Create(CultureInfo.InvariantCulture, $"analyzing {_current.GetType().Name} for {(Scheduler.Now - _currentStart).TotalSeconds:0.0} s");
                return string.Create(CultureInfo.InvariantCulture, $"{Info.Id}: {current}, {_queue.Count} queued{(_stalled ? ", over budget" : "")}{(_removed ? ", removed" : "")}");
            }
        }
    }

    private IScheduler Scheduler => Vm.Pipeline.Scheduler;

    /// <summary>Offers a delivered event (on the VM's drain): filter, then queue or shed.</summary>
    public void Offer(VmiEvent e, long sweep)
    {
        bool accepted;
        try
        {
            accepted = _detector.Accepts(e);
        }
#pragma warning disable CA1031 // The detector's filter is its code: its failure is its fault, not the pipeline's.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            Fault(DetectorFaultKind.Exception, $"Accepts threw {ex.GetType().Name}: {ex.Message}", e.Id);
            return;
        }
        if (!accepted)
            return;

        bool shed = false, schedule = false;
        lock (_gate)
        {
            if (_removed)
                return;
            if (e.Class == EventClass.Telemetry && (_stalled || _queue.Count >= _capacity))
            {
                shed = true;
                _shedThisEpisode++;
            }
            else
            {
                _queue.Enqueue(new Work(e, sweep));
                schedule = !_running;
                _running = true;
            }
        }
        if (shed)
            Pipeline.CountShed(Vm, Info.Id, 1);
        else if (schedule)
            ScheduleRun();
    }

    /// <summary>
    /// Detaches: drops the queue, cancels the call in flight. Idempotent. The task completes when no call of
    /// this detector is running any more, so whoever owns the guest can release it safely afterwards.
    /// </summary>
    public Task Remove()
    {
        CancellationTokenSource cancellation;
        Task idle;
        lock (_gate)
        {
            idle = _busy?.Task ?? Task.CompletedTask;
            if (_removed)
                return idle;
            _removed = true;
            _queue.Clear();
            _watchdog?.Dispose();
            _watchdog = null;
            cancellation = _cancellation;
        }
        CancelQuietly(cancellation);
        return idle;
    }

    private void EndCall()
    {
        TaskCompletionSource? busy;
        lock (_gate)
        {
            busy = _busy;
            _busy = null;
        }
        busy?.TrySetResult();
    }

    private void ScheduleRun() => Scheduler.Schedule(this, static (_, self) => self.Run());

    private IDisposable Run()
    {
        while (true)
        {
            Work work;
            long episode = 0;
            lock (_gate)
            {
                if (_removed || !_queue.TryDequeue(out work))
                {
                    _running = false;
                    episode = _shedThisEpisode;
                    _shedThisEpisode = 0;
                    work = default;
                }
                else
                {
                    _current = work.Event;
                    _currentStart = Scheduler.Now;
                    Volatile.Write(ref _currentSweep, work.Sweep);
                    _busy = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                }
            }
            if (work.Event is null)
            {
                if (episode > 0)
                    Fault(DetectorFaultKind.Overflow, string.Create(CultureInfo.InvariantCulture,
                        $"queue overflowed while busy: {episode} telemetry events shed (capacity {_capacity})"), null);
                return Disposable.Empty;
            }

            var start = Scheduler.Now;
            ValueTask pending;
            // No captured context: a detector's awaits resume on whatever completes them (then the
            // scheduler), never on a UI or test-framework context that would reorder or deadlock them.
            var context = SynchronizationContext.Current;
            if (context is not null)
                SynchronizationContext.SetSynchronizationContext(null);
            try
            {
                pending = _detector.AnalyzeAsync(work.Event, _context);
            }
#pragma warning disable CA1031 // Isolation: a detector's exception becomes its fault, never the pipeline's.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                Finished(work.Event, start, ex);
                EndCall();
                continue;
            }
            finally
            {
                if (context is not null)
                    SynchronizationContext.SetSynchronizationContext(context);
            }
            if (pending.IsCompleted)
            {
                Exception? error = null;
                try
                {
                    pending.GetAwaiter().GetResult();
                }
#pragma warning disable CA1031 // Same isolation as above, for a call that completed synchronously.
                catch (Exception ex)
#pragma warning restore CA1031
                {
                    error = ex;
                }
                Finished(work.Event, start, error);
                EndCall();
                continue;
            }

            // The call went asynchronous: arm the watchdog and resume when it completes.
            var task = pending.AsTask();
            lock (_gate)
            {
                long call = ++_calls;
                _call = call;
                _callStart = start;
                _watchdog = Scheduler.Schedule((Self: this, Call: call), _budget, static (_, s) => s.Self.OnBudgetExpired(s.Call));
            }
            task.ContinueWith(static (t, s) => ((DetectorInstance)s!).OnAsyncCompleted(t), this,
                CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            return Disposable.Empty;
        }
    }

    /// <summary>A call that completed synchronously: count it, report its exception or its overrun.</summary>
    private void Finished(VmiEvent e, DateTimeOffset start, Exception? error)
    {
        Interlocked.Increment(ref Pipeline.Counters.Analyzed);
        if (error is not null)
            Fault(DetectorFaultKind.Exception, Describe(error), e.Id);
        var elapsed = Scheduler.Now - start;
        if (elapsed > _budget)
        {
            // It blocked its thread, so it could not be stopped; report the overrun now that it is back.
            Fault(DetectorFaultKind.Timeout, Invariant($"took {elapsed} synchronously on {e.Kind} #{e.Sequence}, budget {_budget}"), e.Id);
            Fault(DetectorFaultKind.Recovered, Invariant($"returned after {elapsed}"), e.Id);
        }
    }

    private IDisposable OnBudgetExpired(long call)
    {
        CancellationTokenSource cancellation;
        VmiEvent? current;
        long shed = 0;
        lock (_gate)
        {
            if (_removed || _call != call || _stalled)
                return Disposable.Empty;
            _stalled = true;
            current = _current;
            cancellation = _cancellation;
            // Its backlog of telemetry goes too; never-shed classes stay queued for when it returns.
            if (_queue.Count > 0)
            {
                int kept = 0;
                for (int i = _queue.Count; i > 0; i--)
                {
                    var w = _queue.Dequeue();
                    if (w.Event.Class == EventClass.Telemetry)
                    {
                        shed++;
                    }
                    else
                    {
                        _queue.Enqueue(w);
                        kept++;
                    }
                }
            }
            _shedThisEpisode += shed;
        }
        Pipeline.CountShed(Vm, Info.Id, shed);
        Fault(DetectorFaultKind.Timeout,
            Invariant($"no result after {_budget} on {current?.Kind} #{current?.Sequence}; cancelled, telemetry for it is shed until it returns"),
            current?.Id);
        // Last: cancelling may run the detector's continuations, and with them its completion, inline.
        CancelQuietly(cancellation);
        return Disposable.Empty;
    }

    private void OnAsyncCompleted(Task task)
    {
        EndCall();
        bool stalled, removed;
        VmiEvent? current;
        DateTimeOffset start;
        lock (_gate)
        {
            _call = 0;
            _watchdog?.Dispose();
            _watchdog = null;
            stalled = _stalled;
            _stalled = false;
            removed = _removed;
            current = _current;
            start = _callStart;
            if (stalled && !removed)
            {
                // The old source stays cancelled for whoever still holds its token; new calls get a fresh one.
                _cancellation = new CancellationTokenSource();
                _context = NewContext();
            }
        }
        Interlocked.Increment(ref Pipeline.Counters.Analyzed);
        if (!removed)
        {
            if (task.IsFaulted)
            {
                var error = task.Exception!.InnerExceptions.Count == 1 ? task.Exception.InnerException! : task.Exception;
                // Giving up because we cancelled it is the expected answer to a timeout, not a new fault.
                if (!(stalled && error is OperationCanceledException))
                    Fault(DetectorFaultKind.Exception, Describe(error), current?.Id);
            }
            else if (task.IsCanceled && !stalled)
            {
                Fault(DetectorFaultKind.Exception, "cancelled itself without being asked to", current?.Id);
            }
            if (stalled)
                Fault(DetectorFaultKind.Recovered, Invariant($"returned after {Scheduler.Now - start} (budget {_budget})"), current?.Id);
        }
        lock (_gate)
        {
            if (_removed)
            {
                _running = false;
                return;
            }
        }
        // _running is still set: carry on with the queue on the scheduler, not on the completing thread.
        ScheduleRun();
    }

    private void Fault(DetectorFaultKind kind, string message, Guid? eventId) =>
        Vm.Emit(this, new DetectorFault
        {
            VmId = Vm.VmId, Time = Scheduler.Now, Detector = Info.Id, Fault = kind, Message = message, EventId = eventId,
        }, Volatile.Read(ref _currentSweep));

    private DetectorContext NewContext() =>
        new(Info, Vm.Guest, Scheduler, e => Vm.Emit(this, e, Volatile.Read(ref _currentSweep)), _cancellation.Token);

    private static string Describe(Exception ex) => $"{ex.GetType().Name}: {ex.Message}";

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    private void CancelQuietly(CancellationTokenSource cancellation)
    {
        try
        {
            cancellation.Cancel();
        }
#pragma warning disable CA1031 // A detector's cancellation callback throwing is its fault too.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            Fault(DetectorFaultKind.Exception, "cancellation callback threw " + Describe(ex), _current?.Id);
        }
    }

    private readonly record struct Work(VmiEvent Event, long Sweep);
}
