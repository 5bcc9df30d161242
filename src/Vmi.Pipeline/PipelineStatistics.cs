namespace Vmi.Pipeline;

/// <summary>A snapshot of an <see cref="EventPipeline"/>'s counters since it started.</summary>
public sealed record PipelineStatistics
{
    /// <summary>Events accepted by <c>Publish</c> (from outside the pipeline).</summary>
    public long Published { get; init; }
    /// <summary>Events produced inside: detector alerts, findings and derived events, faults, shed reports.</summary>
    public long Emitted { get; init; }
    /// <summary>Events delivered to <see cref="EventPipeline.Output"/> (published and emitted ones that passed).</summary>
    public long Delivered { get; init; }
    /// <summary>Events a detector finished analyzing (successfully or not).</summary>
    public long Analyzed { get; init; }
    /// <summary>Events published for a VM that is not (or no longer) in the pipeline: refused.</summary>
    public long Unrouted { get; init; }
    /// <summary>Alerts delivered.</summary>
    public long Alerts { get; init; }
    /// <summary>Alerts suppressed as duplicates of a live key.</summary>
    public long AlertsSuppressed { get; init; }
    /// <summary>Integrity findings delivered.</summary>
    public long Findings { get; init; }
    /// <summary>Detector faults (exceptions, timeouts, recoveries, overflows) delivered.</summary>
    public long Faults { get; init; }
    /// <summary>Output subscribers that threw (the event was lost for the subscribers after it).</summary>
    public long SinkErrors { get; init; }
    /// <summary>Telemetry shed at the ingress queues.</summary>
    public long ShedAtIngress { get; init; }
    /// <summary>All telemetry shed, at ingress and at detectors.</summary>
    public long Shed { get; init; }
    /// <summary>Telemetry shed per stage: <c>ingress</c> or a detector's id.</summary>
    public IReadOnlyDictionary<string, long> ShedByStage { get; init; } = new Dictionary<string, long>();
}
