using System.Globalization;
using Vmi.Lab;
using Vmi.Linux;
using Vmi.Linux.Btf;
using Vmi.Linux.Image;
using Xunit;

namespace Vmi.Integration.Tests;

/// <summary>
/// One booted guest of the second kernel flavour (Debian's linux-image-cloud-amd64, another config and
/// so other struct layouts): the same differential checks must pass on it with nothing changed.
/// One boot for the whole collection (TCG boots cost tens of seconds on CI).
/// </summary>
public sealed class CloudLabFixture : IAsyncLifetime
{
    public const string Flavour = "cloud-amd64";
    /// <summary>The cloud kernel ships dummy, crc7, isofs (and cdrom): the same module scenario as the default lab.</summary>
    public const string Scenarios = "benign,marker,modules,crowd";

    public LabArtifacts Artifacts { get; private set; } = null!;
    public LabGuest Guest { get; private set; } = null!;
    public GroundTruth Truth { get; private set; } = null!;
    public int MarkerPid { get; private set; }
    public ulong MarkerAddress { get; private set; }
    public TimeSpan BootTime { get; private set; }
    /// <summary>True when the modules scenario loaded modules (the cloud kernel has them).</summary>
    public bool ModulesLoaded => Truth.Modules.Count > 0;

    public async Task InitializeAsync()
    {
        Artifacts = await CloudLabArtifactsForTests.GetAsync();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        Guest = await LabGuest.StartAsync(Artifacts, "itest-cloud", Scenarios);
        BootTime = sw.Elapsed;
        string marker = await Guest.Vm.Console.WaitForLineAsync(l => l.StartsWith("@@VMI-MARKER", StringComparison.Ordinal), TimeSpan.FromSeconds(60));
        foreach (string part in marker.Split(' '))
        {
            if (part.StartsWith("pid=", StringComparison.Ordinal))
                MarkerPid = int.Parse(part[4..], CultureInfo.InvariantCulture);
            if (part.StartsWith("addr=0x", StringComparison.Ordinal))
                MarkerAddress = ulong.Parse(part[7..], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        }
        await Guest.Vm.Console.WaitForLineAsync(l => l.StartsWith("@@VMI-CROWD-READY", StringComparison.Ordinal), TimeSpan.FromMinutes(2));
        Truth = await Guest.GetGroundTruthAsync();
    }

    public async Task DisposeAsync()
    {
        if (Guest is not null)
            await Guest.DisposeAsync();
    }
}

[CollectionDefinition(Name)]
public sealed class CloudLabCollection : ICollectionFixture<CloudLabFixture>
{
    public const string Name = "cloud lab guest";
}

/// <summary>Builds the cloud flavour once per test run (a no-op when scripts/test.sh already built it).</summary>
public static class CloudLabArtifactsForTests
{
    private static readonly SemaphoreSlim Gate = new(1, 1);
    private static LabArtifacts? _artifacts;

    public static async Task<LabArtifacts> GetAsync()
    {
        await Gate.WaitAsync();
        try
        {
            return _artifacts ??= await new LabBuilder(TextWriter.Null).BuildAsync(
                new LabBuildOptions { LabDirectory = LabBuilder.DefaultLabDirectory(), Flavour = CloudLabFixture.Flavour });
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
        string dir = Path.Combine(Path.GetTempPath(), $"vmi-itest-btf-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            string vmlinux = Path.Combine(dir, "vmlinux");
            await BzImage.ExtractVmlinuxAsync(artifacts.KernelPath, vmlinux);
            using ElfImage elf = ElfImage.Open(vmlinux);
            if (!elf.TryGetSection(".BTF", out ReadOnlyMemory<byte> btf))
                throw new InvalidOperationException($"{artifacts.KernelPath} has no .BTF section");
            return BtfTypes.Parse(btf.Span);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
