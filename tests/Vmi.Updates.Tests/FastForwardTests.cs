using Xunit;

namespace Vmi.Updates.Tests;

/// <summary>
/// Fast-forward attacks: a compromised timestamp (or snapshot) key signs a huge version, which clients accept while
/// the key is trusted. Every later honest version is then a "rollback" — until the owners rotate that key in a new
/// root, which makes clients drop the trusted timestamp and snapshot (TUF 5.3.11) and accept the honest ones again.
/// </summary>
public sealed class FastForwardTests
{
    private const long Huge = 1_000_000;

    [Fact]
    public async Task After_a_fast_forwarded_timestamp_a_root_rotation_of_the_timestamp_key_lets_the_client_recover()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        byte[] honestTimestamp = feed.Read("timestamp.json");

        // The attacker holds the timestamp key: timestamp v1000000, naming the real snapshot. It verifies, so it is trusted.
        feed.Write("timestamp.json", feed.SignTimestamp(Huge, 1, feed.Read("1.snapshot.json"), feed.TimestampKeys));
        UpdateResult attacked = await feed.Client().UpdateAsync();
        Assert.False(attacked.Installed);
        Assert.Equal(Huge, MetadataFormat.Parse<TimestampMetadata>(feed.Store.ReadTrusted(Role.Timestamp)!, "t").Signed.Version);

        // The owners restore their feed, rotate the timestamp key in root v2 and publish normally (timestamp v2).
        feed.Write("timestamp.json", honestTimestamp);
        feed.TimestampKeys = [feed.NewKey()];
        feed.RotateRoot();
        feed.Publish();
        Assert.Equal(2, feed.Timestamp.Signed.Version);

        UpdateResult r = await feed.Client().UpdateAsync();
        Assert.True(r.Installed, r.Message);
        Assert.Equal(2, r.RootVersion);
        Assert.Equal(2, feed.Store.Active!.Version);
        TestFeed.AssertFiles(feed.Store.Active!, TestFeed.DefaultFiles(2));
        Assert.Equal(feed.Read("timestamp.json"), feed.Store.ReadTrusted(Role.Timestamp));
    }

    [Fact]
    public async Task After_a_fast_forwarded_timestamp_without_a_key_rotation_the_honest_timestamp_is_a_rollback()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        byte[] honestTimestamp = feed.Read("timestamp.json");
        feed.Write("timestamp.json", feed.SignTimestamp(Huge, 1, feed.Read("1.snapshot.json"), feed.TimestampKeys));
        Assert.False((await feed.Client().UpdateAsync()).Installed);

        feed.Write("timestamp.json", honestTimestamp);
        feed.Publish();
        var e = await feed.AssertRejectedAsync(UpdateRejection.Rollback, null, $"version 2 is older than the trusted version {Huge}");
        Assert.Equal("timestamp.json", e.File);
        Assert.Null(feed.Store.ReadBundle(2));
    }

    [Fact]
    public async Task A_root_rotation_of_other_roles_keys_does_not_drop_the_trusted_timestamp()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        byte[] honestTimestamp = feed.Read("timestamp.json");
        feed.Write("timestamp.json", feed.SignTimestamp(Huge, 1, feed.Read("1.snapshot.json"), feed.TimestampKeys));
        Assert.False((await feed.Client().UpdateAsync()).Installed);

        // Only the root and targets keys change: the timestamp floor stays, so the honest small version is still refused.
        feed.Write("timestamp.json", honestTimestamp);
        feed.TargetsKeys = [feed.NewKey()];
        feed.RotateRoot([feed.NewKey()]);
        feed.Publish();
        await feed.AssertRejectedAsync(UpdateRejection.Rollback);
        Assert.Equal(feed.Read("2.root.json"), feed.Store.ReadTrusted(Role.Root));
    }

    [Fact]
    public async Task After_a_fast_forwarded_snapshot_a_rotation_of_the_snapshot_and_timestamp_keys_lets_the_client_recover()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        byte[] honestTimestamp = feed.Read("timestamp.json");

        // Both keys compromised: snapshot v1000000 (naming the real targets 1) under timestamp v1000000.
        byte[] snap = feed.SignSnapshot(Huge, 1, feed.Read("1.targets.json"), feed.SnapshotKeys);
        feed.Write($"{Huge}.snapshot.json", snap);
        feed.Write("timestamp.json", feed.SignTimestamp(Huge, Huge, snap, feed.TimestampKeys));
        Assert.False((await feed.Client().UpdateAsync()).Installed);
        Assert.Equal(Huge, MetadataFormat.Parse<SnapshotMetadata>(feed.Store.ReadTrusted(Role.Snapshot)!, "s").Signed.Version);

        feed.Write("timestamp.json", honestTimestamp);
        File.Delete(Path.Combine(feed.FeedDir, $"{Huge}.snapshot.json"));
        feed.SnapshotKeys = [feed.NewKey()];
        feed.TimestampKeys = [feed.NewKey()];
        feed.RotateRoot();
        feed.Publish();
        UpdateResult r = await feed.Client().UpdateAsync();
        Assert.True(r.Installed, r.Message);
        Assert.Equal(2, feed.Store.Active!.Version);
        Assert.Equal(2, MetadataFormat.Parse<SnapshotMetadata>(feed.Store.ReadTrusted(Role.Snapshot)!, "s").Signed.Version);
    }
}
