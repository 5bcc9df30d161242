using Vmi.Detectors.Linux;
using Vmi.Events;
using Vmi.Pipeline;
using Xunit;

namespace Vmi.Detectors.Tests;

/// <summary>
/// The SDK guide's worked example: a detector test is a <see cref="DetectorHarness"/> fed events (and,
/// for sweeps, a guest), asserting on what came out. No sleeps: the harness runs on a virtual clock.
/// </summary>
[Collection(LabDumpCollection.Name)]
public sealed class ExampleDetectorTests(LabDumpFixture lab)
{
    [Fact]
    public void Exec_from_tmp_alerts_with_evidence()
    {
        using var h = new DetectorHarness(new ExampleDetector());
        DetectorOutput output = h.ProcessExec(4242, "payload", "/tmp/.x/payload", uid: 33);

        Alert alert = Assert.Single(output.Alerts);
        Assert.Equal(ExampleDetector.Id, alert.Detector);
        Assert.Equal("tmp-exec:4242:/tmp/.x/payload", alert.Key);
        Assert.Equal(4242, alert.Pid);
        Assert.Equal("/tmp/", alert.Evidence["directory"]);
        Assert.Equal("33", alert.Evidence["uid"]);
        Assert.Equal(Severity.Medium, alert.Severity);
    }

    [Fact]
    public void Ordinary_and_allowed_programs_do_not_alert()
    {
        using var h = new DetectorHarness(new ExampleDetector(new ExampleDetectorOptions { AllowedPrograms = ["/tmp/installer"] }));
        Assert.Empty(h.ProcessExec(1, "bash", "/usr/bin/bash").Alerts);
        Assert.Empty(h.ProcessExec(2, "installer", "/tmp/installer").Alerts);
        Assert.Empty(h.ProcessExec(3, "kworker", path: null).Alerts);
        Assert.Empty(h.ProcessStarted(4, "tmpfile", exePath: "/usr/bin/tmpfile").Alerts);
        Assert.Empty(h.Faults);
    }

    [Fact]
    public void Sweep_of_the_lab_dump_finds_the_process_running_from_tmp_once()
    {
        // The lab dump really runs /tmp/vmi-user (the fixture's unprivileged process).
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new ExampleDetector(), guest.Guest);
        Alert alert = Assert.Single(h.Sweep().Alerts);
        Assert.Equal(LabDumpFixture.UserProcessComm, alert.ProcessName);
        Assert.Equal("/tmp/" + LabDumpFixture.UserProcessComm, alert.Evidence["executable"]);
        Assert.Equal("1000", alert.Evidence["uid"]);
        // Same condition on the next sweep: the pipeline deduplicates on the key.
        Assert.Empty(h.Sweep().Alerts);
    }
}
