using Vmi.Linux;
using Vmi.Targets;
using Xunit;

namespace Vmi.Integration.Tests;

/// <summary>Executable path, environment and threads of a live process, against the guest's /proc.</summary>
[Collection(LabCollection.Name)]
public sealed class ProcessDetailTests(LabFixture lab)
{
    [Fact]
    public async Task Exe_environment_and_threads_match_proc()
    {
        await using var target = await QemuTarget.FromVmAsync(lab.Guest.Vm);
        VcpuRegisters regs = await target.GetRegistersAsync(0);
        var kernel = LinuxProfile.Bootstrap(lab.Guest.Vm.Memory, regs.Paging).CreateKernel(lab.Guest.Vm.Memory, regs.Paging);
        var marker = kernel.GetProcesses().Items.Single(p => p.Pid == lab.MarkerPid);

        Assert.Equal("/lab/bin/vmi-marker", marker.ExePath);
        Assert.Equal([lab.MarkerPid], marker.Threads);

        var env = kernel.GetEnvironment(marker);
        Assert.True(env.IsComplete, string.Join("\n", env.Issues));
        var reply = await lab.Guest.ShellAsync($"tr '\\0' '\\n' < /proc/{lab.MarkerPid}/environ");
        Assert.Equal(reply.Lines.Where(l => l.Length > 0), env.Items);
        Assert.Contains(env.Items, e => e.StartsWith("PATH=", StringComparison.Ordinal));

        var init = kernel.GetProcesses().Items.Single(p => p.Pid == 1);
        Assert.Equal("/bin/busybox", init.ExePath);
        var kthread = kernel.GetProcesses().Items.First(p => p.IsKernelThread);
        Assert.Null(kthread.ExePath);
    }
}
