using Vmi.Events;

namespace Vmi.Store;

/// <summary>Triage state of a stored alert.</summary>
public enum AlertStatus
{
    Open = 0,
    Acknowledged = 1,
}

/// <summary>Filters for <see cref="EventStore.QueryAlerts"/>; every filter left null matches everything. Results are newest first.</summary>
public sealed record AlertQuery
{
    public string? VmId { get; init; }
    /// <summary>Alerts at this severity or above.</summary>
    public Severity? MinSeverity { get; init; }
    public string? Detector { get; init; }
    public AlertStatus? Status { get; init; }
    /// <summary>Event time, inclusive.</summary>
    public DateTimeOffset? Since { get; init; }
    /// <summary>Event time, exclusive.</summary>
    public DateTimeOffset? Until { get; init; }
    /// <summary>Case-insensitive (ASCII) substring of the title, detector, key, process name or evidence.</summary>
    public string? Text { get; init; }
    public int Limit { get; init; } = 100;
    public int Offset { get; init; }
}

/// <summary>Filters for <see cref="EventStore.QueryEvents"/>. Results are in event-time order (oldest first unless <see cref="NewestFirst"/>).</summary>
public sealed record EventQuery
{
    public string? VmId { get; init; }
    /// <summary>Event kinds (<see cref="VmiEvent.Kind"/>: <c>process-started</c>, <c>alert</c> …); null or empty: all.</summary>
    public IReadOnlyCollection<string>? Kinds { get; init; }
    /// <summary>Event time, inclusive.</summary>
    public DateTimeOffset? Since { get; init; }
    /// <summary>Event time, exclusive.</summary>
    public DateTimeOffset? Until { get; init; }
    public bool NewestFirst { get; init; }
    public int Limit { get; init; } = 1000;
    public int Offset { get; init; }
}

/// <summary>An alert as stored, with its triage state.</summary>
public sealed record StoredAlert(
    Alert Alert,
    AlertStatus Status,
    string? Assignee,
    DateTimeOffset? AcknowledgedAt,
    string? AcknowledgedBy)
{
    public Guid Id => Alert.Id;
}
