using System.Reactive.Concurrency;
using Vmi.Events;
using Xunit;

namespace Vmi.Pipeline.Tests;

public class OrderingTests
{
    [Fact]
    public void Two_interleaved_vms_reach_each_detector_in_sequence_order()
    {
        using var rig = new Rig();
        var instances = new Dictionary<string, TestDetector>();
        // Uneven virtual delays make the detector's calls complete out of step with publishing.
        rig.Pipeline.AddDetector(g => instances[g.VmId] = new TestDetector("order",
            (e, c) => e is ProcessStarted p && p.Pid % 3 == 0 ? c.SleepAsync(TimeSpan.FromMilliseconds(p.Pid % 7)) : ValueTask.CompletedTask));
        var a = rig.Linux("vm-a");
        var b = rig.Linux("vm-b");

        for (int i = 0; i < 100; i++)
        {
            Assert.True(rig.Pipeline.Publish(Ev.Proc("vm-a", i)));
            Assert.True(rig.Pipeline.Publish(Ev.Proc("vm-b", 1000 + i)));
            if (i % 10 == 0)
                rig.Run();
        }
        rig.Clock.Advance(TimeSpan.FromSeconds(1));

        Assert.Equal(Enumerable.Range(0, 100), instances["vm-a"].Pids);
        Assert.Equal(Enumerable.Range(1000, 100), instances["vm-b"].Pids);
        Assert.Equal(Enumerable.Range(1, 100).Select(i => (long)i), instances["vm-a"].Seen.Select(s => s.Event.Sequence));
        Assert.Equal(Enumerable.Range(1, 100).Select(i => (long)i), instances["vm-b"].Seen.Select(s => s.Event.Sequence));
        Assert.All(instances["vm-a"].Seen, s => Assert.Equal("vm-a", s.VmId));
        Assert.Equal(Enumerable.Range(1, 100).Select(i => (long)i), rig.Output.Where(e => e.VmId == "vm-b").Select(e => e.Sequence));
        Assert.Equal(100, a.LastSequence);
        Assert.Equal(100, b.LastSequence);
        Assert.Equal(200, rig.Pipeline.Statistics.Published);
        Assert.Equal(200, rig.Pipeline.Statistics.Analyzed);
    }

    [Fact]
    public void Alerts_get_their_own_sequence_after_the_event_that_caused_them()
    {
        using var rig = new Rig();
        rig.Pipeline.AddDetector(_ => new TestDetector("alerter", (e, c) => { c.RaiseFor(e, "k" + e.Sequence); return ValueTask.CompletedTask; }));
        rig.Linux("vm");
        rig.Pipeline.Publish(Ev.Proc("vm", 1));
        rig.Pipeline.Publish(Ev.Proc("vm", 2));
        rig.Run();

        Assert.Equal(["process-started:1", "process-started:2", "alert:3", "alert:4"], rig.Output.Select(e => $"{e.Kind}:{e.Sequence}"));
        var alert = rig.Alerts.First();
        Assert.Equal("vm", alert.VmId);
        Assert.Equal("k1", alert.Key);
        Assert.Equal("alerter", alert.Detector);
        Assert.Equal(rig.Output[0].Id, Assert.Single(alert.RelatedEvents));
    }

    [Fact]
    public void Unknown_vm_is_refused_and_counted()
    {
        using var rig = new Rig();
        Assert.False(rig.Pipeline.Publish(Ev.Proc("nope", 1)));
        Assert.Equal(1, rig.Pipeline.Statistics.Unrouted);
        Assert.Empty(rig.Output);
    }
}

