using System.Globalization;
using System.Reflection;
using System.Text;
using Vmi.Events;
using Vmi.Linux.Model;
using Vmi.Pipeline;
using Vmi.Signatures.Yara;

namespace Vmi.Detectors.Av;

/// <summary>Compiled rules in force and where they came from; the detector asks for the current set before every scan.</summary>
/// <param name="Rules">The compiled rules.</param>
/// <param name="Version">The bundle version (named in every alert); "builtin" or "file" for rules not from a bundle.</param>
/// <param name="Source">Where they were loaded from.</param>
public sealed record SignatureSet(YaraRules Rules, string Version, string Source)
{
    /// <summary>The rules shipped with Vmi (detectors/Vmi.Detectors.Av/Rules).</summary>
    public static SignatureSet BuiltIn { get; } = LoadBuiltIn();

    /// <summary>Compiles rule files into a set.</summary>
    public static SignatureSet FromFiles(IReadOnlyList<string> files, string version = "file")
    {
        ArgumentNullException.ThrowIfNull(files);
        return new SignatureSet(YaraRules.CompileFiles(files), version, string.Join(", ", files));
    }

    private static SignatureSet LoadBuiltIn()
    {
        var asm = typeof(SignatureSet).Assembly;
        var sb = new StringBuilder();
        foreach (string name in asm.GetManifestResourceNames().Where(n => n.EndsWith(".yar", StringComparison.Ordinal)).Order(StringComparer.Ordinal))
        {
            using var stream = asm.GetManifestResourceStream(name)!;
            using var reader = new StreamReader(stream);
            sb.Append(reader.ReadToEnd()).Append('\n');
        }
        return new SignatureSet(YaraRules.Compile(sb.ToString(), "builtin.yar", new YaraCompileOptions { AllowIncludes = false }), "builtin", "built-in rules");
    }
}

/// <summary>Where the detector gets its rules: a fixed set, or a source that hot-swaps bundles.</summary>
public interface ISignatureSource
{
    SignatureSet Current { get; }
}

/// <summary>A source that always gives the same set.</summary>
public sealed class FixedSignatureSource(SignatureSet set) : ISignatureSource
{
    public SignatureSet Current { get; } = set;
}

/// <summary>Options of <see cref="AvDetector"/> (configuration key <c>av-signature</c>).</summary>
public sealed record AvDetectorOptions
{
    /// <summary>YARA rule files. Empty: the built-in rules.</summary>
    public IReadOnlyList<string> RuleFiles { get; init; } = [];

    /// <summary>
    /// A rule-update state folder (<c>vmi rules update --state</c>): the signed bundle in force there is used,
    /// and a newly installed bundle replaces it while the detector runs. <see cref="RuleFiles"/> (or the
    /// built-in rules) stay in force until a bundle is installed. Null: no bundle.
    /// </summary>
    public string? RulesState { get; init; }

    /// <summary>Scan a process's memory when it execs (needs the exec breakpoint). Default true.</summary>
    public bool ScanOnExec { get; init; } = true;

    /// <summary>Scan a process's executable regions when the mprotect/mmap breakpoints show memory becoming executable. Default true.</summary>
    public bool ScanOnExecutableMemory { get; init; } = true;

    /// <summary>
    /// How long after an exec or protection-change breakpoint to scan: the breakpoint fires before the kernel
    /// finishes the change and before the program writes its pages. Default 0.5 s.
    /// </summary>
    public TimeSpan TriggerDelay { get; init; } = TimeSpan.FromMilliseconds(500);

    /// <summary>
    /// The fallback: on each sweep, scan processes not scanned yet and any whose executable anonymous or
    /// writable+executable regions appeared or changed (content hash). Default true.
    /// </summary>
    public bool ScanOnSweep { get; init; } = true;

    /// <summary>Most guest bytes one sweep scans; the rest waits for the next sweep. Default 256 MiB.</summary>
    public long MaxBytesPerSweep { get; init; } = 256L << 20;

