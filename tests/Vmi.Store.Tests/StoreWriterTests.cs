using Vmi.Core;
using Vmi.Events;
using Xunit;

namespace Vmi.Store.Tests;

public sealed class StoreWriterTests : IDisposable
{
    private readonly TempDirectory _dir = new();
    private readonly EventStore _store;

    public StoreWriterTests() => _store = EventStore.Open(_dir.File("vmi.db"));

    public void Dispose()
    {
        _store.Dispose();
        _dir.Dispose();
    }

    private static readonly DateTimeOffset T0 = new(2025, 6, 1, 12, 0, 0, TimeSpan.Zero);

    private static ProcessStarted Telemetry(int i) => new() { VmId = "vm", Time = T0.AddMilliseconds(i), Pid = i, Name = "p" };

    private static Alert MakeAlert(int i) => new()
    {
        VmId = "vm", Time = T0.AddMilliseconds(i), Detector = "d", Title = "t", Severity = Severity.High, Key = "k" + i,
    };

    private static async Task Eventually(Func<bool> condition)
    {
        for (int i = 0; i < 500 && !condition(); i++)
            await Task.Delay(10);
        Assert.True(condition());
    }

    [Fact]
    public async Task Flush_writes_everything_posted_before_it()
    {
        await using var writer = new StoreWriter(_store, new StoreWriterOptions { FlushInterval = TimeSpan.FromHours(1) });
        for (int i = 0; i < 2500; i++)
            Assert.True(writer.Post(i % 100 == 0 ? MakeAlert(i) : Telemetry(i)));
        await writer.FlushAsync();
        Assert.Equal(2500, _store.CountEvents(new EventQuery()));
        Assert.Equal(25, _store.CountAlerts(new AlertQuery()));
        Assert.Equal(2500, writer.Posted);
        Assert.Equal(2500, writer.Written);
        Assert.Equal(0, writer.Pending);
        Assert.Equal(0, writer.Dropped);
    }

    [Fact]
    public async Task Full_batches_are_written_without_waiting_for_the_interval()
    {
        await using var writer = new StoreWriter(_store, new StoreWriterOptions { BatchSize = 10, FlushInterval = TimeSpan.FromHours(1) });
        for (int i = 0; i < 25; i++)
            writer.Post(Telemetry(i));
        await Eventually(() => writer.Written == 20);
        await Task.Delay(100);
        Assert.Equal(20, writer.Written); // the last 5 wait for a full batch, the interval or a flush
        await writer.FlushAsync();
        Assert.Equal(25, writer.Written);
    }

    [Fact]
    public async Task A_partial_batch_is_written_after_the_interval()
    {
        await using var writer = new StoreWriter(_store, new StoreWriterOptions { FlushInterval = TimeSpan.FromMilliseconds(50) });
        writer.Post(MakeAlert(1));
        await Eventually(() => _store.CountAlerts(new AlertQuery()) == 1);
    }

    [Fact]
    public void Dispose_writes_what_is_queued()
    {
        var writer = new StoreWriter(_store, new StoreWriterOptions { FlushInterval = TimeSpan.FromHours(1) });
        for (int i = 0; i < 10; i++)
            writer.Post(MakeAlert(i));
        writer.Dispose();
        Assert.Equal(10, _store.CountAlerts(new AlertQuery()));
        Assert.Throws<ObjectDisposedException>(() => writer.Post(MakeAlert(99)));
        writer.Dispose();
    }

    [Fact]
    public async Task Telemetry_beyond_capacity_is_dropped_and_counted_alerts_never()
    {
        await using var writer = new StoreWriter(_store, new StoreWriterOptions { TelemetryCapacity = 0 });
        Assert.False(writer.Post(Telemetry(1)));
        Assert.True(writer.Post(MakeAlert(2)));
        Assert.True(writer.Post(new SweepTick { VmId = "vm", Time = T0, Reason = SweepReason.Periodic }));
        await writer.FlushAsync();
        Assert.Equal(1, writer.Dropped);
        Assert.Equal(2, _store.CountEvents(new EventQuery()));
    }

    [Fact]
    public async Task While_the_store_fails_alerts_are_kept_and_retried_telemetry_is_shed()
    {
        await using var writer = new StoreWriter(_store, new StoreWriterOptions
        {
            TelemetryCapacity = 5,
            // The first batch must hold everything posted before the flush: with a short interval a slow test
            // thread let the writer fail on a partial batch and pause for the hour before the flush arrived.
            FlushInterval = TimeSpan.FromHours(1),
            RetryDelay = TimeSpan.FromHours(1), // the loop stays in its pause until dispose cuts it short
        });
        _store.AppendBatch(Enumerable.Range(0, 10).Select(i => (VmiEvent)MakeAlert(1000 + i)));
        _store.LimitToCurrentSize();

        // A big first batch: fails as the disk would, then the writer pauses before retrying.
        for (int i = 0; i < 5; i++)
            writer.Post(MakeAlert(i) with { Description = new string('x', 100_000) });
        Assert.True(writer.Post(Telemetry(0)));
        var failure = await Assert.ThrowsAsync<StoreException>(() => writer.FlushAsync());
        Assert.Contains("full", failure.Message, StringComparison.Ordinal);
        Assert.Equal(1, writer.FailedWrites);
        Assert.Equal(1, writer.Dropped);          // the telemetry of the failed batch
        Assert.Same(failure, writer.LastError);

        // The writer is paused: telemetry fills its capacity, alerts still get in.
        int accepted = Enumerable.Range(0, 10).Count(i => writer.Post(Telemetry(100 + i)));
        Assert.Equal(5, accepted);
        Assert.Equal(6, writer.Dropped);
        for (int i = 0; i < 3; i++)
            Assert.True(writer.Post(MakeAlert(200 + i)));

        // Space comes back; dispose cuts the pause short and writes everything kept.
        _store.ExecuteForTests("PRAGMA max_page_count = 1073741823;");
        await writer.DisposeAsync();
        Assert.Equal(10 + 5 + 3, _store.CountAlerts(new AlertQuery()));
        Assert.Equal(5, _store.CountEvents(new EventQuery { Kinds = ["process-started"] }));
        Assert.Equal(0, writer.Pending);
        Assert.Equal(0, writer.Lost);
        Assert.Null(writer.LastError);
    }

    [Fact]
    public async Task Alerts_given_up_at_dispose_are_counted_as_lost()
    {
        var writer = new StoreWriter(_store, new StoreWriterOptions { RetryDelay = TimeSpan.FromMilliseconds(1), FinalAttempts = 2 });
        _store.LimitToCurrentSize();
        writer.Post(MakeAlert(1) with { Description = new string('x', 100_000) });
        await Assert.ThrowsAsync<StoreException>(() => writer.FlushAsync());
        await writer.DisposeAsync();
        Assert.Equal(1, writer.Lost);
        Assert.IsType<StoreException>(writer.LastError);
    }

    [Fact]
    public async Task Posting_from_many_threads_loses_nothing()
    {
        await using var writer = new StoreWriter(_store, new StoreWriterOptions { BatchSize = 100 });
        await Task.WhenAll(Enumerable.Range(0, 4).Select(t => Task.Run(() =>
        {
            for (int i = 0; i < 1000; i++)
                writer.Post(t == 0 ? MakeAlert(i) : Telemetry(t * 10_000 + i));
        })));
        await writer.FlushAsync();
        Assert.Equal(4000, _store.CountEvents(new EventQuery()));
        Assert.Equal(1000, _store.CountAlerts(new AlertQuery()));
    }
}
