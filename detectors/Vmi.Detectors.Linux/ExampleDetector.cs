// ExampleDetector: the worked example of the detector SDK (detectors/README.md walks through it).
// Copy this file, rename the class, the options record and the Id, and change the check.

using Vmi.Events;
using Vmi.Linux.Model;
using Vmi.Pipeline;

namespace Vmi.Detectors.Linux;

/// <summary>
/// Options of <see cref="ExampleDetector"/>. Every detector has its own options record: the catalog
/// binds it from the detector's section of the JSON configuration (<c>"tmp-exec": { "directories": ["/tmp/"] }</c>),
/// so every property needs a default that works without configuration, documented here.
/// </summary>
public sealed record ExampleDetectorOptions
{
    /// <summary>
    /// Directories a program must not run from (prefixes, with the trailing slash). Default: the
    /// world-writable <c>/tmp/</c>, <c>/var/tmp/</c> and <c>/dev/shm/</c>, where droppers put payloads.
    /// </summary>
    public IReadOnlyList<string> Directories { get; init; } = ["/tmp/", "/var/tmp/", "/dev/shm/"];

    /// <summary>Full paths that may run from there anyway (an installer you trust). Default none.</summary>
    public IReadOnlyList<string> AllowedPrograms { get; init; } = [];

    /// <summary>Also look at every running process on each sweep, not only at exec events. Default true.</summary>
    public bool CheckOnSweep { get; init; } = true;

    /// <summary>Severity of the alerts. Default <see cref="Severity.Medium"/>.</summary>
    public Severity Severity { get; init; } = Severity.Medium;
}

/// <summary>
/// Flags a process whose program lives in a world-writable directory (<c>/tmp</c>, <c>/dev/shm</c> …):
/// malware dropped by an exploit or a downloader usually runs from there.
/// </summary>
/// <remarks>
/// How a detector works, in order:
/// <list type="number">
/// <item><see cref="Info"/> says who it is: the id (also its configuration key and the alert's <c>rule.id</c>), the guests it supports, the ATT&amp;CK techniques.</item>
/// <item><see cref="Accepts"/> picks the events it wants. It runs on the pipeline's thread for every event, so it must be a cheap type test.</item>
/// <item><see cref="AnalyzeAsync"/> gets those events one at a time, in order, with a <see cref="DetectorContext"/>: the guest (<c>context.Guest</c>), the clock (<c>context.Scheduler</c>) and where to report (<c>context.Raise</c>, <c>context.Report</c>).</item>
/// </list>
/// One instance watches one VM, so fields can hold per-VM state. An exception thrown here does not stop
/// the pipeline: it becomes a <c>DetectorFault</c> on the health stream and the next event is handled normally.
/// </remarks>
public sealed class ExampleDetector : IDetector
{
    /// <summary>The detector's id: kebab-case, stable (configurations and alert searches use it).</summary>
    public const string Id = "tmp-exec";

    // ATT&CK has no technique for "ran from /tmp" itself; the payload got there by Ingress Tool Transfer
    // and runs as user execution. Techniques not in AttackTechnique's list are created like this.
    private static readonly AttackTechnique IngressToolTransfer = new("T1105", "Ingress Tool Transfer", "Command and Control");

    private readonly ExampleDetectorOptions _options;

    /// <summary>The catalog passes the bound options; null means all defaults (handy in tests).</summary>
    public ExampleDetector(ExampleDetectorOptions? options = null)
    {
        _options = options ?? new ExampleDetectorOptions();
    }

    public DetectorInfo Info { get; } = new(
        Id,
        "Program run from a world-writable directory",
        "A process runs a program stored in /tmp, /var/tmp or /dev/shm, where exploits and downloaders drop their payloads.",
        GuestOs.Linux,
        [IngressToolTransfer, AttackTechnique.CommandAndScriptingInterpreter]);

    // Exec events arrive as they happen; sweeps let us also look at processes that started before we attached.
    public bool Accepts(VmiEvent e) => e is ProcessExec or ProcessStarted || (e is SweepTick && _options.CheckOnSweep);

    public ValueTask AnalyzeAsync(VmiEvent e, DetectorContext context)
    {
        ArgumentNullException.ThrowIfNull(e);
        ArgumentNullException.ThrowIfNull(context);
        switch (e)
        {
            // Telemetry events carry what we need: no guest access at all.
            case ProcessExec exec:
                Check(exec.Pid, exec.Name, exec.Path, exec.Uid, e, context);
                break;
            case ProcessStarted started:
                Check(started.Pid, started.Name, started.ExePath, started.Uid, e, context);
                break;
            // A sweep: read the guest's process list through the kernel model. Guest.Linux is null when
            // there is no live guest (a journal replay): then there is nothing to look at.
            case SweepTick when context.Guest.Linux is LinuxKernel kernel:
                KernelList<LinuxProcess> processes = kernel.GetProcesses();
                // Guest memory is hostile input: a damaged list gives partial results plus issues,
                // never an exception. Say so (as a finding) rather than pretending the check was complete.
                if (!processes.IsComplete)
                {
                    context.Report("process list", "the process list is incomplete: " + string.Join("; ", processes.Issues), Severity.Low);
                }
                foreach (LinuxProcess p in processes.Items)
                    Check(p.Pid, p.Name, p.ExePath, p.Uid, e, context);
                break;
        }
        // Detectors that do not need to await return a completed ValueTask: no allocation.
        return ValueTask.CompletedTask;
    }

    private void Check(int pid, string name, string? path, uint uid, VmiEvent e, DetectorContext context)
    {
        if (path is null || _options.AllowedPrograms.Contains(path, StringComparer.Ordinal))
            return;
        string? directory = _options.Directories.FirstOrDefault(d => path.StartsWith(d, StringComparison.Ordinal));
        if (directory is null)
            return;

        // Evidence: named, printable values. Formatting (ECS, syslog, the dashboard) is the sinks' job.
        var evidence = new Dictionary<string, string>
        {
            ["pid"] = pid.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["process"] = name,
            ["executable"] = path,
            ["directory"] = directory,
            ["uid"] = uid.ToString(System.Globalization.CultureInfo.InvariantCulture),
        };

        // The key identifies the condition, not the event: the pipeline raises one alert per key, so
        // the same process seen again on every sweep does not alert again. Include what makes it new
        // (another pid, or the same pid running another program, is a new condition).
        context.Raise(
            key: $"{Id}:{pid}:{path}",
            title: $"{name} (pid {pid}) runs from {directory}: {path}",
            severity: _options.Severity,
            evidence: evidence,
            pid: pid,
            processName: name,
            relatedEvents: [e.Id]);
    }
}
