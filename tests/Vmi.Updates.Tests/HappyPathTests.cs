using Xunit;

namespace Vmi.Updates.Tests;

public sealed class HappyPathTests
{
    [Fact]
    public async Task Published_bundles_install_in_order_and_an_unchanged_feed_is_up_to_date()
    {
        using var feed = new TestFeed();
        feed.InitializeClient();
        RuleStore store = feed.Store;
        Assert.Null(store.Active);
        Assert.Null(store.State.ActiveVersion);

        TargetsMetadata published1 = feed.Publish();
        Assert.Equal(1, published1.Version);
        UpdateResult r1 = await feed.Client().UpdateAsync();
        Assert.True(r1.Installed, r1.Message);
        Assert.Equal(1, r1.RootVersion);
        Assert.Contains("installed bundle 1", r1.Message, StringComparison.Ordinal);
        InstalledBundle b1 = Assert.IsType<InstalledBundle>(store.Active);
        Assert.Equal(1, b1.Version);
        Assert.Equal(1, b1.RootVersion);
        Assert.Equal([feed.TargetsKeys[0].KeyId], b1.SignedBy);
        Assert.Equal(feed.FeedDir, b1.Feed);
        Assert.Equal(feed.Time.UtcNow, b1.InstalledAt);
        Assert.Equal(published1.Expires, b1.TargetsExpires);
        TestFeed.AssertFiles(b1, TestFeed.DefaultFiles(1));
        Assert.Equal(["eicar.yar", "webshell.yara"], b1.FilesOfKind("yara").Select(f => f.Name).Order(StringComparer.Ordinal));
        Assert.Equal(["c2.rules"], b1.FilesOfKind("network").Select(f => f.Name));
        Assert.Equal(1, store.State.ActiveVersion);
        Assert.Null(store.State.PreviousVersion);
        Assert.Equal("installed", store.State.LastOutcome);
        Assert.Null(store.State.LastError);

        feed.Time.Advance(TimeSpan.FromMinutes(5));
        feed.Publish();
        UpdateResult r2 = await feed.Client().UpdateAsync();
        Assert.True(r2.Installed, r2.Message);
        Assert.Contains("previously bundle 1", r2.Message, StringComparison.Ordinal);
        InstalledBundle b2 = Assert.IsType<InstalledBundle>(store.Active);
        Assert.Equal(2, b2.Version);
        TestFeed.AssertFiles(b2, TestFeed.DefaultFiles(2));
        Assert.Equal(2, store.State.ActiveVersion);
        Assert.Equal(1, store.State.PreviousVersion);
        // The previous bundle stays on disk (for a rollback by hand); its files are unchanged.
        TestFeed.AssertFiles(store.ReadBundle(1)!, TestFeed.DefaultFiles(1));

        UpdateResult r3 = await feed.Client().UpdateAsync();
        Assert.False(r3.Installed);
        Assert.StartsWith("up to date: bundle 2", r3.Message, StringComparison.Ordinal);
        Assert.Equal(2, r3.Active!.Version);
        Assert.Equal(2, store.Active!.Version);
        Assert.Equal("up-to-date", store.State.LastOutcome);

        Assert.Equal(["installed", "installed", "up-to-date"], store.ReadAudit(10).Select(a => a.Outcome));
        UpdateAuditRecord last = store.ReadAudit(1).Single();
        Assert.Equal(2, last.BundleVersion);
        Assert.Equal(2, last.ActiveVersion);
        Assert.Null(last.Rejection);

        // The trusted metadata is what the feed serves now.
        Assert.Equal(feed.Read("timestamp.json"), store.ReadTrusted(Role.Timestamp));
        Assert.Equal(feed.Read("2.snapshot.json"), store.ReadTrusted(Role.Snapshot));
        Assert.Equal(feed.Read("2.targets.json"), store.ReadTrusted(Role.Targets));
        Assert.Equal(feed.Read("1.root.json"), store.ReadTrusted(Role.Root));
    }

