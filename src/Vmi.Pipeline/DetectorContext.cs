using System.Reactive.Concurrency;
using Vmi.Events;

namespace Vmi.Pipeline;

/// <summary>What a detector gets for one event: the guest, the clock, and where to report.</summary>
public sealed class DetectorContext
{
    private readonly Action<VmiEvent> _emit;

    public DetectorContext(DetectorInfo detector, GuestView guest, IScheduler scheduler, Action<VmiEvent> emit, CancellationToken cancellation)
    {
        Detector = detector;
        Guest = guest;
        Scheduler = scheduler;
        _emit = emit;
        Cancellation = cancellation;
    }

    public DetectorInfo Detector { get; }
    public GuestView Guest { get; }
    public string VmId => Guest.VmId;

    /// <summary>The pipeline's clock: virtual in tests and replays, so use it instead of DateTime.Now.</summary>
    public IScheduler Scheduler { get; }

    /// <summary>Signalled when the detector's time budget runs out or it is removed.</summary>
    public CancellationToken Cancellation { get; }

    /// <summary>
    /// Waits <paramref name="time"/> on the pipeline's clock (virtual in tests and replays), ending early
    /// with <see cref="OperationCanceledException"/> when <see cref="Cancellation"/> is signalled. Prefer it
    /// to <see cref="Task.Delay(TimeSpan, CancellationToken)"/>, which runs on the wall clock and resumes on a
    /// thread-pool thread, outside virtual time.
    /// </summary>
    public Task DelayAsync(TimeSpan time)
    {
        // Continuations run inline where the clock or the cancellation completes the task, so in virtual
        // time the detector resumes inside the clock's loop, deterministically.
        var done = new TaskCompletionSource();
        var token = Cancellation;
        if (token.IsCancellationRequested)
        {
            done.SetCanceled(token);
            return done.Task;
        }
        var registration = token.Register(static s => ((TaskCompletionSource)s!).TrySetCanceled(), done);
        var timer = Scheduler.Schedule(time, () =>
        {
            registration.Dispose();
            done.TrySetResult();
        });
        done.Task.ContinueWith(static (_, t) => ((IDisposable)t!).Dispose(), timer, CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously | TaskContinuationOptions.OnlyOnCanceled, TaskScheduler.Default);
        return done.Task;
    }

    /// <summary>Reports an alert. VmId and Time are filled in when left default.</summary>
    public void Raise(Alert alert)
    {
        ArgumentNullException.ThrowIfNull(alert);
        _emit(alert);
    }

    /// <summary>Builds and reports an alert from this detector, at the scheduler's time.</summary>
    public Alert Raise(string key, string title, Severity severity, IReadOnlyDictionary<string, string> evidence,
        IReadOnlyList<AttackTechnique>? techniques = null, int? pid = null, string? processName = null, IReadOnlyList<Guid>? relatedEvents = null)
    {
        var alert = new Alert
        {
            VmId = VmId, Time = Scheduler.Now, Detector = Detector.Id, Key = key, Title = title, Severity = severity,
            Evidence = evidence, Techniques = techniques ?? Detector.Techniques, Description = Detector.Description,
            Pid = pid, ProcessName = processName, RelatedEvents = relatedEvents ?? [],
        };
        _emit(alert);
        return alert;
    }

    /// <summary>Reports an integrity finding (what <c>vmi check</c> lists).</summary>
    public IntegrityFinding Report(string subject, string problem, Severity severity, string? expected = null, string? actual = null,
        ulong? address = null, IReadOnlyDictionary<string, string>? evidence = null)
    {
        var finding = new IntegrityFinding
        {
            VmId = VmId, Time = Scheduler.Now, Detector = Detector.Id, Subject = subject, Problem = problem, Severity = severity,
            Expected = expected, Actual = actual, Address = address, Evidence = evidence ?? new Dictionary<string, string>(),
        };
        _emit(finding);
        return finding;
    }

    /// <summary>Emits any other event (telemetry a detector derives, e.g. process start from a sweep).</summary>
    public void Emit(VmiEvent e)
    {
        ArgumentNullException.ThrowIfNull(e);
        _emit(e);
    }
}
