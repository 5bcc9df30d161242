using System.Text.Json;
using Vmi.Detectors.Anomaly;
using Vmi.Events;
using Xunit;

namespace Vmi.Detectors.Tests;

/// <summary>The model on synthetic vectors: a normal cluster with structure, and outliers of known kinds.</summary>
public sealed class AnomalyModelTests
{
    private static readonly IReadOnlyList<FeatureDefinition> Features =
    [
        new("fds", FeatureScale.Log1p, "descriptors"),
        new("sockets", FeatureScale.Log1p, "sockets, about half the descriptors"),
        new("vmas", FeatureScale.Log1p, "mappings"),
        new("wx", FeatureScale.Log1p, "W+X mappings, never in normal processes"),
        new("root", FeatureScale.Binary, "runs as root"),
    ];

    /// <summary>Normal behaviour: sockets track descriptors, mappings vary on their own, no W+X, some root.</summary>
    private static List<double[]> Normal(int count, int seed)
    {
        var random = new Random(seed);
        var rows = new List<double[]>(count);
        for (int i = 0; i < count; i++)
        {
            double fds = random.Next(3, 60);
            rows.Add([fds, Math.Round(fds / 2 + random.Next(-1, 2)), random.Next(15, 40), 0, random.Next(2)]);
        }
        return rows;
    }

    private static AnomalyModel Train(AnomalyTrainingOptions? options = null) => AnomalyModel.Train(Features, Normal(300, 7), options);

    [Fact]
    public void Normal_vectors_score_below_the_threshold_and_outliers_above_with_the_right_explanation()
    {
        AnomalyModel model = Train();
        Assert.Equal(3, model.Rank);
        Assert.Equal(300, model.TrainingCount);
        // Held-out normal vectors (another seed) are normal too.
        foreach (double[] row in Normal(200, 99))
            Assert.False(model.Score(row).IsAnomalous, $"{string.Join(',', row)} scored {model.Score(row).Score} > {model.Threshold}");

        // Never-seen behaviour: W+X memory.
        AnomalyScore wx = model.Score([20, 10, 25, 6, 1]);
        Assert.True(wx.IsAnomalous, $"{wx.Score} <= {wx.Threshold}");
        Assert.Equal("wx", wx.Contributions[0].Name);
        Assert.True(wx.Contributions[0].Share > 0.5);

        // Broken correlation: many sockets for few descriptors (each value alone is within range).
        AnomalyScore sockets = model.Score([4, 30, 25, 0, 0]);
        Assert.True(sockets.IsAnomalous, $"{sockets.Score} <= {sockets.Threshold}");
        Assert.Contains(sockets.Top(2), c => c.Name == "sockets");
        Assert.Equal(1.0, sockets.Contributions.Sum(c => c.Share), 6);
    }

