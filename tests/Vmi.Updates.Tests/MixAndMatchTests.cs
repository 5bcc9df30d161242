using Xunit;

namespace Vmi.Updates.Tests;

/// <summary>Metadata files of different versions mixed together are refused: each must be the one its parent lists.</summary>
public sealed class MixAndMatchTests
{
    [Fact]
    public async Task Another_snapshot_version_served_under_the_name_the_timestamp_gives_is_a_mismatch()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.Publish();
        // Validly signed by the snapshot key, but it is version 1: its length and hashes are not what timestamp 2 lists.
        feed.Write("2.snapshot.json", feed.Read("1.snapshot.json"));
        var e = await feed.AssertRejectedAsync(UpdateRejection.Mismatch, null, "not what timestamp v2 lists");
        Assert.Equal("2.snapshot.json", e.File);
        Assert.Null(feed.Store.ReadBundle(2));
    }

    [Fact]
    public async Task Another_targets_version_served_under_the_name_the_snapshot_gives_is_a_mismatch()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.Publish();
        feed.Write("2.targets.json", feed.Read("1.targets.json"));
        var e = await feed.AssertRejectedAsync(UpdateRejection.Mismatch, null, "not what snapshot v2 lists");
        Assert.Equal("2.targets.json", e.File);
        Assert.Null(feed.Store.ReadBundle(2));
    }

    [Fact]
    public async Task A_snapshot_whose_signed_version_differs_from_the_one_the_timestamp_names_is_a_mismatch()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.Publish();
        // The timestamp key names snapshot "3", but the file (listed with its true hash) says version 2.
        byte[] snap2 = feed.Read("2.snapshot.json");
        feed.Write("3.snapshot.json", snap2);
        feed.Write("timestamp.json", feed.SignTimestamp(3, 3, snap2, feed.TimestampKeys));
        var e = await feed.AssertRejectedAsync(UpdateRejection.Mismatch, null, "snapshot version 2", "names version 3");
        Assert.Equal("3.snapshot.json", e.File);
    }

    [Fact]
    public async Task A_targets_file_whose_signed_version_differs_from_the_one_the_snapshot_names_is_a_mismatch()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.Publish();
        feed.ServeTargets(feed.Read("2.targets.json"), 5);
        var e = await feed.AssertRejectedAsync(UpdateRejection.Mismatch, null, "targets version 2", "names version 5");
        Assert.Equal("5.targets.json", e.File);
    }

    [Fact]
    public async Task A_root_file_holding_a_later_version_than_its_name_is_a_mismatch()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.RotateRoot();
        feed.RotateRoot();
        // Skipping a version: 3.root.json served as 2.root.json (it is signed by the same keys, but it is not v2).
        feed.Write("2.root.json", feed.Read("3.root.json"));
        var e = await feed.AssertRejectedAsync(UpdateRejection.Mismatch, null, "root version 3, not 2");
        Assert.Equal("2.root.json", e.File);
        Assert.Equal(feed.Read("1.root.json"), feed.Store.ReadTrusted(Role.Root));
    }

    [Fact]
    public async Task A_timestamp_listing_a_snapshot_the_feed_does_not_have_is_unavailable()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.Write("timestamp.json", feed.SignTimestamp(2, 9, [1, 2, 3], feed.TimestampKeys));
        var e = await feed.AssertRejectedAsync(UpdateRejection.Unavailable, null, "does not have it");
        Assert.Equal("9.snapshot.json", e.File);
    }
}
