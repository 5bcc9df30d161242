using System.Threading.Channels;
using Vmi.Core;
using Vmi.Events;

namespace Vmi.Store;

/// <summary>Tuning of a <see cref="StoreWriter"/>.</summary>
public sealed record StoreWriterOptions
{
    /// <summary>Telemetry events that may wait to be written; beyond this, telemetry is dropped (and counted).</summary>
    public int TelemetryCapacity { get; init; } = 50_000;
    /// <summary>A batch is written once it holds this many events …</summary>
    public int BatchSize { get; init; } = 1_000;
    /// <summary>… or once its first event has waited this long.</summary>
    public TimeSpan FlushInterval { get; init; } = TimeSpan.FromMilliseconds(200);
    /// <summary>Pause before retrying a failed write (disk full …).</summary>
    public TimeSpan RetryDelay { get; init; } = TimeSpan.FromSeconds(1);
    /// <summary>Attempts at writing what is left when the writer is disposed.</summary>
    public int FinalAttempts { get; init; } = 3;
}

/// <summary>
/// Batches events into an <see cref="EventStore"/> from a background task, so the pipeline never waits on the disk.
/// </summary>
/// <remarks>
/// Telemetry can be dropped: when <see cref="StoreWriterOptions.TelemetryCapacity"/> telemetry events are
/// queued, or when a batch that held it failed to write; every drop is counted in <see cref="Dropped"/>.
/// Everything else (alerts, findings, control and health events) is never dropped by the writer: it is
/// queued whatever the backlog (they are rare next to telemetry), and a failed write is retried with those
/// events until it succeeds or the writer is disposed. <see cref="Post"/> never blocks. All members are thread-safe.
/// </remarks>
public sealed class StoreWriter : IDisposable, IAsyncDisposable
{
    private readonly EventStore _store;
    private readonly StoreWriterOptions _options;
    private readonly TimeProvider _time;
    // Unbounded on purpose: the telemetry bound is counted by hand so that alerts always get in, in order.
    private readonly Channel<object> _queue = Channel.CreateUnbounded<object>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Task _loop;
    // Cuts the retry pause short on dispose.
    private readonly CancellationTokenSource _stopping = new();
    private long _queuedTelemetry;
    private long _posted;
    private long _written;
    private long _dropped;
    private long _failedWrites;
    private long _lost;
    private volatile Exception? _lastError;
    private int _disposed;

