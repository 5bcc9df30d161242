using System.Text.Json.Nodes;
using Xunit;

namespace Vmi.Updates.Tests;

/// <summary>Signatures: only the role's keys count, each once, up to the threshold, over the exact signed content.</summary>
public sealed class SignatureTests
{
    [Fact]
    public async Task A_timestamp_signed_by_a_key_the_root_does_not_trust_is_refused_as_untrusted_key()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.Write("timestamp.json", feed.SignTimestamp(2, 1, feed.Read("1.snapshot.json"), [feed.NewKey()]));
        var e = await feed.AssertRejectedAsync(UpdateRejection.UntrustedKey, null, "signed by the wrong key", "does not trust for timestamp");
        Assert.Equal("timestamp.json", e.File);
        Assert.Equal("untrusted-key", e.KindName);
    }

    [Fact]
    public async Task A_timestamp_signed_by_a_key_of_another_role_is_refused_as_untrusted_key()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.Write("timestamp.json", feed.SignTimestamp(2, 1, feed.Read("1.snapshot.json"), feed.SnapshotKeys));
        await feed.AssertRejectedAsync(UpdateRejection.UntrustedKey);
    }

    [Fact]
    public async Task A_snapshot_signed_by_the_wrong_key_is_refused_as_untrusted_key()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        byte[] snap = feed.SignSnapshot(2, 1, feed.Read("1.targets.json"), [feed.NewKey()]);
        feed.Write("2.snapshot.json", snap);
        feed.Write("timestamp.json", feed.SignTimestamp(2, 2, snap, feed.TimestampKeys));
        var e = await feed.AssertRejectedAsync(UpdateRejection.UntrustedKey);
        Assert.Equal("2.snapshot.json", e.File);
    }

    [Fact]
    public async Task Targets_signed_by_the_wrong_key_are_refused_as_untrusted_key_and_not_installed()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        TargetsMetadata next = feed.Publish();
        feed.ServeTargets(MetadataFormat.Sign(next, [feed.NewKey()]), next.Version);
        var e = await feed.AssertRejectedAsync(UpdateRejection.UntrustedKey, null, "does not trust for targets");
        Assert.Equal("2.targets.json", e.File);
        Assert.Null(feed.Store.ReadBundle(2));
    }

    [Fact]
    public async Task One_signature_where_the_role_needs_two_is_refused_as_threshold_not_met()
    {
        using var feed = new TestFeed(timestampKeyCount: 2, timestampThreshold: 2);
        await feed.InstallFirstBundleAsync();
        feed.Write("timestamp.json", feed.SignTimestamp(2, 1, feed.Read("1.snapshot.json"), [feed.TimestampKeys[0]]));
        var e = await feed.AssertRejectedAsync(UpdateRejection.ThresholdNotMet, null, "1 valid signature from the timestamp role's keys, 2 required");
        Assert.Equal("threshold-not-met", e.KindName);

        // Both keys: accepted.
        feed.Write("timestamp.json", feed.SignTimestamp(3, 1, feed.Read("1.snapshot.json"), feed.TimestampKeys));
        Assert.False((await feed.Client().UpdateAsync()).Installed);
    }

    [Fact]
    public async Task The_same_key_signing_twice_counts_once_toward_the_threshold()
    {
        using var feed = new TestFeed(timestampKeyCount: 2, timestampThreshold: 2);
        await feed.InstallFirstBundleAsync();
        JsonObject file = Json(feed.SignTimestamp(2, 1, feed.Read("1.snapshot.json"), [feed.TimestampKeys[0]]));
        var sigs = (JsonArray)file["signatures"]!;
        sigs.Add(sigs[0]!.DeepClone());
        Assert.Equal(2, sigs.Count);
        feed.Write("timestamp.json", CanonicalJson.Encode(file));
        await feed.AssertRejectedAsync(UpdateRejection.ThresholdNotMet);
    }

    [Fact]
    public async Task A_signed_body_changed_after_signing_is_refused_as_invalid_signature()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.Publish(); // timestamp 2, but the client does not see it

        // Raise the version of timestamp 2 by hand, keeping its signature.
        JsonObject file = Json(feed.Read("timestamp.json"));
        file["signed"]!["version"] = 3;
        feed.Write("timestamp.json", CanonicalJson.Encode(file));
        var e = await feed.AssertRejectedAsync(UpdateRejection.InvalidSignature, null, "changed after signing", "do not verify");
        Assert.Equal("invalid-signature", e.KindName);
        Assert.Null(feed.Store.ReadBundle(2));
    }

    [Fact]
    public async Task A_targets_file_with_an_added_rule_file_and_the_original_signature_is_refused_as_invalid_signature()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        TargetsMetadata next = feed.Publish();
        JsonObject file = Json(feed.Read("2.targets.json"));
        byte[] evil = "rule evil { condition: true }\n"u8.ToArray();
        var hashes = MetadataFormat.HashesOf(evil);
        file["signed"]!["targets"]!["evil.yar"] = new JsonObject
        {
            ["length"] = evil.Length,
            ["hashes"] = new JsonObject { ["sha256"] = hashes["sha256"] },
            ["custom"] = new JsonObject { ["kind"] = "yara" },
        };
        feed.Write($"targets/{hashes["sha256"]}.evil.yar", evil);
        feed.ServeTargets(CanonicalJson.Encode(file), next.Version);
        await feed.AssertRejectedAsync(UpdateRejection.InvalidSignature);
    }

    [Fact]
    public async Task A_signature_of_the_right_key_copied_from_another_file_is_refused_as_invalid_signature()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        byte[] old = feed.Read("timestamp.json");
        feed.Publish();
        JsonObject file = Json(feed.Read("timestamp.json"));
        file["signatures"] = Json(old)["signatures"]!.DeepClone();
        feed.Write("timestamp.json", CanonicalJson.Encode(file));
        await feed.AssertRejectedAsync(UpdateRejection.InvalidSignature);
    }

    [Fact]
    public async Task A_signature_of_the_wrong_length_is_refused_as_invalid_signature()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.Publish();
        JsonObject file = Json(feed.Read("timestamp.json"));
        file["signatures"]![0]!["sig"] = "abcd";
        feed.Write("timestamp.json", CanonicalJson.Encode(file));
        await feed.AssertRejectedAsync(UpdateRejection.InvalidSignature);
    }

    [Fact]
    public async Task Metadata_without_signatures_is_refused_as_threshold_not_met()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.Write("timestamp.json", feed.SignTimestamp(2, 1, feed.Read("1.snapshot.json"), []));
        await feed.AssertRejectedAsync(UpdateRejection.ThresholdNotMet, null, "0 valid signatures");
    }

    [Fact]
    public async Task Extra_signatures_from_unknown_keys_do_not_stop_a_file_that_meets_its_threshold()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.Publish();
        JsonObject file = Json(feed.Read("timestamp.json"));
        var stranger = Json(feed.SignTimestamp(9, 1, feed.Read("1.snapshot.json"), [feed.NewKey()]))["signatures"]![0]!.DeepClone();
        ((JsonArray)file["signatures"]!).Insert(0, stranger);
        feed.Write("timestamp.json", CanonicalJson.Encode(file));
        UpdateResult r = await feed.Client().UpdateAsync();
        Assert.True(r.Installed, r.Message);
    }

    [Fact]
    public void Verify_reports_the_keys_that_signed_validly()
    {
        using var feed = new TestFeed(timestampKeyCount: 3, timestampThreshold: 2);
        RootMetadata root = feed.Publisher.LatestRoot();
        byte[] bytes = feed.SignTimestamp(1, 1, [1], [feed.TimestampKeys[0], feed.TimestampKeys[2]]);
        var ts = MetadataFormat.Parse<TimestampMetadata>(bytes, "timestamp.json");
        Assert.Equal(new[] { feed.TimestampKeys[0].KeyId, feed.TimestampKeys[2].KeyId }.Order(StringComparer.Ordinal), ts.Verify(root, Role.Timestamp, "timestamp.json").Order(StringComparer.Ordinal));
        var e = Assert.Throws<UpdateRejectedException>(() => ts.Verify(root, Role.Snapshot, "as snapshot"));
        Assert.Equal(UpdateRejection.UntrustedKey, e.Kind);
    }

    private static JsonObject Json(byte[] bytes) => JsonNode.Parse(bytes)!.AsObject();
}
