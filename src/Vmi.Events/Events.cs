using MessagePack;

namespace Vmi.Events;

/// <summary>A process appeared (a creation breakpoint, or a sweep found a task it had not seen).</summary>
[MessagePackObject]
public sealed record ProcessStarted : VmiEvent
{
    [Key(10)] public required int Pid { get; init; }
    [Key(11)] public int Ppid { get; init; }
    [Key(12)] public required string Name { get; init; }
    [Key(13)] public uint Uid { get; init; }
    [Key(14)] public uint Euid { get; init; }
    [Key(15)] public IReadOnlyList<string> Cmdline { get; init; } = [];
    [Key(16)] public string? ExePath { get; init; }
    /// <summary>Guest virtual address of the task_struct.</summary>
    [Key(17)] public ulong TaskAddress { get; init; }

    [IgnoreMember] public override EventClass Class => EventClass.Telemetry;
    [IgnoreMember] public override string Kind => "process-started";

    protected override void AddEcsFields(EcsDocument document)
    {
        document["event.category"] = new[] { "process" };
        document["event.type"] = new[] { "start" };
        document["process.pid"] = Pid;
        document["process.parent.pid"] = Ppid;
        document["process.name"] = Name;
        document["user.id"] = Uid.ToString(System.Globalization.CultureInfo.InvariantCulture);
        document["user.effective.id"] = Euid.ToString(System.Globalization.CultureInfo.InvariantCulture);
        document["process.args"] = Cmdline;
        document.SetIfNotNull("process.executable", ExePath);
        document["vmi.task"] = Hex(TaskAddress);
    }
}

/// <summary>A process went away.</summary>
[MessagePackObject]
public sealed record ProcessExited : VmiEvent
{
    [Key(10)] public required int Pid { get; init; }
    [Key(11)] public required string Name { get; init; }
    [Key(12)] public ulong TaskAddress { get; init; }

    [IgnoreMember] public override EventClass Class => EventClass.Telemetry;
    [IgnoreMember] public override string Kind => "process-exited";

    protected override void AddEcsFields(EcsDocument document)
    {
        document["event.category"] = new[] { "process" };
        document["event.type"] = new[] { "end" };
        document["process.pid"] = Pid;
        document["process.name"] = Name;
        document["vmi.task"] = Hex(TaskAddress);
    }
}

/// <summary>A process executed a new program.</summary>
[MessagePackObject]
public sealed record ProcessExec : VmiEvent
{
    [Key(10)] public required int Pid { get; init; }
    [Key(11)] public required string Name { get; init; }
    [Key(12)] public string? Path { get; init; }
    [Key(13)] public IReadOnlyList<string> Cmdline { get; init; } = [];
    [Key(14)] public uint Uid { get; init; }
    [Key(15)] public uint Euid { get; init; }
    /// <summary>The program file has the set-user-id bit (null: unknown).</summary>
    [Key(16)] public bool? SetUid { get; init; }
    [Key(17)] public ulong TaskAddress { get; init; }

    [IgnoreMember] public override EventClass Class => EventClass.Telemetry;
    [IgnoreMember] public override string Kind => "process-exec";

    protected override void AddEcsFields(EcsDocument document)
    {
        document["event.category"] = new[] { "process" };
        document["event.type"] = new[] { "start" };
        document["process.pid"] = Pid;
        document["process.name"] = Name;
        document.SetIfNotNull("process.executable", Path);
        document["process.args"] = Cmdline;
        document["user.id"] = Uid.ToString(System.Globalization.CultureInfo.InvariantCulture);
        document["user.effective.id"] = Euid.ToString(System.Globalization.CultureInfo.InvariantCulture);
        document.SetIfNotNull("vmi.setuid", SetUid);
        document["vmi.task"] = Hex(TaskAddress);
    }
}

/// <summary>A kernel module was loaded.</summary>
[MessagePackObject]
public sealed record ModuleLoaded : VmiEvent
{
    [Key(10)] public required string Name { get; init; }
    /// <summary>Address of struct module.</summary>
    [Key(11)] public ulong Address { get; init; }
    [Key(12)] public ulong CoreBase { get; init; }
    [Key(13)] public ulong Size { get; init; }

    [IgnoreMember] public override EventClass Class => EventClass.Telemetry;
    [IgnoreMember] public override string Kind => "module-loaded";

