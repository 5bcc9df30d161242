using System.Reactive.Concurrency;
using Vmi.Core;
using Vmi.Events;
using Vmi.Monitoring;
using Vmi.Pipeline;
using Vmi.Targets.Hooks;
using Xunit;

namespace Vmi.Detectors.Tests;

/// <summary>The monitor's configuration, hook plan, sweeps and one-shot check on the lab's kernel.</summary>
[Collection(LabDumpCollection.Name)]
public sealed class MonitoringTests(LabDumpFixture lab)
{
    [Fact]
    public void Hook_plan_resolves_tables_text_pages_and_breakpoints_on_the_lab_kernel()
    {
        using AttackableGuest guest = lab.Attack();
        HookPlan plan = HookPlan.Resolve(guest.Kernel, new HookOptions { KernelTextFunctions = ["tcp4_seq_show", "vfs_read", "no_such_function"] });
        HookRequest table = Assert.Single(plan.Requests, r => r.Name == HookPlan.SyscallTable);
        Assert.Equal(guest.Symbol("sys_call_table"), table.Address);
        Assert.Equal((ulong)guest.Kernel.GetSyscallTable().Items.Count * 8, table.Length);
        Assert.Equal(HookKind.Write, table.Kind);
        HookRequest idt = Assert.Single(plan.Requests, r => r.Name == HookPlan.Idt);
        Assert.Equal(4096UL, idt.Length);
        var text = plan.Requests.Where(r => r.Name == HookPlan.KernelText).ToList();
        Assert.Contains(text, r => r.Address == (guest.Symbol("tcp4_seq_show") & ~0xfffUL) && r.Length == 4096);
        Assert.InRange(text.Count, 1, 2);
        Assert.Contains(plan.Requests, r => r.Name == HookPlan.ProcessCreate && r.Kind == HookKind.Execute && r.Address == guest.Symbol("wake_up_new_task"));
        Assert.Contains(plan.Requests, r => r.Name == HookPlan.Exec && r.Address == guest.Symbol("setup_new_exec"));
        Assert.Contains(plan.Requests, r => r.Name == HookPlan.ModuleLoad && r.Address == guest.Symbol("do_init_module"));
        Assert.Contains(plan.Requests, r => r.Name == HookPlan.ExecutableMemory && r.Kind == HookKind.Execute && r.Address == guest.Symbol("mprotect_fixup"));
        Assert.Contains(plan.Requests, r => r.Name == HookPlan.ExecutableMemory && r.Address == guest.Symbol("mmap_region"));
        Assert.Contains(plan.Problems, p => p.Contains("no_such_function", StringComparison.Ordinal));

        HookPlan none = HookPlan.Resolve(guest.Kernel, HookOptions.None);
        Assert.Empty(none.Requests);
    }

    [Fact]
    public void Options_parse_per_vm_settings_and_reject_bad_ones_with_the_line()
    {
        MonitorOptions o = MonitorOptions.Parse("""
            { "sweepInterval": "00:00:02", "hooks": { "exec": false, "kernelTextFunctions": ["vfs_read"] },
              // comments are allowed
              "detectors": { "idt-hook": false } }
            """);
        Assert.Equal(TimeSpan.FromSeconds(2), o.SweepInterval);
        Assert.False(o.Hooks.Exec);
        Assert.True(o.Hooks.SyscallTable);
        Assert.Equal(["vfs_read"], o.Hooks.KernelTextFunctions);
        Assert.NotNull(o.Detectors);

        var unknown = Assert.Throws<VmiException>(() => MonitorOptions.Parse("{\n \"sweepIntervall\": \"00:00:01\" }", "vm.json"));
        Assert.Contains("vm.json: line 2", unknown.Message, StringComparison.Ordinal);
        var tooFast = Assert.Throws<VmiException>(() => MonitorOptions.Parse("{ \"sweepInterval\": \"00:00:00.01\" }"));
        Assert.Contains("sweepInterval", tooFast.Message, StringComparison.Ordinal);
        Assert.Throws<VmiException>(() => MonitorOptions.Load("/nonexistent/vm.json"));
    }

    [Fact]
    public void Sweeps_emit_process_start_and_exit_telemetry_then_the_tick()
    {
        using AttackableGuest guest = lab.Attack();
        var events = new List<VmiEvent>();
        var clock = new VirtualClock();
        var monitor = new VmMonitor("lab", guest.Kernel, e => { events.Add(e); return true; }, new MonitorOptions(), clock);
        monitor.Sweep(SweepReason.Requested, null);
        // The baseline sweep announces nothing but the tick.
        Assert.IsType<SweepTick>(Assert.Single(events));

        // A process leaves the task list between two sweeps: it is reported as exited.
        var victim = guest.Kernel.GetProcesses().Items.First(p => !p.IsKernelThread && p.Pid > 1);
        guest.UnlinkTask(victim.TaskAddress);
        events.Clear();
        monitor.Sweep(SweepReason.Periodic, null);
        ProcessExited exited = Assert.Single(events.OfType<ProcessExited>());
        Assert.Equal(victim.Pid, exited.Pid);
        Assert.Equal(victim.TaskAddress, exited.TaskAddress);
        SweepTick tick = Assert.IsType<SweepTick>(events[^1]);
        Assert.Equal(2, tick.Number);
        Assert.Equal(2, monitor.Sweeps);
    }

    [Fact]
    public async Task Check_runs_each_detector_once_and_isolates_one_that_throws()
    {
        using AttackableGuest guest = lab.Attack();
        guest.WriteUInt64(guest.Symbol("sys_call_table") + 62 * 8, 0xffffffffc0010000);
        IDetector[] detectors = [.. BuiltInDetectors.Create(guest.Guest, null), new Throwing()];
        IntegrityReport report = await IntegrityCheck.RunAsync(guest.Guest, detectors, Scheduler.Default);
        Assert.Contains("syscall-hook", report.DetectorsRun);
        Assert.Contains(report.Alerts, a => a.Detector == "syscall-hook" && a.Evidence["number"] == "62");
        Assert.Contains(report.Findings, f => f.Detector == "syscall-hook");
        DetectorFault fault = Assert.Single(report.Faults);
        Assert.Equal("throwing", fault.Detector);
        Assert.Equal(DetectorFaultKind.Exception, fault.Fault);
        Assert.False(report.IsClean);
    }

    private sealed class Throwing : IDetector
    {
        public DetectorInfo Info { get; } = new("throwing", "Throws", "Always throws.", GuestOs.Linux, []);
        public bool Accepts(VmiEvent e) => true;
        public ValueTask AnalyzeAsync(VmiEvent e, DetectorContext context) => throw new InvalidOperationException("boom");
    }
}
