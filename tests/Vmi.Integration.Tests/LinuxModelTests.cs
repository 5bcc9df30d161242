using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Vmi.Lab;
using Vmi.Linux;
using Vmi.Linux.Model;
using Vmi.Targets;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Integration.Tests;

/// <summary>
/// The Linux model against the live lab guest (KASLR on, a few hundred processes with awkward names,
/// modules loaded), compared with the guest's own /proc view printed on its console.
/// </summary>
[Collection(LabCollection.Name)]
public sealed class LinuxModelTests(LabFixture lab, ITestOutputHelper output)
{
    private async Task<(LinuxProfile Profile, LinuxKernel Kernel)> BootstrapAsync()
    {
        await using var target = await QemuTarget.FromVmAsync(lab.Guest.Vm);
        VcpuRegisters regs = await target.GetRegistersAsync(0);
        var sw = Stopwatch.StartNew();
        LinuxProfile profile = LinuxProfile.Bootstrap(lab.Guest.Vm.Memory, regs.Paging);
        output.WriteLine($"profile bootstrap {sw.ElapsedMilliseconds} ms: {profile.Symbols.Count} symbols, {profile.Types.TypeCount} BTF types, slide 0x{profile.Location.Slide:x}");
        return (profile, profile.CreateKernel(lab.Guest.Vm.Memory, regs.Paging));
    }

    [Fact]
    public async Task Profile_comes_from_the_guest_alone()
    {
        var (profile, _) = await BootstrapAsync();
        Assert.Equal(lab.Truth.Symbols["_text"], profile.Location.VirtualBase);
        Assert.Equal(lab.Truth.Version, profile.Banner);
        foreach (var (name, address) in lab.Truth.Symbols)
        {
            Assert.True(profile.Symbols.TryGetAddress(name, out ulong mine), $"{name} missing");
            Assert.Equal(address, mine);
        }
    }

    [Fact]
    public async Task Process_list_equals_the_guests_proc()
    {
        var (_, kernel) = await BootstrapAsync();
        // The guest keeps running: its truth was taken after the crowd started and nothing in the
        // lab forks later, except the console's own short-lived helpers — compare the steady set.
        var sw = Stopwatch.StartNew();
        KernelList<LinuxProcess> list = kernel.GetProcesses();
        output.WriteLine($"ps: {list.Items.Count} processes in {sw.ElapsedMilliseconds} ms");
        Assert.True(list.IsComplete, string.Join("\n", list.Issues));
        var mine = list.Items.ToDictionary(p => p.Pid);
        var truth = lab.Truth.Processes.Where(p => p.Comm is not ("sh" or "sed" or "xxd" or "tr" or "cat" or "grep")).ToList();
        Assert.True(truth.Count > 250);
        foreach (GuestProcess t in truth)
        {
            Assert.True(mine.TryGetValue(t.Pid, out LinuxProcess? p), $"pid {t.Pid} ({t.Comm}) not found by introspection");
            Assert.Equal((t.Pid, t.Ppid, t.Uid), (p!.Pid, p.Ppid, (int)p.Uid));
            // Workqueue workers (PF_WQ_WORKER 0x20) show "comm-<work description>" in /proc, which
            // changes with the work they run; every other name must be equal.
            if ((p.Flags & 0x20) != 0)
                Assert.StartsWith(p.Comm, t.Comm, StringComparison.Ordinal);
            else
                Assert.Equal(t.Comm, p.Name);
            Assert.Equal(t.Cmdline, p.Cmdline);
        }
        var truthPids = lab.Truth.Processes.Select(p => p.Pid).ToHashSet();
        foreach (LinuxProcess p in list.Items.Where(p => p.Comm is not ("sh" or "sed" or "xxd" or "tr" or "cat" or "grep")))
            Assert.True(truthPids.Contains(p.Pid), $"introspection found pid {p.Pid} ({p.Comm}) that the guest did not list");
        Assert.Contains(list.Items, p => p.Comm.StartsWith("ünïcødé-pr", StringComparison.Ordinal) && p.Cmdline.SequenceEqual(new[] { "/tmp/crowd/ünïcødé-prøc", "first arg", "ärgümënt ✓", "", "last" }));
    }

    [Fact]
    public async Task Module_list_equals_proc_modules()
    {
        var (_, kernel) = await BootstrapAsync();
        KernelList<LinuxModule> list = kernel.GetModules();
        Assert.True(list.IsComplete, string.Join("\n", list.Issues));
        // /proc/modules: "name size refcount deps state address"
        var truth = lab.Truth.Modules.Select(l => l.Split(' ')).ToList();
        Assert.Equal(truth.Count, list.Items.Count);
        foreach (string[] f in truth)
        {
            LinuxModule m = Assert.Single(list.Items, m => m.Name == f[0]);
            Assert.Equal(ulong.Parse(f[1], CultureInfo.InvariantCulture), m.Size);
            Assert.Equal(int.Parse(f[2], CultureInfo.InvariantCulture), m.RefCount);
            Assert.Equal(f[4], m.State);
            Assert.Equal(ulong.Parse(f[5].AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture), m.CoreBase);
        }
    }