    protected override void AddEcsFields(EcsDocument document)
    {
        document["event.category"] = new[] { "driver" };
        document["event.type"] = new[] { "start" };
        document["vmi.module.name"] = Name;
        document["vmi.module.address"] = Hex(Address);
        document["vmi.module.base"] = Hex(CoreBase);
        document["vmi.module.size"] = Size;
    }
}

/// <summary>A hooked guest memory access (a write to a watched page, a read or an execute).</summary>
[MessagePackObject]
public sealed record MemoryAccess : VmiEvent
{
    [Key(10)] public required MemoryAccessKind Access { get; init; }
    /// <summary>Name of the hook that fired (<c>syscall-table</c>, <c>idt</c>, <c>kernel-text</c> …).</summary>
    [Key(11)] public required string Hook { get; init; }
    [Key(12)] public int Vcpu { get; init; }
    [Key(13)] public ulong Rip { get; init; }
    /// <summary>Symbol of the instruction that made the access, when known.</summary>
    [Key(14)] public string? RipSymbol { get; init; }
    /// <summary>Guest physical address accessed (null when the backend only knows the virtual one).</summary>
    [Key(15)] public ulong? Gpa { get; init; }
    /// <summary>Guest virtual address accessed (null when the backend only knows the physical one).</summary>
    [Key(16)] public ulong? Gva { get; init; }
    [Key(17)] public int Size { get; init; }
    [Key(18)] public byte[]? OldValue { get; init; }
    [Key(19)] public byte[]? NewValue { get; init; }

    [IgnoreMember] public override EventClass Class => EventClass.Telemetry;
    [IgnoreMember] public override string Kind => "memory-" + Access.ToString().ToLowerInvariant();

    protected override void AddEcsFields(EcsDocument document)
    {
        document["event.category"] = new[] { "host" };
        document["event.type"] = new[] { "change" };
        document["vmi.hook.name"] = Hook;
        document["vmi.hook.access"] = Access.ToString().ToLowerInvariant();
        document["vmi.vcpu"] = Vcpu;
        document["vmi.rip"] = Hex(Rip);
        document.SetIfNotNull("vmi.rip_symbol", RipSymbol);
        if (Gpa is ulong gpa)
            document["vmi.gpa"] = Hex(gpa);
        if (Gva is ulong gva)
            document["vmi.gva"] = Hex(gva);
        document["vmi.size"] = Size;
        if (OldValue is not null)
            document["vmi.old_value"] = Convert.ToHexStringLower(OldValue);
        if (NewValue is not null)
            document["vmi.new_value"] = Convert.ToHexStringLower(NewValue);
    }
}

/// <summary>An execute breakpoint fired.</summary>
[MessagePackObject]
public sealed record BreakpointHit : VmiEvent
{
    [Key(10)] public required string Hook { get; init; }
    [Key(11)] public int Vcpu { get; init; }
    [Key(12)] public ulong Rip { get; init; }
    [Key(13)] public string? Symbol { get; init; }
    [Key(14)] public ulong Cr3 { get; init; }
    /// <summary>Argument registers at the breakpoint (rdi, rsi, rdx, rcx, r8, r9) and rsp.</summary>
    [Key(15)] public IReadOnlyDictionary<string, ulong> Registers { get; init; } = new Dictionary<string, ulong>();

    [IgnoreMember] public override EventClass Class => EventClass.Telemetry;
    [IgnoreMember] public override string Kind => "breakpoint";

    protected override void AddEcsFields(EcsDocument document)
    {
        document["event.category"] = new[] { "host" };
        document["event.type"] = new[] { "info" };
        document["vmi.hook.name"] = Hook;
        document["vmi.vcpu"] = Vcpu;
        document["vmi.rip"] = Hex(Rip);
        document.SetIfNotNull("vmi.rip_symbol", Symbol);
        document["vmi.cr3"] = Hex(Cr3);
    }
}

/// <summary>Time to look at the whole state (integrity detectors run on it).</summary>
[MessagePackObject]
public sealed record SweepTick : VmiEvent
{
    [Key(10)] public required SweepReason Reason { get; init; }
    /// <summary>Counts sweeps of this VM from 1.</summary>
    [Key(11)] public long Number { get; init; }

    [IgnoreMember] public override EventClass Class => EventClass.Control;
    [IgnoreMember] public override string Kind => "sweep";

    protected override void AddEcsFields(EcsDocument document)
    {
        document["event.category"] = new[] { "host" };
        document["event.type"] = new[] { "info" };
        document["vmi.sweep.reason"] = Reason.ToString().ToLowerInvariant();
        document["vmi.sweep.number"] = Number;
    }
}

