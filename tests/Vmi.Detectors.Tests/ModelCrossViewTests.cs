using Vmi.Linux.Model;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Detectors.Tests;

/// <summary>The cross-views the detectors rely on, checked against the real lab kernel in the dump.</summary>
[Collection(LabDumpCollection.Name)]
public sealed class ModelCrossViewTests(LabDumpFixture lab, ITestOutputHelper output)
{
    [Fact]
    public void Pid_table_covers_every_process_and_thread()
    {
        using AttackableGuest guest = lab.Attack();
        KernelList<PidEntry> table = guest.Kernel.GetPidTable();
        Assert.True(table.IsComplete, string.Join("; ", table.Issues));
        var processes = guest.Kernel.GetProcesses().Items;
        output.WriteLine($"{table.Items.Count} pids, {processes.Count} processes");
        var byPid = table.Items.ToDictionary(p => p.Pid);
        foreach (LinuxProcess p in processes.Where(p => p.Pid != 0))
        {
            Assert.True(byPid.TryGetValue(p.Pid, out PidEntry? entry), $"pid {p.Pid} ({p.Comm}) is not in the pid table");
            Assert.Equal(p.TaskAddress, entry.TaskAddress);
            Assert.Equal(p.Tgid, entry.Tgid);
            foreach (int tid in p.Threads)
            {
                Assert.True(byPid.TryGetValue(tid, out PidEntry? thread), $"thread {tid} of {p.Pid} is not in the pid table");
                Assert.Equal(p.Tgid, thread.Tgid);
            }
        }
        // And the other way: every leader the pid table knows is on the task list (nothing hidden in the lab).
        var tasks = processes.Select(p => p.TaskAddress).ToHashSet();
        foreach (PidEntry e in table.Items.Where(e => e.TaskAddress != 0 && e.Pid == e.Tgid))
            Assert.Contains(e.TaskAddress, tasks);
    }

    [Fact]
    public void Run_queue_tasks_are_real_tasks()
    {
        using AttackableGuest guest = lab.Attack();
        KernelList<RunQueueTask> rq = guest.Kernel.GetRunQueueTasks();
        Assert.True(rq.IsComplete, string.Join("; ", rq.Issues));
        Assert.NotEmpty(rq.Items);
        Assert.Contains(rq.Items, t => t.IsCurrent);
        var pids = guest.Kernel.GetPidTable().Items.ToDictionary(p => p.Pid);
        foreach (RunQueueTask t in rq.Items)
        {
            output.WriteLine($"cpu {t.Cpu} pid {t.Pid} tgid {t.Tgid} 0x{t.TaskAddress:x} current={t.IsCurrent}");
            LinuxProcess? task = guest.Kernel.ReadTask(t.TaskAddress);
            Assert.NotNull(task);
            if (t.Pid == 0)
                continue; // a CPU's idle task (swapper/N) has no pid
            Assert.Equal(t.TaskAddress, pids[t.Pid].TaskAddress);
        }
    }

    [Fact]
    public void Carving_finds_every_listed_module()
    {
        using AttackableGuest guest = lab.Attack();
        var listed = guest.Kernel.GetModules().Items;
        KernelList<CarvedModule> carved = guest.Kernel.CarveModules();
        Assert.True(carved.IsComplete, string.Join("; ", carved.Issues));
        foreach (CarvedModule m in carved.Items)
            output.WriteLine($"{m.Name} 0x{m.Address:x} state {m.State} core 0x{m.CoreBase:x} size {m.Size}");
        Assert.NotEmpty(listed);
        foreach (LinuxModule m in listed)
        {
            CarvedModule c = Assert.Single(carved.Items, c => c.Address == m.ModuleAddress);
            Assert.Equal(m.Name, c.Name);
            Assert.Equal(m.CoreBase, c.CoreBase);
            Assert.Equal(m.Size, c.Size);
        }
        Assert.Equal(listed.Count, carved.Items.Count);
    }

    [Fact]
    public void Jump_entries_point_into_kernel_or_init_text()
    {
        using AttackableGuest guest = lab.Attack();
        LinuxKernel k = guest.Kernel;
        KernelList<JumpEntry> entries = k.GetJumpEntries();
        Assert.True(entries.IsComplete, string.Join("; ", entries.Issues));
        output.WriteLine($"{entries.Items.Count} jump entries; text 0x{k.KernelText.Start:x}..0x{k.KernelText.End:x}, init 0x{k.InitText.Start:x}..0x{k.InitText.End:x}");
        Assert.True(entries.Items.Count > 1000);
        // Init entries sit in init text or, for exit functions (.exit.text), elsewhere in the init section.
        (ulong initStart, ulong initEnd) = k.InitSection;
        Assert.True(initStart <= k.InitText.Start && k.InitText.End <= initEnd);
        foreach (JumpEntry e in entries.Items)
        {
            bool inText = k.IsKernelText(e.Code) || (e.Code >= initStart && e.Code < initEnd);
            Assert.True(inText, $"jump entry 0x{e.EntryAddress:x}: code 0x{e.Code:x} outside kernel text");
            Assert.True(k.IsKernelText(e.Target) || (e.Target >= initStart && e.Target < initEnd), $"target 0x{e.Target:x}");
        }
    }

    [Fact]
    public void Processes_carry_credentials_and_exe_mode()
    {
        using AttackableGuest guest = lab.Attack();
        var processes = guest.Kernel.GetProcesses().Items;
        LinuxProcess user = processes.Single(p => p.Comm == LabDumpFixture.UserProcessComm);
        Assert.NotEqual(0UL, user.CredAddress);
        Assert.Equal(user.CredAddress, user.RealCredAddress);
        Assert.Equal(LabDumpFixture.UserId, user.Suid);
        Assert.Equal(LabDumpFixture.UserId, user.Fsuid);
        Assert.NotNull(user.ExeMode);
        Assert.Equal(0x8000u, user.ExeMode!.Value & 0xF000); // S_IFREG
        Assert.Equal(0u, user.ExeMode.Value & 0x800);       // not set-uid
        LinuxCred? cred = guest.Kernel.ReadCred(user.CredAddress);
        Assert.NotNull(cred);
        Assert.Equal(LabDumpFixture.UserId, cred.Euid);
        Assert.Equal(LabDumpFixture.UserId, cred.Egid);
        Assert.All(processes.Where(p => p.IsKernelThread), p => Assert.Null(p.ExeMode));
        LinuxProcess? again = guest.Kernel.ReadTask(user.TaskAddress);
        Assert.Equal(user.Pid, again?.Pid);
    }
}

