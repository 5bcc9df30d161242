using System.Diagnostics;
using System.Globalization;
using Vmi.Lab;
using Vmi.Linux;
using Vmi.Linux.Btf;
using Vmi.Linux.Model;
using Vmi.Targets;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Integration.Tests;

/// <summary>
/// The differential checks of the Linux model against a live lab guest's own /proc view, shared by
/// every kernel flavour's test class (so no check can depend on one kernel build's layout).
/// </summary>
public static class LinuxModelChecks
{
    /// <summary>Console helpers the guest forks while answering; they come and go between truth and walk.</summary>
    private static bool IsTransient(string comm) => comm is "sh" or "sed" or "xxd" or "tr" or "cat" or "grep";

    /// <summary>Every struct member offset (and struct size) the model reads, by a stable name.</summary>
    public static IReadOnlyDictionary<string, int> ModelLayout(BtfTypes types)
    {
        ArgumentNullException.ThrowIfNull(types);
        var layout = new SortedDictionary<string, int>(StringComparer.Ordinal);
        foreach (string s in new[] { "task_struct", "cred", "mm_struct", "module", "vm_area_struct" })
            layout["sizeof(" + s + ")"] = types.SizeOf(s);
        void Add(string type, params string[] members)
        {
            foreach (string m in members)
            {
                if (types.TryOffsetOf(type, m, out int off))
                    layout[type + "." + m] = off;
            }
        }
        Add("task_struct", "tasks", "pid", "tgid", "comm", "flags", "worker_private", "__state", "state", "start_time", "real_parent", "real_cred", "mm");
        Add("cred", "uid.val", "gid.val", "euid.val");
        Add("mm_struct", "pgd", "arg_start", "arg_end", "mm_mt");
        Add("module", "list", "name", "state", "refcnt", "core_layout.size", "core_layout.base", "init_layout.size", "mem[0].size", "mem[0].base");
        Add("vm_area_struct", "vm_start", "vm_end", "vm_flags", "vm_pgoff", "vm_file", "vm_mm");
        Add("maple_tree", "ma_root");
        Add("kthread", "full_name");
        Add("file", "f_path");
        Add("path", "dentry");
        Add("dentry", "d_parent", "d_name");
        Add("qstr", "name");
        return layout;
    }

    /// <summary>Byte offsets of a struct's direct members (named ones; anonymous ones as "&lt;anon@N&gt;").</summary>
    public static IReadOnlyDictionary<string, long> TopLevelMembers(BtfTypes types, string structName)
    {
        ArgumentNullException.ThrowIfNull(types);
        var result = new Dictionary<string, long>(StringComparer.Ordinal);
        BtfType t = types[types.FindType(structName)];
        int index = 0;
        foreach (BtfMember m in t.Members)
        {
            string name = m.Name.Length > 0 ? m.Name : $"<anon#{index}>";
            result.TryAdd(name, m.BitOffset / 8);
            index++;
        }
        return result;
    }

    public static async Task<(LinuxProfile Profile, LinuxKernel Kernel)> BootstrapAsync(LabGuest guest, ITestOutputHelper output)
    {
        ArgumentNullException.ThrowIfNull(guest);
        ArgumentNullException.ThrowIfNull(output);
        await using var target = await QemuTarget.FromVmAsync(guest.Vm);
        VcpuRegisters regs = await target.GetRegistersAsync(0);
        var sw = Stopwatch.StartNew();
        LinuxProfile profile = LinuxProfile.Bootstrap(guest.Vm.Memory, regs.Paging);
        output.WriteLine($"profile bootstrap {sw.ElapsedMilliseconds} ms: {profile.Symbols.Count} symbols, {profile.Types.TypeCount} BTF types, slide 0x{profile.Location.Slide:x}");
        return (profile, profile.CreateKernel(guest.Vm.Memory, regs.Paging));
    }

    public static async Task ProfileComesFromTheGuestAloneAsync(LabGuest guest, GroundTruth truth, int markerPid, ulong markerAddress, ITestOutputHelper output)
    {
        ArgumentNullException.ThrowIfNull(truth);
        _ = (markerPid, markerAddress);
        var (profile, _) = await BootstrapAsync(guest, output);
        Assert.Equal(truth.Symbols["_text"], profile.Location.VirtualBase);
        Assert.Equal(truth.Version, profile.Banner);
        foreach (var (name, address) in truth.Symbols)
        {
            Assert.True(profile.Symbols.TryGetAddress(name, out ulong mine), $"{name} missing");
            Assert.Equal(address, mine);
        }
    }

