using Vmi.Detectors.Linux;
using Vmi.Events;
using Vmi.Linux.Model;
using Vmi.Pipeline;
using Xunit;

namespace Vmi.Detectors.Tests;

[Collection(LabDumpCollection.Name)]
public sealed class HiddenModuleDetectorTests(LabDumpFixture lab)
{
    [Fact]
    public void Benign_lab_has_no_hidden_module()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new HiddenModuleDetector(), guest.Guest);
        DetectorOutput output = h.Sweep();
        Assert.Empty(output.Alerts);
        Assert.Empty(output.Faults);
    }

    [Fact]
    public void Module_unlinked_from_the_list_is_seen_by_sysfs_and_carving()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new HiddenModuleDetector(), guest.Guest);
        LinuxModule victim = guest.Kernel.GetModules().Items.Single(m => m.Name == "crc7");
        guest.Unlink(victim.ModuleAddress + (ulong)guest.OffsetOf("module", "list"));
        Assert.DoesNotContain(guest.Kernel.GetModules().Items, m => m.Name == "crc7");

        DetectorOutput output = h.Sweep();
        Alert alert = Assert.Single(output.Alerts);
        Assert.Equal("crc7", alert.Evidence["name"]);
        Assert.Equal($"0x{victim.ModuleAddress:x}", alert.Evidence["module"]);
        Assert.Equal("carving,sysfs", alert.Evidence["views"]);
        Assert.Equal($"0x{victim.CoreBase:x}", alert.Evidence["core_base"]);
        Assert.Equal(victim.Size.ToString(System.Globalization.CultureInfo.InvariantCulture), alert.Evidence["size"]);
        Assert.Equal(victim.ModuleAddress, Assert.Single(output.Findings).Address);
    }

    [Fact]
    public void Module_unlinked_from_list_and_sysfs_is_found_by_carving()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new HiddenModuleDetector(), guest.Guest);
        LinuxModule victim = guest.Kernel.GetModules().Items.Single(m => m.Name == "isofs");
        SysfsModule sysfs = guest.Kernel.GetSysfsModules().Items.Single(s => s.Module == victim.ModuleAddress);
        // list_del(&THIS_MODULE->list) poisons the entry; kobject_del() takes it out of module_kset.
        guest.Unlink(victim.ModuleAddress + (ulong)guest.OffsetOf("module", "list"));
        guest.WriteUInt64(victim.ModuleAddress + (ulong)guest.OffsetOf("module", "list"), 0xdead_0000_0000_0100);
        guest.WriteUInt64(victim.ModuleAddress + (ulong)guest.OffsetOf("module", "list") + 8, 0xdead_0000_0000_0122);
        guest.Unlink(sysfs.Kobject + (ulong)guest.OffsetOf("kobject", "entry"));
        Assert.DoesNotContain(guest.Kernel.GetSysfsModules().Items, s => s.Name == "isofs");

        Alert alert = Assert.Single(h.Sweep().Alerts);
        Assert.Equal("isofs", alert.Evidence["name"]);
        Assert.Equal($"0x{victim.ModuleAddress:x}", alert.Evidence["module"]);
        Assert.Equal("carving", alert.Evidence["views"]);
        Assert.Contains(AttackTechnique.Rootkit, alert.Techniques);
    }

    [Fact]
    public void Unloaded_module_remains_do_not_alert()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new HiddenModuleDetector(), guest.Guest);
        LinuxModule victim = guest.Kernel.GetModules().Items.Single(m => m.Name == "dummy");
        SysfsModule sysfs = guest.Kernel.GetSysfsModules().Items.Single(s => s.Module == victim.ModuleAddress);
        // free_module(): state = MODULE_STATE_UNFORMED, then off the list; the memory may stay mapped.
        guest.WriteUInt32(victim.ModuleAddress + (ulong)guest.OffsetOf("module", "state"), 3);
        guest.Unlink(victim.ModuleAddress + (ulong)guest.OffsetOf("module", "list"));
        guest.Unlink(sysfs.Kobject + (ulong)guest.OffsetOf("kobject", "entry"));
        Assert.Empty(h.Sweep().Alerts);
    }
}