    [Fact]
    public void Explanation_reads_value_against_training_mean_and_deviation()
    {
        AnomalyModel model = Train();
        FeatureContribution top = model.Score([20, 10, 25, 6, 1]).Top(1).Single();
        Assert.Equal(6, top.Value);
        Assert.Equal(0, top.TrainingMean);
        Assert.Equal(0, top.TrainingStdDev);
        // log1p(6) / floor 0.25 = 7.8 deviations.
        Assert.Equal(Math.Log(7) / 0.25, top.Z, 6);
        Assert.StartsWith("wx=6 (train mean 0 ± 0; z=+7.8; ", top.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void Training_is_deterministic()
    {
        AnomalyModel a = Train();
        AnomalyModel b = Train();
        Assert.Equal(a.Threshold, b.Threshold);
        Assert.Equal(a.TrainingSha256, b.TrainingSha256);
        double[] probe = [4, 30, 25, 1, 0];
        Assert.Equal(a.Score(probe).Score, b.Score(probe).Score);
    }

    [Fact]
    public void Threshold_is_the_training_quantile_times_the_margin_with_a_floor()
    {
        AnomalyModel max = Train(new AnomalyTrainingOptions { ThresholdQuantile = 1, ThresholdMargin = 2, MinimumThreshold = 1e-9 });
        Assert.Equal(max.MaxTrainingScore * 2, max.Threshold, 9);
        Assert.True(Normal(300, 7).Max(r => max.Score(r).Score) <= max.MaxTrainingScore + 1e-9);

        AnomalyModel floored = Train(new AnomalyTrainingOptions { MinimumThreshold = 1e6 });
        Assert.Equal(1e6, floored.Threshold);

        // Training vectors that differ in one feature only: every training score is 0 (the PCA
        // explains that feature), the floor keeps the threshold meaningful.
        var line = Enumerable.Range(0, 20).Select(i => new double[] { 5, 2, 20 + i, 0, 1 }).ToList();
        AnomalyModel flat = AnomalyModel.Train(Features, line);
        Assert.Equal(1, flat.Rank);
        Assert.Equal(new AnomalyTrainingOptions().MinimumThreshold, flat.Threshold);
        Assert.False(flat.Score([5, 2, 50, 0, 1]).IsAnomalous);
        AnomalyScore wx = flat.Score([5, 2, 20, 3, 1]);
        Assert.True(wx.IsAnomalous);
        Assert.Equal("wx", wx.Contributions[0].Name);

        // All alike: nothing to learn.
        Assert.Throws<AnomalyModelException>(() => AnomalyModel.Train(Features, Enumerable.Repeat(new double[] { 5, 2, 20, 0, 1 }, 20)));
    }

    [Fact]
    public void Our_relative_error_is_MLNET_own_score()
    {
        AnomalyModel model = Train();
        // Probes keep "wx" (constant in training, so outside the PCA's input) at its training value.
        foreach (double[] probe in new[] { new double[] { 60, 2, 15, 0, 1 }, [4, 30, 25, 0, 0], [30, 15, 30, 0, 1] })
        {
            // ML.NET computes in float; a tenth of a percent apart is the same score.
            double ours = model.Score(probe).RelativeError;
            Assert.InRange(ours, 0, 1);
            Assert.True(Math.Abs(model.MlNetScore(probe) - ours) < 1e-3, $"{model.MlNetScore(probe)} vs {ours}");
        }
    }

    [Fact]
    public void Missing_values_count_as_the_training_mean()
    {
        AnomalyModel model = Train();
        AnomalyScore missing = model.Score([20, 10, 25, double.NaN, 1]);
        Assert.False(missing.IsAnomalous);
        Assert.True(double.IsNaN(missing.Contributions.Single(c => c.Name == "wx").Value));
        Assert.Contains("wx=unknown", missing.Contributions.Single(c => c.Name == "wx").ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void Hostile_values_stay_finite()
    {
        AnomalyModel model = Train();
        AnomalyScore score = model.Score([double.MaxValue, -1, double.PositiveInfinity, 1e300, 1]);
        Assert.True(double.IsFinite(score.Score));
        Assert.True(score.IsAnomalous);
    }

    [Fact]
    public void Save_and_load_give_the_same_model_and_a_readable_sidecar()
    {
        string dir = Path.Combine(Path.GetTempPath(), "vmi-anomaly-" + Guid.NewGuid().ToString("N"));
        try
        {
            AnomalyModel model = Train();
            string zip = Path.Combine(dir, "model.zip");
            model.Save(zip);
            AnomalyModel loaded = AnomalyModel.Load(zip);
            Assert.Equal(model.Threshold, loaded.Threshold);
            Assert.Equal(model.TrainingSha256, loaded.TrainingSha256);
            Assert.Equal(model.Rank, loaded.Rank);
            Assert.Equal(Features.Select(f => f.Name), loaded.Features.Select(f => f.Name));
            double[] probe = [4, 30, 25, 1, 0];
            Assert.Equal(model.Score(probe).Score, loaded.Score(probe).Score, 9);
            Assert.Equal(model.MlNetScore(probe), loaded.MlNetScore(probe));

            using (JsonDocument json = JsonDocument.Parse(File.ReadAllText(AnomalyModel.SidecarPath(zip))))
            {
                JsonElement root = json.RootElement;
                Assert.Equal(300, root.GetProperty("trainingCount").GetInt32());
                Assert.Equal("wx", root.GetProperty("features")[3].GetProperty("name").GetString());
                Assert.Equal(5, root.GetProperty("scaledStdDev").GetArrayLength());
                Assert.Equal(model.Threshold, root.GetProperty("threshold").GetDouble());
            }

            // A zip that is not the one the sidecar describes is refused.
            AnomalyModel other = AnomalyModel.Train(Features, Normal(50, 3));
            string otherZip = Path.Combine(dir, "other.zip");
            other.Save(otherZip);
            File.Copy(otherZip, zip, overwrite: true);
            Assert.Throws<AnomalyModelException>(() => AnomalyModel.Load(zip));
            Assert.Throws<AnomalyModelException>(() => AnomalyModel.Load(Path.Combine(dir, "missing.zip")));
        }
        finally
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Bad_input_is_refused()
    {
        Assert.Throws<ArgumentException>(() => AnomalyModel.Train(Features, []));
        Assert.Throws<ArgumentException>(() => AnomalyModel.Train(Features, [new double[] { 1, 2 }]));
        Assert.Throws<ArgumentOutOfRangeException>(() => AnomalyModel.Train(Features, Normal(10, 1), new AnomalyTrainingOptions { Rank = 0 }));
        Assert.Throws<ArgumentException>(() => Train().Score([1, 2, 3]));
        Assert.Throws<ArgumentException>(() => new AnomalyDetector(new AnomalyDetectorOptions { LearnSweeps = 0 }));
        Assert.Throws<ArgumentException>(() => new AnomalyDetector(new AnomalyDetectorOptions { Model = Train() }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new AnomalyDetector(new AnomalyDetectorOptions { ThresholdMultiplier = 0 }));
    }

    [Fact]
    public void Rank_is_clamped_to_the_data()
    {
        // Three vectors span two directions around their mean.
        AnomalyModel model = AnomalyModel.Train(Features, Normal(3, 5), new AnomalyTrainingOptions { Rank = 10 });
        Assert.Equal(2, model.Rank);
    }

    [Fact]
    public void Process_feature_set_has_unique_names_in_index_order()
    {
        Assert.Equal(ProcessFeatures.All.Count, ProcessFeatures.All.Select(f => f.Name).Distinct(StringComparer.Ordinal).Count());
        Assert.Equal("wx_vmas", ProcessFeatures.All[ProcessFeatures.WritableExecutableVmas].Name);
        Assert.Equal("vmas", ProcessFeatures.All[ProcessFeatures.Vmas].Name);
        Assert.Equal("comm_mismatch", ProcessFeatures.All[ProcessFeatures.CommDiffersFromExe].Name);
        Assert.Equal(22, ProcessFeatures.All.Count);
    }

    [Theory]
    [InlineData("sleep", "/usr/bin/sleep", true)]
    [InlineData("sh", "/bin/busybox", false)]
    [InlineData("a_much_longer_n", "/tmp/crowd/a_much_longer_name_than_comm_holds", true)]
    [InlineData("kworker", "/tmp/x", false)]
    public void Comm_is_compared_with_the_executable_name_cut_to_15_bytes(string comm, string exe, bool matches) =>
        Assert.Equal(matches, ProcessFeatureExtractor.CommMatches(comm, exe));

    [Fact]
    public void Comm_of_a_cut_multibyte_name_matches()
    {
        // "ünïcødé-prøc" is 16 bytes in UTF-8: comm holds 15, ending in half of "ø"'s encoding.
        string exe = "/tmp/crowd/ünïcødé-prøc";
        byte[] name = System.Text.Encoding.UTF8.GetBytes("ünïcødé-prøc");
        string comm = System.Text.Encoding.UTF8.GetString(name, 0, 15);
        Assert.True(ProcessFeatureExtractor.CommMatches(comm, exe));
    }

    [Theory]
    [InlineData("/tmp/x", true)]
    [InlineData("/dev/shm/.x", true)]
    [InlineData("/run/user/0/x", true)]
    [InlineData("/memfd:payload", true)]
    [InlineData("/usr/bin/tmp", false)]
    [InlineData(null, false)]
    public void Suspicious_locations(string? path, bool suspicious) =>
        Assert.Equal(suspicious, ProcessFeatureExtractor.IsSuspiciousPath(path));

    [Fact]
    public void Alert_techniques_follow_the_top_features()
    {
        FeatureContribution C(string name) => new(name, 1, 0, 0, 1, 1, 0.3);
        Assert.Equal([AttackTechnique.ProcessInjection], AnomalyDetector.Techniques([C("wx_vmas"), C("anon_exec_vmas"), C("vmas")]));
        Assert.Equal([AnomalyDetector.ReflectiveCodeLoading, AnomalyDetector.Masquerading], AnomalyDetector.Techniques([C("suspicious_exe"), C("comm_mismatch")]));
        Assert.Empty(AnomalyDetector.Techniques([C("threads")]));
    }
}
