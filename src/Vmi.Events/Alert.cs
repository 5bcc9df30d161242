using MessagePack;

namespace Vmi.Events;

/// <summary>Something an analyst must act on, with the evidence that shows it.</summary>
[MessagePackObject]
public sealed record Alert : VmiEvent
{
    /// <summary>Id of the detector that raised it.</summary>
    [Key(10)] public required string Detector { get; init; }
    /// <summary>One line: what happened (<c>sys_call_table[62] (kill) points outside kernel text</c>).</summary>
    [Key(11)] public required string Title { get; init; }
    [Key(12)] public required Severity Severity { get; init; }
    [Key(13)] public IReadOnlyList<AttackTechnique> Techniques { get; init; } = [];
    /// <summary>Named evidence, printable (addresses in hex, bytes in hex, symbols, pids).</summary>
    [Key(14)] public IReadOnlyDictionary<string, string> Evidence { get; init; } = new Dictionary<string, string>();
    [Key(15)] public string? Description { get; init; }
    [Key(16)] public int? Pid { get; init; }
    [Key(17)] public string? ProcessName { get; init; }
    /// <summary>Events this alert was concluded from (the hooked write, the sweep …).</summary>
    [Key(18)] public IReadOnlyList<Guid> RelatedEvents { get; init; } = [];
    /// <summary>
    /// Identity of the condition (<c>syscall-hook:62:0xffffffffc0…</c>): a detector raises one alert
    /// per key while the condition lasts, not one per sweep.
    /// </summary>
    [Key(19)] public required string Key { get; init; }
    /// <summary>Version of the rule bundle that matched, for signature alerts.</summary>
    [Key(20)] public string? BundleVersion { get; init; }

    [IgnoreMember] public override EventClass Class => EventClass.Alert;
    [IgnoreMember] public override string Kind => "alert";

    protected override void AddEcsFields(EcsDocument document)
    {
        document["event.category"] = new[] { "intrusion_detection" };
        document["event.type"] = new[] { "indicator" };
        document["event.severity"] = (int)Severity;
        document["event.reason"] = Title;
        document["message"] = Title;
        document["rule.name"] = Detector;
        document["rule.id"] = Detector;
        document.SetIfNotNull("rule.description", Description);
        document.SetIfNotNull("rule.version", BundleVersion);
        document["vmi.alert.severity"] = Severity.ToString().ToLowerInvariant();
        document["vmi.alert.key"] = Key;
        document.SetIfNotNull("process.pid", Pid);
        document.SetIfNotNull("process.name", ProcessName);
        if (Techniques.Count > 0)
        {
            document["threat.framework"] = "MITRE ATT&CK";
            document["threat.technique.id"] = Techniques.Select(t => t.Id).ToArray();
            document["threat.technique.name"] = Techniques.Select(t => t.Name).ToArray();
            document["threat.technique.reference"] = Techniques.Select(t => t.Reference).ToArray();
            document["threat.tactic.name"] = Techniques.Select(t => t.Tactic).Distinct().ToArray();
        }
        foreach (var (k, v) in Evidence)
            document["vmi.evidence." + EcsDocument.Segment(k)] = v;
        if (RelatedEvents.Count > 0)
            document["vmi.related_events"] = RelatedEvents.Select(g => g.ToString()).ToArray();
    }
}

/// <summary>A detector failed or stalled; the others kept running.</summary>
[MessagePackObject]
public sealed record DetectorFault : VmiEvent
{
    [Key(10)] public required string Detector { get; init; }
    [Key(11)] public required DetectorFaultKind Fault { get; init; }
    [Key(12)] public required string Message { get; init; }
    /// <summary>The event it was handling, when there was one.</summary>
    [Key(13)] public Guid? EventId { get; init; }

    [IgnoreMember] public override EventClass Class => EventClass.Health;
    [IgnoreMember] public override string Kind => "detector-fault";

    protected override void AddEcsFields(EcsDocument document)
    {
        document["event.category"] = new[] { "process" };
        document["event.type"] = new[] { "error" };
        document["event.outcome"] = Fault == DetectorFaultKind.Recovered ? "success" : "failure";
        document["rule.name"] = Detector;
        document["error.type"] = Fault.ToString().ToLowerInvariant();
        document["error.message"] = Message;
        document.SetIfNotNull("vmi.fault.event", EventId?.ToString());
    }
}

/// <summary>Telemetry was shed under overload: how much, where, since the last report.</summary>
[MessagePackObject]
public sealed record TelemetryShed : VmiEvent
{
    /// <summary>Where it was shed: <c>ingress</c> or a detector's id.</summary>
    [Key(10)] public required string Stage { get; init; }
    [Key(11)] public required long Count { get; init; }
    /// <summary>Total shed at this stage since the pipeline started.</summary>
    [Key(12)] public long Total { get; init; }

    [IgnoreMember] public override EventClass Class => EventClass.Health;
    [IgnoreMember] public override string Kind => "telemetry-shed";

    protected override void AddEcsFields(EcsDocument document)
    {
        document["event.category"] = new[] { "host" };
        document["event.type"] = new[] { "info" };
        document["vmi.shed.stage"] = Stage;
        document["vmi.shed.count"] = Count;
        document["vmi.shed.total"] = Total;
    }
}
