using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Trainers;
using Vmi.Core;

namespace Vmi.Detectors.Anomaly;

/// <summary>A model file pair is missing, malformed or does not belong together.</summary>
public sealed class AnomalyModelException : VmiException
{
    public AnomalyModelException() { }
    public AnomalyModelException(string message) : base(message) { }
    public AnomalyModelException(string message, Exception innerException) : base(message, innerException) { }
}

/// <summary>
/// Normal behaviour learnt from benign vectors, and how far a new vector is from it.
/// </summary>
/// <remarks>
/// <para>Training: each feature is scaled (<see cref="FeatureScale"/>), then normalized by our own
/// mean and standard deviation (floored, <see cref="AnomalyTrainingOptions.StdDevFloor"/>) so the
/// score can be explained in the analyst's units; ML.NET's RandomizedPca
/// (<c>mlContext.AnomalyDetection.Trainers.RandomizedPca</c>, zero mean, fixed seed) learns the
/// <see cref="Rank"/>-dimensional subspace the normalized benign vectors live in.</para>
/// <para>Score: the squared prediction error (SPE, the Q statistic) of the normalized vector z:
/// r = (z − μ) − Σₖ ((z − μ)·vₖ) vₖ over the model's eigenvectors vₖ and mean μ, score = Σⱼ rⱼ².
/// Unlike ML.NET's own score (‖r‖ / ‖z − μ‖, kept as <see cref="AnomalyScore.RelativeError"/>),
/// it grows with how abnormal a process is rather than saturating at 1, and it splits exactly into
/// per-feature parts rⱼ², which is the explanation.</para>
/// <para>Threshold: the <see cref="AnomalyTrainingOptions.ThresholdQuantile"/> quantile (nearest
/// rank) of the training scores × <see cref="AnomalyTrainingOptions.ThresholdMargin"/>, at least
/// <see cref="AnomalyTrainingOptions.MinimumThreshold"/>.</para>
/// <para>Files: the ML.NET model as a zip (<see cref="Save"/>) and a JSON sidecar beside it with the
/// feature names and scales, the normalizer, the threshold and how it was found, and the training set's
/// size and SHA-256.</para>
/// </remarks>
public sealed class AnomalyModel
{
    /// <summary>Version of the JSON sidecar's shape.</summary>
    public const int FormatVersion = 1;

    private const string FeatureColumn = "Features";

    private readonly ITransformer _transformer;
    private readonly DataViewSchema _inputSchema;
    private readonly double[][] _eigenVectors;
    private readonly double[] _pcaMean;
    private readonly AnomalyModelManifest _manifest;

    private AnomalyModel(ITransformer transformer, DataViewSchema inputSchema, PcaModelParameters pca, AnomalyModelManifest manifest)
    {
        _transformer = transformer;
        _inputSchema = inputSchema;
        _manifest = manifest;
        int d = manifest.Features.Count;
        int[] active = manifest.PcaFeatures;
        VBuffer<float>[] vectors = [];
        pca.GetEigenVectors(ref vectors, out int rank);
        var mean = default(VBuffer<float>);
        pca.GetMean(ref mean);
        // The PCA sees only the features that varied in training; the others are all residual
        // (their eigenvector components are 0).
        _eigenVectors = new double[rank][];
        for (int k = 0; k < rank; k++)
        {
            if (vectors[k].Length != active.Length)
                throw new AnomalyModelException($"eigenvector {k} has {vectors[k].Length} dimensions, the model has {active.Length} varying features");
            _eigenVectors[k] = Embed(Dense(vectors[k]), active, d);
        }
        // Without ensureZeroMean ML.NET keeps no mean (an empty buffer): the mean is then 0.
        _pcaMean = mean.Length == active.Length ? Embed(Dense(mean), active, d) : new double[d];
        if (_eigenVectors.SelectMany(v => v).Concat(_pcaMean).Any(x => !double.IsFinite(x)))
            throw new AnomalyModelException("the PCA model has non-finite eigenvectors or mean (degenerate training data)");
    }

