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

    [Fact]
    public async Task Btf_from_the_vmlinux_file_gives_the_same_layouts_as_guest_memory()
    {
        await using var target = await QemuTarget.FromVmAsync(lab.Guest.Vm);
        VcpuRegisters regs = await target.GetRegistersAsync(0);
        string vmlinux = Path.Combine(Path.GetTempPath(), $"vmi-vmlinux-{Environment.ProcessId}");
        try
        {
            await Vmi.Linux.Image.BzImage.ExtractVmlinuxAsync(lab.Artifacts.KernelPath, vmlinux, CancellationToken.None);
            var fromMemory = LinuxProfile.Bootstrap(lab.Guest.Vm.Memory, regs.Paging);
            var fromFile = LinuxProfile.Bootstrap(lab.Guest.Vm.Memory, regs.Paging, btfFile: vmlinux);
            Assert.Equal(fromMemory.Types.TypeCount, fromFile.Types.TypeCount);
            foreach (var (type, member) in new[] { ("task_struct", "tasks"), ("task_struct", "real_cred"), ("mm_struct", "pgd"), ("module", "list"), ("cred", "euid.val") })
                Assert.Equal(fromMemory.Types.OffsetOf(type, member), fromFile.Types.OffsetOf(type, member));
            Assert.Equal(fromMemory.Types.SizeOf("task_struct"), fromFile.Types.SizeOf("task_struct"));
            Assert.Equal(fromMemory.CreateKernel(lab.Guest.Vm.Memory, regs.Paging).GetProcesses().Items.Count,
                fromFile.CreateKernel(lab.Guest.Vm.Memory, regs.Paging).GetProcesses().Items.Count);
        }
        finally
        {
            File.Delete(vmlinux);
        }
    }

    [Fact]
    public async Task Sysfs_module_view_equals_sys_module_and_links_the_loaded_modules()
    {
        await using var target = await QemuTarget.FromVmAsync(lab.Guest.Vm);
        VcpuRegisters regs = await target.GetRegistersAsync(0);
        var kernel = LinuxProfile.Bootstrap(lab.Guest.Vm.Memory, regs.Paging).CreateKernel(lab.Guest.Vm.Memory, regs.Paging);
        var sysfs = kernel.GetSysfsModules();
        Assert.True(sysfs.IsComplete, string.Join("\n", sysfs.Issues));
        var reply = await lab.Guest.ShellAsync("ls /sys/module");
        var truth = reply.Lines.SelectMany(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(truth, sysfs.Items.Select(m => m.Name).Order(StringComparer.Ordinal).ToList());
        foreach (var m in kernel.GetModules().Items)
            Assert.Equal(m.ModuleAddress, Assert.Single(sysfs.Items, s => s.Name == m.Name).Module);
    }
}