/// <summary>One integrity check's result on one subject (what <c>vmi check</c> prints).</summary>
[MessagePackObject]
public sealed record IntegrityFinding : VmiEvent
{
    [Key(10)] public required string Detector { get; init; }
    /// <summary>What was checked: <c>sys_call_table[62]</c>, <c>idt[14]</c>, <c>pid 1234</c>, <c>module vmi_rootkit</c>.</summary>
    [Key(11)] public required string Subject { get; init; }
    [Key(12)] public required string Problem { get; init; }
    [Key(13)] public required Severity Severity { get; init; }
    [Key(14)] public string? Expected { get; init; }
    [Key(15)] public string? Actual { get; init; }
    [Key(16)] public ulong? Address { get; init; }
    [Key(17)] public IReadOnlyDictionary<string, string> Evidence { get; init; } = new Dictionary<string, string>();

    [IgnoreMember] public override EventClass Class => EventClass.Finding;
    [IgnoreMember] public override string Kind => "integrity-finding";

    protected override void AddEcsFields(EcsDocument document)
    {
        document["event.category"] = new[] { "host" };
        document["event.type"] = new[] { "info" };
        document["event.severity"] = (int)Severity;
        document["rule.name"] = Detector;
        document["message"] = $"{Subject}: {Problem}";
        document["vmi.finding.subject"] = Subject;
        document.SetIfNotNull("vmi.finding.expected", Expected);
        document.SetIfNotNull("vmi.finding.actual", Actual);
        if (Address is ulong a)
            document["vmi.finding.address"] = Hex(a);
        foreach (var (k, v) in Evidence)
            document["vmi.evidence." + EcsDocument.Segment(k)] = v;
    }
}

/// <summary>A network flow seen at Vmi's switch.</summary>
[MessagePackObject]
public sealed record NetworkFlow : VmiEvent
{
    [Key(10)] public required string Protocol { get; init; }
    [Key(11)] public required string SourceIp { get; init; }
    [Key(12)] public int SourcePort { get; init; }
    [Key(13)] public required string DestinationIp { get; init; }
    [Key(14)] public int DestinationPort { get; init; }
    [Key(15)] public long Bytes { get; init; }
    [Key(16)] public long Packets { get; init; }

    [IgnoreMember] public override EventClass Class => EventClass.Telemetry;
    [IgnoreMember] public override string Kind => "network-flow";

    protected override void AddEcsFields(EcsDocument document)
    {
        document["event.category"] = new[] { "network" };
        document["event.type"] = new[] { "connection" };
        document["network.transport"] = Protocol.ToLowerInvariant();
        document["source.ip"] = SourceIp;
        document["source.port"] = SourcePort;
        document["destination.ip"] = DestinationIp;
        document["destination.port"] = DestinationPort;
        document["network.bytes"] = Bytes;
        document["network.packets"] = Packets;
    }
}

/// <summary>A signature (YARA rule) matched guest memory.</summary>
[MessagePackObject]
public sealed record SignatureMatch : VmiEvent
{
    [Key(10)] public required string Rule { get; init; }
    [Key(11)] public IReadOnlyList<string> Tags { get; init; } = [];
    [Key(12)] public int? Pid { get; init; }
    [Key(13)] public string? ProcessName { get; init; }
    /// <summary>Where: a VMA (<c>0x7f…-0x7f… r-x /usr/bin/x</c>), <c>kernel</c>, a file.</summary>
    [Key(14)] public required string Region { get; init; }
    [Key(15)] public ulong Address { get; init; }
    [Key(16)] public string? StringId { get; init; }
    [Key(17)] public byte[]? Data { get; init; }
    /// <summary>Version of the rule bundle that matched.</summary>
    [Key(18)] public string? BundleVersion { get; init; }

    [IgnoreMember] public override EventClass Class => EventClass.Telemetry;
    [IgnoreMember] public override string Kind => "signature-match";

    protected override void AddEcsFields(EcsDocument document)
    {
        document["event.category"] = new[] { "malware" };
        document["event.type"] = new[] { "info" };
        document["rule.name"] = Rule;
        document["tags"] = Tags;
        document.SetIfNotNull("process.pid", Pid);
        document.SetIfNotNull("process.name", ProcessName);
        document["vmi.region"] = Region;
        document["vmi.address"] = Hex(Address);
        document.SetIfNotNull("vmi.string_id", StringId);
        if (Data is not null)
            document["vmi.data"] = Convert.ToHexStringLower(Data);
        document.SetIfNotNull("rule.version", BundleVersion);
    }
}
