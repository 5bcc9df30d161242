namespace Vmi.Updates.Tests;

/// <summary>A clock the test sets: publisher and client read it, so expiry is tested without waiting.</summary>
internal sealed class FakeTime(DateTimeOffset start) : TimeProvider
{
    public static readonly DateTimeOffset Start = new(2026, 3, 1, 12, 0, 0, TimeSpan.Zero);

    public FakeTime() : this(Start) { }

    public DateTimeOffset UtcNow { get; set; } = start;

    public override DateTimeOffset GetUtcNow() => UtcNow;

    public void Advance(TimeSpan by) => UtcNow += by;
}
