using Xunit;

namespace Vmi.Updates.Tests;

/// <summary>Expired metadata of any role is refused (freeze attacks); the bundle in force stays.</summary>
public sealed class FreezeTests
{
    private static readonly TimeSpan Long = TimeSpan.FromDays(30);

    [Fact]
    public async Task A_timestamp_the_feed_stopped_re_signing_is_refused_once_the_client_clock_passes_its_expiry()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync(new Expiries { Timestamp = TimeSpan.FromHours(1), Snapshot = Long, Targets = Long });

        feed.Time.Advance(TimeSpan.FromMinutes(59));
        Assert.False((await feed.Client().UpdateAsync()).Installed);

        feed.Time.Advance(TimeSpan.FromMinutes(2));
        var e = await feed.AssertRejectedAsync(UpdateRejection.Expired, null, "expired 2026-03-01T13:00:00Z", "freeze");
        Assert.Equal("timestamp.json", e.File);
    }

    [Fact]
    public async Task A_frozen_feed_hiding_a_newer_bundle_behind_an_expired_timestamp_installs_nothing()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.Publish(new Expiries { Timestamp = TimeSpan.FromHours(1) });
        feed.Time.Advance(TimeSpan.FromHours(2));
        await feed.AssertRejectedAsync(UpdateRejection.Expired);
        Assert.Equal(1, feed.Store.Active!.Version);
        Assert.Null(feed.Store.ReadBundle(2));
    }

    [Fact]
    public async Task An_expired_snapshot_is_refused()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync(new Expiries { Timestamp = Long, Snapshot = TimeSpan.FromHours(1), Targets = Long });
        feed.Time.Advance(TimeSpan.FromHours(2));
        var e = await feed.AssertRejectedAsync(UpdateRejection.Expired, null, "expired");
        Assert.Equal("1.snapshot.json", e.File);
    }

    [Fact]
    public async Task An_expired_targets_file_is_refused()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync(new Expiries { Timestamp = Long, Snapshot = Long, Targets = TimeSpan.FromHours(1) });
        feed.Time.Advance(TimeSpan.FromHours(2));
        var e = await feed.AssertRejectedAsync(UpdateRejection.Expired, null, "expired");
        Assert.Equal("1.targets.json", e.File);
    }

    [Fact]
    public async Task An_expired_new_bundle_is_not_installed()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        // Signed with a targets expiry already in the past for the client (its clock runs ahead).
        feed.Publish(new Expiries { Targets = TimeSpan.FromMinutes(10) });
        feed.Time.Advance(TimeSpan.FromMinutes(11));
        var e = await feed.AssertRejectedAsync(UpdateRejection.Expired);
        Assert.Equal("2.targets.json", e.File);
        Assert.Null(feed.Store.ReadBundle(2));
    }

    [Fact]
    public async Task An_expired_root_with_no_newer_root_on_the_feed_is_refused()
    {
        using var feed = new TestFeed(new Expiries { Root = TimeSpan.FromHours(1) });
        await feed.InstallFirstBundleAsync(new Expiries { Timestamp = Long, Snapshot = Long, Targets = Long });
        feed.Time.Advance(TimeSpan.FromHours(2));
        var e = await feed.AssertRejectedAsync(UpdateRejection.Expired, null, "root (v1) expired");
        Assert.Equal("root.json", e.File);
    }

    [Fact]
    public async Task An_expired_trusted_root_is_fine_when_the_feed_has_a_newer_unexpired_root()
    {
        using var feed = new TestFeed(new Expiries { Root = TimeSpan.FromHours(1) });
        await feed.InstallFirstBundleAsync(new Expiries { Timestamp = Long, Snapshot = Long, Targets = Long });
        feed.Time.Advance(TimeSpan.FromMinutes(30));
        feed.RotateRoot();
        feed.Time.Advance(TimeSpan.FromHours(2));
        UpdateResult r = await feed.Client().UpdateAsync();
        Assert.Equal(2, r.RootVersion);
        Assert.False(r.Installed);
    }
}
