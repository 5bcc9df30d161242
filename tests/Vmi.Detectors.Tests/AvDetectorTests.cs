using System.Text;
using System.Text.Json;
using Vmi.Detectors.Av;
using Vmi.Detectors.Linux;
using Vmi.Events;
using Vmi.Linux.Model;
using Vmi.Monitoring;
using Vmi.Pipeline;
using Vmi.Signatures.Yara;
using Xunit;

namespace Vmi.Detectors.Tests;

[Collection(LabDumpCollection.Name)]
public sealed class AvDetectorTests(LabDumpFixture lab)
{
    private static ISignatureSource Rules(string text, string version = "test-1") =>
        new FixedSignatureSource(new SignatureSet(YaraRules.Compile(text, "test.yar"), version, "test.yar"));

    [Fact]
    public void The_built_in_rules_find_nothing_in_the_benign_lab()
    {
        using AttackableGuest guest = lab.Attack();
        var detector = new AvDetector();
        using var h = new DetectorHarness(detector, guest.Guest);
        var output = h.Sweep();
        Assert.Empty(output.Faults);
        Assert.Empty(output.Alerts);
        Assert.True(detector.Scans >= 3, $"only {detector.Scans} processes scanned");
        Assert.True(detector.BytesScanned > 1 << 20, $"only {detector.BytesScanned} bytes scanned");
    }

    [Fact]
    public void A_sweep_names_rule_process_vma_offset_bytes_and_bundle_and_alerts_once()
    {
        using AttackableGuest guest = lab.Attack();
        var rules = Rules("""
            rule Lab_Busybox_Banner : lab
            {
                meta:
                    description = "the busybox banner"
                    severity = "low"
                    mitre_attack = "T1059.004, T1204.002"
                strings:
                    $banner = "BusyBox v1."
                condition:
                    $banner
            }
            """);
        using var h = new DetectorHarness(new AvDetector(null, rules), guest.Guest);
        var output = h.Sweep();
        Assert.Empty(output.Faults);
        Assert.NotEmpty(output.Alerts);
        var processes = guest.Kernel.GetProcesses().Items;
        foreach (var alert in output.Alerts)
        {
            Assert.Equal(AvDetector.Id, alert.Detector);
            Assert.Equal(Severity.Low, alert.Severity);
            Assert.Equal(["T1059.004", "T1204.002"], alert.Techniques.Select(t => t.Id));
            Assert.Equal("test-1", alert.BundleVersion);
            Assert.Equal("Lab_Busybox_Banner", alert.Evidence["rule"]);
            Assert.Equal("lab", alert.Evidence["tags"]);
            Assert.Equal("sweep", alert.Evidence["trigger"]);
            // The VMA is the busybox image, and address = VMA start + offset.
            Assert.Contains("busybox", alert.Evidence["vma"], StringComparison.Ordinal);
            ulong start = Convert.ToUInt64(alert.Evidence["vma"].Split('-')[0], 16);
            ulong address = Convert.ToUInt64(alert.Evidence["address"][2..], 16);
            ulong offset = Convert.ToUInt64(alert.Evidence["offset"][2..], 16);
            Assert.Equal(start + offset, address);
            Assert.Contains(alert.Evidence, kv => kv.Key.EndsWith("_hex", StringComparison.Ordinal) && kv.Value == Convert.ToHexStringLower("BusyBox v1."u8));
            // The bytes really are there in that process's memory.
            var p = processes.Single(x => x.Pid == alert.Pid);
            var buffer = new byte[11];
            Assert.True(guest.Kernel.UserMemory(p).Read(address, buffer).IsComplete);
            Assert.Equal("BusyBox v1.", Encoding.ASCII.GetString(buffer));
        }
        Assert.Contains(output.Events.OfType<SignatureMatch>(), m => m.Rule == "Lab_Busybox_Banner" && m.BundleVersion == "test-1" && m.StringId == "$banner");
        // Known processes whose executable memory did not change are not scanned again, and nothing is raised twice.
        Assert.Empty(h.Sweep().Alerts);
    }

