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

[Collection(LabDumpCollection.Name)]
public sealed class KernelPagingTests(LabDumpFixture lab)
{
    /// <summary>
    /// Whatever CR3 the model is started from (any process's page table), kernel addresses are translated
    /// through the kernel's own init_top_pgt: a process's table is freed and reused when it exits.
    /// </summary>
    [Fact]
    public void The_kernel_model_uses_init_top_pgt_whatever_process_cr3_it_starts_from()
    {
        using AttackableGuest guest = lab.Attack();
        Assert.True(lab.Profile.Symbols.TryGetAddress("init_top_pgt", out ulong pgd));
        Assert.True(new Vmi.Memory.VirtualMemory(lab.BaseMemory, lab.KernelPaging).TryTranslate(pgd, out Vmi.Memory.Translation t));
        ulong own = t.PhysicalAddress;
        Assert.Equal(own, guest.Kernel.KernelPaging.Cr3);
        var users = guest.Kernel.GetProcesses().Items.Where(p => p.MmAddress != 0).ToList();
        Assert.NotEmpty(users);
        foreach (LinuxProcess p in users)
        {
            Assert.NotEqual(own, p.PageTablePhysical);
            var kernel = lab.Profile.CreateKernel(lab.BaseMemory, lab.KernelPaging with { Cr3 = p.PageTablePhysical });
            Assert.Equal(own, kernel.KernelPaging.Cr3);
            Assert.Equal(users.Count, kernel.GetProcesses().Items.Count(x => x.MmAddress != 0));
        }
        // A CR3 that maps nothing (a freed, zeroed table) cannot find the symbol: the given context is kept.
        var zeroed = lab.Profile.KernelPagingOf(lab.BaseMemory, lab.KernelPaging with { Cr3 = 0 });
        Assert.Equal(0UL, zeroed.Cr3);
    }
}
