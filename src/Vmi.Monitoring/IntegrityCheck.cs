using System.Reactive.Concurrency;
using Vmi.Events;
using Vmi.Pipeline;

namespace Vmi.Monitoring;

/// <summary>What one run of the integrity detectors found.</summary>
/// <param name="Findings">Every integrity finding.</param>
/// <param name="Alerts">The alerts the detectors raised.</param>
/// <param name="Faults">Detectors that failed, with why (the others still ran).</param>
/// <param name="DetectorsRun">Ids of the detectors that ran.</param>
public sealed record IntegrityReport(IReadOnlyList<IntegrityFinding> Findings, IReadOnlyList<Alert> Alerts, IReadOnlyList<DetectorFault> Faults, IReadOnlyList<string> DetectorsRun)
{
    public bool IsClean => Findings.Count == 0 && Alerts.Count == 0;
}

/// <summary>
/// <c>vmi check</c>: runs each detector once on one sweep of the guest, without the pipeline, with the
/// same isolation (a detector that throws or runs past its budget is reported, the others run).
/// </summary>
public static class IntegrityCheck
{
    public static async Task<IntegrityReport> RunAsync(GuestView guest, IEnumerable<IDetector> detectors, IScheduler? scheduler = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(guest);
        ArgumentNullException.ThrowIfNull(detectors);
        scheduler ??= Scheduler.Default;
        var findings = new List<IntegrityFinding>();
        var alerts = new List<Alert>();
        var faults = new List<DetectorFault>();
        var ran = new List<string>();
        var tick = new SweepTick { VmId = guest.VmId, Time = scheduler.Now, Reason = SweepReason.Requested, Number = 1 };
        foreach (IDetector d in detectors)
        {
            if ((d.Info.SupportedOs & guest.Os) == 0 || !d.Accepts(tick))
                continue;
            ran.Add(d.Info.Id);
            using var budget = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            budget.CancelAfter(d.Info.TimeBudget);
            var produced = new List<VmiEvent>();
            var context = new DetectorContext(d.Info, guest, scheduler, e => { lock (produced) produced.Add(e); }, budget.Token);
            try
            {
                await d.AnalyzeAsync(tick, context).AsTask().WaitAsync(d.Info.TimeBudget, cancellationToken).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                faults.Add(Fault(d, DetectorFaultKind.Timeout, $"no result within its budget of {d.Info.TimeBudget.TotalSeconds:0.###} s"));
            }
            catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
            {
                faults.Add(Fault(d, DetectorFaultKind.Exception, $"{e.GetType().Name}: {e.Message}"));
            }
            lock (produced)
            {
                findings.AddRange(produced.OfType<IntegrityFinding>());
                alerts.AddRange(produced.OfType<Alert>());
            }
        }
        return new IntegrityReport(findings, alerts, faults, ran);

        DetectorFault Fault(IDetector d, DetectorFaultKind kind, string message) =>
            new() { VmId = guest.VmId, Time = scheduler.Now, Detector = d.Info.Id, Fault = kind, Message = message, EventId = tick.Id };
    }
}
