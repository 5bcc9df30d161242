using Vmi.Events;

namespace Vmi.Events.Tests;

/// <summary>
/// One event of every type with every field set to a distinct, non-default value (fixed ids and times,
/// so the serialized bytes are stable). Shared with the store tests.
/// </summary>
internal static class SampleEvents
{
    public static readonly DateTimeOffset Time = new(2025, 3, 14, 15, 9, 26, 535, TimeSpan.Zero);

    private static Guid G(int n) => new($"00000000-0000-4000-8000-{n:D12}");

    /// <summary>Every event type, in union-tag order.</summary>
    public static IReadOnlyList<VmiEvent> All() =>
        [.. Each().Select((e, i) => e.Cause is null ? e with { Cause = G(100 + i) } : e)];

    private static IEnumerable<VmiEvent> Each() =>
    [
        new ProcessStarted
        {
            Id = G(1), VmId = "vm-a", Time = Time, Sequence = 101,
            Pid = 1234, Ppid = 1, Name = "sshd", Uid = 1000, Euid = 0,
            Cmdline = ["/usr/sbin/sshd", "-D"], ExePath = "/usr/sbin/sshd", TaskAddress = 0xffff888003a1c000,
        },
        new ProcessExited
        {
            Id = G(2), VmId = "vm-a", Time = Time.AddSeconds(1), Sequence = 102,
            Pid = 1234, Name = "sshd", TaskAddress = 0xffff888003a1c000,
        },
        new ProcessExec
        {
            Id = G(3), VmId = "vm-a", Time = Time.AddSeconds(2), Sequence = 103,
            Pid = 4321, Name = "su", Path = "/bin/su", Cmdline = ["su", "-"], Uid = 1000, Euid = 0,
            SetUid = true, TaskAddress = 0xffff888004b2d000,
        },
        new ModuleLoaded
        {
            Id = G(4), VmId = "vm-a", Time = Time.AddSeconds(3), Sequence = 104,
            Name = "vmi_rootkit", Address = 0xffffffffc0a01000, CoreBase = 0xffffffffc0a00000, Size = 16384,
        },
        new MemoryAccess
        {
            Id = G(5), VmId = "vm-a", Time = Time.AddSeconds(4), Sequence = 105,
            Access = MemoryAccessKind.Write, Hook = "syscall-table", Vcpu = 1, Rip = 0xffffffffc0a01234,
            RipSymbol = "vmi_rootkit_init+0x34", Gpa = 0x2a00000, Gva = 0xffffffff82000000, Size = 8,
            OldValue = [0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80], NewValue = [0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0],
        },
        new BreakpointHit
        {
            Id = G(6), VmId = "vm-a", Time = Time.AddSeconds(5), Sequence = 106,
            Hook = "do_init_module", Vcpu = 0, Rip = 0xffffffff81234560, Symbol = "do_init_module", Cr3 = 0x10a000,
            Registers = new Dictionary<string, ulong> { ["rdi"] = 0xffffffffc0a01000, ["rsp"] = 0xffffc90000123f00 },
        },
        new SweepTick
        {
            Id = G(7), VmId = "vm-a", Time = Time.AddSeconds(6), Sequence = 107,
            Reason = SweepReason.Hook, Number = 42, Cause = G(5),
        },
        new IntegrityFinding
        {
            Id = G(8), VmId = "vm-a", Time = Time.AddSeconds(7), Sequence = 108,
            Detector = "syscall-table", Subject = "sys_call_table[62]", Problem = "points outside kernel text",
            Severity = Severity.High, Expected = "__x64_sys_kill", Actual = "0xffffffffc0a01234", Address = 0xffffffff822001f0,
            Evidence = new Dictionary<string, string> { ["entry"] = "62", ["module"] = "vmi_rootkit" },
        },
        new NetworkFlow
        {
            Id = G(9), VmId = "vm-b", Time = Time.AddSeconds(8), Sequence = 109,
            Protocol = "TCP", SourceIp = "192.0.2.10", SourcePort = 40000, DestinationIp = "203.0.113.7", DestinationPort = 443,
            Bytes = 123456, Packets = 99,
        },
        new SignatureMatch
        {
            Id = G(10), VmId = "vm-b", Time = Time.AddSeconds(9), Sequence = 110,
            Rule = "Linux_Trojan_Mirai", Tags = ["linux", "botnet"], Pid = 777, ProcessName = "mirai",
            Region = "0x7f0000000000-0x7f0000010000 r-x /tmp/mirai", Address = 0x7f0000000123, StringId = "$a",
            Data = [0x4d, 0x49, 0x52, 0x41, 0x49], BundleVersion = "2025.03.01",
        },
        new Alert
        {
            Id = G(11), VmId = "vm-a", Time = Time.AddSeconds(10), Sequence = 111,
            Detector = "syscall-table", Title = "sys_call_table[62] (kill) points outside kernel text", Severity = Severity.Critical,
            Techniques = [AttackTechnique.Rootkit, AttackTechnique.KernelModules],
            Evidence = new Dictionary<string, string> { ["entry"] = "62", ["target"] = "0xffffffffc0a01234" },
            Description = "A syscall table entry was redirected into a module.", Pid = 4321, ProcessName = "insmod",
            RelatedEvents = [G(5), G(8)], Key = "syscall-hook:62:0xffffffffc0a01234", BundleVersion = "1.0.0",
        },
        new DetectorFault
        {
            Id = G(12), VmId = "vm-a", Time = Time.AddSeconds(11), Sequence = 112,
            Detector = "idt", Fault = DetectorFaultKind.Timeout, Message = "ran 250 ms over its 100 ms budget", EventId = G(7),
        },
        new TelemetryShed
        {
            Id = G(13), VmId = "vm-a", Time = Time.AddSeconds(12), Sequence = 113,
            Stage = "ingress", Count = 17, Total = 1017,
        },
    ];

