using System.Diagnostics;
using Vmi.Export.Spool;

namespace Vmi.Export;

/// <summary>Settings of an <see cref="Exporter"/>.</summary>
public sealed record ExporterOptions
{
    /// <summary>Records per request.</summary>
    public int MaxBatchCount { get; init; } = 1000;

    /// <summary>Characters of JSON per request (Elasticsearch refuses requests past 100 MB by default; a few MB keeps latency low).</summary>
    public long MaxBatchBytes { get; init; } = 5L << 20;

    /// <summary>First retry delay; each further retry of the same batch doubles it, up to <see cref="MaxRetryDelay"/>.</summary>
    public TimeSpan InitialRetryDelay { get; init; } = TimeSpan.FromMilliseconds(200);

    public TimeSpan MaxRetryDelay { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>How long <see cref="Exporter.RunAsync"/> sleeps when the spool is empty, unless a record comes first.</summary>
    public TimeSpan IdlePoll { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Seed of the jitter (tests pin it); null for a random one.</summary>
    public int? JitterSeed { get; init; }
}

/// <summary>What the exporter did since it started.</summary>
/// <param name="Sent">Records the destination stored.</param>
/// <param name="Duplicates">Records the destination already had (a replay after a crash): acknowledged, not stored twice.</param>
/// <param name="Retries">Records sent again after a retryable failure (each resend counts).</param>
/// <param name="DeadLettered">Records refused for good, written to the dead-letter file.</param>
/// <param name="Bytes">Request bytes put on the wire.</param>
/// <param name="Batches">Batches fully acknowledged.</param>
public readonly record struct ExportCounters(long Sent, long Duplicates, long Retries, long DeadLettered, long Bytes, long Batches);

/// <summary>
/// Moves records from a <see cref="DurableSpool"/> to an <see cref="IExportSink"/> in order: reads a
/// batch, sends it, resends the retryable records with exponential backoff and jitter (honouring the
/// destination's <c>Retry-After</c>) until each record is delivered, already there, or refused for good
/// (dead-lettered), and only then moves the spool cursor past the batch. A crash at any point replays
/// at most the unacknowledged batch; document ids make that replay harmless.
/// </summary>
/// <remarks>One spool has one exporter, and one <see cref="DrainAsync"/> or <see cref="RunAsync"/> runs at a time; producers append to the spool concurrently.</remarks>
public sealed class Exporter
{
    private readonly DurableSpool _spool;
    private readonly IExportSink _sink;
    private readonly DeadLetterFile _deadLetters;
    private readonly ExporterOptions _options;
    private readonly Random _jitter;
    private long _sent, _duplicates, _retries, _deadLettered, _bytes, _batches;

    /// <param name="spool">Where the records wait.</param>
    /// <param name="sink">Where they go.</param>
    /// <param name="options">Batching and retry settings.</param>
    /// <param name="deadLetters">Where refused records go; by default <c>dead-letter.ndjson</c> in the spool folder.</param>
    public Exporter(DurableSpool spool, IExportSink sink, ExporterOptions? options = null, DeadLetterFile? deadLetters = null)
    {
        ArgumentNullException.ThrowIfNull(spool);
        ArgumentNullException.ThrowIfNull(sink);
        _spool = spool;
        _sink = sink;
        _options = options ?? new ExporterOptions();
        _deadLetters = deadLetters ?? new DeadLetterFile(Path.Combine(spool.Directory, "dead-letter.ndjson"));
        _jitter = _options.JitterSeed is int seed ? new Random(seed) : new Random();
    }

    /// <summary>The dead-letter file in use.</summary>
    public DeadLetterFile DeadLetters => _deadLetters;

    public ExportCounters Counters => new(
        Interlocked.Read(ref _sent), Interlocked.Read(ref _duplicates), Interlocked.Read(ref _retries),
        Interlocked.Read(ref _deadLettered), Interlocked.Read(ref _bytes), Interlocked.Read(ref _batches));

    /// <summary>The last error the run loop survived (destination unreachable, credentials refused), or null after a success.</summary>
    public string? LastError { get; private set; }

    /// <summary>
    /// Exports until the spool is empty. Retryable failures are retried without limit (a destination outage
    /// waits, it does not lose records); cancel to stop.
    /// </summary>
    /// <returns>Records acknowledged by this call.</returns>
    /// <exception cref="ExportException">The sink cannot be used as configured (credentials, certificate), or the spool failed.</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the unacknowledged batch is read again by the next call.</exception>
    public async Task<long> DrainAsync(CancellationToken cancellationToken)
    {
        long acknowledged = 0;
        _spool.Rewind(); // anything handed out earlier and not acknowledged comes again
        while (true)
        {
            IReadOnlyList<SpoolRecord> batch = _spool.Read(_options.MaxBatchCount, _options.MaxBatchBytes);
            if (batch.Count == 0)
                return acknowledged;
            await SendUntilAcknowledgedAsync(batch, cancellationToken).ConfigureAwait(false);
            _spool.Commit(batch[^1].Sequence + 1);
            Interlocked.Increment(ref _batches);
            acknowledged += batch.Count;
            LastError = null;
        }
    }

    /// <summary>
    /// Exports as records arrive until cancelled. Errors that retrying cannot fix (credentials refused) are
    /// kept in <see cref="LastError"/> and retried after <see cref="ExporterOptions.MaxRetryDelay"/>: the
    /// records stay in the spool meanwhile.
    /// </summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                await DrainAsync(cancellationToken).ConfigureAwait(false);
                await _spool.WaitForDataAsync(_options.IdlePoll, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (ExportException e)
            {
                LastError = e.Message;
                try
                {
                    await Task.Delay(_options.MaxRetryDelay, cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }

    private async Task SendUntilAcknowledgedAsync(IReadOnlyList<SpoolRecord> batch, CancellationToken cancellationToken)
    {
        List<ExportItem> pending = batch.Select(r => r.Item).ToList();
        int attempt = 0;
        while (true)
        {
            BatchResult result = await _sink.SendAsync(pending, cancellationToken).ConfigureAwait(false);
            if (result.Items.Count != pending.Count)
                throw new ExportException($"Sink {_sink.Name} answered {result.Items.Count} outcomes for {pending.Count} records.");
            Interlocked.Add(ref _bytes, result.RequestBytes);
            var retry = new List<ExportItem>();
            var rejected = new List<(ExportItem, ItemResult)>();
            for (int i = 0; i < pending.Count; i++)
            {
                ItemResult r = result.Items[i];
                switch (r.Outcome)
                {
                    case ItemOutcome.Delivered:
                        Interlocked.Increment(ref _sent);
                        break;
                    case ItemOutcome.Duplicate:
                        Interlocked.Increment(ref _duplicates);
                        break;
                    case ItemOutcome.Rejected:
                        rejected.Add((pending[i], r));
                        break;
                    default:
                        retry.Add(pending[i]);
                        break;
                }
            }
            if (rejected.Count > 0)
            {
                _deadLetters.Write(_sink.Name, rejected);
                Interlocked.Add(ref _deadLettered, rejected.Count);
            }
            if (retry.Count == 0)
                return;
            Interlocked.Add(ref _retries, retry.Count);
            pending = retry;
            TimeSpan delay = Backoff(attempt++, result.RetryAfter);
            LastError = $"{retry.Count} records not accepted by {_sink.Name} (status {result.Items.First(r => r.Outcome == ItemOutcome.Retryable).Status}); retrying in {delay.TotalMilliseconds:0} ms.";
            await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Exponential backoff with full jitter in its upper half; a server's Retry-After is a floor.</summary>
    internal TimeSpan Backoff(int attempt, TimeSpan? retryAfter)
    {
        double max = _options.MaxRetryDelay.TotalMilliseconds;
        double exponential = Math.Min(max, _options.InitialRetryDelay.TotalMilliseconds * Math.Pow(2, Math.Min(attempt, 30)));
        double jittered = exponential / 2 + (_jitter.NextDouble() * exponential / 2);
        if (retryAfter is TimeSpan floor)
            jittered = Math.Max(jittered, Math.Min(floor.TotalMilliseconds, max));
        Debug.Assert(jittered >= 0);
        return TimeSpan.FromMilliseconds(jittered);
    }
}
