using System.Text.Json.Nodes;
using Xunit;

namespace Vmi.Updates.Tests;

/// <summary>Root rotations: each new root must be signed by a threshold of the old root keys and of its own.</summary>
public sealed class RootRotationTests
{
    [Fact]
    public async Task Two_root_rotations_and_a_new_targets_key_are_followed_in_one_update_and_the_new_bundle_installs()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        List<SigningKey> rootV1 = feed.RootKeys;
        List<SigningKey> targetsV1 = feed.TargetsKeys;

        // v2: new root key and new targets key (signed by the v1 and v2 root keys); v3: another root key.
        feed.TargetsKeys = [feed.NewKey()];
        RootMetadata v2 = feed.RotateRoot([feed.NewKey()]);
        List<SigningKey> rootV2 = feed.RootKeys;
        RootMetadata v3 = feed.RotateRoot([feed.NewKey()]);
        Assert.Equal(2, v2.Version);
        Assert.Equal(3, v3.Version);
        Assert.DoesNotContain(rootV1[0].KeyId, v3.Roles[Role.Root].KeyIds);
        Assert.DoesNotContain(rootV2[0].KeyId, v3.Roles[Role.Root].KeyIds);
        Assert.Equal(feed.Read("3.root.json"), feed.Read("root.json"));
        feed.Publish();

        UpdateResult r = await feed.Client().UpdateAsync();
        Assert.True(r.Installed, r.Message);
        Assert.Equal(3, r.RootVersion);
        InstalledBundle b = feed.Store.Active!;
        Assert.Equal(2, b.Version);
        Assert.Equal(3, b.RootVersion);
        Assert.Equal([feed.TargetsKeys[0].KeyId], b.SignedBy);
        TestFeed.AssertFiles(b, TestFeed.DefaultFiles(2));
        Assert.Equal(feed.Read("3.root.json"), feed.Store.ReadTrusted(Role.Root));

