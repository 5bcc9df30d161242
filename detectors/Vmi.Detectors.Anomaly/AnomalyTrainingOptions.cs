namespace Vmi.Detectors.Anomaly;

/// <summary>
/// How <see cref="AnomalyModel.Train(IReadOnlyList{FeatureDefinition}, IEnumerable{IReadOnlyList{double}}, AnomalyTrainingOptions?)"/>
/// builds the model and calibrates its threshold.
/// </summary>
public sealed record AnomalyTrainingOptions
{
    /// <summary>Principal components kept as "normal behaviour" (clamped to the feature count and the training rows).</summary>
    public int Rank { get; init; } = 3;

    /// <summary>Extra random projections of the randomized SVD (ML.NET's default).</summary>
    public int Oversampling { get; init; } = 20;

    /// <summary>Seed of the ML.NET context and of the randomized SVD: the same rows give the same model.</summary>
    public int Seed { get; init; } = 1;

    /// <summary>
    /// Smallest standard deviation a feature is normalized by, in scaled units (log1p for counts). A
    /// feature constant in training (no benign process has W+X memory) would otherwise make any
    /// change infinitely anomalous; with 0.25 a count going 0 → 1 is 2.8 deviations, 0 → 10 is 9.6.
    /// </summary>
    public double StdDevFloor { get; init; } = 0.25;

    /// <summary>Quantile of the training scores the threshold starts from (1 = the maximum).</summary>
    public double ThresholdQuantile { get; init; } = 0.995;

    /// <summary>Factor over that quantile: room for benign drift beyond what training saw.</summary>
    public double ThresholdMargin { get; init; } = 1.5;

    /// <summary>
    /// Lowest threshold, in score units (squared deviations): a training set whose vectors all lie in
    /// the subspace would otherwise give a threshold of 0. 4 = one feature 2 deviations off.
    /// </summary>
    public double MinimumThreshold { get; init; } = 4.0;

    /// <exception cref="ArgumentOutOfRangeException">A value is out of its range.</exception>
    internal void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(Rank, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(Oversampling);
        if (!(StdDevFloor > 0) || double.IsInfinity(StdDevFloor))
            throw new ArgumentOutOfRangeException(nameof(StdDevFloor), StdDevFloor, "must be a positive number");
        if (!(ThresholdQuantile is > 0 and <= 1))
            throw new ArgumentOutOfRangeException(nameof(ThresholdQuantile), ThresholdQuantile, "must be in (0, 1]");
        if (!(ThresholdMargin >= 1) || double.IsInfinity(ThresholdMargin))
            throw new ArgumentOutOfRangeException(nameof(ThresholdMargin), ThresholdMargin, "must be at least 1");
        if (!(MinimumThreshold > 0) || double.IsInfinity(MinimumThreshold))
            throw new ArgumentOutOfRangeException(nameof(MinimumThreshold), MinimumThreshold, "must be a positive number");
    }
}
