using MessagePack;

namespace Vmi.Events;

/// <summary>
/// Everything Vmi observes or concludes about a VM, in one versioned model. The MessagePack contract
/// (union tags and keys) is the wire and journal format: tags and keys are never reused, new fields
/// take new keys, and <see cref="SchemaVersion"/> goes up when the meaning of a field changes.
/// Keys 0–9 belong to this base class; subclasses start at 10.
/// </summary>
[MessagePackObject]
[Union(0, typeof(ProcessStarted))]
[Union(1, typeof(ProcessExited))]
[Union(2, typeof(ProcessExec))]
[Union(3, typeof(ModuleLoaded))]
[Union(4, typeof(MemoryAccess))]
[Union(5, typeof(BreakpointHit))]
[Union(6, typeof(SweepTick))]
[Union(7, typeof(IntegrityFinding))]
[Union(8, typeof(NetworkFlow))]
[Union(9, typeof(SignatureMatch))]
[Union(10, typeof(Alert))]
[Union(11, typeof(DetectorFault))]
[Union(12, typeof(TelemetryShed))]
public abstract record VmiEvent
{
    /// <summary>Version of this model that wrote the event.</summary>
    public const int CurrentSchemaVersion = 1;

    [Key(0)] public int SchemaVersion { get; init; } = CurrentSchemaVersion;

    /// <summary>Unique id (also the deterministic document id in exports).</summary>
    [Key(1)] public Guid Id { get; init; } = Guid.NewGuid();

    /// <summary>The VM the event concerns.</summary>
    [Key(2)] public required string VmId { get; init; }

    /// <summary>Event time: when it happened (or was observed) in the VM, not when it was processed.</summary>
    [Key(3)] public required DateTimeOffset Time { get; init; }

    /// <summary>Position in the VM's ordered stream, given by the pipeline at ingress (0 before).</summary>
    [Key(4)] public long Sequence { get; init; }

    /// <summary>The event this one was derived from (the breakpoint behind a process start, the hook hit behind a sweep).</summary>
    [Key(5)] public Guid? Cause { get; init; }

    /// <summary>How the pipeline treats the event under overload.</summary>
    [IgnoreMember] public abstract EventClass Class { get; }

    /// <summary>Short machine name of the kind (<c>process-started</c>, <c>alert</c> …): ECS <c>event.action</c>, the store's kind column.</summary>
    [IgnoreMember] public abstract string Kind { get; }

    /// <summary>The event as Elastic Common Schema fields (dotted names), for the store, syslog and Elasticsearch.</summary>
    public EcsDocument ToEcs()
    {
        var d = new EcsDocument();
        d["@timestamp"] = Time.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fffffff'Z'", System.Globalization.CultureInfo.InvariantCulture);
        d["event.id"] = Id.ToString();
        d["event.action"] = Kind;
        d["event.kind"] = Class switch
        {
            EventClass.Alert => "alert",
            EventClass.Health => "metric",
            EventClass.Finding => "state",
            _ => "event",
        };
        d["event.sequence"] = Sequence;
        d["event.module"] = "vmi";
        d["event.dataset"] = "vmi." + Kind;
        d["host.name"] = VmId;
        d["host.id"] = VmId;
        d["ecs.version"] = EcsDocument.EcsVersion;
        d["vmi.schema_version"] = SchemaVersion;
        if (Cause is Guid cause)
            d["vmi.cause"] = cause.ToString();
        AddEcsFields(d);
        return d;
    }

    /// <summary>Adds the subclass's own ECS fields.</summary>
    protected abstract void AddEcsFields(EcsDocument document);

    /// <summary>Hex of a guest address, the way the CLI and evidence print them.</summary>
    protected static string Hex(ulong value) => "0x" + value.ToString("x", System.Globalization.CultureInfo.InvariantCulture);
}
