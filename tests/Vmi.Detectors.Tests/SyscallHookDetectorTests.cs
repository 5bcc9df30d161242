using System.Globalization;
using Vmi.Detectors.Linux;
using Vmi.Events;
using Vmi.Linux.Model;
using Vmi.Pipeline;
using Xunit;

namespace Vmi.Detectors.Tests;

/// <summary>Small helpers the Linux detector tests share.</summary>
internal static class LinuxDetectorKit
{
    public static string Hex(ulong v) => "0x" + v.ToString("x", CultureInfo.InvariantCulture);

    /// <summary>An address inside a loaded lab module's core image (where a rootkit module's code would be).</summary>
    public static ulong ModuleAddress(AttackableGuest guest, string module, ulong offset)
    {
        LinuxModule m = guest.Kernel.GetModules().Items.Single(x => x.Name == module);
        Assert.True(offset < m.Size);
        return m.CoreBase + offset;
    }

    /// <summary>A vmalloc address no module owns (a rootkit's hidden allocation).</summary>
    public const ulong UnknownAddress = 0xffffc90000abc000;

    public static void AssertNoAlerts(DetectorHarness h, DetectorOutput output)
    {
        Assert.Empty(h.Faults);
        Assert.True(output.Alerts.Count == 0, "unexpected alerts: " + string.Join("\n", output.Alerts.Select(a => a.Title + " " + string.Join(", ", a.Evidence))));
    }
}

[Collection(LabDumpCollection.Name)]
public sealed class SyscallHookDetectorTests(LabDumpFixture lab)
{
    private const int Kill = 62;
    private const int Getdents64 = 217;

