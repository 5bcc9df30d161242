using Xunit;

namespace Vmi.Updates.Tests;

public sealed class UpdateSchedulerTests
{
    private static readonly UpdateScheduleOptions Hourly = new()
    {
        Interval = TimeSpan.FromHours(1), Jitter = 0.1, RetryMin = TimeSpan.FromMinutes(1),
    };

    [Theory]
    [InlineData(0.0, 54)]
    [InlineData(0.5, 60)]
    [InlineData(0.999999, 66)]
    public void After_a_success_the_wait_is_the_interval_spread_by_the_jitter(double random, double minutes) =>
        Assert.Equal(minutes, UpdateScheduler.NextDelay(Hourly, 0, random).TotalMinutes, 2);

    [Fact]
    public void Failures_back_off_exponentially_from_the_first_retry_up_to_the_cap()
    {
        double[] waits = [.. Enumerable.Range(1, 9).Select(n => UpdateScheduler.NextDelay(Hourly, n, 0.5).TotalMinutes)];
        Assert.Equal([1, 2, 4, 8, 16, 32, 60, 60, 60], waits);
        // A huge failure count does not overflow.
        Assert.Equal(60, UpdateScheduler.NextDelay(Hourly, int.MaxValue, 0.5).TotalMinutes, 6);
        // With an explicit cap.
        Assert.Equal(10, UpdateScheduler.NextDelay(Hourly with { MaxBackoff = TimeSpan.FromMinutes(10) }, 7, 0.5).TotalMinutes, 6);
    }

    [Fact]
    public void Jitter_spreads_the_waits_of_many_hosts()
    {
        var random = new Random(7);
        var waits = Enumerable.Range(0, 1000).Select(_ => UpdateScheduler.NextDelay(Hourly, 0, random.NextDouble()).TotalMinutes).ToList();
        Assert.All(waits, w => Assert.InRange(w, 54, 66));
        Assert.True(waits.Max() - waits.Min() > 10, "the waits are spread over most of the ±10 % band");
    }

    [Theory]
    [InlineData(0, 0.1)]
    [InlineData(-1, 0.1)]
    [InlineData(60, 0.9)]
    [InlineData(60, double.NaN)]
    public void A_bad_schedule_is_refused(int intervalSeconds, double jitter) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => (Hourly with { Interval = TimeSpan.FromSeconds(intervalSeconds), Jitter = jitter }).Validate());

    [Fact]
    public async Task A_schedule_retries_a_missing_feed_with_backoff_then_installs_and_audits_every_check()
    {
        using var feed = new TestFeed();
        feed.InitializeClient();
        // The feed is published only after a few failed checks (the server "comes back").
        string served = feed.FeedDir + "-served";
        var client = feed.Client(fetcher: new FolderFeedFetcher(served));
        var checks = new List<UpdateCheck>();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var options = new UpdateScheduleOptions { Interval = TimeSpan.FromMilliseconds(200), RetryMin = TimeSpan.FromMilliseconds(10), Jitter = 0.2 };
        var scheduler = new UpdateScheduler(client, options, c =>
        {
            lock (checks)
            {
                checks.Add(c);
                if (checks.Count(x => x.Rejection is not null) == 3 && !Directory.Exists(served))
                {
                    feed.Publish();
                    CopyDirectory(feed.FeedDir, served);
                }
                if (c.Result is { Installed: true })
                    cts.Cancel();
            }
        });
        await scheduler.RunAsync(cts.Token);

        UpdateCheck[] seen;
        lock (checks)
            seen = [.. checks];
        Assert.True(seen.Length >= 4, $"{seen.Length} checks");
        // The failures counted up and the announced waits grew.
        var failures = seen.TakeWhile(c => c.Rejection is not null).ToList();
        Assert.Equal([1, 2, 3], failures.Select(c => c.ConsecutiveFailures).Take(3));
        Assert.All(failures, f => Assert.Equal(UpdateRejection.Unavailable, f.Rejection!.Kind));
        Assert.True(failures[1].NextIn > failures[0].NextIn && failures[2].NextIn > failures[1].NextIn);
        // Then the install, which resets the failure count.
        UpdateCheck installed = seen[^1];
        Assert.NotNull(installed.Result);
        Assert.True(installed.Result!.Installed);
        Assert.Equal(0, installed.ConsecutiveFailures);
        Assert.Equal(1, feed.Store.Active!.Version);
        // Every check, rejected or not, is one audit record, in order.
        var audit = feed.Store.ReadAudit(100);
        Assert.Equal(seen.Select(c => c.Rejection is null ? "installed" : "rejected"), audit.Select(a => a.Outcome));
        Assert.All(audit.Where(a => a.Outcome == "rejected"), a => Assert.Equal("unavailable", a.Rejection));
    }

    [Fact]
    public async Task Cancelling_the_schedule_ends_it_promptly_while_it_waits()
    {
        using var feed = new TestFeed();
        feed.InitializeClient();
        feed.Publish();
        int count = 0;
        using var cts = new CancellationTokenSource();
        var scheduler = new UpdateScheduler(feed.Client(), new UpdateScheduleOptions { Interval = TimeSpan.FromHours(1) }, _ =>
        {
            Interlocked.Increment(ref count);
            cts.CancelAfter(TimeSpan.FromMilliseconds(50));
        });
        Task run = scheduler.RunAsync(cts.Token);
        Assert.Same(run, await Task.WhenAny(run, Task.Delay(TimeSpan.FromSeconds(30))));
        await run;
        Assert.Equal(1, count);
        Assert.Equal(1, feed.Store.Active!.Version);
    }

    private static void CopyDirectory(string from, string to)
    {
        foreach (string dir in Directory.EnumerateDirectories(from, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(dir.Replace(from, to, StringComparison.Ordinal));
        Directory.CreateDirectory(to);
        foreach (string file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
            File.Copy(file, file.Replace(from, to, StringComparison.Ordinal));
    }
}