    [Fact]
    public void Bytes_written_into_a_process_are_found_when_it_execs()
    {
        using AttackableGuest guest = lab.Attack();
        var rules = Rules("rule Injected { strings: $m = \"VMI-INJECTED-PAYLOAD-91c2\" condition: $m }");
        using var h = new DetectorHarness(new AvDetector(new AvDetectorOptions { ScanOnSweep = false }, rules), guest.Guest);
        LinuxProcess victim = guest.Kernel.GetProcesses().Items.Single(p => p.Comm == LabDumpFixture.UserProcessComm);
        // A writable, present page of the victim: its stack.
        // A writable anonymous page of the victim that is present (its stack, or heap).
        var region = guest.Kernel.GetMappings(victim).Items.First(v => v.Permissions == "rw-p" && v.File == 0 && IsPresent(guest, victim, v.End - 0x1000));
        ulong target = region.End - 0x800;
        Assert.True(guest.Kernel.UserMemory(victim).TryTranslate(target, out var t));
        guest.Memory.Write(t.PhysicalAddress, "VMI-INJECTED-PAYLOAD-91c2"u8);

        var output = h.ProcessExec(victim.Pid, victim.Name);
        Assert.Empty(output.Alerts); // the scan waits for the exec to finish
        output = h.Advance(TimeSpan.FromSeconds(1));
        Alert alert = Assert.Single(output.Alerts);
        Assert.Equal(victim.Pid, alert.Pid);
        Assert.Equal("exec", alert.Evidence["trigger"]);
        Assert.Equal($"0x{target:x}", alert.Evidence["address"]);
        Assert.Equal(Severity.High, alert.Severity); // no severity meta: the option's default
    }

    private static bool IsPresent(AttackableGuest guest, LinuxProcess p, ulong va) => guest.Kernel.UserMemory(p).TryTranslate(va, out _);

    [Fact]
    public void The_executable_memory_breakpoint_scans_the_process_whose_page_tables_were_active()
    {
        using AttackableGuest guest = lab.Attack();
        var rules = Rules("rule Banner { strings: $b = \"BusyBox v1.\" condition: $b }");
        using var h = new DetectorHarness(new AvDetector(new AvDetectorOptions { ScanOnSweep = false }, rules), guest.Guest);
        LinuxProcess victim = guest.Kernel.GetProcesses().Items.First(p => p.Comm == LabDumpFixture.UserProcessComm);
        // CR3 as the CPU holds it: PCID in the low bits.
        var hit = new BreakpointHit { VmId = guest.Guest.VmId, Time = h.Clock.Now, Hook = AvDetector.ExecutableMemoryHook, Rip = 1, Cr3 = victim.PageTablePhysical | 0x5 };
        h.Send(hit);
        var output = h.Advance(TimeSpan.FromSeconds(1));
        // The busybox banner is in a file-backed, read-only mapping: the executable-memory scan looks only at
        // anonymous or writable executable regions, so nothing matches, but the process was scanned.
        Assert.Empty(output.Alerts);
        Assert.Empty(output.Faults);
    }

    [Fact]
    public void A_malformed_rule_file_in_the_configuration_is_a_clear_error()
    {
        string dir = Directory.CreateTempSubdirectory("vmi-av-").FullName;
        string bad = Path.Combine(dir, "bad.yar");
        File.WriteAllText(bad, "rule x {\n  strings: $a = /(/\n  condition: $a\n}\n");
        using var doc = JsonDocument.Parse(JsonSerializer.Serialize(new { avSignature = 0 }).Replace("avSignature", "av-signature", StringComparison.Ordinal).Replace("0", JsonSerializer.Serialize(new { ruleFiles = new[] { bad } }), StringComparison.Ordinal));
        using AttackableGuest guest = lab.Attack();
        var e = Assert.Throws<DetectorConfigurationException>(() => BuiltInDetectors.Create(guest.Guest, doc.RootElement));
        Assert.Equal(AvDetector.Id, e.DetectorId);
        Assert.Contains("bad.yar(2,", e.Message, StringComparison.Ordinal);
        Assert.Contains("invalid regular expression \"$a\"", e.Message, StringComparison.Ordinal);
        File.Delete(bad);
        var missing = Assert.Throws<DetectorConfigurationException>(() => BuiltInDetectors.Create(guest.Guest, doc.RootElement));
        Assert.Contains("could not open rule file", missing.Message, StringComparison.Ordinal);
        Directory.Delete(dir, recursive: true);
    }
}
