using System.Buffers.Binary;
using Vmi.Detectors.Linux;
using Vmi.Events;
using Vmi.Pipeline;
using Xunit;

namespace Vmi.Detectors.Tests;

[Collection(LabDumpCollection.Name)]
public sealed class KernelTextIntegrityDetectorTests(LabDumpFixture lab)
{
    private static readonly byte[] Nop5 = [0x0f, 0x1f, 0x44, 0x00, 0x00];

    [Fact]
    public void Benign_dump_baselines_all_of_kernel_text_and_has_no_alert()
    {
        using AttackableGuest guest = lab.Attack();
        var detector = new KernelTextIntegrityDetector();
        using var h = new DetectorHarness(detector, guest.Guest);
        DetectorOutput first = h.Sweep();
        LinuxDetectorKit.AssertNoAlerts(h, first);
        Assert.Empty(first.Findings);
        ulong text = guest.Symbol("_etext") - guest.Symbol("_stext");
        Assert.Equal((int)((text + 4095) / 4096), detector.BaselinePages);
        Assert.True(detector.JumpLabelSites > 1000, $"{detector.JumpLabelSites} static key sites");
        DetectorOutput second = h.Sweep();
        LinuxDetectorKit.AssertNoAlerts(h, second);
        Assert.Empty(second.Findings);
    }

    [Fact]
    public void Changed_byte_run_is_reported_with_symbol_and_old_and_new_bytes()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new KernelTextIntegrityDetector(), guest.Guest);
        LinuxDetectorKit.AssertNoAlerts(h, h.Sweep());

        // Patch a check in the middle of a function, the way a rootkit disables one.
        ulong at = guest.Symbol("commit_creds") + 0x10;
        byte[] old = guest.ReadBytes(at, 6);
        byte[] patch = [.. old.Select(b => (byte)~b)];
        guest.Write(at, patch);

        DetectorOutput output = h.Sweep();
        Alert alert = Assert.Single(output.Alerts);
        Assert.Equal(KernelTextIntegrityDetector.Id, alert.Detector);
        Assert.Equal(LinuxDetectorKit.Hex(at), alert.Evidence["address"]);
        Assert.Equal("commit_creds+0x10", alert.Evidence["symbol"]);
        Assert.Equal("6", alert.Evidence["length"]);
        Assert.Equal(Convert.ToHexStringLower(old), alert.Evidence["old_bytes"]);
        Assert.Equal(Convert.ToHexStringLower(patch), alert.Evidence["new_bytes"]);
        Assert.StartsWith($"kernel-text-integrity:{LinuxDetectorKit.Hex(at)}:6:", alert.Key, StringComparison.Ordinal);
        IntegrityFinding finding = Assert.Single(output.Findings);
        Assert.Equal("kernel text commit_creds+0x10", finding.Subject);

        // Still changed: no new alert. Restored, then changed again: a new alert.
        Assert.Empty(h.Sweep().Alerts);
        guest.Write(at, old);
        Assert.Empty(h.Sweep().Findings);
        guest.Write(at, patch);
        Assert.Single(h.Sweep().Alerts);
    }

    [Fact]
    public void Static_key_site_flipping_is_not_an_alert()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new KernelTextIntegrityDetector(), guest.Guest);
        LinuxDetectorKit.AssertNoAlerts(h, h.Sweep());

        // Find a 5-byte site currently a nop and flip it to its jump, as static_key_enable would.
        ulong start = guest.Symbol("__start___jump_table"), stop = guest.Symbol("__stop___jump_table");
        ulong stext = guest.Symbol("_stext"), etext = guest.Symbol("_etext");
        ulong code = 0, target = 0;
        for (ulong e = start; e < stop && code == 0; e += 16)
        {
            ulong c = e + (ulong)(long)(int)guest.ReadUInt32(e);
            ulong t = e + 4 + (ulong)(long)(int)guest.ReadUInt32(e + 4);
            if (c >= stext && c < etext && guest.ReadBytes(c, 5).AsSpan().SequenceEqual(Nop5))
                (code, target) = (c, t);
        }
        Assert.NotEqual(0UL, code);
        var jmp = new byte[5];
        jmp[0] = 0xe9;
        BinaryPrimitives.WriteInt32LittleEndian(jmp.AsSpan(1), (int)(long)(target - (code + 5)));
        guest.Write(code, jmp);
        DetectorOutput flipped = h.Sweep();
        LinuxDetectorKit.AssertNoAlerts(h, flipped);
        Assert.Empty(flipped.Findings);

        // The same site jumping somewhere else is an attack.
        BinaryPrimitives.WriteInt32LittleEndian(jmp.AsSpan(1), (int)(long)(target + 0x40 - (code + 5)));
        guest.Write(code, jmp);
        Alert alert = Assert.Single(h.Sweep().Alerts);
        Assert.Equal(LinuxDetectorKit.Hex(code), alert.Evidence["address"]);
    }

    [Fact]
    public void Write_hook_checks_the_written_page_at_once()
    {
        using AttackableGuest guest = lab.Attack();
        // One page per sweep: only the hook can find the change this fast.
        using var h = new DetectorHarness(new KernelTextIntegrityDetector(new KernelTextIntegrityOptions { PagesPerSweep = 1 }), guest.Guest);
        LinuxDetectorKit.AssertNoAlerts(h, h.Sweep());
        ulong at = guest.Symbol("tcp4_seq_show");
        byte[] old = guest.ReadBytes(at, 5);
        byte[] patch = [0xe9, 0x00, 0x00, 0x00, 0x01];
        guest.Write(at, patch);

        Assert.Empty(h.Sweep().Alerts);
        DetectorOutput output = h.MemoryWrite("kernel-text", gva: at, rip: guest.Symbol("memcpy"), oldValue: old, newValue: patch);
        Alert alert = Assert.Single(output.Alerts);
        Assert.Equal("tcp4_seq_show", alert.Evidence["symbol"]);
        Assert.Equal(Convert.ToHexStringLower(patch), alert.Evidence["new_bytes"]);
        Assert.Contains("jmp", alert.Evidence["new_instructions"], StringComparison.Ordinal);
        Assert.Equal("e900000001", alert.Evidence["write_value"]);
        Assert.Single(alert.RelatedEvents);
    }

    [Fact]
    public void Ftrace_repointing_its_dispatch_call_within_text_is_not_an_alert_but_out_of_text_is()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new KernelTextIntegrityDetector(), guest.Guest);
        LinuxDetectorKit.AssertNoAlerts(h, h.Sweep());

        // Registering a kprobe re-points ftrace_regs_call's call from ftrace_stub to the handler.
        ulong site = guest.Symbol("ftrace_regs_call");
        byte[] old = guest.ReadBytes(site, 5);
        Assert.Equal(0xe8, old[0]);
        void CallTo(ulong target) =>
            guest.Write(site + 1, BitConverter.GetBytes((int)(long)(target - (site + 5))));
        CallTo(guest.Symbol("kprobe_ftrace_handler"));
        Assert.Empty(h.Sweep().Alerts);

        // The same site called into module space is a hook.
        CallTo(0xffffffffc0010000);
        Alert alert = Assert.Single(h.Sweep().Alerts);
        Assert.Equal("ftrace_regs_call+0x1", alert.Evidence["symbol"]);
    }
}
