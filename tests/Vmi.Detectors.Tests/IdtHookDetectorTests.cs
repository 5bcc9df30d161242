using System.Buffers.Binary;
using Vmi.Detectors.Linux;
using Vmi.Events;
using Vmi.Linux.Model;
using Vmi.Pipeline;
using Xunit;

namespace Vmi.Detectors.Tests;

[Collection(LabDumpCollection.Name)]
public sealed class IdtHookDetectorTests(LabDumpFixture lab)
{
    private const int PageFault = 14;

    /// <summary>Rewrites a gate's 64-bit handler offset (bytes 0–1, 6–7, 8–11 of the 16-byte gate).</summary>
    private static void SetHandler(AttackableGuest guest, int vector, ulong handler)
    {
        ulong gate = guest.Symbol("idt_table") + (ulong)vector * 16;
        byte[] g = guest.ReadBytes(gate, 16);
        BinaryPrimitives.WriteUInt16LittleEndian(g, (ushort)handler);
        BinaryPrimitives.WriteUInt16LittleEndian(g.AsSpan(6), (ushort)(handler >> 16));
        BinaryPrimitives.WriteUInt32LittleEndian(g.AsSpan(8), (uint)(handler >> 32));
        guest.Write(gate, g);
    }

    [Fact]
    public void Benign_dump_has_no_alert_and_init_text_gates_are_accepted()
    {
        using AttackableGuest guest = lab.Attack();
        KernelList<IdtEntry> idt = guest.Kernel.GetIdt();
        var classifier = AddressClassifier.Create(guest.Kernel);
        // The lab kernel really has present gates in init text (the reason AllowInitText exists).
        Assert.Contains(idt.Items, g => g.Present && classifier.Classify(g.Handler).Region == AddressRegion.InitText);

        using var h = new DetectorHarness(new IdtHookDetector(), guest.Guest);
        DetectorOutput first = h.Sweep();
        LinuxDetectorKit.AssertNoAlerts(h, first);
        Assert.Empty(first.Findings);
        LinuxDetectorKit.AssertNoAlerts(h, h.Sweep());

        // Without the allowance those gates are flagged.
        using var strict = new DetectorHarness(new IdtHookDetector(new IdtHookOptions { AllowInitText = false }), guest.Guest);
        Assert.NotEmpty(strict.Sweep().Alerts);
    }

    [Fact]
    public void Page_fault_gate_pointed_at_a_module_alerts_with_evidence()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new IdtHookDetector(), guest.Guest);
        LinuxDetectorKit.AssertNoAlerts(h, h.Sweep());
        IdtEntry before = guest.Kernel.GetIdt().Items[PageFault];
        ulong hook = LinuxDetectorKit.ModuleAddress(guest, "isofs", 0x100);
        SetHandler(guest, PageFault, hook);

        DetectorOutput output = h.Sweep();
        Alert alert = Assert.Single(output.Alerts);
        Assert.Equal(IdtHookDetector.Id, alert.Detector);
        Assert.Equal("14", alert.Evidence["vector"]);
        Assert.Equal("#PF page fault", alert.Evidence["vector_name"]);
        Assert.Equal(LinuxDetectorKit.Hex(hook), alert.Evidence["handler"]);
        Assert.Equal("module isofs+0x100", alert.Evidence["points_to"]);
        Assert.Equal("handler outside kernel code", alert.Evidence["condition"]);
        Assert.Equal(LinuxDetectorKit.Hex(before.Handler), alert.Evidence["expected_handler"]);
        Assert.Equal("asm_exc_page_fault", alert.Evidence["expected_symbol"]);
        Assert.Equal(LinuxDetectorKit.Hex(guest.Symbol("idt_table") + PageFault * 16), alert.Evidence["gate_address"]);
        Assert.Contains("IDT vector 14", alert.Title, StringComparison.Ordinal);
        Assert.Single(output.Findings);

        Assert.Empty(h.Sweep().Alerts);
    }

    [Fact]
    public void Gate_made_callable_from_user_mode_is_flagged_against_the_baseline()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new IdtHookDetector(), guest.Guest);
        LinuxDetectorKit.AssertNoAlerts(h, h.Sweep());
        ulong gate = guest.Symbol("idt_table") + PageFault * 16;
        byte[] g = guest.ReadBytes(gate, 16);
        g[5] |= 3 << 5; // DPL 3: int 14 from user mode
        guest.Write(gate, g);

        Alert alert = Assert.Single(h.Sweep().Alerts);
        Assert.Equal("gate changed since the baseline", alert.Evidence["condition"]);
        Assert.Equal("3", alert.Evidence["dpl"]);
        Assert.Equal("0", alert.Evidence["expected_dpl"]);
        Assert.StartsWith("kernel text (asm_exc_page_fault", alert.Evidence["points_to"], StringComparison.Ordinal);
    }

    [Fact]
    public void Write_hook_on_the_idt_checks_at_once()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new IdtHookDetector(), guest.Guest);
        LinuxDetectorKit.AssertNoAlerts(h, h.Sweep());
        SetHandler(guest, 3, LinuxDetectorKit.UnknownAddress);
        ulong writer = guest.Symbol("memcpy") + 4;
        DetectorOutput output = h.MemoryWrite("idt", gva: guest.Symbol("idt_table") + 3 * 16, rip: writer);
        Alert alert = Assert.Single(output.Alerts);
        Assert.Equal("3", alert.Evidence["vector"]);
        Assert.Equal("unknown memory (not kernel text or any listed module)", alert.Evidence["points_to"]);
        Assert.Equal(LinuxDetectorKit.Hex(writer), alert.Evidence["writer_rip"]);
        Assert.StartsWith("kernel text (", alert.Evidence["writer_location"], StringComparison.Ordinal);
        Assert.EndsWith("+0x4", alert.Evidence["writer_symbol"], StringComparison.Ordinal);
        Assert.Single(output.Findings);
    }
}
