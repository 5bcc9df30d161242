using Xunit;

namespace Vmi.Updates.Tests;

/// <summary>Replayed or older metadata of every role is refused as a rollback; the bundle in force stays.</summary>
public sealed class RollbackTests
{
    [Fact]
    public async Task An_older_timestamp_served_after_a_newer_one_was_seen_is_a_timestamp_rollback()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        byte[] oldTimestamp = feed.Read("timestamp.json");
        feed.Publish();
        Assert.True((await feed.Client().UpdateAsync()).Installed);

        feed.Write("timestamp.json", oldTimestamp);
        var e = await feed.AssertRejectedAsync(UpdateRejection.Rollback, null, "version 1 is older than the trusted version 2");
        Assert.Equal("timestamp.json", e.File);
        Assert.Equal("rollback", e.KindName);
        Assert.Equal(2, feed.Store.Active!.Version);
    }

    [Fact]
    public async Task A_newer_validly_signed_timestamp_naming_an_older_snapshot_is_a_snapshot_rollback()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.Publish();
        Assert.True((await feed.Client().UpdateAsync()).Installed);
        Assert.Equal(2, feed.Timestamp.Signed.Snapshot.Version);

        // The timestamp key signs a higher timestamp version that points back at snapshot 1 (still on the feed).
        feed.Write("timestamp.json", feed.SignTimestamp(3, 1, feed.Read("1.snapshot.json"), feed.TimestampKeys));
        var e = await feed.AssertRejectedAsync(UpdateRejection.Rollback, null, "snapshot version 1, older than the trusted 2");
        Assert.Equal("timestamp.json", e.File);
        Assert.Equal(2, feed.Store.Active!.Version);
    }

    [Fact]
    public async Task A_newer_validly_signed_snapshot_naming_an_older_targets_version_is_a_targets_rollback()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.Publish();
        Assert.True((await feed.Client().UpdateAsync()).Installed);

        // Snapshot 3 (signed by the snapshot key) names targets 1; timestamp 3 (timestamp key) names that snapshot.
        feed.ServeTargets(feed.Read("1.targets.json"), 1);
        Assert.Equal(3, feed.Timestamp.Signed.Version);
        var e = await feed.AssertRejectedAsync(UpdateRejection.Rollback, null, "targets version 1, older than the trusted 2");
        Assert.Equal("3.snapshot.json", e.File);
        Assert.Equal(2, feed.Store.Active!.Version);
    }

    [Fact]
    public async Task Targets_older_than_the_bundle_in_force_are_refused_even_when_a_key_rotation_dropped_all_trusted_metadata()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.Publish();
        Assert.True((await feed.Client().UpdateAsync()).Installed);

        // A root rotation of the targets, snapshot and timestamp keys makes every trusted file but the root
        // unusable as a floor (5.3.11; old targets no longer verify). The new keys then sign targets version 1
        // again: only the bundle in force (2) is left to refuse going back, and it does.
        feed.TargetsKeys = [feed.NewKey()];
        feed.SnapshotKeys = [feed.NewKey()];
        feed.TimestampKeys = [feed.NewKey()];
        feed.RotateRoot();
        feed.ServeTargets(MetadataFormat.Sign(feed.Targets(1).Signed, feed.TargetsKeys), 1);
        var e = await feed.AssertRejectedAsync(UpdateRejection.Rollback, null, "older than bundle 2 in force");
        Assert.Equal("1.targets.json", e.File);
    }

    [Fact]
    public async Task The_old_root_served_as_the_next_root_version_is_a_rollback()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.RotateRoot([feed.NewKey()]);
        Assert.Equal(2, (await feed.Client().UpdateAsync()).RootVersion);

        // The feed (or a mirror) serves root v1's bytes as 3.root.json: still signed by the v1 keys, but an old root.
        feed.Write("3.root.json", feed.Read("1.root.json"));
        var e = await feed.AssertRejectedAsync(UpdateRejection.Rollback, null, "root version 1, not 3", "old root replayed");
        Assert.Equal("3.root.json", e.File);
        Assert.Equal(feed.Read("2.root.json"), feed.Store.ReadTrusted(Role.Root));
    }

    [Fact]
    public async Task Initialize_with_an_old_root_on_a_state_that_trusts_a_newer_one_is_a_rollback()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.RotateRoot([feed.NewKey()]);
        Assert.Equal(2, (await feed.Client().UpdateAsync()).RootVersion);

        var e = Assert.Throws<UpdateRejectedException>(() => feed.Client().Initialize(feed.Read("1.root.json"), "1.root.json"));
        Assert.Equal(UpdateRejection.Rollback, e.Kind);
        Assert.Contains("already trusts root v2", e.Message, StringComparison.Ordinal);
        UpdateAuditRecord audit = feed.Store.ReadAudit(1).Single();
        Assert.Equal("rejected", audit.Outcome);
        Assert.Equal("rollback", audit.Rejection);
        Assert.Equal(feed.Read("2.root.json"), feed.Store.ReadTrusted(Role.Root));
        Assert.Equal(1, feed.Store.Active!.Version);

        // The state still updates normally afterwards.
        feed.Publish();
        UpdateResult r = await feed.Client().UpdateAsync();
        Assert.True(r.Installed, r.Message);
        Assert.Equal(2, r.RootVersion);
    }
}
