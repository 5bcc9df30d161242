using System.Reactive.Concurrency;
using Vmi.Events;
using Vmi.Pipeline.Journal;
using Xunit;

namespace Vmi.Pipeline.Tests;

public class ReplayTests
{
    private static readonly DateTimeOffset Recorded = new(2024, 6, 1, 12, 0, 0, TimeSpan.Zero);

    private static MemoryStream Journal(IEnumerable<VmiEvent> events)
    {
        var stream = new MemoryStream();
        using (var writer = new JournalWriter(stream, leaveOpen: true))
        {
            foreach (var e in events)
                writer.Append(e);
        }
        stream.Position = 0;
        return stream;
    }

    [Fact]
    public async Task Replay_runs_detectors_in_event_time()
    {
        var times = new[] { 0, 5, 5, 60, 3600 }.Select(s => Recorded.AddSeconds(s)).ToArray();
        var events = new List<VmiEvent>
        {
            Ev.Proc("vm-a", 1, times[0]),
            Ev.Proc("vm-b", 2, times[1]),
            Ev.Sweep("vm-a", 1, times[2]),
            Ev.Proc("vm-a", 3, times[3]),
            Ev.Sweep("vm-b", 1, times[4]),
        };
        var clock = new VirtualClock(Recorded.AddDays(-1));
        using var pipeline = new EventPipeline(clock);
        var seen = new List<TestDetector>();
        pipeline.AddDetector(_ =>
        {
            var d = new TestDetector("clock-watcher");
            seen.Add(d);
            return d;
        });
        var output = new List<VmiEvent>();
        using var sub = pipeline.Output.Subscribe(output.Add);

        using var reader = new JournalReader(Journal(events));
        var result = await JournalReplay.ReplayAsync(reader, pipeline, clock);

        Assert.Equal(new ReplayResult(5, 5, 0, 0, 0, times[0], times[4], null), result);
        Assert.Equal(["vm-a", "vm-b"], pipeline.Vms.Select(v => v.VmId).Order());
        // Each detector saw its VM's events with the scheduler at the event's time.
        var all = seen.SelectMany(d => d.Seen).OrderBy(s => s.Now).ToList();
        Assert.Equal(5, all.Count);
        Assert.All(all, s => Assert.Equal(s.Event.Time, s.Now));
        Assert.Equal(events.Select(e => e.Id).Order(), all.Select(s => s.Event.Id).Order());
        Assert.Equal(events.Select(e => e.Id), output.Select(e => e.Id));
        Assert.Equal(times[4], clock.Now);
    }

    [Fact]
    public async Task Recorded_output_replays_to_the_same_alerts_in_event_time()
    {
        static IDetector Alerter() => new TestDetector("sweep-alerter", (e, c) =>
        {
            if (e is SweepTick s)
                c.Raise("k" + s.Number, "sweep " + s.Number, Severity.Medium, new Dictionary<string, string> { ["at"] = c.Scheduler.Now.ToString("O") });
            return ValueTask.CompletedTask;
        });

        // Live run, on a clock of its own, recorded.
        var journal = new MemoryStream();
        var live = new List<Alert>();
        using (var writer = new JournalWriter(journal, leaveOpen: true))
        {
            var clock = new VirtualClock(Recorded);
            using var pipeline = new EventPipeline(clock);
            using var recording = pipeline.RecordTo(writer);
            using var alerts = pipeline.Alerts.Subscribe(live.Add);
            pipeline.AddDetector(_ => Alerter());
            pipeline.AddVm(new GuestView("vm", GuestOs.Linux));
            for (int i = 1; i <= 3; i++)
            {
                pipeline.Publish(Ev.Proc("vm", i, clock.Now));
                pipeline.Publish(Ev.Sweep("vm", i, clock.Now));
                clock.Advance(TimeSpan.FromMinutes(1));
            }
        }
        Assert.Equal(3, live.Count);
        journal.Position = 0;

        // Replay on a plain HistoricalScheduler, much later.
        var replayClock = new HistoricalScheduler(DateTimeOffset.UnixEpoch);
        using var replay = new EventPipeline(replayClock);
        replay.AddDetector(_ => Alerter());
        var replayed = new List<Alert>();
        using var sub = replay.Alerts.Subscribe(replayed.Add);
        using var reader = new JournalReader(journal);
        var result = await JournalReplay.ReplayAsync(reader, replay, replayClock);

        Assert.Equal((9L, 6L, 3L), (result.Read, result.Published, result.Skipped));
        Assert.Equal(live.Select(a => (a.Key, a.Time, a.Evidence["at"])), replayed.Select(a => (a.Key, a.Time, a.Evidence["at"])));
        Assert.NotEqual(live.Select(a => a.Id), replayed.Select(a => a.Id));
    }

    [Fact]
    public async Task Replay_reports_a_truncated_tail_and_out_of_order_events()
    {
        var events = new List<VmiEvent> { Ev.Proc("vm", 1, Recorded.AddSeconds(10)), Ev.Proc("vm", 2, Recorded), Ev.Proc("vm", 3, Recorded.AddSeconds(20)) };
        var bytes = Journal(events).ToArray();
        var clock = new VirtualClock(Recorded);
        using var pipeline = new EventPipeline(clock);
        var d = new TestDetector("d");
        pipeline.AddDetector(_ => d);
        using var reader = new JournalReader(new MemoryStream(bytes[..^3]));
        var result = await JournalReplay.ReplayAsync(reader, pipeline, clock);
        Assert.Equal((2L, 2L, 1L), (result.Read, result.Published, result.OutOfOrder));
        Assert.NotNull(result.Problem);
        Assert.Equal([1, 2], d.Pids);
        Assert.Equal(Recorded.AddSeconds(10), d.Seen[1].Now); // the late one runs at the time the replay had reached
    }

    [Fact]
    public async Task Replay_needs_the_pipelines_own_scheduler()
    {
        using var pipeline = new EventPipeline(new VirtualClock());
        using var reader = new JournalReader(Journal([]));
        await Assert.ThrowsAsync<ArgumentException>(() => JournalReplay.ReplayAsync(reader, pipeline, new HistoricalScheduler()));
    }
}
