using System.Reactive.Concurrency;

namespace Vmi.Pipeline;

/// <summary>
/// A <see cref="HistoricalScheduler"/> that can also run the work that is due <em>now</em>.
/// Rx's virtual-time schedulers only run queued work when the clock moves
/// (<c>AdvanceBy(TimeSpan.Zero)</c> does nothing), but the pipeline schedules its processing at the
/// current time; <see cref="RunPending"/> runs it without moving the clock. Use it in tests and
/// replays; any <see cref="HistoricalScheduler"/> works with the pipeline.
/// <para>
/// Work runs without a <see cref="SynchronizationContext"/> (a test framework installs one on its
/// threads). With one present, .NET does not resume an <c>await</c> inline where a task completes but
/// posts it elsewhere, so a detector awaiting a virtual delay or its cancellation would resume on
/// another thread, after the clock stopped moving; without one, it resumes inside the clock's loop,
/// deterministically.
/// </para>
/// </summary>
public class VirtualClock : HistoricalScheduler
{
    /// <summary>Where a clock starts when not told: 2025-01-01T00:00:00Z.</summary>
    public static readonly DateTimeOffset DefaultStart = new(2025, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private bool _running;

    public VirtualClock() : this(DefaultStart)
    {
    }

    public VirtualClock(DateTimeOffset start) : base(start)
    {
    }

    /// <inheritdoc/>
    public override IDisposable ScheduleAbsolute<TState>(TState state, DateTimeOffset dueTime, Func<IScheduler, TState, IDisposable> action)
    {
        ArgumentNullException.ThrowIfNull(action);
        return base.ScheduleAbsolute((State: state, Action: action), dueTime, static (scheduler, s) =>
        {
            var context = SynchronizationContext.Current;
            if (context is null)
                return s.Action(scheduler, s.State);
            SynchronizationContext.SetSynchronizationContext(null);
            try
            {
                return s.Action(scheduler, s.State);
            }
            finally
            {
                SynchronizationContext.SetSynchronizationContext(context);
            }
        });
    }

    /// <summary>
    /// Runs everything due at or before the current time, including work that work scheduled, and
    /// returns how many items ran. Does nothing when called from inside scheduled work (the outer
    /// loop runs it).
    /// </summary>
    public int RunPending()
    {
        if (_running || IsEnabled)
            return 0;
        _running = true;
        int ran = 0;
        try
        {
            while (GetNext() is { } next && next.DueTime <= Clock)
            {
                next.Invoke();
                ran++;
            }
        }
        finally
        {
            _running = false;
        }
        return ran;
    }

    /// <summary>Moves the clock forward by <paramref name="time"/>, running what falls due, then what is due at the new time.</summary>
    public void Advance(TimeSpan time)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(time, TimeSpan.Zero);
        if (time > TimeSpan.Zero)
            AdvanceBy(time);
        RunPending();
    }

    /// <summary>Moves the clock to <paramref name="time"/> (never back), running what falls due.</summary>
    public void AdvanceToAndRun(DateTimeOffset time)
    {
        if (time > Clock)
            AdvanceTo(time);
        RunPending();
    }
}
