using Vmi.Lab;
using Xunit;

namespace Vmi.Integration.Tests;

/// <summary>
/// One booted lab guest (TCG here, KASLR on) shared by a collection: a boot costs seconds, so many
/// assertions run against it. Ground truth is read once after boot.
/// </summary>
public sealed class LabFixture : IAsyncLifetime
{
    public LabArtifacts Artifacts { get; private set; } = null!;
    public LabGuest Guest { get; private set; } = null!;
    public GroundTruth Truth { get; private set; } = null!;
    /// <summary>"@@VMI-MARKER pid=N addr=0x…" of the spinning marker process.</summary>
    public int MarkerPid { get; private set; }
    public ulong MarkerAddress { get; private set; }
    public TimeSpan BootTime { get; private set; }

    public async Task InitializeAsync()
    {
        Artifacts = await LabArtifactsForTests.GetAsync();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        Guest = await LabGuest.StartAsync(Artifacts, "itest", "benign,marker,modules,crowd,network");
        BootTime = sw.Elapsed;
        string marker = await Guest.Vm.Console.WaitForLineAsync(l => l.StartsWith("@@VMI-MARKER", StringComparison.Ordinal), TimeSpan.FromSeconds(60));
        foreach (string part in marker.Split(' '))
        {
            if (part.StartsWith("pid=", StringComparison.Ordinal))
                MarkerPid = int.Parse(part[4..], System.Globalization.CultureInfo.InvariantCulture);
            if (part.StartsWith("addr=0x", StringComparison.Ordinal))
                MarkerAddress = ulong.Parse(part[7..], System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture);
        }
        await Guest.Vm.Console.WaitForLineAsync(l => l.StartsWith("@@VMI-CROWD-READY", StringComparison.Ordinal), TimeSpan.FromMinutes(2));
        await Guest.Vm.Console.WaitForLineAsync(l => l.StartsWith("@@VMI-NETWORK-READY", StringComparison.Ordinal), TimeSpan.FromMinutes(2));
        Truth = await Guest.GetGroundTruthAsync();
    }

    public async Task DisposeAsync()
    {
        if (Guest is not null)
            await Guest.DisposeAsync();
    }
}

[CollectionDefinition(Name)]
public sealed class LabCollection : ICollectionFixture<LabFixture>
{
    public const string Name = "lab guest";
}

/// <summary>Builds the lab once per test run (a no-op when scripts/test.sh already built it).</summary>
public static class LabArtifactsForTests
{
    private static readonly SemaphoreSlim Gate = new(1, 1);
    private static LabArtifacts? _artifacts;

    public static async Task<LabArtifacts> GetAsync()
    {
        await Gate.WaitAsync();
        try
        {
            return _artifacts ??= await new LabBuilder(TextWriter.Null).BuildAsync(new LabBuildOptions { LabDirectory = LabBuilder.DefaultLabDirectory() });
        }
        finally
        {
            Gate.Release();
        }
    }
}
