namespace Vmi.Events;

/// <summary>How the pipeline treats an event under overload.</summary>
public enum EventClass
{
    /// <summary>Observations (process start, hooked access …): may be shed under overload, and every shed event is counted.</summary>
    Telemetry = 0,
    /// <summary>Triggers the pipeline itself needs (sweep ticks): never shed.</summary>
    Control = 1,
    /// <summary>Integrity findings: never shed.</summary>
    Finding = 2,
    /// <summary>Alerts: never shed.</summary>
    Alert = 3,
    /// <summary>Detector and pipeline health (faults, shed counts): never shed.</summary>
    Health = 4,
}

/// <summary>Alert severity, ordered; the numbers are ECS <c>event.severity</c>.</summary>
public enum Severity
{
    Info = 0,
    Low = 21,
    Medium = 47,
    High = 73,
    Critical = 99,
}

/// <summary>Guest operating systems a detector can support.</summary>
[Flags]
public enum GuestOs
{
    None = 0,
    Linux = 1,
    Windows = 2,
    Any = Linux | Windows,
}

/// <summary>Kind of hooked memory access.</summary>
public enum MemoryAccessKind
{
    Read = 0,
    Write = 1,
    Execute = 2,
}

/// <summary>Why a sweep runs.</summary>
public enum SweepReason
{
    Periodic = 0,
    /// <summary>A hook fired (a write to a watched page, a module load …) and the state is checked at once.</summary>
    Hook = 1,
    /// <summary>Asked for (<c>vmi check</c>, the first sweep after attach).</summary>
    Requested = 2,
}

/// <summary>What went wrong with a detector.</summary>
public enum DetectorFaultKind
{
    /// <summary>It threw; the event is skipped, the detector keeps running.</summary>
    Exception = 0,
    /// <summary>It ran over its time budget on one event; events for it are shed until it returns.</summary>
    Timeout = 1,
    /// <summary>It came back after a timeout.</summary>
    Recovered = 2,
    /// <summary>Its queue overflowed while it was stalled; the shed count is in the message.</summary>
    Overflow = 3,
}
