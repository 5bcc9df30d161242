using Vmi.Events;
using Xunit;

namespace Vmi.Pipeline.Tests;

/// <summary>The SDK's test helper, used the way a detector author would.</summary>
public class HarnessTests
{
    /// <summary>A sample detector: alerts when a process runs as root from an unprivileged parent it has seen.</summary>
    private sealed class SetuidDetector : IDetector
    {
        private readonly HashSet<int> _unprivileged = [];

        public DetectorInfo Info { get; } = new("setuid-root", "Unexpected root", "a process became root", GuestOs.Linux, [AttackTechnique.AbuseElevationControl])
        {
            TimeBudget = TimeSpan.FromSeconds(1),
        };

        public bool Accepts(VmiEvent e) => e is ProcessStarted or SweepTick;

        public async ValueTask AnalyzeAsync(VmiEvent e, DetectorContext context)
        {
            switch (e)
            {
                case ProcessStarted { Euid: 0 } p when _unprivileged.Contains(p.Ppid):
                    context.Raise("setuid-root:" + p.Pid, $"pid {p.Pid} ({p.Name}) is root, parent {p.Ppid} was not", Severity.High,
                        new Dictionary<string, string> { ["ppid"] = p.Ppid.ToString(System.Globalization.CultureInfo.InvariantCulture) }, pid: p.Pid, processName: p.Name);
                    break;
                case ProcessStarted { Uid: > 0 } p:
                    _unprivileged.Add(p.Pid);
                    break;
                case SweepTick { Number: 99 }:
                    await context.DelayAsync(TimeSpan.FromDays(1));
                    break;
                case SweepTick s:
                    context.Report("sweep " + s.Number, "checked", Severity.Info);
                    break;
            }
        }
    }

    [Fact]
    public void Harness_returns_what_each_event_produced()
    {
        using var h = new DetectorHarness(new SetuidDetector());
        Assert.Empty(h.ProcessStarted(100, "sshd", uid: 1000, euid: 1000).Events);
        var output = h.ProcessStarted(101, "exploit", ppid: 100, uid: 1000, euid: 0);
        var alert = Assert.Single(output.Alerts);
        Assert.Equal(("test-vm", "setuid-root", "setuid-root:101", 101), (alert.VmId, alert.Detector, alert.Key, alert.Pid));
        Assert.Equal(AttackTechnique.AbuseElevationControl, Assert.Single(alert.Techniques));
        Assert.Equal(VirtualClock.DefaultStart, alert.Time);

        var finding = Assert.Single(h.Sweep().Findings);
        Assert.Equal("sweep 1", finding.Subject);
        Assert.Single(h.Alerts);
        Assert.Equal(2, h.Produced.Count);
    }

    [Fact]
    public void Harness_applies_the_pipeline_rules_in_virtual_time()
    {
        using var h = new DetectorHarness(new SetuidDetector());
        var later = VirtualClock.DefaultStart.AddMinutes(5);
        var output = h.Send(new SweepTick { VmId = "ignored", Time = later, Reason = SweepReason.Requested, Number = 99 });
        Assert.Empty(output.Events);
        Assert.Equal(later, h.Clock.Now);

        var stalled = h.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal([DetectorFaultKind.Timeout, DetectorFaultKind.Recovered], stalled.Faults.Select(f => f.Fault));
    }

    [Fact]
    public void Harness_refuses_a_detector_for_another_os()
    {
        Assert.Throws<ArgumentException>(() => new DetectorHarness(new SetuidDetector(), new GuestView("w", GuestOs.Windows)));
    }
}