        // Targets signed by the retired targets key are no longer accepted under root v3.
        TargetsMetadata next = feed.Publish();
        feed.ServeTargets(MetadataFormat.Sign(next, targetsV1), next.Version);
        await feed.AssertRejectedAsync(UpdateRejection.UntrustedKey);
    }

    [Fact]
    public async Task A_root_with_threshold_two_needs_two_old_and_two_new_signatures()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        List<SigningKey> trio = [feed.NewKey(), feed.NewKey(), feed.NewKey()];
        feed.RootThreshold = 2;
        feed.RotateRoot(trio);
        Assert.Equal(2, (await feed.Client().UpdateAsync()).RootVersion);

        // v3 (same keys) signed by one of the three: the publisher refuses to write it ...
        var publisherError = Assert.Throws<UpdateRejectedException>(() => feed.Publisher.RotateRoot(feed.Plan(), [trio[0]]));
        Assert.Equal(UpdateRejection.LocalState, publisherError.Kind);
        Assert.Contains("2 needed", publisherError.Message, StringComparison.Ordinal);

        // ... and a client refuses it when it is made by hand.
        RootMetadata v3 = feed.Plan().ToRoot(3, feed.Later(TimeSpan.FromDays(365)));
        feed.Write("3.root.json", MetadataFormat.Sign(v3, [trio[0]]));
        await feed.AssertRejectedAsync(UpdateRejection.ThresholdNotMet, null, "1 valid signature from the root role's keys, 2 required");
        Assert.Equal(feed.Read("2.root.json"), feed.Store.ReadTrusted(Role.Root));

        feed.Write("3.root.json", MetadataFormat.Sign(v3, [trio[0], trio[2]]));
        Assert.Equal(3, (await feed.Client().UpdateAsync()).RootVersion);
    }

    [Fact]
    public void The_publisher_refuses_a_rotation_not_signed_by_both_the_old_and_the_new_root_keys()
    {
        using var feed = new TestFeed();
        SigningKey oldKey = feed.RootKeys[0];
        SigningKey newKey = feed.NewKey();
        feed.RootKeys = [newKey];
        RootPlan plan = feed.Plan();

        var onlyNew = Assert.Throws<UpdateRejectedException>(() => feed.Publisher.RotateRoot(plan, [newKey]));
        Assert.Equal(UpdateRejection.LocalState, onlyNew.Kind);
        Assert.Contains("root v1 (the keys being replaced)", onlyNew.Message, StringComparison.Ordinal);

        var onlyOld = Assert.Throws<UpdateRejectedException>(() => feed.Publisher.RotateRoot(plan, [oldKey]));
        Assert.Equal(UpdateRejection.LocalState, onlyOld.Kind);
        Assert.Contains("root v2 (the new keys)", onlyOld.Message, StringComparison.Ordinal);

        Assert.False(File.Exists(Path.Combine(feed.FeedDir, "2.root.json")));
        Assert.Equal(1, feed.Publisher.LatestRoot().Version);
        Assert.Equal(2, feed.Publisher.RotateRoot(plan, [oldKey, newKey]).Version);
    }

    [Fact]
    public async Task A_new_root_signed_only_by_its_new_keys_is_refused_as_untrusted_key()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.RootKeys = [feed.NewKey()];
        RootMetadata v2 = feed.Plan().ToRoot(2, feed.Later(TimeSpan.FromDays(365)));
        feed.Write("2.root.json", MetadataFormat.Sign(v2, feed.RootKeys));
        var e = await feed.AssertRejectedAsync(UpdateRejection.UntrustedKey, null, "signed by the wrong key");
        Assert.Equal("2.root.json (checked against the keys of the root it replaces)", e.File);
        Assert.Equal(feed.Read("1.root.json"), feed.Store.ReadTrusted(Role.Root));
    }

    [Fact]
    public async Task A_new_root_signed_only_by_the_old_keys_is_refused_as_untrusted_key()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        List<SigningKey> old = feed.RootKeys;
        feed.RootKeys = [feed.NewKey()];
        RootMetadata v2 = feed.Plan().ToRoot(2, feed.Later(TimeSpan.FromDays(365)));
        feed.Write("2.root.json", MetadataFormat.Sign(v2, old));
        var e = await feed.AssertRejectedAsync(UpdateRejection.UntrustedKey);
        Assert.Equal("2.root.json (checked against its own root keys)", e.File);
        Assert.Equal(feed.Read("1.root.json"), feed.Store.ReadTrusted(Role.Root));
    }

    [Fact]
    public async Task A_new_root_changed_after_signing_is_refused_as_invalid_signature()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.RotateRoot([feed.NewKey()]);
        // An attacker swaps in their own timestamp key, keeping the owners' signatures.
        SigningKey attacker = feed.NewKey();
        JsonObject file = JsonNode.Parse(feed.Read("2.root.json"))!.AsObject();
        JsonObject signed = file["signed"]!.AsObject();
        signed["keys"]![attacker.KeyId] = attacker.Public.ToJson();
        signed["roles"]!["timestamp"]!["keyids"] = new JsonArray(attacker.KeyId);
        feed.Write("2.root.json", CanonicalJson.Encode(file));
        await feed.AssertRejectedAsync(UpdateRejection.InvalidSignature);
        Assert.Equal(feed.Read("1.root.json"), feed.Store.ReadTrusted(Role.Root));
    }

    [Fact]
    public async Task A_good_rotation_after_a_bad_one_in_the_same_walk_keeps_the_good_versions()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.RotateRoot([feed.NewKey()]);
        RootMetadata v3 = feed.Plan().ToRoot(3, feed.Later(TimeSpan.FromDays(365)));
        feed.Write("3.root.json", MetadataFormat.Sign(v3, [feed.NewKey()]));
        await feed.AssertRejectedAsync(UpdateRejection.UntrustedKey);
        // Root v2 was verified before v3 failed: it stays trusted (the walk resumes from it).
        Assert.Equal(feed.Read("2.root.json"), feed.Store.ReadTrusted(Role.Root));
    }
}
