namespace Vmi.Detectors.Anomaly;

/// <summary>Options of <see cref="AnomalyDetector"/> (key <c>process-anomaly</c>).</summary>
public sealed record AnomalyDetectorOptions
{
    /// <summary>A trained model (a zip written by <see cref="AnomalyModel.Save"/>, its JSON sidecar beside it).</summary>
    public string? ModelPath { get; init; }

    /// <summary>A model already in memory; wins over <see cref="ModelPath"/>.</summary>
    public AnomalyModel? Model { get; init; }

    /// <summary>
    /// Without a model: learn from the first this many sweeps (every user process seen is taken as
    /// benign), then score from the next one on. Nothing is reported while learning.
    /// </summary>
    public int LearnSweeps { get; init; } = 3;

    /// <summary>How learning-mode models are trained.</summary>
    public AnomalyTrainingOptions Training { get; init; } = new();

    /// <summary>Scales the model's calibrated threshold (above 1: fewer, surer alerts).</summary>
    public double ThresholdMultiplier { get; init; } = 1.0;

    /// <summary>
    /// A process is scored once the detector has seen it for this long (scheduler time): a process
    /// that is still starting (exec half done, files not opened yet) looks unlike its settled self.
    /// </summary>
    public TimeSpan MinProcessAge { get; init; } = TimeSpan.Zero;

    /// <summary>Skip kernel threads (no memory map, no files: nothing for this model to see).</summary>
    public bool IgnoreKernelThreads { get; init; } = true;

    /// <summary>Most processes scored per sweep.</summary>
    public int MaxProcessesPerSweep { get; init; } = ProcessFeatureExtractor.DefaultMaxProcesses;

    /// <summary>Features named in an alert's evidence.</summary>
    public int TopFeatures { get; init; } = 3;

    /// <exception cref="ArgumentOutOfRangeException">A value is out of its range.</exception>
    internal void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfNegative(LearnSweeps);
        if (!(ThresholdMultiplier > 0) || double.IsInfinity(ThresholdMultiplier))
            throw new ArgumentOutOfRangeException(nameof(ThresholdMultiplier), ThresholdMultiplier, "must be a positive number");
        ArgumentOutOfRangeException.ThrowIfLessThan(MinProcessAge, TimeSpan.Zero);
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxProcessesPerSweep, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(TopFeatures, 1);
        if (Model is null && ModelPath is null && LearnSweeps == 0)
            throw new ArgumentException("the anomaly detector needs a model, a model path or learning sweeps");
    }
}
