namespace Vmi.Detectors.Anomaly;

/// <summary>How a raw feature value is put on the model's scale before normalization.</summary>
public enum FeatureScale
{
    /// <summary>A count: <c>log(1 + x)</c>, so 2 000 mappings are far from 20 but 21 is not far from 20.</summary>
    Log1p = 0,
    /// <summary>A yes/no flag (0 or 1), used as is.</summary>
    Binary = 1,
}

/// <summary>One named feature of a behaviour vector.</summary>
/// <param name="Name">Stable snake_case name (<c>wx_vmas</c>): the model file and the alert evidence use it.</param>
/// <param name="Scale">How the raw value is scaled.</param>
/// <param name="Description">What it counts, for the analyst.</param>
public sealed record FeatureDefinition(string Name, FeatureScale Scale, string Description)
{
    /// <summary>The raw value on the model's scale; NaN (missing) stays NaN.</summary>
    public double Apply(double raw) => Scale switch
    {
        FeatureScale.Log1p => double.IsNaN(raw) ? double.NaN : Math.Log(1 + Math.Max(0, raw)),
        _ => raw,
    };
}
