using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Text.Json;
using Vmi.Lab;
using Vmi.Linux;
using Vmi.Linux.Model;
using Vmi.Targets;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Integration.Tests;

/// <summary>
/// Sockets and open files of the live lab guest (scenario "network": an nc listener on 9091 and an
/// established loopback connection to 9090, plus the pair the tests open on 8080) against the guest's own /proc view.
/// </summary>
[Collection(LabCollection.Name)]
public sealed class NetworkAndFilesTests(LabFixture lab, ITestOutputHelper output)
{
    private async Task<LinuxKernel> BootstrapAsync()
    {
        await using var target = await QemuTarget.FromVmAsync(lab.Guest.Vm);
        VcpuRegisters regs = await target.GetRegistersAsync(0);
        LinuxProfile profile = LinuxProfile.Bootstrap(lab.Guest.Vm.Memory, regs.Paging);
        return profile.CreateKernel(lab.Guest.Vm.Memory, regs.Paging);
    }

    /// <summary>
    /// The scenario's background nc processes get /dev/null as stdin (an asynchronous list of a
    /// non-interactive shell), so its 8080 connection closes right away. The tests open their own
    /// long-lived pair on 8080 (stdin from a FIFO held open by sleep) and remove it afterwards, so the
    /// process list other tests compare stays as booted.
    /// </summary>
    private sealed class Connection(LabGuest guest) : IAsyncDisposable
    {
        private readonly List<int> _pids = [];
        public int ServerPid { get; private set; }
        public int ClientPid { get; private set; }

        private async Task<(int Nc, int Sleep)> SpawnAsync(string tag, string nc)
        {
            string f = "/tmp/vmi-nf-" + tag;
            GuestReply r = await guest.ShellAsync($"rm -f {f}; mkfifo {f}; {nc} <{f} >/dev/null 2>&1 & N=$!; sleep 100000 >{f} & S=$!; sleep 1; echo \"@@PIDS $N $S\"");
            string line = r.Lines.Single(l => l.StartsWith("@@PIDS ", StringComparison.Ordinal));
            int[] pids = [.. line.Split(' ')[1..].Select(x => int.Parse(x, CultureInfo.InvariantCulture))];
            _pids.AddRange(pids);
            return (pids[0], pids[1]);
        }

        public async Task ListenAsync() => ServerPid = (await SpawnAsync("server", "nc -l -p 8080")).Nc;

        public async Task ConnectAsync() => ClientPid = (await SpawnAsync("client", "nc 127.0.0.1 8080")).Nc;

        public async ValueTask DisposeAsync()
        {
            if (_pids.Count == 0)
                return;
            string list = string.Join(' ', _pids);
            await guest.ShellAsync($"kill {list} 2>/dev/null; rm -f /tmp/vmi-nf-server /tmp/vmi-nf-client; true");
            // Orphans are reaped by the guest's init shell while it waits for its next command.
            for (int i = 0; i < 10; i++)
            {
                GuestReply r = await guest.ShellAsync($"for p in {list}; do [ -e /proc/$p ] && echo \"@@ALIVE $p\"; done; true");
                if (!r.Lines.Any(l => l.StartsWith("@@ALIVE", StringComparison.Ordinal)))
                    return;
                await Task.Delay(500);
            }
        }
    }

    private sealed record ProcSocket(string Protocol, string Local, int LocalPort, string Remote, int RemotePort, int State, ulong Inode);