    /// <summary>Severity when a rule has no <c>severity</c> meta. Default high.</summary>
    public Severity Severity { get; init; } = Severity.High;

    /// <summary>Process names never scanned (exact comm). Default none.</summary>
    public IReadOnlyList<string> ExcludeProcesses { get; init; } = [];
}

/// <summary>
/// The AV detector: scans process memory with YARA rules when a process execs, when memory becomes
/// executable (mprotect/mmap breakpoints from either hook backend), and on sweeps as the fallback for
/// new or changed executable regions. An alert names the rule, the process, the VMA, the offset, the
/// matched bytes and the bundle version; ATT&amp;CK ids come from the rule's <c>mitre_attack</c> meta.
/// </summary>
public sealed class AvDetector : IDetector
{
    public const string Id = "av-signature";

    /// <summary>The hook whose breakpoints (on mprotect_fixup and mmap_region) mean "memory may have become executable".</summary>
    public const string ExecutableMemoryHook = "exec-memory";

    private const ulong VmWrite = 0x2, VmExec = 0x4;
    private static readonly AttackTechnique MaliciousFile = new("T1204.002", "User Execution: Malicious File", "Execution");

    private readonly AvDetectorOptions _options;
    private readonly ISignatureSource _source;
    private readonly Dictionary<int, ProcessState> _seen = [];

    private sealed class ProcessState
    {
        public ulong StartTime;
        public Dictionary<(ulong, ulong), ulong> ExecRegions = [];
        /// <summary>The rules of the last scan of all the process's memory (null: none yet), and of its executable memory. A new bundle rescans the process.</summary>
        public SignatureSet? FullSet, ExecSet;
        /// <summary>When the last scan of all the process's memory, and of its executable memory, started.</summary>
        public DateTimeOffset LastFullScan = DateTimeOffset.MinValue, LastExecScan = DateTimeOffset.MinValue;
    }

    public AvDetector(AvDetectorOptions? options = null, ISignatureSource? source = null)
    {
        _options = options ?? new AvDetectorOptions();
        if (_options.TriggerDelay < TimeSpan.Zero || _options.TriggerDelay > TimeSpan.FromMinutes(1))
            throw new ArgumentException($"triggerDelay must be between 0 and 1 minute, not {_options.TriggerDelay}");
        if (_options.MaxBytesPerSweep <= 0)
            throw new ArgumentException("maxBytesPerSweep must be positive");
        if (source is null)
        {
            try
            {
                SignatureSet fixedSet = _options.RuleFiles.Count > 0 ? SignatureSet.FromFiles(_options.RuleFiles) : SignatureSet.BuiltIn;
                source = _options.RulesState is { Length: > 0 } state ? BundleSignatureSource.For(state, fixedSet) : new FixedSignatureSource(fixedSet);
            }
            catch (YaraCompileException e)
            {
                // The catalog turns this into "detector 'av-signature': bad option: ruleFiles: FILE(LINE,COL): error: …".
                throw new ArgumentException("ruleFiles: " + e.Message, e);
            }
            catch (Vmi.Updates.UpdateRejectedException e)
            {
                throw new ArgumentException("rulesState: " + e.Message, e);
            }
        }
        _source = source;
    }

    /// <summary>Bytes scanned so far and scans made (for tests and health figures).</summary>
    public long BytesScanned { get; private set; }
    public int Scans { get; private set; }

    public DetectorInfo Info { get; } = new(
        Id,
        "Malware signature in memory",
        "YARA rules matched a process's memory: on exec, when memory became executable, or on a sweep. Catches payloads that exist only in memory.",
        GuestOs.Linux,
        [MaliciousFile, AttackTechnique.ProcessInjection])
    {
        TimeBudget = TimeSpan.FromSeconds(60),
    };

