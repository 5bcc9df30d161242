using System.Globalization;
using Vmi.Events;
using Vmi.Pipeline;

namespace Vmi.Detectors.Anomaly;

/// <summary>
/// Scores every user process's behaviour (<see cref="ProcessFeatures"/>) against a model of the
/// benign workload (<see cref="AnomalyModel"/>) on each sweep, and alerts on a process scoring above
/// the calibrated threshold, naming the features that make it unusual. The model is loaded from a
/// file or learnt from the first sweeps.
/// </summary>
public sealed class AnomalyDetector : IDetector
{
    public const string DetectorId = "process-anomaly";

    /// <summary>T1620: payloads run from memfds, deleted files or tmpfs.</summary>
    public static readonly AttackTechnique ReflectiveCodeLoading = new("T1620", "Reflective Code Loading", "Defense Evasion");
    /// <summary>T1036: a process renamed (comm) away from its executable.</summary>
    public static readonly AttackTechnique Masquerading = new("T1036", "Masquerading", "Defense Evasion");

    private static readonly DetectorInfo Description = new(
        DetectorId,
        "Process behaviour anomaly",
        "Scores each user process's behaviour (threads, descriptors, sockets, memory mappings incl. W+X and anonymous executable ones, "
        + "where its executable lives, command line, environment, credentials, parentage) with a randomized-PCA model of the benign "
        + "workload and alerts when the reconstruction error is above the calibrated threshold; the evidence names the features that "
        + "contribute most, with their training mean and deviation.",
        GuestOs.Linux,
        [AttackTechnique.ProcessInjection, ReflectiveCodeLoading, Masquerading, AttackTechnique.AbuseElevationControl]);

    /// <summary>Most vectors kept while learning.</summary>
    private const int MaxLearningRows = 1 << 20;

    private readonly AnomalyDetectorOptions _options;
    private readonly List<IReadOnlyList<double>> _learning = [];
    private readonly Dictionary<string, DateTimeOffset> _firstSeen = new(StringComparer.Ordinal);
    private readonly HashSet<string> _alerted = new(StringComparer.Ordinal);
    private int _learnedSweeps;

    /// <exception cref="AnomalyModelException">The model file cannot be read.</exception>
    /// <exception cref="ArgumentException">The options are inconsistent, or the model is of other features.</exception>
    public AnomalyDetector(AnomalyDetectorOptions? options = null)
    {
        _options = options ?? new AnomalyDetectorOptions();
        _options.Validate();
        Model = _options.Model ?? (_options.ModelPath is string path ? AnomalyModel.Load(path) : null);
        if (Model is not null && !Model.Features.Select(f => f.Name).SequenceEqual(ProcessFeatures.All.Select(f => f.Name), StringComparer.Ordinal))
            throw new ArgumentException("the model was trained on other features than this build's process features: retrain it", nameof(options));
    }

    public DetectorInfo Info => Description;

    /// <summary>The model in use; null while learning.</summary>
    public AnomalyModel? Model { get; private set; }

    public bool Accepts(VmiEvent e) => e is SweepTick;

    public ValueTask AnalyzeAsync(VmiEvent e, DetectorContext context)
    {
        ArgumentNullException.ThrowIfNull(e);
        ArgumentNullException.ThrowIfNull(context);
        if (e is not SweepTick tick)
            return ValueTask.CompletedTask;
        var extractor = new ProcessFeatureExtractor(context.Guest.RequireLinux())
        {
            IncludeKernelThreads = !_options.IgnoreKernelThreads, MaxProcesses = _options.MaxProcessesPerSweep,
        };
        FeatureSweep sweep = extractor.Extract(context.Cancellation);

        if (Model is null)
        {
            Learn(sweep);
            return ValueTask.CompletedTask;
        }

        DateTimeOffset now = context.Scheduler.Now;
        var present = new HashSet<string>(StringComparer.Ordinal);
        foreach (ProcessFeatures p in sweep.Processes)
        {
            present.Add(p.Key);
            if (!_firstSeen.TryGetValue(p.Key, out DateTimeOffset first))
                _firstSeen[p.Key] = first = now;
            if (now - first < _options.MinProcessAge)
                continue;
            AnomalyScore score = Model.Score(p, _options.ThresholdMultiplier);
            string key = $"{DetectorId}:{p.Key}";
            if (!score.IsAnomalous)
            {
                // Back to normal: a later relapse is a new alert.
                _alerted.Remove(key);
                continue;
            }
            if (_alerted.Add(key))
                Raise(context, tick, p, score, sweep.Notes, key);
        }
        // Forget processes that are gone (pid + start time never comes back).
        foreach (string gone in _firstSeen.Keys.Where(k => !present.Contains(k)).ToList())
        {
            _firstSeen.Remove(gone);
            _alerted.Remove($"{DetectorId}:{gone}");
        }
        return ValueTask.CompletedTask;
    }