    /// <summary>"0100007F:1F90": the address as the kernel's u32 (or 4 u32 for IPv6) words printed %08X, the port in host order.</summary>
    private static (string Address, int Port) ParseEndpoint(string text)
    {
        string[] parts = text.Split(':');
        string hex = parts[0];
        var bytes = new byte[hex.Length / 2];
        for (int w = 0; w < hex.Length / 8; w++)
            BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(w * 4), uint.Parse(hex.AsSpan(w * 8, 8), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
        return (new IPAddress(bytes).ToString(), int.Parse(parts[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture));
    }

    private async Task<List<ProcSocket>> GuestSocketsAsync()
    {
        var all = new List<ProcSocket>();
        foreach (string proto in new[] { "tcp", "udp", "tcp6", "udp6" })
        {
            GuestReply reply = await lab.Guest.ShellAsync($"cat /proc/net/{proto} 2>/dev/null || true");
            foreach (string line in reply.Lines)
            {
                string[] f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (f.Length < 10 || !f[0].EndsWith(':') || !f[0][..^1].All(char.IsAsciiDigit))
                    continue;
                var (la, lp) = ParseEndpoint(f[1]);
                var (ra, rp) = ParseEndpoint(f[2]);
                all.Add(new ProcSocket(proto, la, lp, ra, rp, int.Parse(f[3], NumberStyles.HexNumber, CultureInfo.InvariantCulture), ulong.Parse(f[9], CultureInfo.InvariantCulture)));
            }
        }
        return all;
    }

    [Fact]
    public async Task Sockets_equal_the_guests_proc_net()
    {
        var kernel = await BootstrapAsync();
        await using var connection = new Connection(lab.Guest);
        await connection.ListenAsync();
        // Before a client connects, the 8080 listener is there and belongs to nc.
        LinuxSocket listening = Assert.Single(kernel.GetSockets().Items, s => s.LocalPort == 8080 && s.State == "LISTEN");
        Assert.Equal(("nc", connection.ServerPid), (listening.Comm, listening.Pid));
        await connection.ConnectAsync();
        KernelList<LinuxSocket> list = kernel.GetSockets();
        List<ProcSocket> truth = await GuestSocketsAsync();
        foreach (var s in list.Items)
            output.WriteLine($"{s.Protocol} {s.LocalAddress}:{s.LocalPort} {s.RemoteAddress}:{s.RemotePort} {s.State} inode {s.Inode} {s.Pid}/{s.Comm}");
        foreach (var t in truth)
            output.WriteLine($"/proc/net/{t.Protocol}: {t.Local}:{t.LocalPort} {t.Remote}:{t.RemotePort} st {t.State:X2} inode {t.Inode}");
        Assert.True(list.IsComplete, string.Join("\n", list.Issues));
        Assert.True(truth.Count >= 4, "the guest lists too few sockets: " + truth.Count);

        var mine = list.Items.Select(s => new ProcSocket(s.Protocol, s.LocalAddress, s.LocalPort, s.RemoteAddress, s.RemotePort, s.StateNumber, s.Inode)).ToList();
        // Sockets without a file (TIME_WAIT, request sockets: inode 0) are not reachable through processes.
        foreach (var t in truth.Where(t => t.Inode != 0))
            Assert.Contains(t, mine);
        foreach (var m in mine)
            Assert.Contains(m, truth);
        Assert.Equal(list.Items.Count, list.Items.Select(s => s.SockAddress).Distinct().Count());

        Assert.Contains(list.Items, s => s.Protocol.StartsWith("tcp", StringComparison.Ordinal) && s.LocalPort == 9091 && s.State == "LISTEN" && s.Comm == "nc");
        // Every socket on 8080 is nc's (busybox nc -l closes its listener once it has accepted).
        Assert.All(list.Items.Where(s => s.LocalPort == 8080 || s.RemotePort == 8080), s => Assert.Equal("nc", s.Comm));
        Assert.All(truth.Where(t => t.Protocol.StartsWith("udp", StringComparison.Ordinal) && t.LocalPort == 5353 && t.Inode != 0),
            t => Assert.Contains(list.Items, s => s.Inode == t.Inode && s.Comm == "nc"));

        // The scenario's long-lived connection to 9090 and the tests' own to 8080, each seen from both ends.
        Assert.Single(list.Items, s => s.RemotePort == 9090 && s.State == "ESTABLISHED" && s.Comm == "nc");
        Assert.Single(list.Items, s => s.LocalPort == 9090 && s.State == "ESTABLISHED" && s.Comm == "nc");
        LinuxSocket client = Assert.Single(list.Items, s => s.RemotePort == 8080 && s.State == "ESTABLISHED");
        LinuxSocket server = Assert.Single(list.Items, s => s.LocalPort == 8080 && s.State == "ESTABLISHED");
        Assert.Equal(("nc", "nc"), (client.Comm, server.Comm));
        Assert.Equal((connection.ClientPid, connection.ServerPid), (client.Pid, server.Pid));
        Assert.Equal(client.LocalPort, server.RemotePort);
        Assert.NotEqual(client.Pid, server.Pid);
        Assert.Contains(client.RemoteAddress, new[] { "127.0.0.1", "::ffff:127.0.0.1" });
    }

    [Fact]
    public async Task Open_files_equal_proc_pid_fd()
    {
        var kernel = await BootstrapAsync();
        await using var connection = new Connection(lab.Guest);
        await connection.ListenAsync();
        await connection.ConnectAsync();
        var procs = kernel.GetProcesses().Items;
        var sockets = kernel.GetSockets().Items;
        LinuxSocket listener = sockets.First(s => s.LocalPort == 9091 && s.State == "LISTEN");
        LinuxSocket server = sockets.First(s => s.LocalPort == 8080 && s.State == "ESTABLISHED");
        LinuxSocket client = sockets.First(s => s.RemotePort == 8080 && s.State == "ESTABLISHED");
        int checkedPids = 0;
        foreach (int pid in new[] { listener.Pid, server.Pid, client.Pid, lab.MarkerPid }.Distinct())
        {
            LinuxProcess p = procs.Single(x => x.Pid == pid);
            KernelList<LinuxOpenFile> files = kernel.GetOpenFiles(p);
            Assert.True(files.IsComplete, string.Join("\n", files.Issues));
            GuestReply reply = await lab.Guest.ShellAsync($"ls -l /proc/{pid}/fd");
            // "lrwx------    1 0     0     64 Nov 23 12:00 3 -> socket:[1234]"
            var truth = new SortedDictionary<int, string>();
            foreach (string line in reply.Lines)
            {
                int arrow = line.IndexOf(" -> ", StringComparison.Ordinal);
                if (arrow < 0)
                    continue;
                string fd = line[..arrow].Split(' ', StringSplitOptions.RemoveEmptyEntries)[^1];
                truth[int.Parse(fd, CultureInfo.InvariantCulture)] = line[(arrow + 4)..];
            }
            var mine = new SortedDictionary<int, string>(files.Items.ToDictionary(f => f.Fd, f => f.Path ?? "?"));
            output.WriteLine($"pid {pid} ({p.Comm}): " + string.Join(", ", mine.Select(kv => $"{kv.Key} -> {kv.Value}")));
            Assert.NotEmpty(truth);
            Assert.Equal(truth, mine);
            foreach (var f in files.Items.Where(f => f.IsSocket))
                Assert.Equal($"socket:[{f.Inode}]", f.Path);
            checkedPids++;
        }
        Assert.True(checkedPids >= 2);
        // The socket files lead to the sockets found through them.
        var listenerFiles = kernel.GetOpenFiles(procs.Single(x => x.Pid == listener.Pid)).Items;
        Assert.Contains(listenerFiles, f => f.IsSocket && f.Inode == listener.Inode);
    }

    [Fact]
    public async Task Cli_netstat_lists_port_8080()
    {
        await using var connection = new Connection(lab.Guest);
        await connection.ListenAsync();
        await connection.ConnectAsync();
        CliResult r = await VmiCli.RunAsync("netstat", "--target", lab.Guest.Vm.TargetSpec, "--json");
        output.WriteLine(r.StandardError);
        Assert.True(r.ExitCode == 0, $"exit {r.ExitCode}: {r.StandardError}");
        using var doc = JsonDocument.Parse(r.StandardOutput);
        var socks = doc.RootElement.EnumerateArray().ToList();
        Assert.Contains(socks, s => s.GetProperty("localPort").GetInt32() == 8080 && s.GetProperty("comm").GetString() == "nc");
        Assert.Contains(socks, s => s.GetProperty("remotePort").GetInt32() == 8080 && s.GetProperty("state").GetString() == "ESTABLISHED");

        CliResult text = await VmiCli.RunAsync("netstat", "--target", lab.Guest.Vm.TargetSpec);
        output.WriteLine(text.StandardOutput);
        Assert.Equal(0, text.ExitCode);
        Assert.Contains(":8080", text.StandardOutput, StringComparison.Ordinal);

        CliResult files = await VmiCli.RunAsync("files", "--target", lab.Guest.Vm.TargetSpec, "--pid", lab.MarkerPid.ToString(CultureInfo.InvariantCulture));
        output.WriteLine(files.StandardOutput);
        Assert.Equal(0, files.ExitCode);
        Assert.Contains(" -> ", files.StandardOutput, StringComparison.Ordinal);
    }
}