    public bool Accepts(VmiEvent e) => e switch
    {
        ProcessExec => _options.ScanOnExec,
        BreakpointHit b => _options.ScanOnExecutableMemory && b.Hook == ExecutableMemoryHook,
        SweepTick => _options.ScanOnSweep,
        ProcessExited => true,
        _ => false,
    };

    public async ValueTask AnalyzeAsync(VmiEvent e, DetectorContext context)
    {
        ArgumentNullException.ThrowIfNull(e);
        ArgumentNullException.ThrowIfNull(context);
        if (e is ProcessExited exited)
        {
            _seen.Remove(exited.Pid);
            return;
        }
        if (context.Guest.Linux is not LinuxKernel kernel)
            return;
        switch (e)
        {
            case ProcessExec exec:
            {
                DateTimeOffset due = await WaitUntilDueAsync(e, context).ConfigureAwait(false);
                if (FindByPid(kernel, exec.Pid) is LinuxProcess p && !ScannedSince(p, due, full: true))
                    Scan(kernel, p, null, "exec", e, context);
                break;
            }
            case BreakpointHit hit:
            {
                DateTimeOffset due = await WaitUntilDueAsync(e, context).ConfigureAwait(false);
                if (FindByPageTable(kernel, hit.Cr3) is LinuxProcess q && !ScannedSince(q, due, full: false))
                    Scan(kernel, q, IsExecutableAnonymousOrWritable, "executable memory", e, context);
                break;
            }
            case SweepTick:
                Sweep(kernel, e, context);
                break;
        }
    }

    /// <summary>
    /// Waits until <see cref="AvDetectorOptions.TriggerDelay"/> after the event happened (not after it was
    /// dequeued: a burst of triggers queued behind a scan does not wait once each) and returns that time.
    /// </summary>
    private async Task<DateTimeOffset> WaitUntilDueAsync(VmiEvent e, DetectorContext context)
    {
        DateTimeOffset due = e.Time + _options.TriggerDelay;
        TimeSpan remaining = due - context.Scheduler.Now;
        if (remaining > TimeSpan.Zero)
            await context.DelayAsync(remaining > _options.TriggerDelay ? _options.TriggerDelay : remaining).ConfigureAwait(false);
        return due;
    }

    /// <summary>
    /// True when a scan of the process with the current rules started at or after <paramref name="due"/>: it
    /// already saw what the trigger asks to look at (many mmap/mprotect hits of one process give one scan).
    /// </summary>
    private bool ScannedSince(LinuxProcess p, DateTimeOffset due, bool full)
    {
        if (!_seen.TryGetValue(p.Pid, out ProcessState? state) || state.StartTime != p.StartTimeNs)
            return false;
        SignatureSet set = _source.Current;
        return (ReferenceEquals(state.FullSet, set) && state.LastFullScan >= due)
            || (!full && ReferenceEquals(state.ExecSet, set) && state.LastExecScan >= due);
    }

    private static bool IsExecutableAnonymousOrWritable(LinuxVma v) => (v.Flags & VmExec) != 0 && (v.File == 0 || (v.Flags & VmWrite) != 0);

    private static LinuxProcess? FindByPid(LinuxKernel kernel, int pid) =>
        kernel.GetProcesses().Items.FirstOrDefault(p => p.Pid == pid && p.Pid == p.Tgid);

    private static LinuxProcess? FindByPageTable(LinuxKernel kernel, ulong cr3)
    {
        // CR3 carries a PCID in its low 12 bits and a no-flush flag in bit 63.
        ulong root = cr3 & 0x000F_FFFF_FFFF_F000UL;
        return root == 0 ? null : kernel.GetProcesses().Items.FirstOrDefault(p => p.PageTablePhysical == root && p.Pid == p.Tgid);
    }