    [Fact]
    public async Task Cli_ps_json_has_the_documented_shape()
    {
        var r = await VmiCli.RunAsync("ps", "--target", lab.Guest.Vm.TargetSpec, "--json");
        Assert.True(r.ExitCode == 0, r.StandardError);
        using var doc = JsonDocument.Parse(r.StandardOutput);
        var init = doc.RootElement.EnumerateArray().Single(e => e.GetProperty("pid").GetInt32() == 1);
        Assert.Equal(0, init.GetProperty("ppid").GetInt32());
        Assert.Equal(0, init.GetProperty("uid").GetInt32());
        Assert.Equal("init", init.GetProperty("comm").GetString());
        Assert.Equal(JsonValueKind.Array, init.GetProperty("cmdline").ValueKind);
        var truthInit = lab.Truth.Processes.Single(p => p.Pid == 1);
        Assert.Equal(truthInit.Cmdline, init.GetProperty("cmdline").EnumerateArray().Select(e => e.GetString()!).ToArray());

        var mods = await VmiCli.RunAsync("lsmod", "--target", lab.Guest.Vm.TargetSpec);
        Assert.True(mods.ExitCode == 0, mods.StandardError);
        Assert.Contains("isofs", mods.StandardOutput, StringComparison.Ordinal);
        var tree = await VmiCli.RunAsync("pstree", "--target", lab.Guest.Vm.TargetSpec);
        Assert.True(tree.ExitCode == 0, tree.StandardError);
        Assert.StartsWith("init(1)", tree.StandardOutput.Split('\n').First(l => l.StartsWith("init", StringComparison.Ordinal)), StringComparison.Ordinal);
        output.WriteLine(string.Join('\n', tree.StandardOutput.Split('\n').Take(12)));
    }

    [Fact]
    public async Task Syscall_table_and_idt_point_into_kernel_text()
    {
        var (_, kernel) = await BootstrapAsync();
        var syscalls = kernel.GetSyscallTable();
        Assert.True(syscalls.IsComplete, string.Join("\n", syscalls.Issues));
        Assert.InRange(syscalls.Items.Count, 400, 600);
        Assert.All(syscalls.Items, e => Assert.True(e.InKernelText, $"syscall {e.Number} -> {e.Symbol}"));
        Assert.Equal("__x64_sys_read", syscalls.Items[0].Symbol);
        Assert.Equal("__x64_sys_write", syscalls.Items[1].Symbol);
        Assert.Equal("__x64_sys_execve", syscalls.Items[59].Symbol);

        var idt = kernel.GetIdt();
        Assert.Equal(256, idt.Items.Count);
        Assert.Equal("asm_exc_divide_error", idt.Items[0].Symbol);
        Assert.Equal("asm_exc_page_fault", idt.Items[14].Symbol);
        Assert.All(idt.Items.Where(e => e.Present), e => Assert.True(e.InKernelText, $"vector {e.Vector} -> {e.Symbol}"));
    }

    [Fact]
    public async Task Memory_maps_equal_proc_maps()
    {
        var (_, kernel) = await BootstrapAsync();
        var marker = kernel.GetProcesses().Items.Single(p => p.Pid == lab.MarkerPid);
        var sw = Stopwatch.StartNew();
        var maps = kernel.GetMappings(marker);
        output.WriteLine($"maps: {maps.Items.Count} VMAs in {sw.Elapsed.TotalMilliseconds:0.0} ms");
        Assert.True(maps.IsComplete, string.Join("\n", maps.Issues));
        var reply = await lab.Guest.ShellAsync($"cat /proc/{lab.MarkerPid}/maps");
        // "start-end perms offset dev inode [path]"; [vsyscall] is the gate page, not a VMA.
        var truth = reply.Lines.Where(l => l.Length > 0 && !l.EndsWith("[vsyscall]", StringComparison.Ordinal)).Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)).ToList();
        Assert.Equal(truth.Count, maps.Items.Count);
        for (int i = 0; i < truth.Count; i++)
        {
            string[] f = truth[i];
            LinuxVma v = maps.Items[i];
            Assert.Equal(f[0], $"{v.Start:x8}-{v.End:x8}");
            Assert.Equal(f[1], v.Permissions);
            if (f.Length > 5 && f[5].StartsWith('/'))
                Assert.Equal(f[5], v.Path);
        }
        Assert.Contains(maps.Items, v => v.Path == "/lab/bin/vmi-marker");
        Assert.Contains(maps.Items, v => lab.MarkerAddress >= v.Start && lab.MarkerAddress < v.End && v.Permissions == "rw-p");
    }
}
