using System.Globalization;
using Vmi.Lab;
using Vmi.Linux;
using Vmi.Linux.Btf;
using Vmi.Linux.Image;
using Xunit;

namespace Vmi.Integration.Tests;

/// <summary>
/// One booted lab guest (TCG here, KASLR on) shared by a collection: a boot costs seconds, so many
/// assertions run against it. Ground truth is read once, after every scenario said it is ready.
/// </summary>
public abstract class BootedLabFixture(string flavour, string name, string scenarios, params string[] readyMarkers) : IAsyncLifetime
{
    public string Scenarios => scenarios;
    public LabArtifacts Artifacts { get; private set; } = null!;
    public LabGuest Guest { get; private set; } = null!;
    public GroundTruth Truth { get; private set; } = null!;
    /// <summary>"@@VMI-MARKER pid=N addr=0x…" of the spinning marker process.</summary>
    public int MarkerPid { get; private set; }
    public ulong MarkerAddress { get; private set; }
    public TimeSpan BootTime { get; private set; }
    /// <summary>True when the modules scenario loaded modules.</summary>
    public bool ModulesLoaded => Truth.Modules.Count > 0;

    public async Task InitializeAsync()
    {
        Artifacts = await LabArtifactsForTests.GetAsync(flavour);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        Guest = await LabGuest.StartAsync(Artifacts, name, scenarios);
        BootTime = sw.Elapsed;
        string marker = await Guest.Vm.Console.WaitForLineAsync(l => l.StartsWith("@@VMI-MARKER", StringComparison.Ordinal), TimeSpan.FromSeconds(60));
        foreach (string part in marker.Split(' '))
        {
            if (part.StartsWith("pid=", StringComparison.Ordinal))
                MarkerPid = int.Parse(part[4..], CultureInfo.InvariantCulture);
            if (part.StartsWith("addr=0x", StringComparison.Ordinal))
                MarkerAddress = ulong.Parse(part[7..], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        }
        foreach (string ready in readyMarkers)
            await Guest.Vm.Console.WaitForLineAsync(l => l.StartsWith(ready, StringComparison.Ordinal), TimeSpan.FromMinutes(2));
        Truth = await Guest.GetGroundTruthAsync();
    }

    public async Task DisposeAsync()
    {
        if (Guest is not null)
            await Guest.DisposeAsync();
    }
}

/// <summary>The default lab: Debian's standard kernel with every scenario.</summary>
public sealed class LabFixture() : BootedLabFixture("amd64", "itest", "benign,marker,modules,crowd,network", "@@VMI-CROWD-READY", "@@VMI-NETWORK-READY");

/// <summary>
/// The second kernel flavour (Debian's linux-image-cloud-amd64, another config and so other struct
/// layouts): the same differential checks must pass on it with nothing changed.
/// </summary>
public sealed class CloudLabFixture() : BootedLabFixture(Flavour, "itest-cloud", "benign,marker,modules,crowd", "@@VMI-CROWD-READY")
{
    public const string Flavour = "cloud-amd64";
}

[CollectionDefinition(Name)]
public sealed class LabCollection : ICollectionFixture<LabFixture>
{
    public const string Name = "lab guest";
}

[CollectionDefinition(Name)]
public sealed class CloudLabCollection : ICollectionFixture<CloudLabFixture>
{
    public const string Name = "cloud lab guest";
}

/// <summary>Builds each lab flavour once per test run (a no-op when scripts/test.sh already built it).</summary>
public static class LabArtifactsForTests
{
    private static readonly SemaphoreSlim Gate = new(1, 1);
    private static readonly Dictionary<string, LabArtifacts> Built = new(StringComparer.Ordinal);

    public static async Task<LabArtifacts> GetAsync(string flavour = "amd64")
    {
        await Gate.WaitAsync();
        try
        {
            if (!Built.TryGetValue(flavour, out LabArtifacts? artifacts))
            {
                artifacts = await new LabBuilder(TextWriter.Null).BuildAsync(new LabBuildOptions { LabDirectory = LabBuilder.DefaultLabDirectory(), Flavour = flavour });
                Built[flavour] = artifacts;
            }
            return artifacts;
        }
        finally
        {
            Gate.Release();
        }
    }

    /// <summary>The BTF of a built flavour's kernel image, read from its vmlinuz (no boot needed).</summary>
    public static async Task<BtfTypes> ReadBtfAsync(LabArtifacts artifacts)
    {
        ArgumentNullException.ThrowIfNull(artifacts);
        string vmlinux = Path.Combine(Path.GetTempPath(), $"vmi-itest-vmlinux-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            await BzImage.ExtractVmlinuxAsync(artifacts.KernelPath, vmlinux);
            return LinuxProfile.LoadBtfFile(vmlinux);
        }
        finally
        {
            File.Delete(vmlinux);
        }
    }
}