    /// <summary>Field-by-field comparison (record equality compares collections by reference).</summary>
    public static void AssertSame(VmiEvent expected, VmiEvent actual)
    {
        Xunit.Assert.Equal(expected.GetType(), actual.GetType());
        Xunit.Assert.Equal(expected.SchemaVersion, actual.SchemaVersion);
        Xunit.Assert.Equal(expected.Id, actual.Id);
        Xunit.Assert.Equal(expected.VmId, actual.VmId);
        Xunit.Assert.Equal(expected.Time, actual.Time);
        Xunit.Assert.Equal(expected.Time.Offset, actual.Time.Offset);
        Xunit.Assert.Equal(expected.Sequence, actual.Sequence);
        Xunit.Assert.Equal(expected.Cause, actual.Cause);
        switch (expected, actual)
        {
            case (ProcessStarted e, ProcessStarted a):
                Xunit.Assert.Equal(e with { Cmdline = [] }, a with { Cmdline = [] });
                Xunit.Assert.Equal(e.Cmdline, a.Cmdline);
                break;
            case (ProcessExec e, ProcessExec a):
                Xunit.Assert.Equal(e with { Cmdline = [] }, a with { Cmdline = [] });
                Xunit.Assert.Equal(e.Cmdline, a.Cmdline);
                break;
            case (MemoryAccess e, MemoryAccess a):
                Xunit.Assert.Equal(e with { OldValue = null, NewValue = null }, a with { OldValue = null, NewValue = null });
                Xunit.Assert.Equal(e.OldValue, a.OldValue);
                Xunit.Assert.Equal(e.NewValue, a.NewValue);
                break;
            case (BreakpointHit e, BreakpointHit a):
                Xunit.Assert.Equal(e with { Registers = Empty<ulong>() }, a with { Registers = Empty<ulong>() });
                Xunit.Assert.Equal(Sorted(e.Registers), Sorted(a.Registers));
                break;
            case (IntegrityFinding e, IntegrityFinding a):
                Xunit.Assert.Equal(e with { Evidence = Empty<string>() }, a with { Evidence = Empty<string>() });
                Xunit.Assert.Equal(Sorted(e.Evidence), Sorted(a.Evidence));
                break;
            case (SignatureMatch e, SignatureMatch a):
                Xunit.Assert.Equal(e with { Tags = [], Data = null }, a with { Tags = [], Data = null });
                Xunit.Assert.Equal(e.Tags, a.Tags);
                Xunit.Assert.Equal(e.Data, a.Data);
                break;
            case (Alert e, Alert a):
                Xunit.Assert.Equal(
                    e with { Techniques = [], Evidence = Empty<string>(), RelatedEvents = [] },
                    a with { Techniques = [], Evidence = Empty<string>(), RelatedEvents = [] });
                Xunit.Assert.Equal(e.Techniques, a.Techniques); // AttackTechnique is a record of strings: value equality.
                Xunit.Assert.Equal(Sorted(e.Evidence), Sorted(a.Evidence));
                Xunit.Assert.Equal(e.RelatedEvents, a.RelatedEvents);
                break;
            default:
                // No collections: record equality compares every field.
                Xunit.Assert.Equal(expected, actual);
                break;
        }
    }

    // One shared instance so `with { X = Empty }` on both sides compares equal by reference.
    private static class EmptyOf<T>
    {
        public static readonly IReadOnlyDictionary<string, T> Value = new Dictionary<string, T>();
    }

    private static IReadOnlyDictionary<string, T> Empty<T>() => EmptyOf<T>.Value;

    private static List<KeyValuePair<string, T>> Sorted<T>(IReadOnlyDictionary<string, T> d) =>
        [.. d.OrderBy(kv => kv.Key, StringComparer.Ordinal)];
}
