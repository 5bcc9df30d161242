using Xunit;
using Xunit.Abstractions;

namespace Vmi.Updates.Tests;

/// <summary>One update at a time per state folder, and a state that cannot be written keeps the bundle in force.</summary>
public sealed class LocalStateTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Generous = TimeSpan.FromSeconds(30);

    /// <summary>Holds the first download of <paramref name="gatePath"/> until released.</summary>
    private sealed class GatedFetcher(IFeedFetcher inner, string gatePath) : IFeedFetcher
    {
        public TaskCompletionSource Reached { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public string Location => inner.Location;

        public async Task<byte[]?> FetchAsync(string path, long maxBytes, CancellationToken cancellationToken)
        {
            if (path == gatePath && Reached.TrySetResult())
                await Release.Task.WaitAsync(cancellationToken);
            return await inner.FetchAsync(path, maxBytes, cancellationToken);
        }
    }

    [Fact]
    public async Task A_second_update_while_one_runs_on_the_same_state_is_refused_and_the_first_completes()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.Publish();

        var gate = new GatedFetcher(FeedFetchers.Create(feed.FeedDir), "timestamp.json");
        Task<UpdateResult> first = Task.Run(() => feed.Client(null, gate).UpdateAsync());
        await gate.Reached.Task.WaitAsync(Generous);

        // The first holds the lock, waiting in its timestamp download.
        var e = await Assert.ThrowsAsync<UpdateRejectedException>(() => feed.Client().UpdateAsync());
        Assert.Equal(UpdateRejection.LocalState, e.Kind);
        Assert.Contains("another update is running", e.Message, StringComparison.Ordinal);
        var init = Assert.Throws<UpdateRejectedException>(() => feed.Client().Initialize(feed.Read("1.root.json")));
        Assert.Equal(UpdateRejection.LocalState, init.Kind);
        Assert.Equal(1, feed.Store.Active!.Version);

        gate.Release.SetResult();
        UpdateResult r = await first.WaitAsync(Generous);
        Assert.True(r.Installed, r.Message);
        Assert.Equal(2, feed.Store.Active!.Version);
        TestFeed.AssertFiles(feed.Store.Active!, TestFeed.DefaultFiles(2));
        // The refused run could not take the lock, so it wrote nothing (not even an audit line).
        Assert.Equal(["installed", "installed"], feed.Store.ReadAudit(10).Select(a => a.Outcome));

        // The lock is free again.
        Assert.False((await feed.Client().UpdateAsync()).Installed);
    }

    [Fact]
    public async Task Updates_racing_on_one_state_folder_either_run_or_are_refused_and_leave_a_consistent_state()
    {
        using var feed = new TestFeed();
        feed.InitializeClient();
        int audited = 0;
        for (int round = 1; round <= 2; round++)
        {
            feed.Publish();
            Task<UpdateResult>[] runs = [.. Enumerable.Range(0, 4).Select(_ => Task.Run(() => feed.Client().UpdateAsync()))];
            int installed = 0, upToDate = 0, refused = 0;
            foreach (Task<UpdateResult> run in runs)
            {
                try
                {
                    UpdateResult r = await run.WaitAsync(Generous);
                    if (r.Installed)
                        installed++;
                    else
                        upToDate++;
                }
                catch (UpdateRejectedException e) when (e.Kind == UpdateRejection.LocalState)
                {
                    refused++;
                }
            }
            output.WriteLine($"round {round}: installed {installed}, up to date {upToDate}, refused (busy) {refused}");
            Assert.Equal(1, installed);
            Assert.Equal(4, installed + upToDate + refused);

            RuleStore store = feed.Store;
            Assert.Equal(round, store.Active!.Version);
            TestFeed.AssertFiles(store.Active!, TestFeed.DefaultFiles(round));
            // Every run that got the lock is audited; the refused ones never touched the state.
            audited += installed + upToDate;
            IReadOnlyList<UpdateAuditRecord> audit = store.ReadAudit(100);
            Assert.Equal(audited, audit.Count);
            Assert.DoesNotContain(audit, a => a.Outcome == "rejected");
            Assert.Equal(feed.Read("timestamp.json"), store.ReadTrusted(Role.Timestamp));
            Assert.Equal(feed.Read($"{round}.targets.json"), store.ReadTrusted(Role.Targets));
            Assert.Empty(Directory.GetDirectories(Path.Combine(feed.StateDir, "bundles"), ".incoming-*"));
            Assert.Empty(Directory.GetFiles(Path.Combine(feed.StateDir, "trusted"), "*.tmp-*"));
        }
    }

    [Fact]
    public async Task A_bundle_that_cannot_be_written_is_refused_as_local_state_and_installs_on_the_next_run()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.Publish();

        // A file where the new bundle's staging folder must go: creating the folder fails, as on a full or broken disk.
        string blocker = Path.Combine(feed.StateDir, "bundles", $".incoming-2-{Environment.ProcessId}");
        File.WriteAllText(blocker, "in the way");
        var e = await feed.AssertRejectedAsync(UpdateRejection.LocalState, null, "cannot write the new bundle", "bundle in force is unchanged");
        Assert.Null(feed.Store.ReadBundle(2));

        File.Delete(blocker);
        UpdateResult r = await feed.Client().UpdateAsync();
        Assert.True(r.Installed, r.Message);
        Assert.Equal(2, feed.Store.Active!.Version);
        output.WriteLine(e.Message);
    }

    [Fact]
    public async Task A_trusted_folder_that_cannot_be_written_is_refused_as_local_state()
    {
        if (OperatingSystem.IsWindows())
            return; // Unix modes only.
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.Publish();
        string trusted = Path.Combine(feed.StateDir, "trusted");
        File.SetUnixFileMode(trusted, UnixFileMode.UserRead | UnixFileMode.UserExecute); // 0500
        try
        {
            // Root (and CAP_DAC_OVERRIDE) writes regardless of the mode: then this check cannot be made this way.
            string probe = Path.Combine(trusted, "probe");
            try
            {
                File.WriteAllText(probe, "x");
                File.Delete(probe);
                output.WriteLine("The test runs with the right to write into a 0500 folder (root?): the read-only state check is skipped. "
                    + "A_bundle_that_cannot_be_written_is_refused_as_local_state_and_installs_on_the_next_run covers write failures.");
                return;
            }
            catch (UnauthorizedAccessException)
            {
                // Writes are refused: go on.
            }
            var e = await feed.AssertRejectedAsync(UpdateRejection.LocalState, null, "cannot write it");
            Assert.Contains("trusted", e.File, StringComparison.Ordinal);
        }
        finally
        {
            File.SetUnixFileMode(trusted, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        Assert.True((await feed.Client().UpdateAsync()).Installed);
    }

    [Fact]
    public async Task A_lock_file_that_cannot_be_opened_is_refused_as_local_state_not_a_crash()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        // A folder where the lock file goes: opening it fails with "access denied" even for root.
        File.Delete(Path.Combine(feed.StateDir, ".lock"));
        Directory.CreateDirectory(Path.Combine(feed.StateDir, ".lock"));
        var e = await Assert.ThrowsAsync<UpdateRejectedException>(() => feed.Client().UpdateAsync());
        Assert.Equal(UpdateRejection.LocalState, e.Kind);
        Assert.Contains("lock file", e.Message, StringComparison.Ordinal);
        var init = Assert.Throws<UpdateRejectedException>(() => feed.Client().Initialize(feed.Read("1.root.json")));
        Assert.Equal(UpdateRejection.LocalState, init.Kind);
        Assert.Equal(1, feed.Store.Active!.Version);
    }

    [Fact]
    public async Task A_corrupt_state_file_is_refused_as_local_state_not_a_crash()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        File.WriteAllText(Path.Combine(feed.StateDir, "state.json"), "{ not json");
        var e = await Assert.ThrowsAsync<UpdateRejectedException>(() => feed.Client().UpdateAsync());
        Assert.Equal(UpdateRejection.LocalState, e.Kind);
        Assert.Contains("corrupt", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_state_folder_that_cannot_be_created_is_refused_as_local_state()
    {
        using var feed = new TestFeed();
        string file = Path.Combine(feed.Base, "a-file");
        File.WriteAllText(file, "x");
        var e = Assert.Throws<UpdateRejectedException>(() => RuleStore.Open(Path.Combine(file, "state")));
        Assert.Equal(UpdateRejection.LocalState, e.Kind);
        Assert.Contains("cannot create the rule state folder", e.Message, StringComparison.Ordinal);
    }
}