    public IReadOnlyList<FeatureDefinition> Features => _manifest.Features;
    /// <summary>Principal components in the model.</summary>
    public int Rank => _eigenVectors.Length;
    /// <summary>Calibrated threshold of <see cref="AnomalyScore.Score"/>.</summary>
    public double Threshold => _manifest.Threshold;
    public int TrainingCount => _manifest.TrainingCount;
    /// <summary>SHA-256 (hex) of the training vectors and feature names.</summary>
    public string TrainingSha256 => _manifest.TrainingSha256;
    /// <summary>Largest score of a training vector.</summary>
    public double MaxTrainingScore => _manifest.MaxTrainingScore;
    public AnomalyTrainingOptions Options => _manifest.Options;

    /// <summary>Trains on benign behaviour vectors of the given features.</summary>
    /// <param name="features">The feature set, in vector order.</param>
    /// <param name="rows">Raw vectors (NaN = missing, imputed as the training mean).</param>
    /// <param name="options">Rank, seed, normalization floor and threshold calibration.</param>
    /// <exception cref="ArgumentException">No rows, or a row of the wrong length.</exception>
    /// <exception cref="AnomalyModelException">The training data is degenerate.</exception>
    public static AnomalyModel Train(IReadOnlyList<FeatureDefinition> features, IEnumerable<IReadOnlyList<double>> rows, AnomalyTrainingOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(features);
        ArgumentNullException.ThrowIfNull(rows);
        options ??= new AnomalyTrainingOptions();
        options.Validate();
        int d = features.Count;
        if (d == 0)
            throw new ArgumentException("no features", nameof(features));
        List<double[]> raw = rows.Select(r => r.ToArray()).ToList();
        if (raw.Count == 0)
            throw new ArgumentException("no training rows", nameof(rows));
        if (raw.FirstOrDefault(r => r.Length != d) is double[] bad)
            throw new ArgumentException($"a training row has {bad.Length} values, the feature set has {d}", nameof(rows));

        // Normalizer: on the scaled values for scoring, on the raw values for the explanation.
        var scaledMean = new double[d];
        var scaledStd = new double[d];
        var rawMean = new double[d];
        var rawStd = new double[d];
        for (int j = 0; j < d; j++)
        {
            FeatureDefinition f = features[j];
            (scaledMean[j], scaledStd[j]) = MeanStd(raw.Select(r => f.Apply(r[j])));
            (rawMean[j], rawStd[j]) = MeanStd(raw.Select(r => r[j]));
        }
        var normalizer = new Normalizer(features, scaledMean, scaledStd.Select(s => Math.Max(s, options.StdDevFloor)).ToArray());
        List<double[]> z = raw.Select(normalizer.Apply).ToList();

        // Features constant in training carry no structure for the PCA (and zero columns make its
        // randomized SVD produce NaN): it learns from the varying ones.
        int[] active = Enumerable.Range(0, d).Where(j => scaledStd[j] > 1e-9).ToArray();
        if (active.Length == 0)
            throw new AnomalyModelException($"all {raw.Count} training vectors are the same: there is no behaviour to learn");
        List<float[]> zActive = z.Select(v => active.Select(j => (float)v[j]).ToArray()).ToList();
        // The randomized SVD needs rank + oversampling independent directions in the data.
        int dataRank = NumericalRank(zActive, active.Length);
        int rank = Math.Clamp(options.Rank, 1, Math.Max(1, dataRank));
        int oversampling = Math.Clamp(dataRank - rank, 0, options.Oversampling);

        var ml = new MLContext(seed: options.Seed);
        IDataView data = ml.Data.LoadFromEnumerable(zActive.Select(v => new PcaRow { Features = v }), RowSchema(active.Length));
        AnomalyPredictionTransformer<PcaModelParameters>? transformer = null;
        while (transformer is null)
        {
            var trainer = ml.AnomalyDetection.Trainers.RandomizedPca(new RandomizedPcaTrainer.Options
            {
                FeatureColumnName = FeatureColumn, Rank = rank, Oversampling = oversampling, EnsureZeroMean = true, Seed = options.Seed,
            });
            try
            {
                transformer = trainer.Fit(data);
            }
            catch (ArgumentOutOfRangeException) when (oversampling > 0 || rank > 1)
            {
                // "The learnt eigenvectors contained NaN values": nearly dependent data; ask for fewer directions.
                if (oversampling > 0)
                    oversampling = 0;
                else
                    rank--;
            }
            catch (ArgumentOutOfRangeException e)
            {
                throw new AnomalyModelException("randomized PCA found no principal direction in the training data: " + e.Message, e);
            }
        }

        var manifest = new AnomalyModelManifest
        {
            FormatVersion = FormatVersion, Features = features.ToArray(), ScaledMean = scaledMean, ScaledStdDev = normalizer.StdDev, RawMean = rawMean, RawStdDev = rawStd,
            PcaFeatures = active, Options = options, TrainingCount = raw.Count, TrainingSha256 = Hash(features, raw),
        };
        var model = new AnomalyModel(transformer, data.Schema, transformer.Model, manifest);

        // Calibration on the training set itself.
        double[] scores = raw.Select(r => model.ScoreNormalized(normalizer.Apply(r))).Order().ToArray();
        double quantile = scores[Math.Clamp((int)Math.Ceiling(options.ThresholdQuantile * scores.Length) - 1, 0, scores.Length - 1)];
        manifest.MaxTrainingScore = scores[^1];
        manifest.QuantileTrainingScore = quantile;
        manifest.Threshold = Math.Max(options.MinimumThreshold, quantile * options.ThresholdMargin);
        return model;
    }