    private void Learn(FeatureSweep sweep)
    {
        foreach (ProcessFeatures p in sweep.Processes.Take(MaxLearningRows - _learning.Count))
            _learning.Add(p.Values);
        if (++_learnedSweeps < _options.LearnSweeps)
            return;
        // A guest with no user process yet teaches nothing: keep learning.
        if (_learning.Count == 0)
            return;
        try
        {
            Model = AnomalyModel.Train(ProcessFeatures.All, _learning, _options.Training);
            _learning.Clear();
        }
        catch (AnomalyModelException) when (_learning.Count < MaxLearningRows)
        {
            // Every process looked the same so far: learn from more sweeps.
        }
    }

    private void Raise(DetectorContext context, SweepTick tick, ProcessFeatures p, AnomalyScore score, IReadOnlyList<string> sweepNotes, string key)
    {
        var top = score.Top(_options.TopFeatures).ToList();
        var evidence = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["score"] = F(score.Score),
            ["threshold"] = F(score.Threshold),
            ["relative_error"] = score.RelativeError.ToString("0.000", CultureInfo.InvariantCulture),
            ["pid"] = p.Pid.ToString(CultureInfo.InvariantCulture),
            ["start_time_ns"] = p.StartTimeNs.ToString(CultureInfo.InvariantCulture),
            ["uid"] = p.Uid.ToString(CultureInfo.InvariantCulture),
            ["euid"] = p.Euid.ToString(CultureInfo.InvariantCulture),
            ["model"] = string.Create(CultureInfo.InvariantCulture, $"randomized PCA rank {Model!.Rank}, {Model.TrainingCount} training vectors, sha256 {Model.TrainingSha256[..16]}"),
        };
        for (int i = 0; i < top.Count; i++)
            evidence[string.Create(CultureInfo.InvariantCulture, $"top_feature_{i + 1}")] = top[i].ToString();
        if (p.ExePath is not null)
            evidence["exe"] = p.ExePath;
        if (p.Cmdline.Count > 0)
        {
            string cmdline = string.Join(' ', p.Cmdline);
            evidence["cmdline"] = cmdline.Length > 512 ? cmdline[..512] + "…" : cmdline;
        }
        IEnumerable<string> notes = p.Notes.Concat(sweepNotes);
        if (notes.Any())
            evidence["notes"] = string.Join("; ", notes);

        string title = string.Create(CultureInfo.InvariantCulture,
            $"pid {p.Pid} ({p.Name}) behaves unlike the benign baseline (score {F(score.Score)} > {F(score.Threshold)}): {string.Join(", ", top.Select(c => c.Name))}");
        Severity severity = score.Score >= 4 * score.Threshold ? Severity.High : Severity.Medium;
        context.Raise(key, title, severity, evidence, Techniques(top), p.Pid, p.Name, [tick.Id]);
    }

    /// <summary>The techniques the top features point at; none when they point nowhere in particular.</summary>
    internal static IReadOnlyList<AttackTechnique> Techniques(IEnumerable<FeatureContribution> top)
    {
        var result = new List<AttackTechnique>();
        foreach (FeatureContribution c in top)
        {
            AttackTechnique? t = c.Name switch
            {
                "wx_vmas" or "anon_exec_vmas" => AttackTechnique.ProcessInjection,
                "suspicious_exec_maps" or "suspicious_exe" => ReflectiveCodeLoading,
                "comm_mismatch" => Masquerading,
                "euid_differs" or "euid_root" => AttackTechnique.AbuseElevationControl,
                _ => null,
            };
            if (t is not null && !result.Contains(t))
                result.Add(t);
        }
        return result;
    }

    private static string F(double v) => v.ToString("0.###", CultureInfo.InvariantCulture);
}
