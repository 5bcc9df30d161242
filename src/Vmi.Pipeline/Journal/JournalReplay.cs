using System.Reactive.Concurrency;
using Vmi.Events;

namespace Vmi.Pipeline.Journal;

/// <summary>How <see cref="JournalReplay.ReplayAsync"/> feeds a journal to a pipeline.</summary>
public sealed class ReplayOptions
{
    /// <summary>
    /// Also republish alerts, findings and health events found in the journal. Off by default: a
    /// journal of a pipeline's output holds what its detectors concluded, and the replay's detectors
    /// conclude it again.
    /// </summary>
    public bool IncludeDerived { get; init; }

    /// <summary>The guest of a VM met in the journal that is not in the pipeline yet. Default: a Linux guest without live memory.</summary>
    public Func<string, GuestView>? Guests { get; init; }

    /// <summary>Scheduler time to let pass after the last event (for timers and time budgets to play out).</summary>
    public TimeSpan Settle { get; init; }
}

/// <summary>What a replay did.</summary>
/// <param name="Read">Records read.</param>
/// <param name="Published">Events published to the pipeline.</param>
/// <param name="Skipped">Derived events skipped (<see cref="ReplayOptions.IncludeDerived"/> off).</param>
/// <param name="Shed">Events the pipeline shed at ingress.</param>
/// <param name="OutOfOrder">Events whose time was before an earlier event's: published at the scheduler's time instead.</param>
/// <param name="First">Time of the first event.</param>
/// <param name="Last">Time of the last event.</param>
/// <param name="Problem">The truncated tail the journal ended with, if any.</param>
public sealed record ReplayResult(long Read, long Published, long Skipped, long Shed, long OutOfOrder,
    DateTimeOffset? First, DateTimeOffset? Last, JournalProblem? Problem);

/// <summary>Replays a recorded journal through a pipeline in event time.</summary>
public static class JournalReplay
{
    /// <summary>
    /// Publishes the journal's events into <paramref name="pipeline"/>, advancing
    /// <paramref name="scheduler"/> (the pipeline's own) to each event's <see cref="VmiEvent.Time"/>
    /// before publishing it, so detectors and every time-based operator see event time: the work an
    /// event causes runs with <see cref="IScheduler.Now"/> at that event's time. VMs met in the journal
    /// are added to the pipeline when missing. Ends at the journal's end (or truncated tail).
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="scheduler"/> is not the pipeline's scheduler.</exception>
    /// <exception cref="JournalException">The journal is corrupt (see <see cref="JournalReader"/>).</exception>
    public static async Task<ReplayResult> ReplayAsync(JournalReader reader, EventPipeline pipeline, HistoricalScheduler scheduler,
        ReplayOptions? options = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(reader);
        ArgumentNullException.ThrowIfNull(pipeline);
        ArgumentNullException.ThrowIfNull(scheduler);
        if (!ReferenceEquals(pipeline.Scheduler, scheduler))
            throw new ArgumentException("replay needs the pipeline's own scheduler, so its work runs in event time", nameof(scheduler));
        options ??= new ReplayOptions();
        var guests = options.Guests ?? (id => new GuestView(id, GuestOs.Linux));

        long read = 0, published = 0, skipped = 0, shed = 0, outOfOrder = 0;
        DateTimeOffset? first = null, last = null;
        while (await reader.ReadAsync(cancellation).ConfigureAwait(false) is { } e)
        {
            read++;
            if (!options.IncludeDerived && e.Class is EventClass.Alert or EventClass.Finding or EventClass.Health)
            {
                skipped++;
                continue;
            }
            first ??= e.Time;
            last = e.Time;
            if (e.Time > scheduler.Now)
                WithoutContext(() => scheduler.AdvanceTo(e.Time));   // runs the work of the events before, at their times
            else if (e.Time < scheduler.Now)
                outOfOrder++;
            if (pipeline.FindVm(e.VmId) is null)
                pipeline.AddVm(guests(e.VmId));
            if (pipeline.Publish(e))
                published++;
            else
                shed++;
        }
        WithoutContext(() => Settle(scheduler, options.Settle));
        return new ReplayResult(read, published, skipped, shed, outOfOrder, first, last, reader.Problem);
    }

    /// <summary>
    /// Runs scheduler work without the caller's <see cref="SynchronizationContext"/>, so detectors'
    /// awaits resume inline in the scheduler's loop, in event time (see <see cref="VirtualClock"/>).
    /// </summary>
    private static void WithoutContext(Action action)
    {
        var context = SynchronizationContext.Current;
        SynchronizationContext.SetSynchronizationContext(null);
        try
        {
            action();
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(context);
        }
    }

    /// <summary>Runs the work due now (a virtual-time scheduler only runs it when the clock moves), then lets <paramref name="time"/> pass.</summary>
    private static void Settle(HistoricalScheduler scheduler, TimeSpan time)
    {
        if (scheduler is VirtualClock clock)
        {
            clock.Advance(time);
            return;
        }
        // A plain HistoricalScheduler: the smallest step that runs what is due now.
        scheduler.AdvanceBy(time > TimeSpan.Zero ? time : TimeSpan.FromTicks(1));
    }
}