    [Fact]
    public void Benign_dump_has_no_alert_or_finding()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new SyscallHookDetector(), guest.Guest);
        DetectorOutput first = h.Sweep();
        LinuxDetectorKit.AssertNoAlerts(h, first);
        Assert.Empty(first.Findings);
        DetectorOutput second = h.Sweep();
        LinuxDetectorKit.AssertNoAlerts(h, second);
        Assert.Empty(second.Findings);
    }

    [Fact]
    public void Entry_pointed_at_a_module_after_the_baseline_alerts_once_with_evidence()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new SyscallHookDetector(), guest.Guest);
        LinuxDetectorKit.AssertNoAlerts(h, h.Sweep());

        ulong slot = guest.Symbol("sys_call_table") + Kill * 8;
        ulong original = guest.ReadUInt64(slot);
        Assert.Equal(guest.Symbol("__x64_sys_kill"), original);
        ulong hook = LinuxDetectorKit.ModuleAddress(guest, "dummy", 0x40);
        guest.WriteUInt64(slot, hook);

        DetectorOutput output = h.Sweep();
        Alert alert = Assert.Single(output.Alerts);
        Assert.Equal(SyscallHookDetector.Id, alert.Detector);
        Assert.Equal(Severity.Critical, alert.Severity);
        Assert.Contains(AttackTechnique.Rootkit, alert.Techniques);
        Assert.Equal($"syscall-hook:62:{LinuxDetectorKit.Hex(hook)}", alert.Key);
        Assert.Contains("sys_call_table[62] (kill)", alert.Title, StringComparison.Ordinal);
        Assert.Equal("62", alert.Evidence["number"]);
        Assert.Equal("__x64_sys_kill", alert.Evidence["syscall"]);
        Assert.Equal(LinuxDetectorKit.Hex(hook), alert.Evidence["handler"]);
        Assert.Equal("module dummy+0x40", alert.Evidence["points_to"]);
        Assert.Equal("dummy", alert.Evidence["module"]);
        Assert.Equal(LinuxDetectorKit.Hex(original), alert.Evidence["expected_handler"]);
        Assert.Equal("__x64_sys_kill", alert.Evidence["expected_symbol"]);
        Assert.Equal(LinuxDetectorKit.Hex(slot), alert.Evidence["entry_address"]);
        IntegrityFinding finding = Assert.Single(output.Findings);
        Assert.Equal("sys_call_table[62]", finding.Subject);
        Assert.Equal(slot, finding.Address);

        // The condition lasts: the finding is repeated, the alert is not.
        DetectorOutput again = h.Sweep();
        Assert.Empty(again.Alerts);
        Assert.Single(again.Findings);

        // Restored: nothing.
        guest.WriteUInt64(slot, original);
        DetectorOutput restored = h.Sweep();
        Assert.Empty(restored.Alerts);
        Assert.Empty(restored.Findings);
    }

    [Fact]
    public void Entry_hooked_before_the_first_sweep_is_named_from_the_kernels_syscall_metadata()
    {
        using AttackableGuest guest = lab.Attack();
        ulong slot = guest.Symbol("sys_call_table") + Getdents64 * 8;
        guest.WriteUInt64(slot, LinuxDetectorKit.UnknownAddress);
        using var h = new DetectorHarness(new SyscallHookDetector(), guest.Guest);

        Alert alert = Assert.Single(h.Sweep().Alerts);
        Assert.Equal("217", alert.Evidence["number"]);
        Assert.Equal("__x64_sys_getdents64", alert.Evidence["syscall"]);
        Assert.Equal("unknown memory (not kernel text or any listed module)", alert.Evidence["points_to"]);
        Assert.Equal(LinuxDetectorKit.Hex(guest.Symbol("__x64_sys_getdents64")), alert.Evidence["expected_handler"]);
        Assert.False(alert.Evidence.ContainsKey("module"));
    }

    [Fact]
    public void Entry_changed_within_kernel_text_is_flagged_against_the_baseline()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new SyscallHookDetector(), guest.Guest);
        LinuxDetectorKit.AssertNoAlerts(h, h.Sweep());
        ulong slot = guest.Symbol("sys_call_table") + Kill * 8;
        ulong other = guest.Symbol("__x64_sys_getpid");
        guest.WriteUInt64(slot, other);

        Alert alert = Assert.Single(h.Sweep().Alerts);
        Assert.Equal("changed since the baseline", alert.Evidence["condition"]);
        Assert.Equal("kernel text (__x64_sys_getpid)", alert.Evidence["points_to"]);
        Assert.Equal("__x64_sys_kill", alert.Evidence["expected_symbol"]);

        // Off: only out-of-text entries count.
        using var lax = new DetectorHarness(new SyscallHookDetector(new SyscallHookOptions { CompareWithBaseline = false }), guest.Guest);
        LinuxDetectorKit.AssertNoAlerts(lax, lax.Sweep());
    }

    [Fact]
    public void Write_hook_checks_at_once_and_names_the_writer()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new SyscallHookDetector(), guest.Guest);
        LinuxDetectorKit.AssertNoAlerts(h, h.Sweep());
        ulong slot = guest.Symbol("sys_call_table") + Kill * 8;
        ulong hook = LinuxDetectorKit.ModuleAddress(guest, "crc7", 0x10);
        guest.WriteUInt64(slot, hook);
        ulong writer = hook + 0x20;

        DetectorOutput output = h.MemoryWrite("syscall-table", gva: slot, rip: writer, newValue: BitConverter.GetBytes(hook));
        Alert alert = Assert.Single(output.Alerts);
        Assert.Equal(LinuxDetectorKit.Hex(writer), alert.Evidence["writer_rip"]);
        Assert.Equal(LinuxDetectorKit.Hex(slot), alert.Evidence["write_address"]);
        Assert.Equal("module crc7+0x10", alert.Evidence["points_to"]);
        Assert.Single(alert.RelatedEvents);

        // A write hook of another area is not this detector's.
        Assert.False(new SyscallHookDetector().Accepts(new MemoryAccess { VmId = "x", Time = default, Access = MemoryAccessKind.Write, Hook = "idt" }));
    }

    [Fact]
    public void No_kernel_model_means_nothing_to_check()
    {
        using var h = new DetectorHarness(new SyscallHookDetector());
        DetectorOutput output = h.Sweep();
        Assert.Empty(output.Events);
    }
}
