using System.Text.Json;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Integration.Tests;

/// <summary>
/// The Linux model against the live lab guest (KASLR on, a few hundred processes with awkward names,
/// modules loaded), compared with the guest's own /proc view printed on its console.
/// </summary>
[Collection(LabCollection.Name)]
public sealed class LinuxModelTests(LabFixture lab, ITestOutputHelper output)
{
    [Fact]
    public Task Profile_comes_from_the_guest_alone() =>
        LinuxModelChecks.ProfileComesFromTheGuestAloneAsync(lab.Guest, lab.Truth, lab.MarkerPid, lab.MarkerAddress, output);

    [Fact]
    public Task Process_list_equals_the_guests_proc() =>
        LinuxModelChecks.ProcessListEqualsTheGuestsProcAsync(lab.Guest, lab.Truth, lab.MarkerPid, lab.MarkerAddress, output);

    [Fact]
    public Task Module_list_equals_proc_modules() =>
        LinuxModelChecks.ModuleListEqualsProcModulesAsync(lab.Guest, lab.Truth, lab.MarkerPid, lab.MarkerAddress, output);

    [Fact]
    public async Task Cli_ps_json_has_the_documented_shape()
    {
        var r = await VmiCli.RunAsync("ps", "--target", lab.Guest.Vm.TargetSpec, "--json");
        Assert.True(r.ExitCode == 0, r.StandardError);
        using var doc = JsonDocument.Parse(r.StandardOutput);
        var init = doc.RootElement.EnumerateArray().Single(e => e.GetProperty("pid").GetInt32() == 1);
        Assert.Equal(0, init.GetProperty("ppid").GetInt32());
        Assert.Equal(0, init.GetProperty("uid").GetInt32());
        Assert.Equal("init", init.GetProperty("comm").GetString());
        Assert.Equal(JsonValueKind.Array, init.GetProperty("cmdline").ValueKind);
        Assert.NotEqual("0x0", init.GetProperty("pageTable").GetString());
        var truthInit = lab.Truth.Processes.Single(p => p.Pid == 1);
        Assert.Equal(truthInit.Cmdline, init.GetProperty("cmdline").EnumerateArray().Select(e => e.GetString()!).ToArray());

        var mods = await VmiCli.RunAsync("lsmod", "--target", lab.Guest.Vm.TargetSpec);
        Assert.True(mods.ExitCode == 0, mods.StandardError);
        Assert.Contains("isofs", mods.StandardOutput, StringComparison.Ordinal);
        var tree = await VmiCli.RunAsync("pstree", "--target", lab.Guest.Vm.TargetSpec);
        Assert.True(tree.ExitCode == 0, tree.StandardError);
        Assert.StartsWith("init(1)", tree.StandardOutput.Split('\n').First(l => l.StartsWith("init", StringComparison.Ordinal)), StringComparison.Ordinal);
        output.WriteLine(string.Join('\n', tree.StandardOutput.Split('\n').Take(12)));
    }

    [Fact]
    public Task Syscall_table_and_idt_point_into_kernel_text() =>
        LinuxModelChecks.SyscallTableAndIdtPointIntoKernelTextAsync(lab.Guest, lab.Truth, lab.MarkerPid, lab.MarkerAddress, output);

    [Fact]
    public Task Memory_maps_equal_proc_maps() =>
        LinuxModelChecks.MemoryMapsEqualProcMapsAsync(lab.Guest, lab.Truth, lab.MarkerPid, lab.MarkerAddress, output);
}
