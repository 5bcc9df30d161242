using System.Globalization;
using Vmi.Events;
using Vmi.Linux.Model;
using Vmi.Pipeline;

namespace Vmi.Detectors.Linux;

/// <summary>Options of <see cref="HiddenProcessDetector"/>.</summary>
public sealed record HiddenProcessDetectorOptions
{
    /// <summary>Compare the pid table (init_pid_ns.idr) with the task list. Default true.</summary>
    public bool UsePidTable { get; init; } = true;

    /// <summary>Compare the CPUs' run queues with the task list. Default true.</summary>
    public bool UseRunQueues { get; init; } = true;

    /// <summary>
    /// How a candidate is confirmed before it alerts (a task forking or exiting between two walks looks
    /// hidden for an instant): false (default) re-walks every view at once in the same sweep; true waits
    /// for the next sweep to see it hidden again (cheaper, slower to alert).
    /// </summary>
    public bool ConfirmAcrossSweeps { get; init; }

    /// <summary>Most alerts per sweep (a corrupted task list would otherwise flag everything). Default 64.</summary>
    public int MaxAlertsPerSweep { get; init; } = 64;

    /// <summary>Severity of the alerts. Default <see cref="Severity.High"/>.</summary>
    public Severity Severity { get; init; } = Severity.High;
}

/// <summary>
/// Finds processes hidden from the task list (DKOM: a rootkit unlinks its task_struct from init_task.tasks,
/// so /proc, ps and any list walker stop seeing it) by cross-view: every thread-group leader in the pid
/// table and every task on a CPU's run queue must be reachable from the task list, directly or as a thread
/// of a listed leader. Exiting tasks (PF_EXITING, TASK_DEAD, EXIT_ZOMBIE/EXIT_DEAD) and the CPUs' idle
/// tasks (pid 0) are never hidden.
/// </summary>
public sealed class HiddenProcessDetector : IDetector
{
    public const string Id = "hidden-process";

    // include/linux/sched.h
    private const uint PfExiting = 0x4;
    private const uint TaskDead = 0x80;
    private const uint ExitDead = 0x10, ExitZombie = 0x20; // task_struct.exit_state

    private readonly HiddenProcessDetectorOptions _options;
    private Dictionary<ulong, Candidate> _previous = [];

    public HiddenProcessDetector(HiddenProcessDetectorOptions? options = null)
    {
        _options = options ?? new HiddenProcessDetectorOptions();
    }

    public DetectorInfo Info { get; } = new(
        Id,
        "Process hidden from the task list",
        "A task is in the pid table or on a CPU's run queue but not reachable from the kernel's task list: it was unlinked to hide it from /proc (DKOM).",
        GuestOs.Linux,
        [AttackTechnique.Rootkit, AttackTechnique.HideArtifacts])
    {
        TimeBudget = TimeSpan.FromSeconds(10),
    };

    public bool Accepts(VmiEvent e) => e is SweepTick;

    public ValueTask AnalyzeAsync(VmiEvent e, DetectorContext context)
    {
        ArgumentNullException.ThrowIfNull(e);
        ArgumentNullException.ThrowIfNull(context);
        if (context.Guest.Linux is not LinuxKernel kernel)
            return ValueTask.CompletedTask;
        Dictionary<ulong, Candidate> now = Look(kernel, context);
        Dictionary<ulong, Candidate> confirmed;
        if (_options.ConfirmAcrossSweeps)
        {
            confirmed = now.Where(c => _previous.ContainsKey(c.Key)).ToDictionary(c => c.Key, c => c.Value);
            _previous = now;
        }
        else
        {
            Dictionary<ulong, Candidate> again = now.Count == 0 ? now : Look(kernel, null);
            confirmed = now.Where(c => again.ContainsKey(c.Key)).ToDictionary(c => c.Key, c => c.Value);
        }
        int raised = 0;
        foreach (Candidate c in confirmed.Values.OrderBy(c => c.Tgid))
        {
            if (raised++ >= _options.MaxAlertsPerSweep)
                break;
            Raise(c, e, context);
        }
        return ValueTask.CompletedTask;
    }