public class OverloadTests
{
    [Fact]
    public void Slow_detector_under_overload_keeps_every_alert_and_counts_shed_telemetry_exactly()
    {
        using var rig = new Rig(new PipelineOptions { IngressCapacity = 100, ShedReportInterval = TimeSpan.FromSeconds(10) });
        var slow = new TestDetector("slow", async (e, c) =>
        {
            await c.SleepAsync(TimeSpan.FromMilliseconds(1));
            if (e is SweepTick s)
                c.RaiseFor(e, "sweep-" + s.Number);
        }, capacity: 10);
        rig.Pipeline.AddDetector(_ => slow);
        rig.Linux("vm");

        int refused = 0;
        for (int i = 0; i < 1000; i++)
        {
            if (i % 100 == 0)
                Assert.True(rig.Pipeline.Publish(Ev.Sweep("vm", i / 100 + 1)));
            if (!rig.Pipeline.Publish(Ev.Proc("vm", i)))
                refused++;
        }
        // Alerts published into a full ingress are queued all the same.
        for (int i = 0; i < 5; i++)
            Assert.True(rig.Pipeline.Publish(Ev.Alert("vm", "external-" + i)));

        // Ingress (bound 100, counting every queued event): sweep 1 and the first 99 telemetry fit, the
        // other 901 telemetry are shed; sweeps 2..10 and the alerts are queued beyond the bound.
        Assert.Equal(901, refused);
        Assert.Equal(114, rig.Pipeline.FindVm("vm")!.Queued);

        rig.Run();
        // The detector queue (capacity 10) took sweep 1 and 9 telemetry before filling: 90 shed there,
        // sweeps 2..10 queued beyond the bound.
        rig.Clock.Advance(TimeSpan.FromSeconds(1));
        var stats = rig.Pipeline.Statistics;
        Assert.Equal(901, stats.ShedAtIngress);
        Assert.Equal(991, stats.Shed);
        Assert.Equal(901, stats.ShedByStage["ingress"]);
        Assert.Equal(90, stats.ShedByStage["slow"]);
        Assert.Equal(19, slow.Seen.Count);
        Assert.Equal(Enumerable.Range(0, 9), slow.Pids);
        Assert.Equal(Enumerable.Range(1, 10).Select(i => (long)i), slow.Seen.Select(s => s.Event).OfType<SweepTick>().Select(s => s.Number));

        // Every alert: 10 from the detector, 5 published.
        Assert.Equal(15, rig.Alerts.Count());
        Assert.Equal(Enumerable.Range(1, 10).Select(i => "sweep-" + i), rig.Alerts.Where(a => a.Detector == "slow").Select(a => a.Key));
        var overflow = Assert.Single(rig.Faults);
        Assert.Equal(DetectorFaultKind.Overflow, overflow.Fault);
        Assert.Contains("90 telemetry events shed", overflow.Message, StringComparison.Ordinal);

        // Nothing reported before the interval; then one report per stage, with exact counts.
        Assert.Empty(rig.ShedReports);
        rig.Clock.Advance(TimeSpan.FromSeconds(9));
        var reports = rig.ShedReports.ToList();
        Assert.Equal(2, reports.Count);
        Assert.Equal(("ingress", 901L, 901L), (reports[0].Stage, reports[0].Count, reports[0].Total));
        Assert.Equal(("slow", 90L, 90L), (reports[1].Stage, reports[1].Count, reports[1].Total));
        Assert.All(reports, r => Assert.Equal(Ev.T0 + TimeSpan.FromSeconds(10), r.Time));

        // No more shedding: no more reports.
        rig.Clock.Advance(TimeSpan.FromMinutes(5));
        Assert.Equal(2, rig.ShedReports.Count());

        // More shedding later: a new report with the new count and the running total.
        for (int i = 0; i < 150; i++)
            rig.Pipeline.Publish(Ev.Proc("vm", 5000 + i));
        rig.Clock.Advance(TimeSpan.FromSeconds(10));
        var last = rig.ShedReports.Where(r => r.Stage == "ingress").Last();
        Assert.Equal((50L, 951L), (last.Count, last.Total));
        Assert.Equal((90L, 180L), rig.ShedReports.Where(r => r.Stage == "slow").Select(r => (r.Count, r.Total)).Last());
    }

    [Fact]
    public void Ingress_bound_is_per_vm()
    {
        using var rig = new Rig(new PipelineOptions { IngressCapacity = 3 });
        rig.Linux("a");
        rig.Linux("b");
        var accepted = Enumerable.Range(0, 5).Select(i => rig.Pipeline.Publish(Ev.Proc("a", i))).ToList();
        Assert.Equal([true, true, true, false, false], accepted);
        Assert.True(rig.Pipeline.Publish(Ev.Proc("b", 0)));
        Assert.True(rig.Pipeline.Publish(Ev.Sweep("a", 1)));
        rig.Run();
        Assert.Equal(5, rig.Output.Count);
        Assert.Equal(2, rig.Pipeline.Statistics.ShedAtIngress);
    }
}

