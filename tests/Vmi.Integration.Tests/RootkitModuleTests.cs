using System.Globalization;
using System.Text.RegularExpressions;
using Vmi.Lab;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Integration.Tests;

/// <summary>
/// Its own lab guest (scenarios benign + rootkit) with the test rootkit /lib/vmi/vmi_rootkit.ko loaded
/// once at start. The attacks change the guest for good, so this guest is shared with nobody else.
/// </summary>
public sealed class RootkitLabFixture : IAsyncLifetime
{
    public LabGuest Guest { get; private set; } = null!;
    /// <summary>Pid of "hideme", the process to hide.</summary>
    public int HidePid { get; private set; }
    /// <summary>Pid of vmi-user (uid 1000), the process to raise to root.</summary>
    public int UserPid { get; private set; }
    /// <summary>Pid of the IPv4 listener on 127.0.0.1:9190 (busybox httpd).</summary>
    public int ListenerPid { get; private set; }
    /// <summary>What insmod printed and the module's dmesg lines right after it loaded.</summary>
    public IReadOnlyList<string> LoadLines { get; private set; } = [];

    public async Task InitializeAsync()
    {
        LabArtifacts artifacts = await LabArtifactsForTests.GetAsync("amd64");
        Guest = await LabGuest.StartAsync(artifacts, "itest-rootkit", "benign,rootkit");
        string ready = await Guest.Vm.Console.WaitForLineAsync(l => l.StartsWith("@@VMI-ROOTKIT-READY", StringComparison.Ordinal), TimeSpan.FromSeconds(90));
        foreach (string part in ready.Split(' '))
        {
            int eq = part.IndexOf('=', StringComparison.Ordinal);
            if (eq < 0 || !int.TryParse(part[(eq + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out int v))
                continue;
            switch (part[..eq])
            {
                case "hide": HidePid = v; break;
                case "user": UserPid = v; break;
                case "listener": ListenerPid = v; break;
            }
        }
        GuestReply r = await Guest.ShellAsync("insmod /lib/vmi/vmi_rootkit.ko && dmesg | grep 'vmi_rootkit:'");
        if (r.ExitStatus != 0)
            throw new InvalidOperationException("insmod vmi_rootkit.ko failed: " + string.Join('\n', r.Lines));
        LoadLines = r.Lines;
    }

    public async Task DisposeAsync()
    {
        if (Guest is not null)
            await Guest.DisposeAsync();
    }
}

[CollectionDefinition(Name)]
public sealed class RootkitLabCollection : ICollectionFixture<RootkitLabFixture>
{
    public const string Name = "rootkit lab guest";
}

/// <summary>
/// Each attack of the test rootkit, triggered over the console as a test (or an analyst) would, and
/// proven from inside the guest. The tests do not depend on each other's order: the control channel
/// keeps working after the module has hidden itself.
/// </summary>
[Collection(RootkitLabCollection.Name)]
public sealed class RootkitModuleTests(RootkitLabFixture lab, ITestOutputHelper output)
{
    private const string Hex = "[0-9a-f]{16}";

    private async Task<IReadOnlyList<string>> ShAsync(string command, bool mustSucceed = true)
    {
        GuestReply r = await lab.Guest.ShellAsync(command);
        output.WriteLine($"$ {command}  (exit {r.ExitStatus})");
        foreach (string l in r.Lines)
            output.WriteLine(l);
        if (mustSucceed)
            Assert.True(r.ExitStatus == 0, $"'{command}' exited with {r.ExitStatus}: {string.Join('\n', r.Lines)}");
        return r.Lines;
    }

    /// <summary>The module's dmesg lines (the ring buffer is 128 KiB: read them right after the action).</summary>
    private Task<IReadOnlyList<string>> ModuleLogAsync() => ShAsync("dmesg | grep 'vmi_rootkit:'; true");

    /// <summary>Comm names of the tasks the kernel reaches through its task list (sysrq 't' walks it with for_each_process_thread).</summary>
    private async Task<HashSet<string>> TaskListNamesAsync()
    {
        string mark = "vmi-rootkit-test-" + Guid.NewGuid().ToString("N");
        var lines = await ShAsync($"echo {mark} > /dev/kmsg; echo t > /proc/sysrq-trigger; dmesg | sed -n '/{mark}/,$p' | grep -o 'task:[^ ]*'");
        return lines.Select(l => l.Trim()["task:".Length..]).ToHashSet(StringComparer.Ordinal);
    }

    [Fact]
    public void Loading_replaces_the_kill_entry_of_the_syscall_table()
    {
        foreach (string l in lab.LoadLines)
            output.WriteLine(l);
        Assert.Contains(lab.LoadLines, l => Regex.IsMatch(l, $@"vmi_rootkit: loaded: struct module {Hex}, core {Hex} \(\d+ bytes\), sys_call_table {Hex}"));
        Assert.Contains(lab.LoadLines, l => Regex.IsMatch(l, $@"vmi_rootkit: sys_call_table\[62\] \(kill\) at {Hex}: {Hex} \(__x64_sys_kill\+0x0/0x[0-9a-f]+\) -> {Hex} \(vmi_kill_hook\)"));
        // Debian's 6.1 dispatches through x64_sys_call: the magic signals reach the hook through a kprobe.
        Assert.Contains(lab.LoadLines, l => l.Contains("kprobe on __x64_sys_kill at ", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Ordinary_kill_still_works_with_the_hook_in_place()
    {
        var lines = await ShAsync("sleep 1000 & p=$!; kill -0 $p && echo alive; kill -TERM $p; wait $p; echo status=$?; kill -0 $p 2>/dev/null || echo gone");
        // (busybox sh also reports "Terminated" for the job)
        Assert.Equal(["alive", "status=143", "gone"], lines.Where(l => l != "Terminated"));
    }

    [Fact]
    public async Task Kill_63_unlinks_the_process_from_the_task_list()
    {
        int pid = lab.HidePid;
        Assert.Contains("hideme", await TaskListNamesAsync());

        await ShAsync($"kill -63 {pid}");
        Assert.Contains(await ModuleLogAsync(), l => Regex.IsMatch(l, $@"vmi_rootkit: hid pid {pid} \(hideme\): task_struct {Hex} unlinked from the task list"));

        var names = await TaskListNamesAsync();
        Assert.DoesNotContain("hideme", names);
        Assert.Contains("vmi-user", names); // the walk itself still works
        // What stays visible: /proc (and so ps) lists pids from the pid IDR, not from the task list.
        Assert.Equal([$"/proc/{pid}"], await ShAsync($"ls -d /proc/{pid}"));
        Assert.Contains(await ShAsync("ps"), l => l.Contains("/opt/rootkit/hideme", StringComparison.Ordinal));
        Assert.Equal(["alive"], await ShAsync($"kill -0 {pid} && echo alive"));
    }

    [Fact]
    public async Task Kill_62_0_hides_the_module()
    {
        Assert.Contains(await ShAsync("cat /proc/modules"), l => l.StartsWith("vmi_rootkit ", StringComparison.Ordinal));
        Assert.Equal(["yes"], await ShAsync("[ -d /sys/module/vmi_rootkit ] && echo yes"));

        await ShAsync("kill -62 0");
        Assert.Contains(await ModuleLogAsync(), l => Regex.IsMatch(l, $@"vmi_rootkit: hid module: struct module {Hex} \(core {Hex}, \d+ bytes\) unlinked from the module list and removed from /sys/module"));

        Assert.DoesNotContain(await ShAsync("cat /proc/modules"), l => l.StartsWith("vmi_rootkit ", StringComparison.Ordinal));
        Assert.DoesNotContain(await ShAsync("lsmod"), l => l.StartsWith("vmi_rootkit ", StringComparison.Ordinal));
        Assert.Equal(["no"], await ShAsync("[ -e /sys/module/vmi_rootkit ] || echo no"));
        // Module symbols in /proc/kallsyms come from the module list too (what may remain there is
        // ftrace's record of the freed init function, vmi_rootkit_init).
        var kallsyms = await ShAsync("grep '\\[vmi_rootkit\\]' /proc/kallsyms; true");
        Assert.DoesNotContain(kallsyms, l => l.Contains(" vmi_kill_hook", StringComparison.Ordinal));
        Assert.All(kallsyms, l => Assert.Contains("vmi_rootkit_init", l, StringComparison.Ordinal));
    }

    [Fact]
    public async Task Kill_61_0_patches_tcp4_seq_show_so_proc_net_tcp_is_empty()
    {
        // 0A = LISTEN on 127.0.0.1:9190 (0100007F:23E6).
        Assert.Contains(await ShAsync("cat /proc/net/tcp"), l => l.Contains("0100007F:23E6 00000000:0000 0A", StringComparison.Ordinal));

        await ShAsync("kill -61 0");
        Assert.Contains(await ModuleLogAsync(), l => Regex.IsMatch(l, $@"vmi_rootkit: patched tcp4_seq_show at {Hex}: [0-9a-f]{{10}} -> e9[0-9a-f]{{8}} \(jmp {Hex} vmi_tcp4_seq_show\)"));

        var tcp = await ShAsync("cat /proc/net/tcp");
        Assert.Single(tcp);
        Assert.StartsWith("  sl  local_address", tcp[0], StringComparison.Ordinal);
        Assert.Empty(await ShAsync("netstat -tln | grep ':9190'; true"));
        Assert.Equal(["alive"], await ShAsync($"kill -0 {lab.ListenerPid} && echo alive"));
    }

    [Fact]
    public async Task Kill_64_raises_the_user_process_to_root()
    {
        int pid = lab.UserPid;
        Assert.Contains(await ShAsync($"grep Uid /proc/{pid}/status"), l => Regex.IsMatch(l, @"^Uid:\s+1000\s+1000\s+1000\s+1000$"));
        Assert.Equal([$"uid=1000 euid=1000 gid=1000 egid=1000"], await ShAsync($"cat /run/vmi-user.{pid}"));

        await ShAsync($"kill -64 {pid}");
        Assert.Contains(await ModuleLogAsync(), l => Regex.IsMatch(l, $@"vmi_rootkit: escalated pid {pid} \(vmi-user\): task_struct {Hex} real_cred {Hex} cred {Hex} uid 1000 -> 0"));

        var status = await ShAsync($"grep -E '^(Uid|Gid|CapEff):' /proc/{pid}/status");
        Assert.Contains(status, l => Regex.IsMatch(l, @"^Uid:\s+0\s+0\s+0\s+0$"));
        Assert.Contains(status, l => Regex.IsMatch(l, @"^Gid:\s+0\s+0\s+0\s+0$"));
        // The process itself sees it (it rewrites the file every 200 ms).
        Assert.Equal(["uid=0 euid=0 gid=0 egid=0"], await ShAsync($"sleep 1; cat /run/vmi-user.{pid}"));
    }
}
