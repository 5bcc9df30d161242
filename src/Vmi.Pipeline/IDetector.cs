using Vmi.Events;

namespace Vmi.Pipeline;

/// <summary>
/// A detector: the one interface a security engineer implements. The pipeline calls
/// <see cref="AnalyzeAsync"/> for every event of its VM that <see cref="Accepts"/>, one event at a
/// time and in order; the detector reports through the context. A detector that throws or runs over
/// its time budget is isolated (its faults go to the health stream) and the others keep running.
/// One instance watches one VM, so it can keep per-VM state (a baseline, what it already alerted).
/// </summary>
public interface IDetector
{
    /// <summary>Identity, supported guests, ATT&amp;CK techniques, time budget.</summary>
    DetectorInfo Info { get; }

    /// <summary>Cheap filter run on the pipeline's thread: which events the detector wants.</summary>
    bool Accepts(VmiEvent e);

    /// <summary>Looks at one event (and, through the context, at the guest) and reports alerts and findings.</summary>
    ValueTask AnalyzeAsync(VmiEvent e, DetectorContext context);
}

/// <summary>What a detector is.</summary>
/// <param name="Id">Stable id (<c>syscall-hook</c>): the alert's <c>rule.id</c> and the key of its options.</param>
/// <param name="Title">Human name.</param>
/// <param name="Description">What it finds and how, for the analyst reading the alert.</param>
/// <param name="SupportedOs">Guests it understands; the pipeline never gives it another VM.</param>
/// <param name="Techniques">ATT&amp;CK techniques its alerts name.</param>
public sealed record DetectorInfo(string Id, string Title, string Description, GuestOs SupportedOs, IReadOnlyList<AttackTechnique> Techniques)
{
    /// <summary>Longest time one event may take before the detector counts as stalled.</summary>
    public TimeSpan TimeBudget { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Events queued for it while it works; beyond this, telemetry for it is shed and counted.</summary>
    public int QueueCapacity { get; init; } = 4096;
}
