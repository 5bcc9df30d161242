using System.Text;
using Xunit;

namespace Vmi.Updates.Tests;

/// <summary>Rule files must be exactly what the signed targets list; a signed bundle must also pass validation.</summary>
public sealed class TargetFileTests
{
    [Fact]
    public async Task A_rule_file_changed_on_the_feed_is_refused_as_target_mismatch()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        TargetsMetadata next = feed.Publish();
        TargetFileInfo eicar = next.Targets.Single(t => t.Name == "eicar.yar");
        byte[] bytes = feed.Read(eicar.FeedPath);
        bytes[10] ^= 0x20; // same length, one bit flipped
        feed.Write(eicar.FeedPath, bytes);
        var e = await feed.AssertRejectedAsync(UpdateRejection.TargetMismatch, null, "tampered");
        Assert.Equal(eicar.FeedPath, e.File);
        Assert.Equal("target-mismatch", e.KindName);
        Assert.Null(feed.Store.ReadBundle(2));
    }

    [Fact]
    public async Task A_rule_file_served_shorter_than_listed_is_refused_as_target_mismatch()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        TargetFileInfo t = feed.Publish().Targets[0];
        feed.Write(t.FeedPath, feed.Read(t.FeedPath)[..^1]);
        await feed.AssertRejectedAsync(UpdateRejection.TargetMismatch);
    }

    [Fact]
    public async Task A_rule_file_served_longer_than_listed_is_not_read_past_its_length()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        TargetFileInfo t = feed.Publish().Targets[0];
        feed.Write(t.FeedPath, [.. feed.Read(t.FeedPath), .. "rule appended { condition: true }\n"u8]);
        var e = await feed.AssertRejectedAsync(UpdateRejection.TooLarge, null, $"more than the {t.Length} allowed");
        Assert.Equal(t.FeedPath, e.File);
    }

    [Fact]
    public async Task A_signed_length_that_is_wrong_for_the_file_refuses_the_bundle()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        TargetsMetadata next = feed.Publish();

        // The targets key lists eicar.yar one byte shorter than it is (the hashes are right): the file is too long.
        TargetsMetadata shorter = next with { Targets = [.. next.Targets.Select(t => t.Name == "eicar.yar" ? t with { Length = t.Length - 1 } : t)] };
        feed.ServeTargets(MetadataFormat.Sign(shorter, feed.TargetsKeys), next.Version);
        await feed.AssertRejectedAsync(UpdateRejection.TooLarge);

        // One byte longer: the file ends early.
        TargetsMetadata longer = next with { Targets = [.. next.Targets.Select(t => t.Name == "eicar.yar" ? t with { Length = t.Length + 1 } : t)] };
        feed.ServeTargets(MetadataFormat.Sign(longer, feed.TargetsKeys), next.Version);
        await feed.AssertRejectedAsync(UpdateRejection.TargetMismatch, null, "listed");
    }

    [Fact]
    public async Task A_rule_file_the_targets_list_but_the_feed_lacks_is_unavailable()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        TargetFileInfo t = feed.Publish().Targets[0];
        File.Delete(Path.Combine(feed.FeedDir, t.FeedPath));
        var e = await feed.AssertRejectedAsync(UpdateRejection.Unavailable);
        Assert.Equal(t.FeedPath, e.File);
    }

    [Fact]
    public async Task A_signed_bundle_that_fails_validation_is_refused_as_invalid_bundle_and_a_fixed_one_installs()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.Publish(files: [("broken.yar", "rule broken { condition: }\n"), ("c2.rules", "alert ip any any -> any any (sid:1;)\n")]);

        var seen = new List<(string Name, string Kind, string Text)>();
        var options = new UpdateClientOptions
        {
            Time = feed.Time,
            Validate = files =>
            {
                seen.Clear();
                seen.AddRange(files.Select(f => (f.Name, f.Kind, File.ReadAllText(f.Path))));
                return files.FirstOrDefault(f => File.ReadAllText(f.Path).Contains("condition: }", StringComparison.Ordinal)) is { } bad
                    ? $"{bad.Name}: syntax error, unexpected '}}'"
                    : null;
            },
        };
        var e = await feed.AssertRejectedAsync(UpdateRejection.InvalidBundle, feed.Client(options), "rules do not compile", "broken.yar: syntax error");
        Assert.Equal("invalid-bundle", e.KindName);
        Assert.Equal([("broken.yar", "yara", "rule broken { condition: }\n"), ("c2.rules", "network", "alert ip any any -> any any (sid:1;)\n")], seen.OrderBy(s => s.Name, StringComparer.Ordinal));
        Assert.Null(feed.Store.ReadBundle(2));

        // Checked again (and refused again) on the next run, not remembered as installed.
        await feed.AssertRejectedAsync(UpdateRejection.InvalidBundle, feed.Client(options));

        feed.Publish(files: [("fixed.yar", "rule fixed { condition: true }\n")]);
        UpdateResult r = await feed.Client(options).UpdateAsync();
        Assert.True(r.Installed, r.Message);
        Assert.Equal(3, r.Active!.Version);
    }

    [Fact]
    public async Task Limits_on_one_rule_file_and_on_the_whole_bundle_are_enforced_before_downloading()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        TargetsMetadata next = feed.Publish();
        long biggest = next.Targets.Max(t => t.Length);
        var e = await feed.AssertRejectedAsync(UpdateRejection.TooLarge,
            feed.Client(new UpdateClientOptions { Time = feed.Time, MaxTargetFileBytes = biggest - 1 }), "allowed for one rule file");
        Assert.Contains(".yar", e.File, StringComparison.Ordinal);

        long total = next.Targets.Sum(t => t.Length);
        await feed.AssertRejectedAsync(UpdateRejection.TooLarge,
            feed.Client(new UpdateClientOptions { Time = feed.Time, MaxBundleBytes = total - 1 }), $"lists {total} bytes");
    }

    [Fact]
    public async Task Two_target_names_with_the_same_content_are_both_installed()
    {
        using var feed = new TestFeed();
        feed.InitializeClient();
        const string text = "rule same { condition: true }\n";
        feed.Publish(files: [("a.yar", text), ("b.yar", text)]);
        UpdateResult r = await feed.Client().UpdateAsync();
        Assert.True(r.Installed);
        Assert.All(r.Active!.Files, f => Assert.Equal(Encoding.UTF8.GetBytes(text), File.ReadAllBytes(f.Path)));
    }

    [Fact]
    public async Task A_rule_file_named_like_the_bundle_manifest_is_refused_by_publisher_and_client()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        string rule = Path.Combine(feed.SourceDir, "manifest.yar");
        File.WriteAllText(rule, "rule m { condition: true }\n");
        var publisherError = Assert.Throws<UpdateRejectedException>(() =>
            feed.Publisher.Publish([new RuleFileInput(rule, "bundle.json", "yara")], feed.TargetsKeys, feed.SnapshotKeys, feed.TimestampKeys));
        Assert.Equal(UpdateRejection.LocalState, publisherError.Kind);

        // Signed by hand: installing it would overwrite the store's own bundle.json with the rule (or the reverse).
        TargetsMetadata next = feed.Publish();
        byte[] text = File.ReadAllBytes(rule);
        TargetsMetadata clash = next with { Targets = [.. next.Targets, new TargetFileInfo("bundle.json", "yara", text.Length, MetadataFormat.HashesOf(text))] };
        feed.Write(clash.Targets[^1].FeedPath, text);
        feed.ServeTargets(MetadataFormat.Sign(clash, feed.TargetsKeys), next.Version);
        await feed.AssertRejectedAsync(UpdateRejection.Malformed, null, "bundle.json");
    }
}
