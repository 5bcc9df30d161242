using System.Reactive.Concurrency;
using Vmi.Events;
using Vmi.Linux;
using Vmi.Linux.Model;
using Vmi.Memory;
using Vmi.Pipeline;
using Vmi.Qemu;
using Vmi.Targets;
using Vmi.Targets.Hooks;

namespace Vmi.Monitoring;

/// <summary>
/// One VM under watch, end to end: the guest's profile bootstrapped from its memory, the pipeline with
/// the VM's detectors, the hooks (through the gdb stub when one is given) and the sweeps. What
/// <c>vmi monitor</c> runs, and what tests drive.
/// </summary>
public sealed class MonitorSession : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly IHookBackend? _hooks;
    private readonly bool _ownsPipeline;
    private readonly ITarget _target;
    private readonly TextWriter _log;
    private Task _run = Task.CompletedTask;

    private MonitorSession(ITarget target, TextWriter log, string vmId, LinuxProfile profile, LinuxKernel kernel, GuestView guest, EventPipeline pipeline, bool ownsPipeline,
        VmMonitor monitor, IHookBackend? hooks)
    {
        _target = target;
        _log = log;
        VmId = vmId;
        Profile = profile;
        Kernel = kernel;
        Guest = guest;
        Pipeline = pipeline;
        _ownsPipeline = ownsPipeline;
        Monitor = monitor;
        _hooks = hooks;
    }

    public string VmId { get; }
    public LinuxProfile Profile { get; }
    public LinuxKernel Kernel { get; }
    public GuestView Guest { get; }
    public EventPipeline Pipeline { get; }
    public VmMonitor Monitor { get; }

    /// <summary>
    /// Several lines on what the session is doing: sweeps and the hook loop, the pipeline's counters and each
    /// detector's state. For a test or an operator looking at a session that went quiet.
    /// </summary>
    public string Diagnostics
    {
        get
        {
            var s = new System.Text.StringBuilder();
            s.AppendLine(FormattableString.Invariant($"session {VmId}: {Completion.Status}; kernel page table 0x{Kernel.KernelPaging.Cr3:x}; {Monitor.State}"));
            PipelineStatistics p = Pipeline.Statistics;
            s.AppendLine(FormattableString.Invariant(
                $"pipeline: published {p.Published}, delivered {p.Delivered}, analyzed {p.Analyzed}, alerts {p.Alerts} (+{p.AlertsSuppressed} suppressed), findings {p.Findings}, faults {p.Faults}, shed {p.Shed} ({string.Join(", ", p.ShedByStage.Select(kv => kv.Key + " " + kv.Value))})"));
            if (Pipeline.FindVm(VmId) is VmStream vm)
            {
                s.AppendLine(FormattableString.Invariant($"ingress queue {vm.Queued}"));
                foreach (string d in vm.DetectorStates)
                    s.AppendLine("  " + d);
            }
            return s.ToString();
        }
    }

    /// <summary>Ends when the session stops (or fails: the exception is here).</summary>
    public Task Completion => _run;

    /// <summary>
    /// Bootstraps the guest's Linux profile, attaches the detectors and starts watching. Subscribe to
    /// <see cref="Pipeline"/>'s outputs before calling, or pass a pipeline you already subscribed to.
    /// </summary>
    /// <param name="vmId">The VM's name in events.</param>
    /// <param name="target">Memory and registers.</param>
    /// <param name="gdb">The VM's gdb stub for hooks, or null for sweeps only. The session owns it (detaches at the end).</param>
    /// <param name="options">Sweep interval, hooks, detector options.</param>
    /// <param name="detectors">The detectors for the VM (e.g. DetectorCatalog.CreateAll).</param>
    /// <param name="pipeline">A pipeline to join, or null for a new one on the task pool scheduler.</param>
    /// <param name="log">Where the session says what it does.</param>
    /// <param name="cancellationToken">Cancels the start.</param>
    /// <exception cref="Vmi.Core.VmiException">The guest's kernel cannot be found or understood.</exception>
    public static async Task<MonitorSession> StartAsync(string vmId, ITarget target, GdbRemoteClient? gdb, MonitorOptions options,
        Func<GuestView, IEnumerable<IDetector>> detectors, EventPipeline? pipeline = null, TextWriter? log = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(detectors);
        log ??= TextWriter.Null;
        // With our own stub connection, read through it: the stub serves one client, so the target
        // could not open another.
        VcpuRegisters regs = gdb is not null
            ? await QemuTarget.ReadRegistersAsync(gdb, 0, cancellationToken).ConfigureAwait(false)
            : await target.GetRegistersAsync(0, cancellationToken).ConfigureAwait(false);
        LinuxProfile profile = LinuxProfile.Bootstrap(target.Memory, regs.Paging);
        LinuxKernel kernel = profile.CreateKernel(target.Memory, regs.Paging);
        log.WriteLine($"vmi monitor: {vmId}: {profile.Banner.Trim()} ({profile.SymbolSource}, profile in {profile.BootstrapTime.TotalMilliseconds:0} ms)");
        var guest = new GuestView(vmId, GuestOs.Linux, target.Memory, kernel);
        bool owns = pipeline is null;
        pipeline ??= new EventPipeline(TaskPoolScheduler.Default);
        VmStream vm = pipeline.AddVm(guest);
        foreach (IDetector d in detectors(guest))
            vm.AddDetector(d);
        log.WriteLine($"vmi monitor: {vmId}: detectors {string.Join(", ", vm.Detectors.Select(d => d.Id))}");
        // Hooks read the hooked ranges without the translation cache: a stale entry would make a wrong shadow.
        IHookBackend? hooks = gdb is null ? null : new GdbHookBackend(gdb, new VirtualMemory(target.Memory, kernel.KernelPaging));
        var monitor = new VmMonitor(vmId, kernel, pipeline.Publish, options, pipeline.Scheduler, hooks, log);
        var session = new MonitorSession(target, log, vmId, profile, kernel, guest, pipeline, owns, monitor, hooks);
        session._run = Task.Run(() => monitor.RunAsync(session._stop.Token), CancellationToken.None);
        await Task.WhenAny(monitor.Ready, session._run).ConfigureAwait(false);
        if (session._run.IsFaulted)
            await session._run.ConfigureAwait(false);
        return session;
    }

    /// <summary>Stops watching: hooks removed, the guest left running.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        try
        {
            await _run.ConfigureAwait(false);
        }
        catch (Exception e) when (e is Vmi.Core.VmiException or OperationCanceledException or IOException)
        {
            // Stopping anyway; the failure was reported through Completion.
        }
        // Detach this VM's detectors and wait for any call still running (a delayed scan, say): the caller
        // disposes the target next, and no detector may read its memory after that.
        if (!await Pipeline.RemoveVmAsync(VmId, TimeSpan.FromSeconds(30)).ConfigureAwait(false) && !Pipeline.IsDisposed)
            _log.WriteLine($"vmi monitor: {VmId}: a detector was still busy 30 s after the session stopped");
        if (_hooks is not null)
        {
            await _hooks.DisposeAsync().ConfigureAwait(false);
            if (_hooks is GdbHookBackend { CleanupProblem: string problem })
                _log.WriteLine($"vmi monitor: {VmId}: {problem}");
            // Detaching from QEMU's stub can leave the VM stopped in "debug": the guest runs on after us.
            if (_target is QemuTarget qemu)
            {
                try
                {
                    await qemu.ResumeAfterDebugAsync().ConfigureAwait(false);
                }
                catch (Exception e) when (e is Vmi.Core.VmiException or IOException or ObjectDisposedException)
                {
                    // The VM is already gone.
                }
            }
        }
        if (_ownsPipeline)
            await Pipeline.DisposeAsync().ConfigureAwait(false);
        _stop.Dispose();
    }
}
