using Vmi.Events;
using Vmi.Linux.Model;
using Vmi.Memory;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Integration.Tests;

/// <summary>
/// The rootkit's attacks done from the host by writing guest physical memory (no module, no guest
/// code): the hooks see nothing (the writes bypass the guest's page tables), the sweeps must catch each
/// one. Each attack is undone after its alert, so the guest stays healthy for the next.
/// </summary>
[Collection("host attack lab")]
public sealed class HostAttackDetectionTests(HostAttackLabFixture lab, ITestOutputHelper output)
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task Attacks_written_into_guest_memory_from_the_host_are_each_alerted()
    {
        await lab.WaitForSweepsAsync(2);
        Assert.Empty(lab.Alerts.Select(a => $"{a.Alert.Detector}: {a.Alert.Title}"));
        LinuxKernel k = lab.Session.Kernel;
        var kmem = new VirtualMemory(k.Memory, k.KernelPaging);
        using var host = new HostMemoryWriter(lab.Guest, kmem);
        var latencies = new List<string>();
        ulong Sym(string name) => k.Symbols.TryGetAddress(name, out ulong a) ? a : throw new InvalidOperationException(name);
        ulong U64(ulong va) => kmem.TryReadUInt64(va, out ulong v) ? v : throw new InvalidOperationException($"0x{va:x}");

        // (a) sys_call_table[62] (kill) redirected — to getpid, so the guest keeps working meanwhile.
        ulong entry = Sym("sys_call_table") + 62 * 8;
        TimeSpan t0 = lab.Now;
        byte[] old = host.WriteUInt64(entry, Sym("__x64_sys_getpid"));
        var (a1, l1) = await lab.WaitForAlertAsync("syscall-hook", t0, a => a.Evidence.Values.Any(v => v.Contains("62", StringComparison.Ordinal)), Bound);
        host.Write(entry, old);
        latencies.Add($"host: syscall table entry: {l1.TotalSeconds:0.00} s");
        Assert.Contains(a1.Evidence.Values, v => v.Contains("getpid", StringComparison.Ordinal));

        // (b) a process unlinked from the task list.
        LinuxProcess victim = k.GetProcesses().Items.Single(p => p.Pid == lab.HidePid);
        int tasksOff = k.Types.OffsetOf("task_struct", "tasks");
        ulong node = victim.TaskAddress + (ulong)tasksOff;
        ulong next = U64(node), prev = U64(node + 8);
        t0 = lab.Now;
        byte[] oldPrevNext = host.WriteUInt64(prev, next);
        byte[] oldNextPrev = host.WriteUInt64(next + 8, prev);
        var (a2, l2) = await lab.WaitForAlertAsync("hidden-process", t0, a => a.Pid == lab.HidePid, Bound);
        host.Write(prev, oldPrevNext);
        host.Write(next + 8, oldNextPrev);
        latencies.Add($"host: hidden process: {l2.TotalSeconds:0.00} s");
        Assert.Contains(a2.Evidence.Values, v => v.Contains(victim.TaskAddress.ToString("x", System.Globalization.CultureInfo.InvariantCulture), StringComparison.OrdinalIgnoreCase));

        // (e) a non-root process's credentials edited to root in place.
        LinuxProcess user = k.GetProcesses().Items.Single(p => p.Pid == lab.UserPid);
        Assert.Equal(1000u, user.Euid);
        ulong cred = U64(user.TaskAddress + (ulong)k.Types.OffsetOf("task_struct", "cred"));
        var restore = new List<(ulong, byte[])>();
        t0 = lab.Now;
        foreach (string f in new[] { "uid", "gid", "suid", "sgid", "euid", "egid", "fsuid", "fsgid" })
            restore.Add((cred + (ulong)k.Types.OffsetOf("cred", f), host.Write(cred + (ulong)k.Types.OffsetOf("cred", f), new byte[4])));
        var (a3, l3) = await lab.WaitForAlertAsync("credential-escalation", t0, a => a.Pid == lab.UserPid, Bound);
        foreach (var (at, bytes) in restore)
            host.Write(at, bytes);
        latencies.Add($"host: credential escalation: {l3.TotalSeconds:0.00} s");
        Assert.NotEmpty(a3.Evidence);

        // (d) tcp4_seq_show's prologue overwritten with a jump out of kernel text. TCG keeps running its
        // translation of the old code, so the guest is unaffected while the bytes say otherwise.
        ulong fn = Sym("tcp4_seq_show");
        ulong far = 0xffffffffc0010000;
        int rel = (int)(long)(far - (fn + 5));
        byte[] jmp = [0xe9, .. BitConverter.GetBytes(rel)];
        t0 = lab.Now;
        byte[] oldPrologue = host.Write(fn, jmp);
        var (a4, l4) = await lab.WaitForAlertAsync("inline-hook", t0, a => a.Title.Contains("tcp4_seq_show", StringComparison.Ordinal), Bound);
        host.Write(fn, oldPrologue);
        latencies.Add($"host: inline hook: {l4.TotalSeconds:0.00} s");
        Assert.Contains(a4.Evidence.Values, v => v.Contains("c0010000", StringComparison.OrdinalIgnoreCase));

        // (c) a module unlinked from the module list (sysfs and memory still show it).
        await lab.Guest.ShellAsync("modprobe dummy");
        await lab.WaitForSweepsAsync(1);
        LinuxModule dummy = k.GetModules().Items.Single(m => m.Name == "dummy");
        int listOff = k.Types.OffsetOf("module", "list");
        ulong mnode = dummy.ModuleAddress + (ulong)listOff;
        ulong mnext = U64(mnode), mprev = U64(mnode + 8);
        t0 = lab.Now;
        byte[] o1 = host.WriteUInt64(mprev, mnext);
        byte[] o2 = host.WriteUInt64(mnext + 8, mprev);
        var (a5, l5) = await lab.WaitForAlertAsync("hidden-module", t0, a => a.Title.Contains("dummy", StringComparison.Ordinal), Bound);
        host.Write(mprev, o1);
        host.Write(mnext + 8, o2);
        latencies.Add($"host: hidden module: {l5.TotalSeconds:0.00} s");
        Assert.NotEmpty(a5.Evidence);

        foreach (string l in latencies)
            output.WriteLine(l);
        ResultsFile.Append("host-attack-latency.txt", latencies);
    }
}
