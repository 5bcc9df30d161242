using Vmi.Core;
using Vmi.Lab;
using Xunit;

namespace Vmi.Lab.Tests;

public sealed class LabBuilderTests
{
    [Fact]
    public void Modules_resolve_with_dependencies_first()
    {
        string dir = Directory.CreateTempSubdirectory("vmi-mods-").FullName;
        try
        {
            File.WriteAllLines(Path.Combine(dir, "modules.dep"),
            [
                "kernel/arch/x86/kvm/kvm-amd.ko: kernel/arch/x86/kvm/kvm.ko kernel/drivers/crypto/ccp/ccp.ko",
                "kernel/arch/x86/kvm/kvm.ko: kernel/virt/lib/irqbypass.ko",
                "kernel/virt/lib/irqbypass.ko:",
                "kernel/drivers/crypto/ccp/ccp.ko:",
            ]);
            var mods = LabBuilder.ResolveModules(dir, ["kvm_amd"]);
            Assert.Equal(["kernel/virt/lib/irqbypass.ko", "kernel/arch/x86/kvm/kvm.ko", "kernel/drivers/crypto/ccp/ccp.ko", "kernel/arch/x86/kvm/kvm-amd.ko"],
                mods.Select(m => m.Path));
            var e = Assert.Throws<LabException>(() => LabBuilder.ResolveModules(dir, ["nosuch"]));
            Assert.Contains("nosuch", e.Message, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void The_guest_files_are_embedded()
    {
        var files = LabBuilder.ReadGuestFiles();
        Assert.Contains("init", files.Keys);
        Assert.Contains("lib.sh", files.Keys);
        Assert.Contains("scenarios/benign.sh", files.Keys);
        Assert.Contains("programs/vmi-marker.c", files.Keys);
    }

    [Fact]
    public void Loading_an_unbuilt_lab_says_how_to_build_it()
    {
        var e = Assert.Throws<LabException>(() => LabArtifacts.Load("/nonexistent-lab"));
        Assert.Contains("vmi lab build", e.Message, StringComparison.Ordinal);
    }
}
