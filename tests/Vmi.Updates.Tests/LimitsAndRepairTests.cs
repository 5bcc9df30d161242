using Xunit;

namespace Vmi.Updates.Tests;

public sealed class LimitsAndRepairTests
{
    [Fact]
    public async Task A_stolen_timestamp_key_cannot_make_the_client_download_a_huge_snapshot()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.Publish();
        // The online timestamp key signs a timestamp listing a 5 GB snapshot (with the real snapshot's hash).
        TimestampMetadata ts = feed.Timestamp.Signed;
        var forged = ts with { Version = ts.Version + 1, Snapshot = ts.Snapshot with { Length = 5_000_000_000 } };
        feed.Write("timestamp.json", MetadataFormat.Sign(forged, feed.TimestampKeys));
        await feed.AssertRejectedAsync(UpdateRejection.TooLarge, null, "5000000000 bytes");
    }

    [Fact]
    public async Task A_stolen_snapshot_key_cannot_make_the_client_download_huge_targets_metadata()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        TargetsMetadata next = feed.Publish();
        byte[] targetsBytes = feed.Read($"{next.Version}.targets.json");
        TimestampMetadata ts = feed.Timestamp.Signed;
        long snapVersion = ts.Snapshot.Version + 1;
        byte[] snapshot = MetadataFormat.Sign(new SnapshotMetadata
        {
            Version = snapVersion, Expires = feed.Later(TimeSpan.FromDays(7)),
            Targets = new MetaFileInfo(next.Version, 1L << 40, MetadataFormat.HashesOf(targetsBytes)),
        }, feed.SnapshotKeys);
        feed.Write($"{snapVersion}.snapshot.json", snapshot);
        feed.Write("timestamp.json", feed.SignTimestamp(ts.Version + 1, snapVersion, snapshot, feed.TimestampKeys));
        await feed.AssertRejectedAsync(UpdateRejection.TooLarge, null, "the snapshot lists");
    }

    [Fact]
    public async Task Publishing_again_repairs_a_damaged_rule_file_in_the_feed()
    {
        using var feed = new TestFeed();
        TargetsMetadata first = feed.Publish();
        string path = Path.Combine(feed.FeedDir, first.Targets[0].FeedPath);
        byte[] good = File.ReadAllBytes(path);
        File.WriteAllBytes(path, [.. good.Take(good.Length - 1), (byte)(good[^1] ^ 1)]);
        feed.InitializeClient();
        await feed.AssertRejectedAsync(UpdateRejection.TargetMismatch);
        // The owner publishes the same files again: the damaged copy (same content address) is rewritten.
        TargetsMetadata second = feed.Publish(files: TestFeed.DefaultFiles(1));
        Assert.Equal(good, File.ReadAllBytes(path));
        InstalledBundle installed = (await feed.Client().UpdateAsync()).Active!;
        Assert.Equal(second.Version, installed.Version);
    }
}
