namespace Vmi.Pipeline;

/// <summary>Limits and policies of an <see cref="EventPipeline"/>.</summary>
public sealed class PipelineOptions
{
    /// <summary>
    /// Events each VM's ingress queue holds before telemetry published to it is shed (and counted).
    /// Every queued event counts against the bound, but control, finding, alert and health events are
    /// never shed: they are queued even beyond it. So the bound is exact for telemetry and soft for the
    /// rest, which is small and rare (sweeps, alerts, faults, shed reports).
    /// </summary>
    public int IngressCapacity { get; init; } = 65_536;

    /// <summary>How often shed telemetry is reported as <see cref="Vmi.Events.TelemetryShed"/> events (only while something was shed).</summary>
    public TimeSpan ShedReportInterval { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Alert deduplication: an alert whose <see cref="Vmi.Events.Alert.Key"/> was already raised for the
    /// same VM is suppressed (and counted) while the key is live. A key stays live as long as it is raised
    /// again within this many sweeps (<see cref="Vmi.Events.SweepTick"/>s of the VM) of its last raise; a
    /// key not re-raised for more sweeps expires, so a condition that went away and came back alerts
    /// again. With the default 1, a detector that raises on every sweep while the condition lasts alerts
    /// once; missing one sweep ends the condition. Negative turns deduplication off.
    /// </summary>
    public int AlertKeyExpirySweeps { get; init; } = 1;

    /// <summary>
    /// Optional time-based expiry (scheduler time since the key's last raise), for keys raised by
    /// detectors that do not run on sweeps. Null: keys expire only by sweeps or <see cref="VmStream.ResetAlertKey"/>.
    /// </summary>
    public TimeSpan? AlertKeyExpiry { get; init; }

    /// <summary>Events one VM's drain delivers before yielding the scheduler to other VMs.</summary>
    public int DrainBatch { get; init; } = 256;

    internal void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(IngressCapacity, 1, nameof(IngressCapacity));
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(ShedReportInterval, TimeSpan.Zero, nameof(ShedReportInterval));
        ArgumentOutOfRangeException.ThrowIfLessThan(DrainBatch, 1, nameof(DrainBatch));
    }
}