    [Fact]
    public async Task Only_the_bundle_in_force_and_the_one_before_it_are_kept()
    {
        using var feed = new TestFeed();
        feed.InitializeClient();
        for (int i = 1; i <= 4; i++)
        {
            feed.Publish();
            Assert.True((await feed.Client().UpdateAsync()).Installed);
        }
        RuleStore store = feed.Store;
        Assert.Equal(4, store.Active!.Version);
        Assert.NotNull(store.ReadBundle(3));
        Assert.Null(store.ReadBundle(2));
        Assert.Null(store.ReadBundle(1));
        Assert.Equal(["3", "4"], Directory.GetDirectories(Path.Combine(feed.StateDir, "bundles")).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task A_bundle_that_changes_its_file_set_installs_only_the_new_files()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        (string, string)[] files = [("only.yar", "rule only { condition: true }\n"), ("dns.rules", "alert dns any any -> any any (msg:\"x\"; sid:7;)\n")];
        feed.Publish(files: files);
        Assert.True((await feed.Client().UpdateAsync()).Installed);
        TestFeed.AssertFiles(feed.Store.Active!, files);
    }

    [Fact]
    public async Task An_empty_bundle_is_a_valid_bundle()
    {
        using var feed = new TestFeed();
        feed.InitializeClient();
        feed.Publish(files: []);
        UpdateResult r = await feed.Client().UpdateAsync();
        Assert.True(r.Installed, r.Message);
        Assert.Empty(feed.Store.Active!.Files);
    }

    [Fact]
    public async Task Update_before_anything_is_published_is_unavailable_not_a_crash()
    {
        using var feed = new TestFeed();
        feed.InitializeClient();
        var e = await feed.AssertRejectedAsync(UpdateRejection.Unavailable, null, "no timestamp.json");
        Assert.Equal("timestamp.json", e.File);
    }

    [Fact]
    public async Task Update_without_a_trusted_root_is_refused_as_local_state()
    {
        using var feed = new TestFeed();
        feed.Publish();
        var e = await Assert.ThrowsAsync<UpdateRejectedException>(() => feed.Client().UpdateAsync());
        Assert.Equal(UpdateRejection.LocalState, e.Kind);
        Assert.Contains("no trusted root", e.Message, StringComparison.Ordinal);
        Assert.Null(feed.Store.Active);
    }

    [Fact]
    public void Initialize_with_the_same_root_twice_is_harmless_and_a_root_not_signed_by_its_own_keys_is_refused()
    {
        using var feed = new TestFeed();
        feed.InitializeClient();
        feed.InitializeClient();
        Assert.Equal(feed.Read("1.root.json"), feed.Store.ReadTrusted(Role.Root));

        using var other = new TestFeed();
        RootMetadata root = MetadataFormat.Parse<RootMetadata>(other.Read("1.root.json"), "r").Signed;
        byte[] signedByStranger = MetadataFormat.Sign(root, [other.NewKey()]);
        var e = Assert.Throws<UpdateRejectedException>(() => other.Client().Initialize(signedByStranger));
        Assert.Equal(UpdateRejection.UntrustedKey, e.Kind);
        Assert.Null(other.Store.ReadTrusted(Role.Root));
    }

    [Fact]
    public void Publisher_refuses_a_second_init_a_key_of_the_wrong_role_and_unsafe_file_names()
    {
        using var feed = new TestFeed();
        var again = Assert.Throws<UpdateRejectedException>(() => feed.Publisher.Initialize(feed.Plan(), feed.RootKeys));
        Assert.Equal(UpdateRejection.LocalState, again.Kind);
        Assert.Contains("already has a root", again.Message, StringComparison.Ordinal);

        string rule = Path.Combine(feed.SourceDir, "a.yar");
        File.WriteAllText(rule, "rule a { condition: true }\n");
        var wrongKey = Assert.Throws<UpdateRejectedException>(() =>
            feed.Publisher.Publish([new RuleFileInput(rule)], feed.SnapshotKeys, feed.SnapshotKeys, feed.TimestampKeys));
        Assert.Equal(UpdateRejection.LocalState, wrongKey.Kind);
        Assert.Contains("targets", wrongKey.Message, StringComparison.Ordinal);

        var unsafeName = Assert.Throws<UpdateRejectedException>(() =>
            feed.Publisher.Publish([new RuleFileInput(rule, "../a.yar")], feed.TargetsKeys, feed.SnapshotKeys, feed.TimestampKeys));
        Assert.Equal(UpdateRejection.LocalState, unsafeName.Kind);

        var unknownKind = Assert.Throws<UpdateRejectedException>(() =>
            feed.Publisher.Publish([new RuleFileInput(rule, "a.txt")], feed.TargetsKeys, feed.SnapshotKeys, feed.TimestampKeys));
        Assert.Equal(UpdateRejection.LocalState, unknownKind.Kind);

        var twice = Assert.Throws<UpdateRejectedException>(() =>
            feed.Publisher.Publish([new RuleFileInput(rule), new RuleFileInput(rule)], feed.TargetsKeys, feed.SnapshotKeys, feed.TimestampKeys));
        Assert.Equal(UpdateRejection.LocalState, twice.Kind);
        Assert.False(File.Exists(Path.Combine(feed.FeedDir, "timestamp.json")));
    }

    [Fact]
    public async Task Refreshing_the_timestamp_keeps_the_bundle_up_to_date_past_the_old_expiry()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.Time.Advance(TimeSpan.FromHours(20));
        TimestampMetadata ts = feed.Publisher.RefreshTimestamp(feed.TimestampKeys);
        Assert.Equal(2, ts.Version);
        feed.Time.Advance(TimeSpan.FromHours(20));
        UpdateResult r = await feed.Client().UpdateAsync();
        Assert.False(r.Installed);
        Assert.Equal(1, r.Active!.Version);
    }
}