public class IsolationTests
{
    [Fact]
    public void Throwing_detector_faults_on_its_error_stream_and_the_other_detector_gets_everything()
    {
        using var rig = new Rig();
        var faults = new List<DetectorFault>();
        using var sub = rig.Pipeline.Faults.Subscribe(faults.Add);
        var thrower = new TestDetector("thrower", async (e, c) =>
        {
            var p = (ProcessStarted)e;
            if (p.Pid % 2 == 0)
                throw new InvalidOperationException("boom " + p.Pid);
            if (p.Pid % 3 == 0)
            {
                await c.SleepAsync(TimeSpan.FromMilliseconds(1));
                throw new FormatException("late boom " + p.Pid);
            }
        });
        var good = new TestDetector("good", (e, c) => { c.RaiseFor(e, "good-" + ((ProcessStarted)e).Pid); return ValueTask.CompletedTask; });
        rig.Pipeline.AddDetector(_ => thrower);
        rig.Pipeline.AddDetector(_ => good);
        rig.Linux("vm");

        for (int i = 0; i < 10; i++)
            rig.Pipeline.Publish(Ev.Proc("vm", i));
        rig.Clock.Advance(TimeSpan.FromSeconds(1));

        Assert.Equal(Enumerable.Range(0, 10), thrower.Pids);
        Assert.Equal(Enumerable.Range(0, 10).Select(i => "good-" + i), rig.Alerts.Select(a => a.Key));
        // Pids 0,2,4,6,8 threw synchronously; 3 and 9 after an await.
        Assert.Equal(7, faults.Count);
        Assert.All(faults, f => Assert.Equal(("thrower", DetectorFaultKind.Exception, "vm"), (f.Detector, f.Fault, f.VmId)));
        Assert.Equal(["boom 0", "boom 2", "late boom 3", "boom 4", "boom 6", "boom 8", "late boom 9"],
            faults.Select(f => f.Message[(f.Message.IndexOf(':', StringComparison.Ordinal) + 2)..]));
        var thrownOn = rig.Output.OfType<ProcessStarted>().Where(p => p.Pid % 2 == 0 || p.Pid % 3 == 0 && p.Pid % 2 == 1).Select(p => (Guid?)p.Id);
        Assert.Equal(thrownOn.Order(), faults.Select(f => f.EventId).Order());
        Assert.Equal(7, rig.Pipeline.Statistics.Faults);
        Assert.Equal(20, rig.Pipeline.Statistics.Analyzed);
    }

    [Fact]
    public void Throwing_filter_is_a_fault_too()
    {
        using var rig = new Rig();
        var bad = new TestDetector("bad-filter", accepts: _ => throw new InvalidOperationException("filter"));
        var good = new TestDetector("good");
        rig.Pipeline.AddDetector(_ => bad);
        rig.Pipeline.AddDetector(_ => good);
        rig.Linux("vm");
        rig.Pipeline.Publish(Ev.Proc("vm", 1));
        rig.Run();
        Assert.Single(good.Seen);
        Assert.Empty(bad.Seen);
        Assert.Equal("Accepts threw InvalidOperationException: filter", Assert.Single(rig.Faults).Message);
    }

