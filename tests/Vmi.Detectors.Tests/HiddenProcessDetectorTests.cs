using System.Globalization;
using Vmi.Detectors.Linux;
using Vmi.Events;
using Vmi.Linux.Model;
using Vmi.Pipeline;
using Xunit;

namespace Vmi.Detectors.Tests;

[Collection(LabDumpCollection.Name)]
public sealed class HiddenProcessDetectorTests(LabDumpFixture lab)
{
    [Fact]
    public void Benign_lab_has_no_hidden_process()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new HiddenProcessDetector(), guest.Guest);
        Assert.Empty(h.Sweep().Alerts);
        Assert.Empty(h.Sweep().Alerts);
        Assert.Empty(h.Faults);
    }

    [Fact]
    public void Task_unlinked_from_the_task_list_is_found_through_the_pid_table()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new HiddenProcessDetector(), guest.Guest);
        Assert.Empty(h.Sweep().Alerts);

        LinuxProcess victim = guest.Kernel.GetProcesses().Items.Single(p => p.Comm == LabDumpFixture.UserProcessComm);
        guest.UnlinkTask(victim.TaskAddress);
        Assert.DoesNotContain(guest.Kernel.GetProcesses().Items, p => p.Pid == victim.Pid);

        DetectorOutput output = h.Sweep();
        Assert.Empty(output.Faults);
        Alert alert = Assert.Single(output.Alerts);
        Assert.Equal(victim.Pid, alert.Pid);
        Assert.Equal(LabDumpFixture.UserProcessComm, alert.ProcessName);
        Assert.Equal(victim.Pid.ToString(CultureInfo.InvariantCulture), alert.Evidence["pid"]);
        Assert.Equal($"0x{victim.TaskAddress:x}", alert.Evidence["task"]);
        Assert.Contains("pid table", alert.Evidence["views"], StringComparison.Ordinal);
        Assert.Contains(AttackTechnique.Rootkit, alert.Techniques);
        IntegrityFinding finding = Assert.Single(output.Findings);
        Assert.Equal(victim.TaskAddress, finding.Address);

        // The pipeline raises a condition once: the next sweep stays quiet.
        Assert.Empty(h.Sweep().Alerts);
    }

    [Fact]
    public void Confirm_across_sweeps_alerts_on_the_second_look()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new HiddenProcessDetector(new HiddenProcessDetectorOptions { ConfirmAcrossSweeps = true }), guest.Guest);
        Assert.Empty(h.Sweep().Alerts);
        LinuxProcess victim = guest.Kernel.GetProcesses().Items.Single(p => p.Comm == LabDumpFixture.UserProcessComm);
        guest.UnlinkTask(victim.TaskAddress);
        Assert.Empty(h.Sweep().Alerts);
        Alert alert = Assert.Single(h.Sweep().Alerts);
        Assert.Equal(victim.Pid, alert.Pid);
    }

    [Fact]
    public void Exiting_task_is_not_hidden()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new HiddenProcessDetector(), guest.Guest);
        LinuxProcess victim = guest.Kernel.GetProcesses().Items.Single(p => p.Comm == LabDumpFixture.UserProcessComm);
        // release_task() unlinks an exiting task: PF_EXITING is set by then.
        guest.WriteUInt32(victim.TaskAddress + (ulong)guest.OffsetOf("task_struct", "flags"), victim.Flags | 0x4);
        guest.UnlinkTask(victim.TaskAddress);
        Assert.Empty(h.Sweep().Alerts);
    }
}