    public StoreWriter(EventStore store, StoreWriterOptions? options = null, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(store);
        _store = store;
        _options = options ?? new StoreWriterOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(_options.BatchSize, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(_options.TelemetryCapacity, 0, nameof(options));
        _time = time ?? TimeProvider.System;
        _loop = Task.Run(RunAsync);
    }

    /// <summary>Events accepted by <see cref="Post"/>.</summary>
    public long Posted => Interlocked.Read(ref _posted);
    /// <summary>Events written to the store (replayed ids included: the store ignores those).</summary>
    public long Written => Interlocked.Read(ref _written);
    /// <summary>Telemetry dropped: queue full, or lost with a failed batch.</summary>
    public long Dropped => Interlocked.Read(ref _dropped);
    /// <summary>Batch writes that failed (each is retried for non-telemetry events).</summary>
    public long FailedWrites => Interlocked.Read(ref _failedWrites);
    /// <summary>
    /// Non-telemetry events given up on: still failing to write after the final attempts at dispose.
    /// Anything but 0 is worth an error message; <see cref="LastError"/> says why.
    /// </summary>
    public long Lost => Interlocked.Read(ref _lost);
    /// <summary>Events queued and not yet written.</summary>
    public long Pending => Posted - Written - Dropped - Lost;
    /// <summary>The last write error, cleared by the next successful write.</summary>
    public Exception? LastError => _lastError;

    /// <summary>Queues an event for writing. Never blocks.</summary>
    /// <returns>False when the event was telemetry and was dropped because the queue is full.</returns>
    /// <exception cref="ObjectDisposedException">The writer is disposed.</exception>
    public bool Post(VmiEvent e)
    {
        ArgumentNullException.ThrowIfNull(e);
        bool telemetry = e.Class == EventClass.Telemetry;
        if (telemetry && Interlocked.Increment(ref _queuedTelemetry) > _options.TelemetryCapacity)
        {
            Interlocked.Decrement(ref _queuedTelemetry);
            Interlocked.Increment(ref _posted);
            Interlocked.Increment(ref _dropped);
            return false;
        }
        if (!_queue.Writer.TryWrite(e))
        {
            if (telemetry)
                Interlocked.Decrement(ref _queuedTelemetry);
            throw new ObjectDisposedException(nameof(StoreWriter));
        }
        Interlocked.Increment(ref _posted);
        return true;
    }

    /// <summary>Waits until every event posted before the call is written.</summary>
    /// <exception cref="StoreException">The write failed; alerts and other non-telemetry events stay queued and are retried.</exception>
    /// <exception cref="ObjectDisposedException">The writer is disposed.</exception>
    public async Task FlushAsync(CancellationToken cancellationToken = default)
    {
        var marker = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!_queue.Writer.TryWrite(marker))
            throw new ObjectDisposedException(nameof(StoreWriter));
        await marker.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    private async Task RunAsync()
    {
        ChannelReader<object> reader = _queue.Reader;
        var batch = new List<VmiEvent>(_options.BatchSize);
        var markers = new List<TaskCompletionSource>();
        while (true)
        {
            if (batch.Count == 0)
            {
                if (!await reader.WaitToReadAsync().ConfigureAwait(false))
                    break;
            }
            else if (reader.Completion.IsCompleted)
            {
                break; // Disposed with events kept from a failed write: the final attempts below.
            }

            long deadline = _time.GetTimestamp() + (long)(_options.FlushInterval.TotalSeconds * _time.TimestampFrequency);
            while (batch.Count < _options.BatchSize && markers.Count == 0)
            {
                if (reader.TryRead(out object? item))
                {
                    if (item is TaskCompletionSource marker)
                        markers.Add(marker);
                    else
                        batch.Add((VmiEvent)item);
                    continue;
                }
                TimeSpan remaining = _time.GetElapsedTime(_time.GetTimestamp(), deadline);
                if (batch.Count == 0 || remaining <= TimeSpan.Zero)
                    break;
                // Linger for more events until the batch is full or its first event has waited FlushInterval.
                using var linger = new CancellationTokenSource(remaining, _time);
                try
                {
                    if (!await reader.WaitToReadAsync(linger.Token).ConfigureAwait(false))
                        break;
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }
            if (!Write(batch, markers, finalAttempt: false))
            {
                try
                {
                    await Task.Delay(_options.RetryDelay, _time, _stopping.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                }
            }
        }

        // Disposed: what is left (alerts kept from failed writes) gets a few more attempts.
        for (int attempt = 0; batch.Count > 0 && attempt < _options.FinalAttempts; attempt++)
        {
            // Dispose waits for these: the pause is capped.
            if (attempt > 0)
                await Task.Delay(TimeSpan.FromTicks(Math.Min(_options.RetryDelay.Ticks, TimeSpan.TicksPerSecond)), _time).ConfigureAwait(false);
            Write(batch, markers, finalAttempt: attempt == _options.FinalAttempts - 1);
        }
        foreach (TaskCompletionSource marker in markers)
            marker.TrySetResult();
    }

    /// <returns>False when the write failed (the batch then holds the events to retry).</returns>
    private bool Write(List<VmiEvent> batch, List<TaskCompletionSource> markers, bool finalAttempt)
    {
        if (batch.Count == 0)
        {
            Complete(markers, null);
            return true;
        }
        try
        {
            _store.AppendBatch(batch);
            ReleaseTelemetry(batch);
            Interlocked.Add(ref _written, batch.Count);
            batch.Clear();
            _lastError = null;
            Complete(markers, null);
            return true;
        }
        catch (Exception ex) when (ex is StoreException or ObjectDisposedException)
        {
            Interlocked.Increment(ref _failedWrites);
            _lastError = ex;
            // Keep what must not be lost for the retry; telemetry goes, counted.
            int before = batch.Count;
            ReleaseTelemetry(batch);
            batch.RemoveAll(e => e.Class == EventClass.Telemetry);
            Interlocked.Add(ref _dropped, before - batch.Count);
            if (finalAttempt)
            {
                Interlocked.Add(ref _lost, batch.Count);
                batch.Clear();
            }
            Complete(markers, ex);
            return false;
        }
    }

    private void ReleaseTelemetry(List<VmiEvent> batch)
    {
        int telemetry = 0;
        foreach (VmiEvent e in batch)
        {
            if (e.Class == EventClass.Telemetry)
                telemetry++;
        }
        // Only once per event: after a failure the telemetry leaves the batch, so a retry does not count it again.
        Interlocked.Add(ref _queuedTelemetry, -telemetry);
    }

    private static void Complete(List<TaskCompletionSource> markers, Exception? error)
    {
        foreach (TaskCompletionSource marker in markers)
        {
            if (error is null)
                marker.TrySetResult();
            else
                marker.TrySetException(error);
        }
        markers.Clear();
    }

    /// <summary>Writes what is queued (a few attempts if the store fails), then stops. The store stays open.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        _queue.Writer.TryComplete();
        await _stopping.CancelAsync().ConfigureAwait(false);
        await _loop.ConfigureAwait(false);
        _stopping.Dispose();
    }

    /// <inheritdoc cref="DisposeAsync"/>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        _queue.Writer.TryComplete();
        _stopping.Cancel();
        _loop.GetAwaiter().GetResult();
        _stopping.Dispose();
    }
}
