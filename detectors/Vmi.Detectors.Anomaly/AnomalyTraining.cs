using System.Reactive.Concurrency;
using Vmi.Linux.Model;

namespace Vmi.Detectors.Anomaly;

/// <summary>Collects benign behaviour vectors from a guest, to train an <see cref="AnomalyModel"/> on.</summary>
public static class AnomalyTraining
{
    /// <summary>The behaviour of every user process of the guest now (one sweep).</summary>
    /// <param name="kernel">The guest (everything running in it is taken as benign).</param>
    /// <param name="notes">Receives what went wrong while reading, when given.</param>
    public static IReadOnlyList<ProcessFeatures> Collect(LinuxKernel kernel, ICollection<string>? notes = null)
    {
        FeatureSweep sweep = new ProcessFeatureExtractor(kernel).Extract();
        if (notes is not null)
        {
            foreach (string n in sweep.Notes.Concat(sweep.Processes.SelectMany(p => p.Notes.Select(x => $"pid {p.Pid}: {x}"))))
                notes.Add(n);
        }
        return sweep.Processes;
    }

    /// <summary>
    /// <paramref name="sweeps"/> sweeps of a running guest, <paramref name="interval"/> apart on
    /// <paramref name="scheduler"/>'s clock: a workload's behaviour over time, not one instant.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="sweeps"/> is below 1.</exception>
    public static async Task<IReadOnlyList<ProcessFeatures>> CollectAsync(LinuxKernel kernel, int sweeps, TimeSpan interval, IScheduler? scheduler = null,
        CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        ArgumentOutOfRangeException.ThrowIfLessThan(sweeps, 1);
        scheduler ??= DefaultScheduler.Instance;
        var extractor = new ProcessFeatureExtractor(kernel);
        var all = new List<ProcessFeatures>();
        for (int i = 0; i < sweeps; i++)
        {
            if (i > 0)
                await scheduler.Sleep(interval, cancellation).ConfigureAwait(false);
            all.AddRange(extractor.Extract(cancellation).Processes);
        }
        return all;
    }
}