    [Fact]
    public void Stalling_detector_times_out_sheds_its_telemetry_and_recovers_while_the_others_run()
    {
        using var rig = new Rig();
        var staller = new TestDetector("staller", async (e, c) =>
        {
            if (e is ProcessStarted { Pid: 3 })
                await c.SleepAsync(TimeSpan.FromHours(1)); // ignores its token: only time brings it back
        }, budget: TimeSpan.FromSeconds(1));
        var good = new TestDetector("good", (e, c) => { c.RaiseFor(e, "good-" + e.Sequence); return ValueTask.CompletedTask; });
        rig.Pipeline.AddDetector(_ => staller);
        rig.Pipeline.AddDetector(_ => good);
        rig.Linux("vm");

        for (int i = 0; i < 10; i++)
            rig.Pipeline.Publish(Ev.Proc("vm", i));
        rig.Run();
        Assert.Equal([0, 1, 2, 3], staller.Pids);
        Assert.Equal(10, good.Seen.Count);
        Assert.Empty(rig.Faults);

        rig.Clock.Advance(TimeSpan.FromSeconds(1));
        var timeout = Assert.Single(rig.Faults);
        Assert.Equal(DetectorFaultKind.Timeout, timeout.Fault);
        Assert.Equal("staller", timeout.Detector);
        Assert.Equal(rig.Output.OfType<ProcessStarted>().Single(p => p.Pid == 3).Id, timeout.EventId);
        Assert.Equal(Ev.T0 + TimeSpan.FromSeconds(1), timeout.Time);
        Assert.True(staller.Tokens[3].IsCancellationRequested);
        Assert.Equal(6, rig.Pipeline.Statistics.ShedByStage["staller"]); // its backlog, pids 4..9

        // While it is stalled: its telemetry is shed, its sweep kept, the other detector sees everything.
        for (int i = 10; i < 15; i++)
            rig.Pipeline.Publish(Ev.Proc("vm", i));
        rig.Pipeline.Publish(Ev.Sweep("vm", 1));
        rig.Clock.Advance(TimeSpan.FromMinutes(1));
        Assert.Equal(11, rig.Pipeline.Statistics.ShedByStage["staller"]);
        Assert.Equal(16, good.Seen.Count);
        Assert.Equal(16, rig.Alerts.Count());
        Assert.Equal(4, staller.Seen.Count);

        rig.Clock.Advance(TimeSpan.FromHours(1));
        Assert.Equal([DetectorFaultKind.Timeout, DetectorFaultKind.Recovered, DetectorFaultKind.Overflow], rig.Faults.Select(f => f.Fault));
        Assert.Equal(Ev.T0 + TimeSpan.FromHours(1), rig.Faults.ElementAt(1).Time);
        Assert.Equal("sweep", staller.Seen[^1].Event.Kind);
        Assert.Equal(5, staller.Seen.Count);
        Assert.False(staller.Tokens[^1].IsCancellationRequested); // a fresh token after recovery

        // Back to normal.
        rig.Pipeline.Publish(Ev.Proc("vm", 99));
        rig.Run();
        Assert.Equal(99, staller.Pids.Last());
    }

    [Fact]
    public void Stalled_detector_that_honours_its_token_recovers_at_once()
    {
        using var rig = new Rig();
        var staller = new TestDetector("polite", async (e, c) =>
            await c.DelayAsync(TimeSpan.FromDays(1)), budget: TimeSpan.FromMilliseconds(500));
        rig.Pipeline.AddDetector(_ => staller);
        rig.Linux("vm");
        rig.Pipeline.Publish(Ev.Proc("vm", 1));
        rig.Run();
        rig.Clock.Advance(TimeSpan.FromMilliseconds(499));
        Assert.Empty(rig.Faults);
        rig.Clock.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Equal([DetectorFaultKind.Timeout, DetectorFaultKind.Recovered], rig.Faults.Select(f => f.Fault));
    }
}

public class RegistrationTests
{
    [Fact]
    public void Detectors_are_added_and_removed_while_running()
    {
        using var rig = new Rig();
        var vm = rig.Linux("vm");
        rig.Pipeline.Publish(Ev.Proc("vm", 1));
        rig.Run();

        var late = new TestDetector("late");
        var registration = rig.Pipeline.AddDetector(_ => late);
        Assert.Equal(["late"], vm.Detectors.Select(d => d.Id));
        rig.Pipeline.Publish(Ev.Proc("vm", 2));
        rig.Pipeline.Publish(Ev.Proc("vm", 3));
        rig.Run();
        Assert.Equal([2, 3], late.Pids);

        registration.Dispose();
        Assert.Empty(vm.Detectors);
        rig.Pipeline.Publish(Ev.Proc("vm", 4));
        rig.Run();
        Assert.Equal([2, 3], late.Pids);
        Assert.Equal(4, rig.Output.Count);
    }

