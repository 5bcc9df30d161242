using System.Globalization;
using Vmi.Events;
using Vmi.Linux.Model;
using Vmi.Pipeline;

namespace Vmi.Detectors.Linux;

/// <summary>Options of <see cref="CredentialEscalationDetector"/>.</summary>
public sealed record CredentialEscalationDetectorOptions
{
    /// <summary>
    /// A process that exec'd a program whose mode is unknown (exe_file unreadable) counts as having run a
    /// set-uid program, so it does not alert. Default true (fewer false positives on damaged reads).
    /// </summary>
    public bool TrustExecWithUnknownMode { get; init; } = true;

    /// <summary>Severity of the alerts. Default <see cref="Severity.Critical"/>.</summary>
    public Severity Severity { get; init; } = Severity.Critical;
}

/// <summary>
/// Finds a process that became root without executing a set-uid program: its uid or euid (of either its
/// real_cred or its cred) went from non-zero to 0 between two sweeps, and it neither exec'd (no ProcessExec,
/// same mm and exe) a set-uid executable nor had a saved set-user-id of 0 to return to. That is a kernel
/// exploit calling commit_creds(prepare_kernel_cred(0)) (the cred pointer changes) or a rootkit editing the
/// cred in place (DKOM: same pointer, new ids). Kernel threads are ignored.
/// </summary>
public sealed class CredentialEscalationDetector : IDetector
{
    public const string Id = "credential-escalation";

    // include/uapi/linux/stat.h
    private const uint SIsuid = 0x800; // 04000

    private readonly CredentialEscalationDetectorOptions _options;
    private Dictionary<(ulong Task, ulong Start), Snapshot> _known = [];
    private readonly HashSet<int> _execPids = [];
    private readonly HashSet<ulong> _execTasks = [];

    public CredentialEscalationDetector(CredentialEscalationDetectorOptions? options = null)
    {
        _options = options ?? new CredentialEscalationDetectorOptions();
    }

    public DetectorInfo Info { get; } = new(
        Id,
        "Privilege escalation to root without a set-uid program",
        "A process's uid or euid became 0 between two sweeps although it did not execute a set-uid program: a kernel exploit (commit_creds) or credential tampering (DKOM).",
        GuestOs.Linux,
        [AttackTechnique.ExploitationForPrivilegeEscalation, AttackTechnique.AccessTokenManipulation])
    {
        TimeBudget = TimeSpan.FromSeconds(10),
    };

    public bool Accepts(VmiEvent e) => e is SweepTick or ProcessExec;

    public ValueTask AnalyzeAsync(VmiEvent e, DetectorContext context)
    {
        ArgumentNullException.ThrowIfNull(e);
        ArgumentNullException.ThrowIfNull(context);
        if (e is ProcessExec exec)
        {
            _execPids.Add(exec.Pid);
            if (exec.TaskAddress != 0)
                _execTasks.Add(exec.TaskAddress);
            return ValueTask.CompletedTask;
        }
        if (context.Guest.Linux is not LinuxKernel kernel)
            return ValueTask.CompletedTask;
        KernelList<LinuxProcess> processes = kernel.GetProcesses();
        var now = new Dictionary<(ulong, ulong), Snapshot>(processes.Items.Count);
        foreach (LinuxProcess p in processes.Items)
        {
            if (p.IsKernelThread)
                continue;
            Snapshot current = Snapshot.Of(p, kernel.ReadCred(p.CredAddress));
            now[(p.TaskAddress, p.StartTimeNs)] = current;
            if (_known.TryGetValue((p.TaskAddress, p.StartTimeNs), out Snapshot? before))
                Check(before, current, p, e, context);
        }
        // A partial walk must not forget the processes it missed.
        if (!processes.IsComplete)
        {
            foreach (var kv in _known)
                now.TryAdd(kv.Key, kv.Value);
        }
        _known = now;
        _execPids.Clear();
        _execTasks.Clear();
        return ValueTask.CompletedTask;
    }

    private void Check(Snapshot before, Snapshot after, LinuxProcess p, VmiEvent e, DetectorContext context)
    {
        bool wasRoot = before.Uid == 0 || before.Euid == 0;
        bool isRoot = after.Uid == 0 || after.Euid == 0;
        if (wasRoot || !isRoot)
            return;
        // A set-uid program that dropped privileges may take them back: its saved set-user-id is 0.
        if (before.Suid == 0)
            return;
        bool execd = _execPids.Contains(p.Pid) || _execTasks.Contains(p.TaskAddress) || before.Mm != after.Mm
            || !string.Equals(before.ExePath, after.ExePath, StringComparison.Ordinal);
        if (execd && (after.ExeMode is null ? _options.TrustExecWithUnknownMode : (after.ExeMode.Value & SIsuid) != 0))
            return;
        bool pointerChanged = before.Cred != after.Cred || before.RealCred != after.RealCred;
        string how = pointerChanged ? "cred pointer replaced (commit_creds)" : "cred edited in place (DKOM)";
        var evidence = new Dictionary<string, string>
        {
            ["pid"] = p.Pid.ToString(CultureInfo.InvariantCulture),
            ["comm"] = p.Comm,
            ["task"] = Hex(p.TaskAddress),
            ["old_uid"] = before.Uid.ToString(CultureInfo.InvariantCulture),
            ["old_euid"] = before.Euid.ToString(CultureInfo.InvariantCulture),
            ["new_uid"] = after.Uid.ToString(CultureInfo.InvariantCulture),
            ["new_euid"] = after.Euid.ToString(CultureInfo.InvariantCulture),
            ["old_cred"] = Hex(before.Cred),
            ["new_cred"] = Hex(after.Cred),
            ["old_real_cred"] = Hex(before.RealCred),
            ["new_real_cred"] = Hex(after.RealCred),
            ["cred_pointer_changed"] = pointerChanged ? "true" : "false",
            ["method"] = how,
            ["exec"] = execd ? "non-set-uid program" : "none",
        };
        if (after.ExePath is not null)
            evidence["executable"] = after.ExePath;
        context.Report("credentials", $"{p.Comm} (pid {p.Pid}) became root without a set-uid exec: {how}", _options.Severity,
            expected: $"uid {before.Uid} euid {before.Euid}", actual: $"uid {after.Uid} euid {after.Euid}", address: after.Cred, evidence: evidence);
        context.Raise(
            key: string.Create(CultureInfo.InvariantCulture, $"{Id}:{p.Pid}:0x{p.TaskAddress:x}:{p.StartTimeNs}"),
            title: $"{p.Comm} (pid {p.Pid}) escalated to root without executing a set-uid program: {how}",
            severity: _options.Severity,
            evidence: evidence,
            pid: p.Pid,
            processName: p.Comm,
            relatedEvents: [e.Id]);
    }

    private static string Hex(ulong v) => string.Create(CultureInfo.InvariantCulture, $"0x{v:x}");

    private sealed record Snapshot(uint Uid, uint Euid, uint Suid, ulong Cred, ulong RealCred, ulong Mm, string? ExePath, uint? ExeMode)
    {
        /// <summary>The lower of real_cred's and cred's ids: root in either counts.</summary>
        public static Snapshot Of(LinuxProcess p, LinuxCred? cred) => new(
            cred is null ? p.Uid : Math.Min(p.Uid, cred.Uid),
            cred is null ? p.Euid : Math.Min(p.Euid, cred.Euid),
            cred is null ? p.Suid : Math.Min(p.Suid, cred.Suid),
            p.CredAddress, p.RealCredAddress, p.MmAddress, p.ExePath, p.ExeMode);
    }
}
