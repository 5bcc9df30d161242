using System.Text.Json;
using Vmi.Detectors.Anomaly;
using Vmi.Detectors.Av;
using Vmi.Detectors.Linux;
using Vmi.Events;
using Vmi.Pipeline;

namespace Vmi.Monitoring;

/// <summary>Every detector Vmi ships: the Linux catalog plus the ML.NET anomaly detector.</summary>
public static class BuiltInDetectors
{
    /// <summary>The registrations beyond the Linux catalog's own.</summary>
    public static IReadOnlyList<DetectorRegistration> Extra { get; } =
    [
        DetectorRegistration.For<AnomalyDetectorOptions>(AnomalyDetector.DetectorId, "Process behaviour anomaly (ML.NET randomized PCA)", GuestOs.Linux, o => new AnomalyDetector(o)),
        DetectorRegistration.For<AvDetectorOptions>(AvDetector.Id, "Malware signature in memory (YARA)", GuestOs.Linux, o => new AvDetector(o)),
    ];

    /// <summary>The detectors for one VM, with options by detector id (see detectors/README.md).</summary>
    /// <exception cref="DetectorConfigurationException">An unknown detector id or a bad option.</exception>
    public static IReadOnlyList<IDetector> Create(GuestView guest, JsonElement? config) => DetectorCatalog.CreateAll(guest, config, Extra);
}