    [Fact]
    public void Removing_a_stalled_detector_cancels_it_and_drops_its_queue()
    {
        using var rig = new Rig();
        var vm = rig.Linux("vm");
        var staller = new TestDetector("staller", async (e, c) => await c.SleepAsync(TimeSpan.FromHours(1)));
        var registration = vm.AddDetector(staller);
        rig.Pipeline.Publish(Ev.Proc("vm", 1));
        rig.Pipeline.Publish(Ev.Sweep("vm", 1));
        rig.Run();
        registration.Dispose();
        Assert.True(staller.Tokens[0].IsCancellationRequested);
        rig.Clock.Advance(TimeSpan.FromHours(2));
        Assert.Single(staller.Seen);
        Assert.Empty(rig.Faults);
    }

    [Fact]
    public void Factory_runs_per_vm_including_later_ones_and_os_support_is_enforced()
    {
        using var rig = new Rig();
        var made = new List<string>();
        rig.Pipeline.AddDetector(g =>
        {
            made.Add(g.VmId);
            return g.VmId == "skip" ? null : new TestDetector("per-vm");
        });
        rig.Pipeline.AddDetector(_ => new TestDetector("windows-only", os: GuestOs.Windows));
        var a = rig.Linux("a");
        var skip = rig.Linux("skip");
        var win = rig.Pipeline.AddVm(new GuestView("win", GuestOs.Windows));

        Assert.Equal(["a", "skip", "win"], made);
        Assert.Equal(["per-vm"], a.Detectors.Select(d => d.Id));
        Assert.Empty(skip.Detectors);
        Assert.Equal(["per-vm", "windows-only"], win.Detectors.Select(d => d.Id));
        Assert.Throws<ArgumentException>(() => a.AddDetector(new TestDetector("w", os: GuestOs.Windows)));
        Assert.Throws<ArgumentException>(() => rig.Linux("a"));
    }

    [Fact]
    public void Throwing_factory_is_reported_and_the_vm_still_works()
    {
        using var rig = new Rig();
        rig.Pipeline.AddDetector(_ => throw new InvalidOperationException("no profile"));
        var ok = new TestDetector("ok");
        rig.Pipeline.AddDetector(_ => ok);
        rig.Linux("vm");
        rig.Pipeline.Publish(Ev.Proc("vm", 1));
        rig.Run();
        var fault = Assert.Single(rig.Faults);
        Assert.Equal("(factory)", fault.Detector);
        Assert.Contains("no profile", fault.Message, StringComparison.Ordinal);
        Assert.Single(ok.Seen);
    }

    [Fact]
    public void Removed_vm_stops_and_its_detectors_are_cancelled()
    {
        using var rig = new Rig();
        var d = new TestDetector("d", async (e, c) => await c.SleepAsync(TimeSpan.FromHours(1)));
        rig.Pipeline.AddDetector(_ => d);
        rig.Linux("vm");
        rig.Pipeline.Publish(Ev.Proc("vm", 1));
        rig.Run();
        Assert.True(rig.Pipeline.RemoveVm("vm"));
        Assert.True(d.Tokens[0].IsCancellationRequested);
        Assert.False(rig.Pipeline.Publish(Ev.Proc("vm", 2)));
        Assert.Equal(1, rig.Pipeline.Statistics.Unrouted);
    }

    [Fact]
    public async Task Removing_a_vm_waits_until_no_detector_call_is_still_running()
    {
        using var rig = new Rig();
        var release = new TaskCompletionSource();
        bool touchedAfterRelease = false;
        // A detector that ignores cancellation while it "reads guest memory".
        var d = new TestDetector("slow", async (e, c) =>
        {
            await release.Task.ConfigureAwait(false);
            touchedAfterRelease = true;
        });
        rig.Pipeline.AddDetector(_ => d);
        rig.Linux("vm");
        rig.Pipeline.Publish(Ev.Proc("vm", 1));
        rig.Run();
        Assert.False(await rig.Pipeline.RemoveVmAsync("vm", TimeSpan.FromMilliseconds(50)));   // still inside the call
        Assert.False(await rig.Pipeline.RemoveVmAsync("vm", TimeSpan.FromSeconds(1)));         // already removed
        rig.Linux("vm2");
        rig.Pipeline.Publish(Ev.Proc("vm2", 1));
        rig.Run();
        var removal = rig.Pipeline.RemoveVmAsync("vm2", TimeSpan.FromSeconds(30));
        Assert.False(removal.IsCompleted);
        release.SetResult();
        Assert.True(await removal);
        Assert.True(touchedAfterRelease);
    }
}

