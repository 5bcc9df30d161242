using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Vmi.Lab;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Integration.Tests;

/// <summary>Each test boots its own guest: these are about starting, attaching and stopping.</summary>
[Collection(LabCollection.Name)]
public sealed partial class ProcessLifecycleTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Killed_vmi_leaves_no_qemu_process_and_no_shm_file()
    {
        await LabArtifactsForTests.GetAsync();
        var psi = VmiCli.StartInfo("lab", "run", "--scenario", "benign");
        using var vmi = Process.Start(psi)!;
        var stderr = new StringBuilder();
        var ready = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        vmi.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null)
                return;
            lock (stderr) stderr.AppendLine(e.Data);
            if (e.Data.Contains("QEMU pid", StringComparison.Ordinal))
                ready.TrySetResult(e.Data);
        };
        vmi.BeginErrorReadLine();
        _ = vmi.StandardOutput.BaseStream.CopyToAsync(Stream.Null);
        int qemuPid;
        try
        {
            var done = await Task.WhenAny(ready.Task, Task.Delay(TimeSpan.FromMinutes(3)));
            Assert.True(done == ready.Task, "vmi lab run did not report a ready guest: " + stderr);
            string readyLine = await ready.Task;
            qemuPid = int.Parse(QemuPid().Match(readyLine).Groups[1].Value, CultureInfo.InvariantCulture);
            Assert.True(Directory.Exists($"/proc/{qemuPid}"));
            output.WriteLine(readyLine);
        }
        finally
        {
            vmi.Kill(); // SIGKILL: no clean-up code in vmi runs
        }
        await vmi.WaitForExitAsync();
        var sw = Stopwatch.StartNew();
        while (Directory.Exists($"/proc/{qemuPid}") && sw.Elapsed < TimeSpan.FromSeconds(15))
            await Task.Delay(100);
        Assert.False(Directory.Exists($"/proc/{qemuPid}") && !IsZombie(qemuPid), $"QEMU {qemuPid} outlived the killed vmi");
        Assert.Empty(Directory.GetFiles("/dev/shm", $"vmi-{vmi.Id}-*"));
        output.WriteLine($"QEMU gone {sw.ElapsedMilliseconds} ms after SIGKILL of vmi");
    }

    [Fact]
    public async Task Lab_run_shuts_down_clean()
    {
        await LabArtifactsForTests.GetAsync();
        var before = Directory.GetFiles("/dev/shm", "vmi-*").ToHashSet();
        var r = await VmiCli.RunAsync("lab", "run", "--exit-when-ready");
        output.WriteLine(r.StandardError);
        Assert.True(r.ExitCode == 0, r.StandardError);
        Match m = QemuPid().Match(r.StandardError);
        Assert.True(m.Success, r.StandardError);
        int qemuPid = int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        Assert.False(Directory.Exists($"/proc/{qemuPid}"), "QEMU still running after vmi exited");
        Assert.DoesNotContain(Directory.GetFiles("/dev/shm", "vmi-*"), f => !before.Contains(f));
        Assert.Contains("@@VMI-READY", r.StandardOutput, StringComparison.Ordinal);
        // The guest powered itself off (not killed after a timeout): monitoring let go of it cleanly.
        Assert.Contains("reboot: Power down", r.StandardOutput, StringComparison.Ordinal);
        Assert.Contains("vmi: monitoring lab", r.StandardError, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Attaches_to_a_qemu_started_by_hand_with_the_readme_command()
    {
        LabArtifacts lab = await LabArtifactsForTests.GetAsync();
        string tag = $"{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..6]}";
        string ram = $"/dev/shm/vmi-byhand-{tag}.ram";
        string qmp = Path.Combine(Path.GetTempPath(), $"vmi-byhand-{tag}.qmp");
        int gdbPort = FreePort();
        string command = ReadmeCommand()
            .Replace("/dev/shm/lab.ram", ram, StringComparison.Ordinal)
            .Replace("/tmp/lab.qmp", qmp, StringComparison.Ordinal)
            .Replace("127.0.0.1:1234", $"127.0.0.1:{gdbPort}", StringComparison.Ordinal)
            .Replace("build/lab/amd64/", lab.Directory + "/", StringComparison.Ordinal);
        output.WriteLine(command);
        var args = SplitShell(command);
        var psi = new ProcessStartInfo(args[0]) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in args.Skip(1))
            psi.ArgumentList.Add(a);
        using var qemu = Process.Start(psi)!;
        try
        {
            using var console = new Vmi.Qemu.SerialConsole(qemu.StandardOutput.BaseStream, qemu.StandardInput.BaseStream);
            _ = qemu.StandardError.ReadToEndAsync();
            await console.WaitForLineAsync(l => l.StartsWith("@@VMI-READY", StringComparison.Ordinal), TimeSpan.FromMinutes(2));
            long from = console.Position;
            await console.WriteLineAsync("1 truth");
            await console.WaitForLineAsync(l => l.StartsWith("@@VMI-END 1 ", StringComparison.Ordinal), TimeSpan.FromMinutes(2), from);
            var truth = GroundTruth.Parse(console.GetLines(from, console.Position));
            ulong banner = truth.Symbols["linux_banner"];
            string expected = truth.Version + "\n";

            string target = $"qemu:qmp={qmp},mem={ram},gdb=127.0.0.1:{gdbPort}";
            var read = await VmiCli.RunAsync("mem", "read", "--target", target, "--virt", $"0x{banner:x}", "--len", expected.Length.ToString(CultureInfo.InvariantCulture), "--format", "raw");
            Assert.True(read.ExitCode == 0, read.StandardError);
            Assert.Equal(expected, read.StandardOutput);

            // Without gdb= the registers come from QMP "info registers".
            var tr = await VmiCli.RunAsync("mem", "translate", "--target", $"qemu:qmp={qmp},mem={ram}", "--virt", $"0x{banner:x}");
            Assert.True(tr.ExitCode == 0, tr.StandardError);
            output.WriteLine(tr.StandardOutput);
            ulong pa = truth.Iomem.Single(r => r.Name == "Kernel code").Start + (banner - truth.Symbols["_text"]);
            Assert.Contains($"physical 0x{pa:x16}", tr.StandardOutput, StringComparison.Ordinal);

            var hex = await VmiCli.RunAsync("mem", "read", "--target", $"qemu:qmp={qmp},mem={ram}", "--phys", $"0x{pa:x}", "--len", "16");
            Assert.True(hex.ExitCode == 0, hex.StandardError);
            Assert.Contains("|Linux version ", hex.StandardOutput, StringComparison.Ordinal);

            // The guest keeps running after the gdb-backed read (attach pauses, detach resumes).
            long mark = console.Position;
            await console.WriteLineAsync("2 sh echo alive");
            await console.WaitForLineAsync(l => l == "alive", TimeSpan.FromMinutes(1), mark);
        }
        finally
        {
            if (!qemu.HasExited)
                qemu.Kill();
            await qemu.WaitForExitAsync();
            File.Delete(ram);
            File.Delete(qmp);
        }
    }

    [Fact]
    public async Task Bad_targets_give_one_clear_error()
    {
        var r = await VmiCli.RunAsync("mem", "read", "--target", "qemu:qmp=/nonexistent.sock,mem=/nonexistent.ram", "--phys", "0", "--len", "16");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("QMP socket /nonexistent.sock does not exist", r.StandardError, StringComparison.Ordinal);
        r = await VmiCli.RunAsync("mem", "read", "--target", "floppy:/x", "--phys", "0", "--len", "16");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("Expected qemu:qmp=PATH", r.StandardError, StringComparison.Ordinal);
        r = await VmiCli.RunAsync("mem", "read", "--target", "dump:/nonexistent.elf", "--phys", "0", "--len", "16");
        Assert.Contains("does not exist", r.StandardError, StringComparison.Ordinal);
        r = await VmiCli.RunAsync("mem", "read", "--target", "dump:/x", "--phys", "zz", "--len", "16");
        Assert.Equal(2, r.ExitCode);
    }

    /// <summary>The fenced command after the attach-by-hand marker in README.md, continuation lines joined.</summary>
    private static string ReadmeCommand()
    {
        string readme = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "README.md"));
        int marker = readme.IndexOf("<!-- attach-by-hand -->", StringComparison.Ordinal);
        Assert.True(marker >= 0, "README.md lost its attach-by-hand block");
        int start = readme.IndexOf("```sh\n", marker, StringComparison.Ordinal) + 6;
        int end = readme.IndexOf("```", start, StringComparison.Ordinal);
        return readme[start..end].Replace("\\\n", " ", StringComparison.Ordinal).Trim();
    }

    private static List<string> SplitShell(string command)
    {
        var args = new List<string>();
        var cur = new StringBuilder();
        bool quoted = false, any = false;
        foreach (char c in command)
        {
            if (c == '"') { quoted = !quoted; any = true; continue; }
            if (char.IsWhiteSpace(c) && !quoted)
            {
                if (any) { args.Add(cur.ToString()); cur.Clear(); any = false; }
                continue;
            }
            cur.Append(c);
            any = true;
        }
        if (any)
            args.Add(cur.ToString());
        return args;
    }

    private static int FreePort()
    {
        var l = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        l.Start();
        int port = ((System.Net.IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    private static bool IsZombie(int pid)
    {
        try { return File.ReadAllText($"/proc/{pid}/stat").Split(' ')[2] == "Z"; }
        catch (IOException) { return false; }
    }

    [GeneratedRegex(@"QEMU pid (\d+)")]
    private static partial Regex QemuPid();
}
