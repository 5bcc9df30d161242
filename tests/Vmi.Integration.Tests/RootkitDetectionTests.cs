using System.Globalization;
using Vmi.Events;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Integration.Tests;

/// <summary>
/// The test kernel rootkit (Guest/modules/vmi_rootkit), run in the lab guest under monitoring: each of
/// its five attacks must give the right alert, with evidence and ATT&amp;CK id, within a stated time;
/// and the benign workload alone must give none. One guest, the attacks in order (they build on the
/// module being loaded, and hiding the module cannot be undone).
/// </summary>
[Collection("rootkit module lab")]
public sealed class RootkitDetectionTests(RootkitModuleLabFixture lab, ITestOutputHelper output)
{
    /// <summary>Stated bound from the attack command's return to the alert: the 1 s sweep plus TCG slowness.</summary>
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task Each_attack_of_the_kernel_rootkit_is_alerted_with_evidence_and_the_benign_workload_is_not()
    {
        // False-positive test: the benign workload and the victims, every hook placed, sweeps past the
        // anomaly detector's learning phase (3 sweeps).
        await lab.WaitForSweepsAsync(6);
        Assert.True(lab.Session.Monitor.PlacedHooks.Count >= 3, lab.Log.ToString());
        Assert.Empty(lab.Alerts.Select(a => $"{a.Alert.Detector}: {a.Alert.Title}"));
        var latencies = new List<string>();

        // (a) insmod: the module replaces sys_call_table[62] (kill). The write hook on the table sees it.
        TimeSpan t0 = lab.Now;
        await Sh("insmod /lib/vmi/vmi_rootkit.ko");
        // The alert on the finished write: entry 62 pointing outside kernel text. (A sweep that reads the
        // table while the copy is half done, or while the hook loop holds the guest mid-copy, may first
        // report a torn pointer as "changed since the baseline": a true finding, but not this one.)
        static bool KillHooked(Alert a) => a.Evidence.GetValueOrDefault("number") == "62" && a.Evidence.GetValueOrDefault("condition") == "points outside kernel text";
        var (hook, l1) = await WaitAsync("syscall-hook", t0, KillHooked, Bound);
        latencies.Add($"syscall table hook: {l1.TotalSeconds:0.00} s");
        Assert.Contains(hook.Techniques, t => t.Id == "T1014");
        // The write hook saw the whole 8-byte pointer in one hit (the module copies with rep movsb: no torn
        // value). The periodic sweep may have raised the alert before the hit was processed.
        ulong handler = ulong.Parse(hook.Evidence["handler"].AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        // (Runs of #5 and #6 sometimes saw no hooked write here: the hooks and the kernel model read through the
        // CR3 the vCPU held at attach, a process's page table freed and reused once that process exited. They
        // now read through init_top_pgt, and the write must arrive.)
        MemoryAccess write = await lab.WaitForEventAsync<MemoryAccess>(m => m.Hook == "syscall-table");
        Assert.Equal(MemoryAccessKind.Write, write.Access);
        Assert.Equal(8, write.Size);
        Assert.Equal(handler, BitConverter.ToUInt64(write.NewValue));
        Assert.Equal(hook.Evidence["expected_handler"], "0x" + BitConverter.ToUInt64(write.OldValue).ToString("x", CultureInfo.InvariantCulture));
        Assert.Equal(write.Gva, ulong.Parse(hook.Evidence["entry_address"].AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
        latencies.Add(hook.RelatedEvents.Contains(write.Id)
            ? $"hook event to alert (syscall table write): {(hook.Time - write.Time).TotalMilliseconds:0.0} ms"
            : "hook event to alert (syscall table write): the periodic sweep alerted first");
        // One hooked write, one alert for the hooked entry: the copy was reported whole, not as torn prefixes.
        Assert.Single(lab.Alerts, a => a.Alert.Detector == "syscall-hook" && KillHooked(a.Alert));

        // The breakpoints told the story of the insmod: the shell forked, exec'd insmod, the module loaded.
        ModuleLoaded loaded = await lab.WaitForEventAsync<ModuleLoaded>(m => m.Name == "vmi_rootkit");
        Assert.NotEqual(0UL, loaded.Address);
        // busybox runs the insmod applet by re-executing itself: the kernel's view is an exec of /proc/self/exe.
        ProcessExec exec = await lab.WaitForEventAsync<ProcessExec>(e => e.Path == "/proc/self/exe" && e.Pid > 1);
        Assert.Equal("exe", exec.Name);
        Assert.Contains(lab.Events.OfType<ProcessStarted>(), p => p.Pid == exec.Pid);
        Assert.Contains(lab.Events.OfType<BreakpointHit>(), b => b.Hook == "module-load" && b.Symbol == "do_init_module+0x0");

        // (b) hide a process by unlinking it from the task list.
        t0 = lab.Now;
        await Sh($"kill -63 {lab.HidePid}");
        var (hidden, l2) = await WaitAsync("hidden-process", t0, a => a.Pid == lab.HidePid, Bound);
        latencies.Add($"hidden process: {l2.TotalSeconds:0.00} s");
        Assert.Contains(hidden.Techniques, t => t.Id.StartsWith("T1014", StringComparison.Ordinal) || t.Id.StartsWith("T1564", StringComparison.Ordinal));

        // (e) raise a non-root process's credentials to root (no exec).
        t0 = lab.Now;
        await Sh($"kill -64 {lab.UserPid}");
        var (cred, l3) = await WaitAsync("credential-escalation", t0, a => a.Pid == lab.UserPid, Bound);
        latencies.Add($"credential escalation: {l3.TotalSeconds:0.00} s");
        Assert.NotEmpty(cred.Techniques);

        // (d) patch tcp4_seq_show's prologue with a jump into the module.
        t0 = lab.Now;
        await Sh("kill -61 0");
        var (inline, l4) = await WaitAsync("inline-hook", t0, a => a.Title.Contains("tcp4_seq_show", StringComparison.Ordinal), Bound);
        latencies.Add($"inline hook: {l4.TotalSeconds:0.00} s");
        Assert.Contains(inline.Techniques, t => t.Id == "T1014");

        // (c) hide the module itself from the module list and sysfs.
        t0 = lab.Now;
        await Sh("kill -62 0");
        var (module, l5) = await WaitAsync("hidden-module", t0, a => a.Title.Contains("vmi_rootkit", StringComparison.Ordinal), Bound);
        latencies.Add($"hidden module: {l5.TotalSeconds:0.00} s");
        Assert.NotEmpty(module.Evidence);

        foreach (string l in latencies)
            output.WriteLine(l);
        foreach (var (a, at) in lab.Alerts)
            output.WriteLine(FormattableString.Invariant($"{at.TotalSeconds:0.0}s [{a.Severity}] {a.Detector}: {a.Title} | {string.Join(", ", a.Evidence.Select(kv => kv.Key + "=" + kv.Value))}"));
        ResultsFile.Append("rootkit-latency.txt", latencies);
    }

    /// <summary>Waits for the alert; on a miss, adds the guest's kernel log and what tcp4_seq_show's entry holds now.</summary>
    private async Task<(Alert Alert, TimeSpan Latency)> WaitAsync(string detector, TimeSpan since, Func<Alert, bool> match, TimeSpan bound)
    {
        try
        {
            return await lab.WaitForAlertAsync(detector, since, match, bound);
        }
        catch (Xunit.Sdk.XunitException e)
        {
            string dmesg;
            try
            {
                dmesg = string.Join("\n", (await lab.Guest.ShellAsync("dmesg | tail -25", TimeSpan.FromSeconds(30))).Lines);
            }
            catch (Exception x) when (x is Vmi.Core.VmiException or TimeoutException)
            {
                dmesg = "(dmesg failed: " + x.Message + ")";
            }
            string entry = "(tcp4_seq_show not found)";
            if (lab.Session.Kernel.Symbols.TryGetAddress("tcp4_seq_show", out ulong fn))
            {
                var code = new byte[16];
                var memory = new Vmi.Memory.VirtualMemory(lab.Session.Kernel.Memory, lab.Session.Kernel.KernelPaging);
                int read = memory.Read(fn, code).BytesRead;
                entry = $"tcp4_seq_show at 0x{fn:x}: {Convert.ToHexStringLower(code.AsSpan(0, read))}";
            }
            throw new Xunit.Sdk.XunitException($"{e.Message}\n{entry}\nguest dmesg:\n{dmesg}");
        }
    }

    private async Task Sh(string command)
    {
        var reply = await lab.Guest.ShellAsync(command, TimeSpan.FromSeconds(60));
        Assert.True(reply.ExitStatus == 0, $"'{command}' failed ({reply.ExitStatus}): {string.Join("\n", reply.Lines)}");
    }
}

internal static class ResultsFile
{
    /// <summary>Appends figures to build/test-results/NAME, so a CI run leaves them for the closing note.</summary>
    public static void Append(string name, IEnumerable<string> lines)
    {
        string dir = Path.Combine(Path.GetDirectoryName(Vmi.Lab.LabBuilder.DefaultLabDirectory())!, "test-results");
        Directory.CreateDirectory(dir);
        File.AppendAllLines(Path.Combine(dir, name), lines.Prepend("# " + DateTime.UtcNow.ToString("u", CultureInfo.InvariantCulture)));
    }
}
