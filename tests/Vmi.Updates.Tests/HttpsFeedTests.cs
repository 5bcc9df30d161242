using Microsoft.AspNetCore.Http;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Updates.Tests;

/// <summary>The feed over https (Kestrel with a test CA), and downloads that try to exhaust the client.</summary>
public sealed class HttpsFeedTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Generous = TimeSpan.FromSeconds(30);

    private static (RuleUpdateClient Client, IFeedFetcher Fetcher) HttpsClient(TestFeed feed, FeedServer server, string? caFile, TimeSpan? timeout = null)
    {
        IFeedFetcher fetcher = FeedFetchers.Create(server.Url, caFile, timeout ?? Generous);
        return (feed.Client(null, fetcher), fetcher);
    }

    [Fact]
    public async Task Updates_work_over_https_with_the_feed_servers_private_ca_and_a_missing_file_is_not_found()
    {
        using var feed = new TestFeed();
        await using FeedServer server = await FeedServer.StartAsync(feed.FeedDir);
        string ca = TestCertificates.WriteCaPem(Path.Combine(feed.Base, "ca.pem"));
        feed.InitializeClient();
        feed.Publish();

        var (client, fetcher) = HttpsClient(feed, server, ca);
        Assert.IsType<HttpsFeedFetcher>(fetcher);
        Assert.Equal(server.Url, fetcher.Location);
        UpdateResult r = await client.UpdateAsync();
        Assert.True(r.Installed, r.Message);
        Assert.Equal(server.Url, r.Active!.Feed);
        TestFeed.AssertFiles(r.Active, TestFeed.DefaultFiles(1));
        Assert.Equal(server.Url, feed.Store.State.Feed);
        // The root walk asked for 2.root.json, which the feed does not have: a 404 ends the walk, it is no error.
        Assert.Contains(("2.root.json", 404), server.Requests);
        Assert.Null(await fetcher.FetchAsync("nothere.json", 100, CancellationToken.None));
        Assert.Equal(feed.Read("1.root.json"), await fetcher.FetchAsync("1.root.json", 1 << 20, CancellationToken.None));

        feed.Publish();
        Assert.True((await client.UpdateAsync()).Installed);
        Assert.False((await client.UpdateAsync()).Installed);
        ((IDisposable)fetcher).Dispose();
    }

    [Fact]
    public async Task Without_the_ca_file_the_servers_certificate_is_not_trusted_and_the_feed_is_unavailable()
    {
        using var feed = new TestFeed();
        await using FeedServer server = await FeedServer.StartAsync(feed.FeedDir);
        string ca = TestCertificates.WriteCaPem(Path.Combine(feed.Base, "ca.pem"));
        feed.InitializeClient();
        feed.Publish();
        Assert.True((await HttpsClient(feed, server, ca).Client.UpdateAsync()).Installed);
        feed.Publish();

        var e = await feed.AssertRejectedAsync(UpdateRejection.Unavailable, HttpsClient(feed, server, null).Client, "SSL");
        Assert.Contains("certificate", e.Message, StringComparison.OrdinalIgnoreCase);

        string other = TestCertificates.WriteOtherCaPem(Path.Combine(feed.Base, "other-ca.pem"));
        await feed.AssertRejectedAsync(UpdateRejection.Unavailable, HttpsClient(feed, server, other).Client);
        Assert.Equal(1, feed.Store.Active!.Version);
    }

    [Fact]
    public void Plain_http_and_other_schemes_are_refused_as_local_state()
    {
        var http = Assert.Throws<UpdateRejectedException>(() => FeedFetchers.Create("http://127.0.0.1:8080/feed/"));
        Assert.Equal(UpdateRejection.LocalState, http.Kind);
        Assert.Contains("not http://", http.Message, StringComparison.Ordinal);
        Assert.Equal(UpdateRejection.LocalState, Assert.Throws<UpdateRejectedException>(() => FeedFetchers.Create("ftp://example.org/feed/")).Kind);
        Assert.Equal(UpdateRejection.LocalState, Assert.Throws<UpdateRejectedException>(() => FeedFetchers.Create(Path.GetTempPath(), "/nonexistent-ca.pem")).Kind);
    }

    [Fact]
    public void A_ca_file_that_is_missing_or_holds_no_certificate_is_refused_as_local_state()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"vmi-updates-tests-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            string notPem = Path.Combine(dir, "ca.pem");
            File.WriteAllText(notPem, "not a certificate\n");
            var e = Assert.Throws<UpdateRejectedException>(() => FeedFetchers.Create("https://127.0.0.1:1/", notPem));
            Assert.Equal(UpdateRejection.LocalState, e.Kind);
            Assert.Contains("no PEM certificate", e.Message, StringComparison.Ordinal);
            var missing = Assert.Throws<UpdateRejectedException>(() => FeedFetchers.Create("https://127.0.0.1:1/", Path.Combine(dir, "missing.pem")));
            Assert.Equal(UpdateRejection.LocalState, missing.Kind);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task Server_errors_and_redirects_are_unavailable_not_followed()
    {
        using var feed = new TestFeed();
        await using FeedServer server = await FeedServer.StartAsync(feed.FeedDir);
        string ca = TestCertificates.WriteCaPem(Path.Combine(feed.Base, "ca.pem"));
        feed.InitializeClient();
        feed.Publish();
        Assert.True((await HttpsClient(feed, server, ca).Client.UpdateAsync()).Installed);

        server.Handlers["timestamp.json"] = context =>
        {
            context.Response.StatusCode = StatusCodes.Status500InternalServerError;
            return Task.CompletedTask;
        };
        await feed.AssertRejectedAsync(UpdateRejection.Unavailable, HttpsClient(feed, server, ca).Client, "answered 500");

        server.Handlers["timestamp.json"] = context =>
        {
            context.Response.Redirect("http://198.51.100.7/timestamp.json");
            return Task.CompletedTask;
        };
        await feed.AssertRejectedAsync(UpdateRejection.Unavailable, HttpsClient(feed, server, ca).Client, "answered 302");
    }

    [Fact]
    public async Task An_endless_rule_file_download_is_too_large_and_the_client_stops_reading()
    {
        using var feed = new TestFeed();
        await using FeedServer server = await FeedServer.StartAsync(feed.FeedDir);
        string ca = TestCertificates.WriteCaPem(Path.Combine(feed.Base, "ca.pem"));
        feed.InitializeClient();
        feed.Publish();
        Assert.True((await HttpsClient(feed, server, ca).Client.UpdateAsync()).Installed);

        TargetFileInfo target = feed.Publish().Targets[0];
        var ended = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        server.Handlers[target.FeedPath] = FeedServer.Endless(ended, 1L << 30);
        await using var proxy = new CountingProxy(server.Port);
        var client = feed.Client(null, FeedFetchers.Create(proxy.Url, ca, Generous));

        var e = await feed.AssertRejectedAsync(UpdateRejection.TooLarge, client, "stopped reading");
        Assert.Equal(target.FeedPath, e.File);
        // The client hung up after the listed length (+1 byte): the stream, which would go on to 1 GiB, ends
        // because of that. What reached the client is bounded by socket, TLS and HTTP buffers.
        await ended.Task.WaitAsync(Generous);
        long sent = proxy.BytesToClients;
        output.WriteLine($"{sent} bytes reached the client before it hung up");
        Assert.True(sent < 64L << 20, $"{sent} bytes reached the client before it hung up");
        Assert.Contains((target.FeedPath, 200), server.Requests);
    }

    [Fact]
    public async Task An_endless_timestamp_is_too_large()
    {
        using var feed = new TestFeed();
        await using FeedServer server = await FeedServer.StartAsync(feed.FeedDir);
        string ca = TestCertificates.WriteCaPem(Path.Combine(feed.Base, "ca.pem"));
        feed.InitializeClient();
        feed.Publish();
        Assert.True((await HttpsClient(feed, server, ca).Client.UpdateAsync()).Installed);

        var ended = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        server.Handlers["timestamp.json"] = FeedServer.Endless(ended, 1L << 30);
        await using var proxy = new CountingProxy(server.Port);
        var client = feed.Client(null, FeedFetchers.Create(proxy.Url, ca, Generous));
        var e = await feed.AssertRejectedAsync(UpdateRejection.TooLarge, client, $"{16 << 10} bytes allowed");
        Assert.Equal("timestamp.json", e.File);
        await ended.Task.WaitAsync(Generous);
        long sent = proxy.BytesToClients;
        output.WriteLine($"{sent} bytes reached the client before it hung up");
        Assert.True(sent < 64L << 20, $"{sent} bytes reached the client before it hung up");
    }

    [Fact]
    public async Task A_content_length_above_the_limit_is_too_large_without_reading_the_body()
    {
        using var feed = new TestFeed();
        await using FeedServer server = await FeedServer.StartAsync(feed.FeedDir);
        string ca = TestCertificates.WriteCaPem(Path.Combine(feed.Base, "ca.pem"));
        feed.InitializeClient();
        feed.Publish();
        Assert.True((await HttpsClient(feed, server, ca).Client.UpdateAsync()).Installed);

        // The server announces 100 MB and then sends nothing: a client that read the body would wait until its
        // download timeout and report Unavailable; refusing on the header alone gives TooLarge.
        var served = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        server.Handlers["timestamp.json"] = async context =>
        {
            context.Response.ContentLength = 100_000_000;
            await context.Response.StartAsync(context.RequestAborted);
            await context.Response.Body.FlushAsync(context.RequestAborted);
            try
            {
                await Task.Delay(TimeSpan.FromSeconds(60), context.RequestAborted);
            }
            catch (OperationCanceledException)
            {
                // The client hung up.
            }
            served.TrySetResult();
            context.Abort();
        };
        var e = await feed.AssertRejectedAsync(UpdateRejection.TooLarge, HttpsClient(feed, server, ca, TimeSpan.FromSeconds(20)).Client, "announces 100000000 bytes", "not downloaded");
        Assert.Equal("timestamp.json", e.File);
        await served.Task.WaitAsync(Generous);
    }

    [Fact]
    public async Task A_slow_drip_that_never_ends_is_stopped_by_the_download_time_limit()
    {
        using var feed = new TestFeed();
        await using FeedServer server = await FeedServer.StartAsync(feed.FeedDir);
        string ca = TestCertificates.WriteCaPem(Path.Combine(feed.Base, "ca.pem"));
        feed.InitializeClient();
        feed.Publish();
        Assert.True((await HttpsClient(feed, server, ca).Client.UpdateAsync()).Installed);

        // One byte every 200 ms: never over the size limit, never finished.
        var ended = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        server.Handlers["timestamp.json"] = async context =>
        {
            CancellationToken aborted = context.RequestAborted;
            try
            {
                while (!aborted.IsCancellationRequested)
                {
                    await context.Response.Body.WriteAsync(" "u8.ToArray(), aborted);
                    await context.Response.Body.FlushAsync(aborted);
                    await Task.Delay(200, aborted);
                }
            }
            catch (Exception e) when (e is OperationCanceledException or IOException)
            {
                // The client hung up.
            }
            finally
            {
                ended.TrySetResult();
            }
        };
        var e = await feed.AssertRejectedAsync(UpdateRejection.Unavailable, HttpsClient(feed, server, ca, TimeSpan.FromSeconds(2)).Client, "took longer than 2 s");
        Assert.Equal("timestamp.json", e.File);
        await ended.Task.WaitAsync(Generous);
    }

    [Fact]
    public async Task A_timestamp_file_bigger_than_its_limit_in_a_folder_feed_is_too_large()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        byte[] honest = feed.Read("timestamp.json");
        byte[] big = new byte[(16 << 10) + 1];
        Array.Fill(big, (byte)' ');
        feed.Write("timestamp.json", big);
        var e = await feed.AssertRejectedAsync(UpdateRejection.TooLarge, null, "16385 bytes");
        Assert.Equal("timestamp.json", e.File);

        // A real timestamp over a lowered limit is refused the same way.
        feed.Write("timestamp.json", honest);
        feed.Publisher.RefreshTimestamp(feed.TimestampKeys);
        await feed.AssertRejectedAsync(UpdateRejection.TooLarge, feed.Client(new UpdateClientOptions { Time = feed.Time, MaxTimestampBytes = 100 }));
    }

    [Fact]
    public async Task A_root_file_bigger_than_its_limit_is_too_large()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        feed.RotateRoot();
        var e = await feed.AssertRejectedAsync(UpdateRejection.TooLarge, feed.Client(new UpdateClientOptions { Time = feed.Time, MaxRootBytes = 200 }));
        Assert.Equal("2.root.json", e.File);
    }

    [Fact]
    public async Task Reading_an_endless_stream_stops_one_byte_past_the_limit()
    {
        using var endless = new EndlessStream();
        var e = await Assert.ThrowsAsync<UpdateRejectedException>(() => FolderFeedFetcher.ReadLimitedAsync(endless, "x", 100_000, CancellationToken.None));
        Assert.Equal(UpdateRejection.TooLarge, e.Kind);
        Assert.Equal(100_001, endless.BytesRead);

        using var exact = new MemoryStream(new byte[100_000]);
        Assert.Equal(100_000, (await FolderFeedFetcher.ReadLimitedAsync(exact, "x", 100_000, CancellationToken.None)).Length);
    }

    /// <summary>A stream that never ends and counts what was read from it.</summary>
    private sealed class EndlessStream : Stream
    {
        public long BytesRead { get; private set; }
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => BytesRead; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count)
        {
            Array.Fill(buffer, (byte)'A', offset, count);
            BytesRead += count;
            return count;
        }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