    public static async Task ProcessListEqualsTheGuestsProcAsync(LabGuest guest, GroundTruth truth, int markerPid, ulong markerAddress, ITestOutputHelper output)
    {
        ArgumentNullException.ThrowIfNull(truth);
        _ = markerAddress;
        var (_, kernel) = await BootstrapAsync(guest, output);
        // The guest keeps running: its truth was taken after the crowd started and nothing in the
        // lab forks later, except the console's own short-lived helpers — compare the steady set.
        var sw = Stopwatch.StartNew();
        KernelList<LinuxProcess> list = kernel.GetProcesses();
        output.WriteLine($"ps: {list.Items.Count} processes in {sw.ElapsedMilliseconds} ms");
        Assert.True(list.IsComplete, string.Join("\n", list.Issues));
        var mine = list.Items.ToDictionary(p => p.Pid);
        var steady = truth.Processes.Where(p => !IsTransient(p.Comm)).ToList();
        Assert.True(steady.Count > 250);
        foreach (GuestProcess t in steady)
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
        var truthPids = truth.Processes.Select(p => p.Pid).ToHashSet();
        foreach (LinuxProcess p in list.Items.Where(p => !IsTransient(p.Comm)))
            Assert.True(truthPids.Contains(p.Pid), $"introspection found pid {p.Pid} ({p.Comm}) that the guest did not list");
        Assert.Contains(list.Items, p => p.Comm.StartsWith("ünïcødé-pr", StringComparison.Ordinal) && p.Cmdline.SequenceEqual(new[] { "/tmp/crowd/ünïcødé-prøc", "first arg", "ärgümënt ✓", "", "last" }));
        Assert.Contains(list.Items, p => p.Pid == markerPid);
    }

    public static async Task ModuleListEqualsProcModulesAsync(LabGuest guest, GroundTruth truth, int markerPid, ulong markerAddress, ITestOutputHelper output)
    {
        ArgumentNullException.ThrowIfNull(truth);
        ArgumentNullException.ThrowIfNull(output);
        _ = (markerPid, markerAddress);
        var (_, kernel) = await BootstrapAsync(guest, output);
        KernelList<LinuxModule> list = kernel.GetModules();
        Assert.True(list.IsComplete, string.Join("\n", list.Issues));
        output.WriteLine($"lsmod: {string.Join(", ", list.Items.Select(m => m.Name))}");
        // /proc/modules: "name size refcount deps state address"
        var lines = truth.Modules.Select(l => l.Split(' ')).ToList();
        Assert.Equal(lines.Count, list.Items.Count);
        foreach (string[] f in lines)
        {
            LinuxModule m = Assert.Single(list.Items, m => m.Name == f[0]);
            Assert.Equal(ulong.Parse(f[1], CultureInfo.InvariantCulture), m.Size);
            Assert.Equal(int.Parse(f[2], CultureInfo.InvariantCulture), m.RefCount);
            Assert.Equal(f[4], m.State);
            Assert.Equal(ulong.Parse(f[5].AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture), m.CoreBase);
        }
    }

    public static async Task SyscallTableAndIdtPointIntoKernelTextAsync(LabGuest guest, GroundTruth truth, int markerPid, ulong markerAddress, ITestOutputHelper output)
    {
        _ = (truth, markerPid, markerAddress);
        var (_, kernel) = await BootstrapAsync(guest, output);
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

    public static async Task MemoryMapsEqualProcMapsAsync(LabGuest guest, GroundTruth truth, int markerPid, ulong markerAddress, ITestOutputHelper output)
    {
        ArgumentNullException.ThrowIfNull(guest);
        _ = truth;
        var (_, kernel) = await BootstrapAsync(guest, output);
        var marker = kernel.GetProcesses().Items.Single(p => p.Pid == markerPid);
        var sw = Stopwatch.StartNew();
        var maps = kernel.GetMappings(marker);
        output.WriteLine($"maps: {maps.Items.Count} VMAs in {sw.Elapsed.TotalMilliseconds:0.0} ms");
        Assert.True(maps.IsComplete, string.Join("\n", maps.Issues));
        var reply = await guest.ShellAsync($"cat /proc/{markerPid}/maps");
        // "start-end perms offset dev inode [path]"; [vsyscall] is the gate page, not a VMA.
        var lines = reply.Lines.Where(l => l.Length > 0 && !l.EndsWith("[vsyscall]", StringComparison.Ordinal)).Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)).ToList();
        Assert.Equal(lines.Count, maps.Items.Count);
        for (int i = 0; i < lines.Count; i++)
        {
            string[] f = lines[i];
            LinuxVma v = maps.Items[i];
            Assert.Equal(f[0], $"{v.Start:x8}-{v.End:x8}");
            Assert.Equal(f[1], v.Permissions);
            if (f.Length > 5 && f[5].StartsWith('/'))
                Assert.Equal(f[5], v.Path);
        }
        Assert.Contains(maps.Items, v => v.Path == "/lab/bin/vmi-marker");
        // The marker splits a region into 2048 one-page VMAs: the maple tree has internal nodes.
        Assert.True(maps.Items.Count > 2048, $"only {maps.Items.Count} VMAs");
        Assert.Contains(maps.Items, v => markerAddress >= v.Start && markerAddress < v.End && v.Permissions == "rw-p");
    }
}