    /// <summary>Trains on benign process behaviour (<see cref="ProcessFeatures.All"/>).</summary>
    /// <exception cref="ArgumentException">No vectors.</exception>
    public static AnomalyModel Train(IEnumerable<ProcessFeatures> benign, AnomalyTrainingOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(benign);
        return Train(ProcessFeatures.All, benign.Select(p => p.Values), options);
    }

    /// <summary>Scores a raw vector and explains the score.</summary>
    /// <param name="raw">Raw values in <see cref="Features"/> order (NaN = missing).</param>
    /// <param name="thresholdMultiplier">Scales the calibrated threshold (1 = as calibrated).</param>
    /// <exception cref="ArgumentException">The vector has the wrong length.</exception>
    public AnomalyScore Score(IReadOnlyList<double> raw, double thresholdMultiplier = 1.0)
    {
        ArgumentNullException.ThrowIfNull(raw);
        if (raw.Count != Features.Count)
            throw new ArgumentException($"the vector has {raw.Count} values, the model has {Features.Count} features", nameof(raw));
        double[] z = new Normalizer(Features, _manifest.ScaledMean, _manifest.ScaledStdDev).Apply(raw);
        double[] residual = Residual(z, out double distance2);
        double score = residual.Sum(r => r * r);
        double relative = distance2 > 0 ? Math.Sqrt(Math.Clamp(score / distance2, 0, 1)) : 0;
        var contributions = new FeatureContribution[Features.Count];
        for (int j = 0; j < contributions.Length; j++)
        {
            contributions[j] = new FeatureContribution(Features[j].Name, raw[j], _manifest.RawMean[j], _manifest.RawStdDev[j], z[j], residual[j],
                score > 0 ? residual[j] * residual[j] / score : 0);
        }
        // Stable order: by share, then by feature order.
        FeatureContribution[] ordered = contributions.Select((c, i) => (c, i)).OrderByDescending(t => t.c.Share).ThenBy(t => t.i).Select(t => t.c).ToArray();
        return new AnomalyScore(score, Threshold * thresholdMultiplier, relative, ordered);
    }

    /// <summary>Scores a process's behaviour.</summary>
    /// <exception cref="ArgumentException">The model was trained on another feature set.</exception>
    public AnomalyScore Score(ProcessFeatures process, double thresholdMultiplier = 1.0)
    {
        ArgumentNullException.ThrowIfNull(process);
        return Score(process.Values, thresholdMultiplier);
    }

