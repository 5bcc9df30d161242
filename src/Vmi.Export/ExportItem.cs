using Vmi.Events;

namespace Vmi.Export;

/// <summary>Which destination family a record goes to (alerts and telemetry are kept apart).</summary>
public enum ExportStream
{
    /// <summary>Everything that is not an alert: telemetry, findings, health.</summary>
    Events = 0,
    /// <summary>Alerts (<c>event.kind: alert</c>).</summary>
    Alerts = 1,
}

/// <summary>
/// One record to export.
/// </summary>
/// <param name="Id">Deterministic document id (the event's <see cref="VmiEvent.Id"/>): a replay after a crash sends the same id again, and the destination refuses the second copy.</param>
/// <param name="Time">Event time (<c>@timestamp</c>).</param>
/// <param name="Stream">Alerts or events.</param>
/// <param name="Json">The document: nested ECS JSON on one line (<see cref="EcsDocument.ToNestedJson"/>).</param>
public sealed record ExportItem(string Id, DateTimeOffset Time, ExportStream Stream, string Json)
{
    /// <summary>The event as an ECS document with its own id as the document id.</summary>
    /// <exception cref="InvalidOperationException">The event's ECS fields cannot nest (see <see cref="EcsDocument.ToNestedJson"/>).</exception>
    public static ExportItem FromEvent(VmiEvent e)
    {
        ArgumentNullException.ThrowIfNull(e);
        return new ExportItem(
            e.Id.ToString(),
            e.Time,
            e.Class == EventClass.Alert ? ExportStream.Alerts : ExportStream.Events,
            e.ToEcs().ToNestedJson());
    }
}

/// <summary>What became of one record in a batch.</summary>
public enum ItemOutcome
{
    /// <summary>Stored now.</summary>
    Delivered = 0,
    /// <summary>The destination already had it (a replay after a crash): as good as delivered.</summary>
    Duplicate = 1,
    /// <summary>Not stored this time, worth sending again (overload, server error, lost connection).</summary>
    Retryable = 2,
    /// <summary>Refused for good (mapping conflict, malformed document): goes to the dead-letter file, not retried.</summary>
    Rejected = 3,
}

/// <summary>The outcome of one record.</summary>
/// <param name="Outcome">Delivered, duplicate, retryable or rejected.</param>
/// <param name="Status">HTTP status of the item (0 when the request never got an answer).</param>
/// <param name="ErrorType">The destination's error type (<c>mapper_parsing_exception</c>), if any.</param>
/// <param name="Reason">The destination's explanation, if any.</param>
public readonly record struct ItemResult(ItemOutcome Outcome, int Status, string? ErrorType = null, string? Reason = null)
{
    /// <summary>Delivered or duplicate: the destination holds the record.</summary>
    public bool IsAcknowledged => Outcome is ItemOutcome.Delivered or ItemOutcome.Duplicate;
}

/// <summary>The outcomes of a batch, one per record and in the batch's order.</summary>
/// <param name="Items">One result per record sent.</param>
/// <param name="RetryAfter">The destination asked to wait this long before sending again (<c>Retry-After</c>).</param>
/// <param name="RequestBytes">Bytes put on the wire for the batch.</param>
public sealed record BatchResult(IReadOnlyList<ItemResult> Items, TimeSpan? RetryAfter = null, long RequestBytes = 0)
{
    /// <summary>Every record gets the same outcome (a whole request refused or lost).</summary>
    public static BatchResult All(int count, ItemResult result, TimeSpan? retryAfter = null, long requestBytes = 0) =>
        new(Enumerable.Repeat(result, count).ToArray(), retryAfter, requestBytes);
}

/// <summary>
/// A destination for exported records. One call sends one batch once (no retries inside): the
/// <see cref="Exporter"/> owns retries, backoff and the spool cursor, so every sink gets them alike.
/// </summary>
public interface IExportSink
{
    /// <summary>Short name for messages and metrics (<c>elasticsearch</c>).</summary>
    string Name { get; }

    /// <summary>Sends <paramref name="batch"/> and reports each record's outcome, in order.</summary>
    /// <returns>Exactly one result per record.</returns>
    /// <exception cref="ExportException">The destination cannot be used as configured (credentials refused, certificate not trusted): retrying the same request will not help.</exception>
    Task<BatchResult> SendAsync(IReadOnlyList<ExportItem> batch, CancellationToken cancellationToken);
}
