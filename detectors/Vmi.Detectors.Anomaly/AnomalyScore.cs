using System.Globalization;

namespace Vmi.Detectors.Anomaly;

/// <summary>How much one feature adds to a vector's anomaly score.</summary>
/// <param name="Name">Feature name.</param>
/// <param name="Value">Raw value (a count or a 0/1 flag; NaN when it could not be read).</param>
/// <param name="TrainingMean">Mean of the raw value over the training set.</param>
/// <param name="TrainingStdDev">Standard deviation of the raw value over the training set.</param>
/// <param name="Z">The scaled value in training standard deviations from the training mean (floored deviation, see <see cref="AnomalyTrainingOptions.StdDevFloor"/>).</param>
/// <param name="Residual">The part of <see cref="Z"/> the PCA subspace of normal behaviour does not explain.</param>
/// <param name="Share">Residual² as a share of the score (0..1; the shares sum to 1).</param>
public sealed record FeatureContribution(string Name, double Value, double TrainingMean, double TrainingStdDev, double Z, double Residual, double Share)
{
    /// <summary><c>wx_vmas=12 (train mean 0 ± 0; z=+9.9; 71% of score)</c>.</summary>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Name}={Format(Value)} (train mean {Format(TrainingMean)} ± {Format(TrainingStdDev)}; z={Z:+0.0;-0.0;0}; {Share:0%} of score)");

    private static string Format(double v) =>
        double.IsNaN(v) ? "unknown" : v.ToString(Math.Abs(v) >= 100 ? "0" : "0.##", CultureInfo.InvariantCulture);
}

/// <summary>The anomaly score of one behaviour vector, with its explanation.</summary>
/// <param name="Score">Squared reconstruction error (SPE, the Q statistic) of the normalized vector against the PCA subspace of the training data.</param>
/// <param name="Threshold">The model's calibrated threshold (times the caller's multiplier, when scored through the detector).</param>
/// <param name="RelativeError">ML.NET's own RandomizedPca score: the residual norm relative to the distance from the mean (0..1).</param>
/// <param name="Contributions">Every feature's contribution, largest share first.</param>
public sealed record AnomalyScore(double Score, double Threshold, double RelativeError, IReadOnlyList<FeatureContribution> Contributions)
{
    public bool IsAnomalous => Score > Threshold;

    /// <summary>The features that explain most of the score.</summary>
    public IEnumerable<FeatureContribution> Top(int count = 3) => Contributions.Take(count);
}