    private double ScoreNormalized(double[] z) => Residual(z, out _).Sum(r => r * r);

    /// <summary>The part of z − μ outside the principal subspace; also ‖z − μ‖².</summary>
    private double[] Residual(double[] z, out double distance2)
    {
        int d = z.Length;
        var centered = new double[d];
        distance2 = 0;
        for (int j = 0; j < d; j++)
        {
            centered[j] = z[j] - _pcaMean[j];
            distance2 += centered[j] * centered[j];
        }
        var residual = (double[])centered.Clone();
        foreach (double[] v in _eigenVectors)
        {
            double t = 0;
            for (int j = 0; j < d; j++)
                t += v[j] * centered[j];
            for (int j = 0; j < d; j++)
                residual[j] -= t * v[j];
        }
        return residual;
    }

    /// <summary>ML.NET's own score for a raw vector, through the trained transformer (for checking our arithmetic against it).</summary>
    internal float MlNetScore(IReadOnlyList<double> raw)
    {
        double[] normalized = new Normalizer(Features, _manifest.ScaledMean, _manifest.ScaledStdDev).Apply(raw);
        float[] z = _manifest.PcaFeatures.Select(j => (float)normalized[j]).ToArray();
        var ml = new MLContext(seed: Options.Seed);
        IDataView data = ml.Data.LoadFromEnumerable([new PcaRow { Features = z }], RowSchema(z.Length));
        return ml.Data.CreateEnumerable<PcaPrediction>(_transformer.Transform(data), reuseRowObject: false).Single().Score;
    }