    private void Sweep(LinuxKernel kernel, VmiEvent e, DetectorContext context)
    {
        long budget = _options.MaxBytesPerSweep;
        var processes = kernel.GetProcesses();
        foreach (var p in processes.Items.OrderBy(p => p.Pid))
        {
            if (budget <= 0 || context.Cancellation.IsCancellationRequested)
                break;
            if (p.MmAddress == 0 || p.Pid != p.Tgid || _options.ExcludeProcesses.Contains(p.Comm))
                continue;
            bool known = _seen.TryGetValue(p.Pid, out var state) && state.StartTime == p.StartTimeNs;
            if (!known)
            {
                budget -= Scan(kernel, p, null, "sweep", e, context);
                continue;
            }
            SignatureSet set = _source.Current;
            if (!ReferenceEquals(state!.FullSet, set))
            {
                // Never scanned whole (only its executable memory after a hook), or a new rule bundle is in
                // force: the whole process is scanned (within the budget; the rest in the next sweeps).
                budget -= Scan(kernel, p, null, state.FullSet is null ? "sweep" : $"sweep: rule bundle {set.Version}", e, context, set);
                continue;
            }
            // Known process: rescan only executable regions that are new or whose contents changed.
            var current = ExecRegionHashes(kernel, p);
            var changed = current.Where(kv => !state!.ExecRegions.TryGetValue(kv.Key, out ulong h) || h != kv.Value).Select(kv => kv.Key).ToHashSet();
            if (changed.Count > 0)
                budget -= Scan(kernel, p, v => changed.Contains((v.Start, v.End)), "sweep: executable memory changed", e, context);
        }
    }

    private static Dictionary<(ulong, ulong), ulong> ExecRegionHashes(LinuxKernel kernel, LinuxProcess p)
    {
        var result = new Dictionary<(ulong, ulong), ulong>();
        var memory = kernel.UserMemory(p);
        foreach (var v in kernel.GetMappings(p).Items.Where(IsExecutableAnonymousOrWritable))
        {
            if (v.End - v.Start > 16UL << 20)
            {
                result[(v.Start, v.End)] = v.Flags;
                continue;
            }
            var buffer = new byte[v.End - v.Start];
            memory.Read(v.Start, buffer);
            result[(v.Start, v.End)] = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(System.Security.Cryptography.SHA256.HashData(buffer)) ^ v.Flags;
        }
        return result;
    }

    private long Scan(LinuxKernel kernel, LinuxProcess p, Func<LinuxVma, bool>? filter, string trigger, VmiEvent cause, DetectorContext context, SignatureSet? set = null)
    {
        set ??= _source.Current;
        context.Cancellation.ThrowIfCancellationRequested();
        DateTimeOffset started = context.Scheduler.Now;
        var defaults = new GuestScanOptions();
        var options = defaults with { Scan = defaults.Scan with { Cancellation = context.Cancellation } };
        var result = GuestScanner.ScanProcess(kernel, p, set.Rules, options, filter);
        Scans++;
        BytesScanned += result.BytesScanned;
        var previous = _seen.TryGetValue(p.Pid, out var old) && old.StartTime == p.StartTimeNs ? old : null;
        _seen[p.Pid] = new ProcessState
        {
            StartTime = p.StartTimeNs, ExecRegions = ExecRegionHashes(kernel, p),
            FullSet = filter is null ? set : previous?.FullSet,
            LastFullScan = filter is null ? started : previous?.LastFullScan ?? DateTimeOffset.MinValue,
            ExecSet = set,
            LastExecScan = started,
        };
        foreach (var m in result.Matches)
            RaiseMatch(p, m, set, trigger, cause, context);
        return Math.Max(1, result.BytesScanned);
    }

