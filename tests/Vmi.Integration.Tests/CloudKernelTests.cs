using System.Globalization;
using Vmi.Linux.Btf;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Integration.Tests;

/// <summary>
/// The Linux model's differential checks on a second kernel flavour (linux-image-cloud-amd64): the
/// same code, other struct layouts, found from the guest's own BTF and kallsyms.
/// </summary>
[Collection(CloudLabCollection.Name)]
public sealed class CloudKernelTests(CloudLabFixture lab, ITestOutputHelper output)
{
    [Fact]
    public async Task Struct_layouts_differ_from_the_default_flavour()
    {
        var (profile, _) = await LinuxModelChecks.BootstrapAsync(lab.Guest, output);
        Assert.Contains("cloud-amd64", profile.Banner, StringComparison.Ordinal);
        IReadOnlyDictionary<string, int> cloud = LinuxModelChecks.ModelLayout(profile.Types);
        // The default flavour's layout from its own image (no second boot).
        BtfTypes defaultTypes = await LabArtifactsForTests.ReadBtfAsync(await LabArtifactsForTests.GetAsync());
        IReadOnlyDictionary<string, int> amd64 = LinuxModelChecks.ModelLayout(defaultTypes);
        var differing = new List<string>();
        foreach (var (name, offset) in cloud)
        {
            string other = amd64.TryGetValue(name, out int o) ? o.ToString(CultureInfo.InvariantCulture) : "absent";
            output.WriteLine($"{name,-32} amd64 {other,8}   cloud-amd64 {offset,8}");
            if (other != offset.ToString(CultureInfo.InvariantCulture))
                differing.Add(name);
        }
        output.WriteLine($"model layout entries that differ: {string.Join(", ", differing)}");
        // Where the two task_structs part ways (members the model does not read, on this 6.1 pair).
        var cloudTask = LinuxModelChecks.TopLevelMembers(profile.Types, "task_struct");
        var amd64Task = LinuxModelChecks.TopLevelMembers(defaultTypes, "task_struct");
        var moved = cloudTask.Where(kv => !amd64Task.TryGetValue(kv.Key, out long o) || o != kv.Value).Select(kv => kv.Key).ToList();
        var onlyAmd64 = amd64Task.Keys.Where(k => !cloudTask.ContainsKey(k)).ToList();
        output.WriteLine($"task_struct members at other offsets or only in cloud-amd64: {string.Join(", ", moved.Take(40))}{(moved.Count > 40 ? ", …" : "")}");
        output.WriteLine($"task_struct members only in amd64: {string.Join(", ", onlyAmd64)}");
        // The two configurations really produce different struct layouts; the model's own offsets may
        // coincide (they do for Debian 6.1 amd64/cloud-amd64: only sizeof(task_struct) differs), which
        // is why the sizes are part of the compared layout.
        Assert.NotEmpty(differing);
        Assert.NotEqual(amd64["sizeof(task_struct)"], cloud["sizeof(task_struct)"]);
    }

    [Fact]
    public Task Profile_comes_from_the_guest_alone() =>
        LinuxModelChecks.ProfileComesFromTheGuestAloneAsync(lab.Guest, lab.Truth, lab.MarkerPid, lab.MarkerAddress, output);

    [Fact]
    public Task Process_list_equals_the_guests_proc() =>
        LinuxModelChecks.ProcessListEqualsTheGuestsProcAsync(lab.Guest, lab.Truth, lab.MarkerPid, lab.MarkerAddress, output);

    [Fact]
    public async Task Module_list_equals_proc_modules()
    {
        Assert.True(lab.ModulesLoaded, $"the {lab.Scenarios} scenario loaded no module on {lab.Truth.Version}");
        await LinuxModelChecks.ModuleListEqualsProcModulesAsync(lab.Guest, lab.Truth, lab.MarkerPid, lab.MarkerAddress, output);
    }

    [Fact]
    public Task Syscall_table_and_idt_point_into_kernel_text() =>
        LinuxModelChecks.SyscallTableAndIdtPointIntoKernelTextAsync(lab.Guest, lab.Truth, lab.MarkerPid, lab.MarkerAddress, output);

    [Fact]
    public Task Memory_maps_equal_proc_maps() =>
        LinuxModelChecks.MemoryMapsEqualProcMapsAsync(lab.Guest, lab.Truth, lab.MarkerPid, lab.MarkerAddress, output);

    [Fact]
    public void Guest_runs_the_cloud_kernel()
    {
        Assert.Contains(lab.Artifacts.KernelVersion, lab.Truth.Version, StringComparison.Ordinal);
        Assert.EndsWith("cloud-amd64", lab.Artifacts.KernelVersion, StringComparison.Ordinal);
    }
}