    /// <summary>Writes the ML.NET model to <paramref name="zipPath"/> and the sidecar beside it (<see cref="SidecarPath"/>).</summary>
    public void Save(string zipPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(zipPath);
        string? directory = Path.GetDirectoryName(Path.GetFullPath(zipPath));
        if (directory is not null)
            Directory.CreateDirectory(directory);
        new MLContext(seed: Options.Seed).Model.Save(_transformer, _inputSchema, zipPath);
        _manifest.ModelSha256 = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(zipPath)));
        File.WriteAllText(SidecarPath(zipPath), JsonSerializer.Serialize(_manifest, AnomalyModelManifest.Json));
    }

    /// <summary>Reads a model written by <see cref="Save"/>.</summary>
    /// <exception cref="AnomalyModelException">A file is missing or malformed, or the two do not belong together.</exception>
    public static AnomalyModel Load(string zipPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(zipPath);
        string sidecar = SidecarPath(zipPath);
        AnomalyModelManifest manifest;
        try
        {
            manifest = JsonSerializer.Deserialize<AnomalyModelManifest>(File.ReadAllText(sidecar), AnomalyModelManifest.Json)
                ?? throw new AnomalyModelException($"{sidecar} is empty");
            string hash = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(zipPath)));
            if (!string.Equals(hash, manifest.ModelSha256, StringComparison.Ordinal))
                throw new AnomalyModelException($"{zipPath} is not the model {sidecar} describes (SHA-256 {hash}, expected {manifest.ModelSha256})");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException)
        {
            throw new AnomalyModelException($"cannot read the anomaly model {zipPath}: {e.Message}", e);
        }
        manifest.Check(sidecar);
        var ml = new MLContext(seed: manifest.Options.Seed);
        ITransformer transformer;
        DataViewSchema schema;
        try
        {
            transformer = ml.Model.Load(zipPath, out schema);
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or FormatException or InvalidDataException)
        {
            throw new AnomalyModelException($"cannot load the ML.NET model {zipPath}: {e.Message}", e);
        }
        // A loaded transformer is typed by ML.NET's internal predictor interface; its model is still the PCA parameters.
        PcaModelParameters pca = transformer switch
        {
            IPredictionTransformer<object> { Model: PcaModelParameters m } => m,
            TransformerChain<ITransformer> { LastTransformer: IPredictionTransformer<object> { Model: PcaModelParameters m } } => m,
            _ => throw new AnomalyModelException($"{zipPath} holds a {transformer.GetType().Name}, not a RandomizedPca model"),
        };
        return new AnomalyModel(transformer, schema, pca, manifest);
    }

    /// <summary>The sidecar of a model zip: same name, <c>.json</c>.</summary>
    public static string SidecarPath(string zipPath) => Path.ChangeExtension(zipPath, ".json");

    private static (double Mean, double StdDev) MeanStd(IEnumerable<double> values)
    {
        double sum = 0, sum2 = 0;
        int n = 0;
        foreach (double v in values)
        {
            if (double.IsNaN(v))
                continue;
            sum += v;
            sum2 += v * v;
            n++;
        }
        if (n == 0)
            return (0, 0);
        double mean = sum / n;
        return (mean, Math.Sqrt(Math.Max(0, sum2 / n - mean * mean)));
    }

    private static string Hash(IReadOnlyList<FeatureDefinition> features, List<double[]> rows)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData(Encoding.UTF8.GetBytes(string.Join('\n', features.Select(f => f.Name + ":" + f.Scale.ToString()))));
        Span<byte> b = stackalloc byte[8];
        foreach (double[] row in rows)
        {
            foreach (double v in row)
            {
                // One NaN pattern, so "missing" hashes the same however it was produced.
                BitConverter.TryWriteBytes(b, double.IsNaN(v) ? double.NaN : v);
                sha.AppendData(b);
            }
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    /// <summary>
    /// Rank of the data's covariance (Gaussian elimination with full pivoting, relative tolerance
    /// 1e-6: the data went through float).
    /// </summary>
    private static int NumericalRank(List<float[]> rows, int d)
    {
        var c = new double[d, d];
        foreach (float[] r in rows)
        {
            for (int i = 0; i < d; i++)
            {
                for (int j = 0; j < d; j++)
                    c[i, j] += (double)r[i] * r[j];
            }
        }
        double scale = 0;
        foreach (double x in c)
            scale = Math.Max(scale, Math.Abs(x));
        if (scale == 0)
            return 0;
        bool[] usedRow = new bool[d], usedColumn = new bool[d];
        int rank = 0;
        for (int step = 0; step < d; step++)
        {
            int pr = -1, pc = -1;
            double best = 0;
            for (int i = 0; i < d; i++)
            {
                for (int j = 0; j < d; j++)
                {
                    if (!usedRow[i] && !usedColumn[j] && Math.Abs(c[i, j]) > best)
                        (best, pr, pc) = (Math.Abs(c[i, j]), i, j);
                }
            }
            if (best <= 1e-6 * scale)
                break;
            usedRow[pr] = usedColumn[pc] = true;
            rank++;
            for (int i = 0; i < d; i++)
            {
                if (usedRow[i])
                    continue;
                double f = c[i, pc] / c[pr, pc];
                for (int j = 0; j < d; j++)
                    c[i, j] -= f * c[pr, j];
            }
        }
        return rank;
    }

    private static double[] Embed(double[] values, int[] indexes, int dimension)
    {
        var result = new double[dimension];
        for (int i = 0; i < indexes.Length; i++)
            result[indexes[i]] = values[i];
        return result;
    }

    private static double[] Dense(VBuffer<float> v)
    {
        var result = new double[v.Length];
        foreach (var (i, x) in v.Items(all: true))
            result[i] = x;
        return result;
    }

    private static SchemaDefinition RowSchema(int dimension)
    {
        SchemaDefinition schema = SchemaDefinition.Create(typeof(PcaRow));
        schema[nameof(PcaRow.Features)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, dimension);
        return schema;
    }

    /// <summary>Scaled, normalized vectors: NaN (missing) becomes 0, the training mean.</summary>
    private sealed class Normalizer(IReadOnlyList<FeatureDefinition> features, IReadOnlyList<double> mean, IReadOnlyList<double> stdDev)
    {
        // Far beyond any meaningful deviation; keeps a hostile value (2^60 mappings) from overflowing the score.
        private const double MaxZ = 1e3;

        public double[] StdDev { get; } = stdDev.ToArray();

        public double[] Apply(IReadOnlyList<double> raw)
        {
            var z = new double[features.Count];
            for (int j = 0; j < z.Length; j++)
            {
                double s = features[j].Apply(raw[j]);
                z[j] = double.IsNaN(s) ? 0 : Math.Clamp((s - mean[j]) / StdDev[j], -MaxZ, MaxZ);
            }
            return z;
        }
    }
}

