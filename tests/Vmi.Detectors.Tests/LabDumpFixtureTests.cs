using Vmi.Linux.Model;
using Xunit;

namespace Vmi.Detectors.Tests;

[Collection(LabDumpCollection.Name)]
public sealed class LabDumpFixtureTests(LabDumpFixture lab)
{
    [Fact]
    public void Dump_has_the_lab_processes_modules_and_an_unprivileged_process()
    {
        using AttackableGuest guest = lab.Attack();
        KernelList<LinuxProcess> processes = guest.Kernel.GetProcesses();
        Assert.True(processes.IsComplete, string.Join("; ", processes.Issues));
        LinuxProcess user = Assert.Single(processes.Items, p => p.Comm == LabDumpFixture.UserProcessComm);
        Assert.Equal(LabDumpFixture.UserId, user.Uid);
        Assert.Equal(LabDumpFixture.UserId, user.Euid);
        var modules = guest.Kernel.GetModules().Items.Select(m => m.Name).ToList();
        foreach (string m in LabDumpFixture.LabModules)
            Assert.Contains(m, modules);
    }

    [Fact]
    public void Attacks_stay_in_their_own_overlay()
    {
        using AttackableGuest attacked = lab.Attack();
        LinuxProcess victim = attacked.Kernel.GetProcesses().Items.Single(p => p.Comm == LabDumpFixture.UserProcessComm);
        attacked.UnlinkTask(victim.TaskAddress);
        Assert.DoesNotContain(attacked.Kernel.GetProcesses().Items, p => p.TaskAddress == victim.TaskAddress);
        Assert.True(attacked.Memory.DirtyPages > 0);

        using AttackableGuest clean = lab.Attack();
        Assert.Contains(clean.Kernel.GetProcesses().Items, p => p.TaskAddress == victim.TaskAddress);
    }
}
