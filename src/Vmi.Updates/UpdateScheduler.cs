namespace Vmi.Updates;

/// <summary>When to check a feed.</summary>
public sealed record UpdateScheduleOptions
{
    /// <summary>Time between checks while they succeed.</summary>
    public TimeSpan Interval { get; init; } = TimeSpan.FromHours(1);
    /// <summary>Each wait is spread by up to this fraction either way, so many hosts do not hit the feed at once.</summary>
    public double Jitter { get; init; } = 0.1;
    /// <summary>First retry after a failed check; each further failure doubles it.</summary>
    public TimeSpan RetryMin { get; init; } = TimeSpan.FromMinutes(1);
    /// <summary>Longest wait after failures (null: <see cref="Interval"/>).</summary>
    public TimeSpan? MaxBackoff { get; init; }
    /// <summary>Check once at start before the first wait.</summary>
    public bool CheckAtStart { get; init; } = true;

    /// <exception cref="ArgumentOutOfRangeException">A non-positive interval or a jitter outside 0..0.5.</exception>
    public void Validate()
    {
        if (Interval <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(Interval), Interval, "the update interval must be positive");
        if (Jitter is < 0 or > 0.5 || double.IsNaN(Jitter))
            throw new ArgumentOutOfRangeException(nameof(Jitter), Jitter, "jitter must be between 0 and 0.5");
        if (RetryMin <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(RetryMin), RetryMin, "the first retry delay must be positive");
    }
}

/// <summary>One scheduled check: its result or its rejection, and when the next one is due.</summary>
public sealed record UpdateCheck(DateTimeOffset Time, UpdateResult? Result, UpdateRejectedException? Rejection, int ConsecutiveFailures, TimeSpan NextIn);

/// <summary>
/// Checks a feed periodically: every <see cref="UpdateScheduleOptions.Interval"/> with jitter while checks
/// succeed, and with exponential backoff (from <see cref="UpdateScheduleOptions.RetryMin"/>, capped) after
/// failures. Every check is audited by the client (success or rejection) and reported to <c>onCheck</c>.
/// </summary>
public sealed class UpdateScheduler(RuleUpdateClient client, UpdateScheduleOptions options, Action<UpdateCheck>? onCheck = null, TimeProvider? time = null, Random? random = null)
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly Random _random = random ?? Random.Shared;

    /// <summary>The wait before the next check after <paramref name="consecutiveFailures"/> failed checks (0: the last one succeeded).</summary>
    /// <param name="options">The schedule.</param>
    /// <param name="consecutiveFailures">Failed checks in a row.</param>
    /// <param name="random01">A uniform random number in [0, 1) for the jitter.</param>
    public static TimeSpan NextDelay(UpdateScheduleOptions options, int consecutiveFailures, double random01)
    {
        ArgumentNullException.ThrowIfNull(options);
        TimeSpan cap = options.MaxBackoff ?? options.Interval;
        TimeSpan baseDelay = consecutiveFailures <= 0
            ? options.Interval
            : TimeSpan.FromTicks((long)Math.Min(cap.Ticks, options.RetryMin.Ticks * Math.Pow(2, Math.Min(consecutiveFailures - 1, 40))));
        double factor = 1 + options.Jitter * (2 * random01 - 1);
        return TimeSpan.FromTicks(Math.Max(1, (long)(baseDelay.Ticks * factor)));
    }

    /// <summary>Checks until cancelled.</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        options.Validate();
        int failures = 0;
        bool first = true;
        while (!cancellationToken.IsCancellationRequested)
        {
            if (!first || !options.CheckAtStart)
            {
                TimeSpan wait = NextDelay(options, failures, _random.NextDouble());
                try
                {
                    await Task.Delay(wait, _time, cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
            first = false;
            UpdateResult? result = null;
            UpdateRejectedException? rejection = null;
            try
            {
                result = await client.UpdateAsync(cancellationToken).ConfigureAwait(false);
                failures = 0;
            }
            catch (UpdateRejectedException e)
            {
                rejection = e;
                failures++;
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            onCheck?.Invoke(new UpdateCheck(_time.GetUtcNow(), result, rejection, failures, NextDelay(options, failures, 0.5)));
        }
    }
}