    private void RaiseMatch(LinuxProcess p, GuestRuleMatch m, SignatureSet set, string trigger, VmiEvent cause, DetectorContext context)
    {
        var first = m.Strings.OrderBy(s => s.Address).FirstOrDefault();
        var rule = m.Rule;
        foreach (var s in m.Strings.Take(16))
        {
            context.Emit(new SignatureMatch
            {
                VmId = context.VmId, Time = context.Scheduler.Now, Rule = rule.Name, Tags = rule.Tags, Pid = p.Pid, ProcessName = p.Name,
                Region = s.Region, Address = s.Address, StringId = s.StringId, Data = s.Data, BundleVersion = set.Version, Cause = cause.Id,
            });
        }
        var evidence = new Dictionary<string, string>
        {
            ["rule"] = rule.Name,
            ["pid"] = p.Pid.ToString(CultureInfo.InvariantCulture),
            ["process"] = p.Name,
            ["trigger"] = trigger,
            ["bundle"] = set.Version,
            ["rules_source"] = set.Source,
        };
        if (rule.Tags.Count > 0)
            evidence["tags"] = string.Join(',', rule.Tags);
        if (rule.GetMeta("description") is string description)
            evidence["description"] = description;
        if (first is not null)
        {
            evidence["vma"] = first.Region;
            evidence["address"] = string.Create(CultureInfo.InvariantCulture, $"0x{first.Address:x}");
            evidence["offset"] = string.Create(CultureInfo.InvariantCulture, $"0x{first.Offset:x}");
        }
        int i = 0;
        foreach (var s in m.Strings.Take(8))
        {
            var sb = new StringBuilder();
            YaraCli.AppendData(sb, s.Data, hex: false);
            evidence[$"match{i}"] = string.Create(CultureInfo.InvariantCulture, $"{s.StringId} at 0x{s.Address:x} ({s.Region}, offset 0x{s.Offset:x}): {sb}");
            evidence[$"match{i}_hex"] = Convert.ToHexStringLower(s.Data);
            i++;
        }
        context.Raise(new Alert
        {
            VmId = context.VmId,
            Time = context.Scheduler.Now,
            Detector = Id,
            Title = first is null
                ? $"{rule.Name} matched {p.Name} (pid {p.Pid})"
                : string.Create(CultureInfo.InvariantCulture, $"{rule.Name} matched {p.Name} (pid {p.Pid}) at 0x{first.Address:x} in {first.Region}"),
            Severity = SeverityOf(rule),
            Techniques = TechniquesOf(rule),
            Evidence = evidence,
            Description = rule.GetMeta("description") as string,
            Pid = p.Pid,
            ProcessName = p.Name,
            RelatedEvents = [cause.Id],
            Key = string.Create(CultureInfo.InvariantCulture, $"{Id}:{p.Pid}:{p.StartTimeNs}:{rule.Name}"),
            BundleVersion = set.Version,
            Cause = cause.Id,
        });
    }

    private Severity SeverityOf(YaraRule rule) => (rule.GetMeta("severity") as string)?.ToLowerInvariant() switch
    {
        "info" or "informational" => Severity.Info,
        "low" => Severity.Low,
        "medium" => Severity.Medium,
        "high" => Severity.High,
        "critical" => Severity.Critical,
        _ => _options.Severity,
    };

    private static IReadOnlyList<AttackTechnique> TechniquesOf(YaraRule rule)
    {
        var ids = new List<string>();
        foreach (var key in new[] { "mitre_attack", "attack", "mitre", "technique" })
        {
            if (rule.GetMeta(key) is string s)
                ids.AddRange(s.Split([',', ' ', ';'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        }
        var known = typeof(AttackTechnique).GetFields(BindingFlags.Public | BindingFlags.Static)
            .Where(f => f.FieldType == typeof(AttackTechnique)).Select(f => (AttackTechnique)f.GetValue(null)!).ToList();
        var result = ids.Where(id => id.StartsWith('T')).Distinct(StringComparer.Ordinal)
            .Select(id => known.FirstOrDefault(k => k.Id == id) ?? (id == MaliciousFile.Id ? MaliciousFile : new AttackTechnique(id, id, "")))
            .ToList();
        return result.Count > 0 ? result : [MaliciousFile];
    }
}