/// <summary>ML.NET input row (the dimension is set at run time through a schema definition).</summary>
internal sealed class PcaRow
{
    public float[] Features { get; set; } = [];
}

/// <summary>ML.NET anomaly output row.</summary>
internal sealed class PcaPrediction
{
    public float Score { get; set; }
    public bool PredictedLabel { get; set; }
}

/// <summary>The JSON sidecar of a model zip.</summary>
internal sealed class AnomalyModelManifest
{
    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        Converters = { new System.Text.Json.Serialization.JsonStringEnumConverter() },
        // Calibration values are finite by construction; this only keeps a hand-edited file readable.
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public int FormatVersion { get; set; }
    public IReadOnlyList<FeatureDefinition> Features { get; set; } = [];
    /// <summary>Normalizer, on the scaled values: z = (scale(x) − mean) / stdDev (stdDev already floored).</summary>
    public double[] ScaledMean { get; set; } = [];
    public double[] ScaledStdDev { get; set; } = [];
    /// <summary>Training statistics of the raw values, for the explanation.</summary>
    public double[] RawMean { get; set; } = [];
    public double[] RawStdDev { get; set; } = [];
    /// <summary>Indexes of the features the PCA was trained on (those that varied in training), ascending.</summary>
    public int[] PcaFeatures { get; set; } = [];
    public double Threshold { get; set; }
    public string ThresholdMethod { get; set; } = "max(minimumThreshold, quantile(training scores, thresholdQuantile) * thresholdMargin)";
    public double MaxTrainingScore { get; set; }
    public double QuantileTrainingScore { get; set; }
    public AnomalyTrainingOptions Options { get; set; } = new();
    public int TrainingCount { get; set; }
    public string TrainingSha256 { get; set; } = "";
    /// <summary>SHA-256 of the zip this sidecar belongs to.</summary>
    public string ModelSha256 { get; set; } = "";

    /// <exception cref="AnomalyModelException">Inconsistent or out-of-range values.</exception>
    public void Check(string path)
    {
        int d = Features.Count;
        if (FormatVersion != AnomalyModel.FormatVersion)
            throw new AnomalyModelException($"{path}: format version {FormatVersion}, this build reads {AnomalyModel.FormatVersion}");
        if (d == 0 || Features.Any(f => f is null || string.IsNullOrEmpty(f.Name) || !Enum.IsDefined(f.Scale)))
            throw new AnomalyModelException($"{path}: no features, or a feature without a name or with an unknown scale");
        if (ScaledMean.Length != d || ScaledStdDev.Length != d || RawMean.Length != d || RawStdDev.Length != d)
            throw new AnomalyModelException($"{path}: normalizer lengths do not match the {d} features");
        if (ScaledMean.Concat(RawMean).Concat(RawStdDev).Any(x => !double.IsFinite(x)) || ScaledStdDev.Any(s => !(s > 0) || !double.IsFinite(s)))
            throw new AnomalyModelException($"{path}: the normalizer has non-finite values or a non-positive deviation");
        if (PcaFeatures.Length == 0 || PcaFeatures.Any(j => j < 0 || j >= d) || PcaFeatures.Zip(PcaFeatures.Skip(1)).Any(p => p.First >= p.Second))
            throw new AnomalyModelException($"{path}: the PCA feature indexes are empty, out of range or not ascending");
        if (!(Threshold > 0) || !double.IsFinite(Threshold))
            throw new AnomalyModelException(string.Create(CultureInfo.InvariantCulture, $"{path}: threshold {Threshold} is not a positive number"));
        if (Options is null)
            throw new AnomalyModelException($"{path}: no training options");
    }
}
