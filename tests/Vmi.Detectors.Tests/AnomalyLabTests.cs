using System.Diagnostics;
using System.Reactive.Concurrency;
using Vmi.Detectors.Anomaly;
using Vmi.Events;
using Vmi.Linux.Model;
using Vmi.Pipeline;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Detectors.Tests;

/// <summary>
/// The anomaly detector on the real lab guest's dump: trained on its benign workload (every user
/// process there is benign), then shown a process the attacker changed in a private overlay.
/// </summary>
[Collection(LabDumpCollection.Name)]
public sealed class AnomalyLabTests(LabDumpFixture lab, ITestOutputHelper output)
{
    // include/linux/mm.h
    private const ulong VmWrite = 0x2;
    private const ulong VmExec = 0x4;

    private (AnomalyModel Model, IReadOnlyList<ProcessFeatures> Benign) TrainOnLab()
    {
        using AttackableGuest clean = lab.Attack();
        var notes = new List<string>();
        var sw = Stopwatch.StartNew();
        IReadOnlyList<ProcessFeatures> benign = AnomalyTraining.Collect(clean.Kernel, notes);
        TimeSpan collect = sw.Elapsed;
        AnomalyModel model = AnomalyModel.Train(benign);
        output.WriteLine($"collected {benign.Count} processes in {collect.TotalMilliseconds:0} ms, trained in {(sw.Elapsed - collect).TotalMilliseconds:0} ms: " +
            $"rank {model.Rank}, threshold {model.Threshold:0.###} (max training score {model.MaxTrainingScore:0.###})");
        foreach (string n in notes)
            output.WriteLine("note: " + n);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"collecting and training took {sw.Elapsed}");
        return (model, benign);
    }

    /// <summary>Makes every writable mapping of a process also executable (what a loader of injected code leaves).</summary>
    private static int MakeWritableMappingsExecutable(AttackableGuest guest, LinuxProcess victim)
    {
        int flagsOffset = guest.OffsetOf("vm_area_struct", "vm_flags");
        int changed = 0;
        foreach (LinuxVma vma in guest.Kernel.GetMappings(victim).Items)
        {
            if ((vma.Flags & VmWrite) != 0 && (vma.Flags & VmExec) == 0)
            {
                guest.WriteUInt64(vma.Address + (ulong)flagsOffset, vma.Flags | VmExec);
                changed++;
            }
        }
        return changed;
    }

    private static SweepTick Tick(long number, DateTimeOffset time) => new() { VmId = "lab", Time = time, Reason = SweepReason.Periodic, Number = number };

    private static List<Alert> Sweep(AnomalyDetector detector, GuestView guest, IScheduler scheduler, long number)
    {
        var emitted = new List<VmiEvent>();
        var context = new DetectorContext(detector.Info, guest, scheduler, emitted.Add, CancellationToken.None);
        detector.AnalyzeAsync(Tick(number, scheduler.Now), context).AsTask().GetAwaiter().GetResult();
        return emitted.OfType<Alert>().ToList();
    }

    [Fact]
    public void Benign_lab_processes_score_below_the_threshold()
    {
        var (model, benign) = TrainOnLab();
        foreach (ProcessFeatures p in benign)
            output.WriteLine($"{model.Score(p).Score,8:0.###}  {p}");
        Assert.True(benign.Count >= 3, $"only {benign.Count} user processes");
        Assert.DoesNotContain(benign, p => p.IsKernelThread);

        // The features read what the lab is: the unprivileged process runs from /tmp as uid 1000, init has children.
        ProcessFeatures user = Assert.Single(benign, p => p.Name == LabDumpFixture.UserProcessComm);
        Assert.Equal(0, user["uid_root"]);
        Assert.Equal(0, user["euid_root"]);
        Assert.True(user["vmas"] > 3);
        Assert.True(user["threads"] >= 1);
        Assert.Equal(0, user["wx_vmas"]);
        ProcessFeatures init = Assert.Single(benign, p => p.Pid == 1);
        Assert.True(init["children"] >= 1);
        Assert.Equal(1, init["uid_root"]);

        foreach (ProcessFeatures p in benign)
        {
            AnomalyScore score = model.Score(p);
            Assert.False(score.IsAnomalous, $"benign {p}: score {score.Score} > {score.Threshold}: {string.Join("; ", score.Top())}");
        }

        // The detector agrees: a sweep of the clean guest raises nothing.
        using AttackableGuest clean = lab.Attack();
        var detector = new AnomalyDetector(new AnomalyDetectorOptions { Model = model });
        Assert.Empty(Sweep(detector, clean.Guest, new HistoricalScheduler(), 1));
    }

    [Fact]
    public void Injected_writable_executable_memory_is_anomalous_and_explained()
    {
        var (model, _) = TrainOnLab();
        using AttackableGuest attacked = lab.Attack();
        LinuxProcess victim = attacked.Kernel.GetProcesses().Items.Single(p => p.Comm == LabDumpFixture.UserProcessComm);
        int changed = MakeWritableMappingsExecutable(attacked, victim);
        output.WriteLine($"made {changed} mappings of pid {victim.Pid} W+X");
        Assert.True(changed >= 2);

        ProcessFeatures features = new ProcessFeatureExtractor(attacked.Kernel).Extract().Processes.Single(p => p.Pid == victim.Pid);
        Assert.Equal(changed, features["wx_vmas"]);
        AnomalyScore score = model.Score(features);
        foreach (FeatureContribution c in score.Top())
            output.WriteLine(c.ToString());
        Assert.True(score.IsAnomalous, $"score {score.Score} <= {score.Threshold}");
        Assert.Contains(score.Contributions[0].Name, new[] { "wx_vmas", "anon_exec_vmas" });
        Assert.Contains(score.Top(), c => c.Name == "wx_vmas");

        // Through the detector: one alert, for that process, with the explanation as evidence.
        var detector = new AnomalyDetector(new AnomalyDetectorOptions { Model = model });
        List<Alert> alerts = Sweep(detector, attacked.Guest, new HistoricalScheduler(), 1);
        Alert alert = Assert.Single(alerts);
        output.WriteLine(alert.Title);
        foreach (var (k, v) in alert.Evidence)
            output.WriteLine($"  {k}: {v}");
        Assert.Equal(AnomalyDetector.DetectorId, alert.Detector);
        Assert.Equal(victim.Pid, alert.Pid);
        Assert.Equal($"process-anomaly:{victim.Pid}:{victim.StartTimeNs}", alert.Key);
        Assert.Contains(AttackTechnique.ProcessInjection, alert.Techniques);
        Assert.Contains(alert.Evidence.Where(e => e.Key.StartsWith("top_feature_", StringComparison.Ordinal)), e => e.Value.StartsWith($"wx_vmas={changed} (train mean 0 ± 0", StringComparison.Ordinal));
        Assert.True(double.Parse(alert.Evidence["score"], System.Globalization.CultureInfo.InvariantCulture) > double.Parse(alert.Evidence["threshold"], System.Globalization.CultureInfo.InvariantCulture));
        // The other processes of the attacked guest stay quiet, and the alert is not repeated on the next sweep.
        Assert.Empty(Sweep(detector, attacked.Guest, new HistoricalScheduler(), 2));
    }

    [Fact]
    public void A_synthesized_crowd_of_mappings_is_anomalous_with_vmas_on_top()
    {
        var (model, benign) = TrainOnLab();
        // The lab's marker process splits a region into 2048 VMAs; no benign process of this dump does.
        ProcessFeatures user = benign.Single(p => p.Name == LabDumpFixture.UserProcessComm);
        double[] values = user.Values.ToArray();
        values[ProcessFeatures.Vmas] = 2048;
        AnomalyScore score = model.Score(values);
        output.WriteLine(string.Join("; ", score.Top()));
        Assert.True(score.IsAnomalous, $"score {score.Score} <= {score.Threshold}");
        Assert.Equal("vmas", score.Contributions[0].Name);
        Assert.Empty(AnomalyDetector.Techniques(score.Top(1)));
    }

    [Fact]
    public void Learning_mode_learns_the_first_sweeps_then_alerts_once_per_process_after_the_minimum_age()
    {
        using AttackableGuest clean = lab.Attack();
        using AttackableGuest attacked = lab.Attack();
        LinuxProcess victim = attacked.Kernel.GetProcesses().Items.Single(p => p.Comm == LabDumpFixture.UserProcessComm);
        MakeWritableMappingsExecutable(attacked, victim);

        var scheduler = new HistoricalScheduler(DateTimeOffset.UnixEpoch);
        var detector = new AnomalyDetector(new AnomalyDetectorOptions { LearnSweeps = 2, MinProcessAge = TimeSpan.FromMinutes(1) });
        Assert.Empty(Sweep(detector, clean.Guest, scheduler, 1));
        Assert.Null(detector.Model);
        Assert.Empty(Sweep(detector, clean.Guest, scheduler, 2));
        Assert.NotNull(detector.Model);
        Assert.Equal(2 * AnomalyTraining.Collect(clean.Kernel).Count, detector.Model.TrainingCount);

        // Seen for the first time now: too young to judge.
        Assert.Empty(Sweep(detector, attacked.Guest, scheduler, 3));
        scheduler.AdvanceBy(TimeSpan.FromMinutes(2));
        Alert alert = Assert.Single(Sweep(detector, attacked.Guest, scheduler, 4));
        Assert.Equal(victim.Pid, alert.Pid);
        Assert.Equal(scheduler.Now, alert.Time);
        // Once per condition; after it clears (the clean guest), a relapse alerts again.
        Assert.Empty(Sweep(detector, attacked.Guest, scheduler, 5));
        Assert.Empty(Sweep(detector, clean.Guest, scheduler, 6));
        Assert.Single(Sweep(detector, attacked.Guest, scheduler, 7));

        // A higher threshold multiplier silences it.
        var lenient = new AnomalyDetector(new AnomalyDetectorOptions { Model = detector.Model, ThresholdMultiplier = 1e6 });
        Assert.Empty(Sweep(lenient, attacked.Guest, scheduler, 1));
    }

    [Fact]
    public void A_corrupt_memory_map_leaves_its_features_unknown_and_noted_not_zero()
    {
        var (model, _) = TrainOnLab();
        using AttackableGuest attacked = lab.Attack();
        LinuxProcess victim = attacked.Kernel.GetProcesses().Items.Single(p => p.Comm == LabDumpFixture.UserProcessComm);
        // mm->mm_mt.ma_root: a tagged node pointer to nowhere.
        attacked.WriteUInt64(victim.MmAddress + (ulong)attacked.OffsetOf("mm_struct", "mm_mt.ma_root"), 0xdead_0000_0000_0002);

        FeatureSweep sweep = new ProcessFeatureExtractor(attacked.Kernel).Extract();
        ProcessFeatures features = sweep.Processes.Single(p => p.Pid == victim.Pid);
        Assert.True(double.IsNaN(features["vmas"]));
        Assert.True(double.IsNaN(features["wx_vmas"]));
        Assert.Contains(features.Notes, n => n.StartsWith("maps: ", StringComparison.Ordinal));
        Assert.False(double.IsNaN(features["open_fds"]));
        // Unknown is "as usual" to the model, not 0 mappings.
        Assert.False(model.Score(features).IsAnomalous);
        Assert.Empty(Sweep(new AnomalyDetector(new AnomalyDetectorOptions { Model = model }), attacked.Guest, new HistoricalScheduler(), 1));
    }

    [Fact]
    public async Task A_lab_model_saved_and_loaded_scores_the_same()
    {
        using AttackableGuest clean = lab.Attack();
        IReadOnlyList<ProcessFeatures> twice = await AnomalyTraining.CollectAsync(clean.Kernel, sweeps: 2, TimeSpan.FromMilliseconds(1));
        AnomalyModel model = AnomalyModel.Train(twice);
        string dir = Path.Combine(Path.GetTempPath(), "vmi-anomaly-lab-" + Guid.NewGuid().ToString("N"));
        try
        {
            string zip = Path.Combine(dir, "lab-benign.zip");
            model.Save(zip);
            var detector = new AnomalyDetector(new AnomalyDetectorOptions { ModelPath = zip });
            Assert.NotNull(detector.Model);
            Assert.Equal(model.TrainingSha256, detector.Model.TrainingSha256);
            foreach (ProcessFeatures p in twice)
                Assert.Equal(model.Score(p).Score, detector.Model.Score(p).Score, 9);
        }
        finally
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }
    }
}