public class DeduplicationTests
{
    private sealed class Condition
    {
        public bool Present { get; set; } = true;
    }

    [Fact]
    public void Same_key_alerts_once_while_the_condition_lasts_and_again_when_it_returns()
    {
        using var rig = new Rig();
        var condition = new Condition();
        rig.Pipeline.AddDetector(_ => new TestDetector("hook", (e, c) =>
        {
            if (e is SweepTick && condition.Present)
                c.RaiseFor(e, "hook:62");
            return ValueTask.CompletedTask;
        }));
        var vm = rig.Linux("vm");

        void Sweep(long n)
        {
            rig.Pipeline.Publish(Ev.Sweep("vm", n));
            rig.Run();
        }

        Sweep(1);
        Sweep(2);
        Sweep(3);
        Assert.Single(rig.Alerts);
        Assert.Equal(2, rig.Pipeline.Statistics.AlertsSuppressed);

        condition.Present = false;
        Sweep(4);
        condition.Present = true;
        Sweep(5);
        Assert.Equal(2, rig.Alerts.Count());
        Sweep(6);
        Assert.Equal(2, rig.Alerts.Count());

        Assert.True(vm.ResetAlertKey("hook:62"));
        Sweep(7);
        Assert.Equal(3, rig.Alerts.Count());
        Assert.Equal(3, rig.Pipeline.Statistics.AlertsSuppressed);
        Assert.Equal(3, rig.Pipeline.Statistics.Alerts);
    }

    [Fact]
    public void Keys_raised_between_sweeps_expire_by_time_when_configured()
    {
        using var rig = new Rig(new PipelineOptions { AlertKeyExpiry = TimeSpan.FromMinutes(1) });
        rig.Pipeline.AddDetector(_ => new TestDetector("w", (e, c) => { c.RaiseFor(e, "write"); return ValueTask.CompletedTask; }));
        rig.Linux("vm");
        rig.Pipeline.Publish(Ev.Proc("vm", 1));
        rig.Run();
        rig.Clock.Advance(TimeSpan.FromSeconds(30));
        rig.Pipeline.Publish(Ev.Proc("vm", 2));
        rig.Run();
        Assert.Single(rig.Alerts);
        rig.Clock.Advance(TimeSpan.FromSeconds(61));
        rig.Pipeline.Publish(Ev.Proc("vm", 3));
        rig.Run();
        Assert.Equal(2, rig.Alerts.Count());
    }

    [Fact]
    public void Negative_expiry_turns_deduplication_off()
    {
        using var rig = new Rig(new PipelineOptions { AlertKeyExpirySweeps = -1 });
        rig.Pipeline.AddDetector(_ => new TestDetector("w", (e, c) => { c.RaiseFor(e, "same"); return ValueTask.CompletedTask; }));
        rig.Linux("vm");
        for (int i = 0; i < 3; i++)
            rig.Pipeline.Publish(Ev.Proc("vm", i));
        rig.Run();
        Assert.Equal(3, rig.Alerts.Count());
    }

    [Fact]
    public void Keys_are_per_vm()
    {
        using var rig = new Rig();
        rig.Pipeline.AddDetector(_ => new TestDetector("w", (e, c) => { c.RaiseFor(e, "same"); return ValueTask.CompletedTask; }));
        rig.Linux("a");
        rig.Linux("b");
        rig.Pipeline.Publish(Ev.Proc("a", 1));
        rig.Pipeline.Publish(Ev.Proc("b", 1));
        rig.Run();
        Assert.Equal(["a", "b"], rig.Alerts.Select(a => a.VmId).Order());
    }
}