    private void Raise(Candidate c, VmiEvent e, DetectorContext context)
    {
        string address = string.Create(CultureInfo.InvariantCulture, $"0x{c.Task:x}");
        var evidence = new Dictionary<string, string>
        {
            ["pid"] = c.Pid.ToString(CultureInfo.InvariantCulture),
            ["tgid"] = c.Tgid.ToString(CultureInfo.InvariantCulture),
            ["comm"] = c.Comm,
            ["task"] = address,
            ["views"] = string.Join(",", c.Views.Order(StringComparer.Ordinal)),
            ["missing_from"] = "task list",
        };
        context.Report("task list", $"task {c.Comm} (pid {c.Tgid}) is not on the task list", _options.Severity,
            expected: "every live task reachable from init_task.tasks", actual: "seen only in " + evidence["views"], address: c.Task, evidence: evidence);
        context.Raise(
            key: $"{Id}:{c.Tgid}:{address}",
            title: $"hidden process {c.Comm} (pid {c.Tgid}): seen in the {evidence["views"]} but not on the task list",
            severity: _options.Severity,
            evidence: evidence,
            pid: c.Tgid,
            processName: c.Comm,
            relatedEvents: [e.Id]);
    }

    /// <summary>Candidates keyed by task address (of the thread-group leader when known).</summary>
    private Dictionary<ulong, Candidate> Look(LinuxKernel kernel, DetectorContext? context)
    {
        KernelList<LinuxProcess> processes = kernel.GetProcesses();
        if (!processes.IsComplete && context is not null)
            context.Report("task list", "the task list walk was incomplete: " + string.Join("; ", processes.Issues.Take(5)), Severity.Low);
        var leaders = new HashSet<ulong>();
        var tgids = new HashSet<int>();
        var tids = new HashSet<int>();
        foreach (LinuxProcess p in processes.Items)
        {
            leaders.Add(p.TaskAddress);
            tgids.Add(p.Tgid);
            tids.Add(p.Pid);
            foreach (int t in p.Threads)
                tids.Add(t);
        }
        var candidates = new Dictionary<ulong, Candidate>();
        if (_options.UsePidTable)
        {
            foreach (PidEntry entry in kernel.GetPidTable().Items)
            {
                // Leaders only: a hidden leader's threads would each say the same thing.
                if (entry.TaskAddress == 0 || entry.Pid == 0 || entry.Pid != entry.Tgid)
                    continue;
                if (leaders.Contains(entry.TaskAddress) || tgids.Contains(entry.Tgid))
                    continue;
                AddCandidate(kernel, candidates, entry.TaskAddress, entry.Pid, entry.Tgid, "pid table");
            }
        }
        if (_options.UseRunQueues)
        {
            foreach (RunQueueTask t in kernel.GetRunQueueTasks().Items)
            {
                if (t.Pid == 0 || tids.Contains(t.Pid) || tgids.Contains(t.Tgid) || leaders.Contains(t.TaskAddress))
                    continue;
                AddCandidate(kernel, candidates, t.TaskAddress, t.Pid, t.Tgid, string.Create(CultureInfo.InvariantCulture, $"run queue of cpu {t.Cpu}"));
            }
        }
        return candidates;
    }

    private static void AddCandidate(LinuxKernel kernel, Dictionary<ulong, Candidate> candidates, ulong task, int pid, int tgid, string view)
    {
        // Group threads under one key per thread group.
        ulong key = candidates.Values.FirstOrDefault(c => c.Tgid == tgid)?.Task ?? task;
        if (candidates.TryGetValue(key, out Candidate? existing))
        {
            existing.Views.Add(view);
            return;
        }
        LinuxProcess? p = kernel.ReadTask(task);
        if (p is null || IsExiting(kernel, task, p))
            return;
        candidates[key] = new Candidate(task, pid, tgid, p.Comm, [view]);
    }

    private static bool IsExiting(LinuxKernel kernel, ulong task, LinuxProcess p)
    {
        if ((p.Flags & PfExiting) != 0 || (p.State & TaskDead) != 0)
            return true;
        if (kernel.Types.TryOffsetOf("task_struct", "exit_state", out int offset))
        {
            Span<byte> b = stackalloc byte[4];
            if (kernel.KernelMemory.TryRead(task + (ulong)offset, b) && (System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(b) & (ExitZombie | ExitDead)) != 0)
                return true;
        }
        return false;
    }

    private sealed record Candidate(ulong Task, int Pid, int Tgid, string Comm, HashSet<string> Views);
}
