using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Vmi.Core;
using Vmi.Qemu.Tests.Fakes;
using Xunit;

namespace Vmi.Qemu.Tests;

/// <summary>The QMP client against an in-process fake server on a unix socket.</summary>
public class QmpClientTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(5);

    [Fact]
    public async Task Connect_reads_the_greeting_and_negotiates_capabilities()
    {
        await using var server = new FakeQmpServer();
        await using QmpClient qmp = await QmpClient.ConnectAsync(server.SocketPath, Timeout);

        Assert.True(qmp.IsConnected);
        Assert.Equal(7, qmp.Greeting.GetProperty("version").GetProperty("qemu").GetProperty("major").GetInt32());
        JsonElement first = Assert.Single(server.Requests);
        Assert.Equal("qmp_capabilities", first.GetProperty("execute").GetString());
        Assert.Equal(JsonValueKind.Number, first.GetProperty("id").ValueKind);
        Assert.Equal("running", await qmp.QueryStatusAsync());
    }

    [Fact]
    public async Task Errors_carry_class_and_description()
    {
        await using var server = new FakeQmpServer();
        await using QmpClient qmp = await QmpClient.ConnectAsync(server.SocketPath, Timeout);

        var e = await Assert.ThrowsAsync<QmpErrorException>(() => qmp.ExecuteAsync("no-such-command"));
        Assert.Equal("CommandNotFound", e.ErrorClass);
        Assert.Equal("The command no-such-command has not been found", e.Description);
        Assert.Equal("no-such-command", e.Command);
        Assert.IsAssignableFrom<ProtocolException>(e);
        Assert.True(qmp.IsConnected);
    }

    [Fact]
    public async Task Arguments_are_sent_as_an_object()
    {
        await using var server = new FakeQmpServer();
        await using QmpClient qmp = await QmpClient.ConnectAsync(server.SocketPath, Timeout);

        Assert.Equal("you said: info registers\r\n", await qmp.HumanMonitorCommandAsync("info registers"));

        server.Override = async r =>
        {
            if (r.GetProperty("execute").GetString() != "echo")
            {
                return false;
            }

            await server.ReplyAsync(r, r.GetProperty("arguments").GetRawText());
            return true;
        };
        JsonElement echoed = await qmp.ExecuteAsync("echo", new { device = "virtio0", size = 42 });
        Assert.Equal("virtio0", echoed.GetProperty("device").GetString());
        Assert.Equal(42, echoed.GetProperty("size").GetInt32());
        JsonElement fromElement = await qmp.ExecuteAsync("echo", JsonDocument.Parse("""{"a": [1, 2]}""").RootElement);
        Assert.Equal(2, fromElement.GetProperty("a").GetArrayLength());
        await Assert.ThrowsAsync<ArgumentException>(() => qmp.ExecuteAsync("echo", new[] { 1, 2 }));
    }

    [Fact]
    public async Task Concurrent_commands_are_matched_to_replies_by_id()
    {
        await using var server = new FakeQmpServer();
        await using QmpClient qmp = await QmpClient.ConnectAsync(server.SocketPath, Timeout);
        var held = new List<JsonElement>();
        server.Override = async r =>
        {
            if (r.GetProperty("execute").GetString() != "slow")
            {
                return false;
            }

            held.Add(r);
            if (held.Count == 3)
            {
                // Answer in reverse order.
                for (int i = held.Count - 1; i >= 0; i--)
                {
                    await server.ReplyAsync(held[i], held[i].GetProperty("arguments").GetProperty("n").GetRawText());
                }
            }

            return true;
        };

        Task<JsonElement>[] calls = [.. Enumerable.Range(1, 3).Select(n => qmp.ExecuteAsync("slow", new { n }))];
        JsonElement[] results = await Task.WhenAll(calls);

        Assert.Equal([1, 2, 3], results.Select(r => r.GetInt32()));
    }

    [Fact]
    public async Task Events_before_the_reply_are_caught_with_a_sequence_mark()
    {
        await using var server = new FakeQmpServer();
        await using QmpClient qmp = await QmpClient.ConnectAsync(server.SocketPath, Timeout);
        var seen = new List<string>();
        qmp.EventReceived += (_, e) =>
        {
            lock (seen)
            {
                seen.Add(e.Name);
            }
        };

        long mark = qmp.EventSequence;
        await qmp.StopAsync(); // the fake, like QEMU, sends STOP before the reply
        QmpEvent stop = await qmp.WaitForEventAsync("STOP", mark, Timeout);

        Assert.Equal("STOP", stop.Name);
        Assert.Equal(mark + 1, stop.Sequence);
        Assert.Equal(new DateTimeOffset(2023, 11, 14, 22, 13, 20, TimeSpan.Zero).AddTicks(1_234_560), stop.Timestamp);
        Assert.Equal(JsonValueKind.Object, stop.Data.ValueKind);

        // Waiting "from now" does not see the STOP that already came.
        await Assert.ThrowsAsync<ProtocolTimeoutException>(() => qmp.WaitForEventAsync("STOP", TimeSpan.FromMilliseconds(100)));
        Assert.Null(await qmp.TryWaitForEventAsync("STOP", qmp.EventSequence, TimeSpan.FromMilliseconds(50)));

        Task<QmpEvent> resume = qmp.WaitForEventAsync("RESUME", Timeout);
        await qmp.ContinueAsync();
        Assert.Equal("RESUME", (await resume).Name);
        lock (seen)
        {
            Assert.Equal(["STOP", "RESUME"], seen);
        }
    }

    [Fact]
    public async Task Event_data_is_kept_and_the_buffer_is_bounded()
    {
        await using var server = new FakeQmpServer();
        await using QmpClient qmp = await QmpClient.ConnectAsync(server.SocketPath, Timeout);

        for (int i = 0; i < QmpClient.EventBufferSize + 44; i++)
        {
            await server.SendEventAsync("BLOCK_JOB_READY", $$"""{"device": "d{{i}}"}""");
        }

        await server.SendEventAsync("SHUTDOWN", """{"guest": true, "reason": "guest-shutdown"}""");
        QmpEvent shutdown = await qmp.WaitForEventAsync("SHUTDOWN", 0, Timeout);
        Assert.Equal("guest-shutdown", shutdown.Data.GetProperty("reason").GetString());

        IReadOnlyList<QmpEvent> buffered = qmp.GetBufferedEvents();
        Assert.Equal(QmpClient.EventBufferSize, buffered.Count);
        Assert.Equal(QmpClient.EventBufferSize + 45, buffered[^1].Sequence);
        Assert.Equal(Enumerable.Range(46, QmpClient.EventBufferSize).Select(i => (long)i), buffered.Select(e => e.Sequence));
    }

    [Fact]
    public async Task A_throwing_event_handler_does_not_break_the_connection()
    {
        await using var server = new FakeQmpServer();
        await using QmpClient qmp = await QmpClient.ConnectAsync(server.SocketPath, Timeout);
        qmp.EventReceived += (_, _) => throw new InvalidOperationException("subscriber bug");

        await qmp.StopAsync();

        Assert.Equal("paused", await qmp.QueryStatusAsync());
        Assert.True(qmp.IsConnected);
    }

    [Fact]
    public async Task Malformed_json_is_a_protocol_error_that_closes_the_connection()
    {
        await using var server = new FakeQmpServer();
        await using QmpClient qmp = await QmpClient.ConnectAsync(server.SocketPath, Timeout);
        server.Override = async _ =>
        {
            await server.SendLineAsync("{\"return\": oops");
            return true;
        };

        var e = await Assert.ThrowsAsync<ProtocolException>(() => qmp.QueryStatusAsync());
        Assert.Contains("malformed JSON", e.Message, StringComparison.Ordinal);
        Assert.False(qmp.IsConnected);
        await Assert.ThrowsAsync<ProtocolException>(() => qmp.QueryStatusAsync());
    }

    [Fact]
    public async Task Messages_that_are_not_qmp_are_refused()
    {
        await using var server = new FakeQmpServer();
        await using QmpClient qmp = await QmpClient.ConnectAsync(server.SocketPath, Timeout);
        server.Override = async _ =>
        {
            await server.SendLineAsync("[1, 2, 3]");
            return true;
        };

        await Assert.ThrowsAsync<ProtocolException>(() => qmp.QueryStatusAsync());
        Assert.False(qmp.IsConnected);
    }

    [Fact]
    public async Task An_endless_line_is_refused_at_the_size_limit()
    {
        await using var server = new FakeQmpServer();
        await using QmpClient qmp = await QmpClient.ConnectAsync(server.SocketPath, Timeout);
        server.Override = async _ =>
        {
            var chunk = new byte[1024 * 1024];
            chunk.AsSpan().Fill((byte)' ');
            try
            {
                for (int i = 0; i <= QmpClient.MaxMessageBytes / chunk.Length; i++)
                {
                    await server.SendRawAsync(chunk);
                }
            }
            catch (SocketException)
            {
                // The client hung up, as it should.
            }

            return true;
        };

        var e = await Assert.ThrowsAsync<ProtocolException>(() => qmp.QueryStatusAsync());
        Assert.Contains("longer than", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_command_without_reply_times_out_and_the_connection_stays_usable()
    {
        await using var server = new FakeQmpServer();
        await using QmpClient qmp = await QmpClient.ConnectAsync(server.SocketPath, Timeout);
        qmp.CommandTimeout = TimeSpan.FromMilliseconds(300);
        server.Override = r => Task.FromResult(r.GetProperty("execute").GetString() == "hang");

        var watch = Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<ProtocolTimeoutException>(() => qmp.ExecuteAsync("hang"));
        Assert.InRange(watch.Elapsed, TimeSpan.FromMilliseconds(250), TimeSpan.FromSeconds(3));
        Assert.Contains("hang", e.Message, StringComparison.Ordinal);
        Assert.Equal("running", await qmp.QueryStatusAsync());
    }

    [Fact]
    public async Task Quit_tolerates_the_connection_closing_instead_of_a_reply()
    {
        await using var server = new FakeQmpServer();
        await using QmpClient qmp = await QmpClient.ConnectAsync(server.SocketPath, Timeout);
        server.Override = r =>
        {
            if (r.GetProperty("execute").GetString() != "quit")
            {
                return Task.FromResult(false);
            }

            server.CloseClient();
            return Task.FromResult(true);
        };

        await qmp.QuitAsync();
        Assert.False(qmp.IsConnected);
    }

    [Fact]
    public async Task Quit_with_a_reply_completes_too()
    {
        await using var server = new FakeQmpServer();
        await using QmpClient qmp = await QmpClient.ConnectAsync(server.SocketPath, Timeout);
        await qmp.QuitAsync();
        await WaitUntilAsync(() => !qmp.IsConnected);
    }

    [Fact]
    public async Task Waiting_for_an_event_fails_fast_when_the_connection_closes()
    {
        await using var server = new FakeQmpServer();
        await using QmpClient qmp = await QmpClient.ConnectAsync(server.SocketPath, Timeout);
        Task<QmpEvent> waiting = qmp.WaitForEventAsync("NEVER", TimeSpan.FromSeconds(30));

        server.CloseClient();

        var watch = Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<ProtocolException>(() => waiting);
        Assert.IsNotType<ProtocolTimeoutException>(e);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task Connect_retries_until_the_socket_exists()
    {
        await using var server = new FakeQmpServer(listenNow: false);
        Task<QmpClient> connecting = QmpClient.ConnectAsync(server.SocketPath, Timeout);
        await Task.Delay(300);
        Assert.False(connecting.IsCompleted);
        server.Listen();

        await using QmpClient qmp = await connecting;
        Assert.True(qmp.IsConnected);
    }

    [Fact]
    public async Task Connect_to_a_missing_socket_fails_with_a_target_exception()
    {
        string path = Path.Combine(Path.GetTempPath(), $"vmi-missing-{Guid.NewGuid():N}.sock");
        var watch = Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<TargetException>(() => QmpClient.ConnectAsync(path, TimeSpan.FromMilliseconds(400)));
        Assert.InRange(watch.Elapsed, TimeSpan.FromMilliseconds(350), TimeSpan.FromSeconds(3));
        Assert.Contains(path, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_server_that_never_greets_is_reported()
    {
        await using var server = new FakeQmpServer { SendGreeting = false };
        var e = await Assert.ThrowsAsync<TargetException>(() => QmpClient.ConnectAsync(server.SocketPath, TimeSpan.FromMilliseconds(400)));
        Assert.Contains("another client", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Dispose_fails_pending_commands()
    {
        await using var server = new FakeQmpServer();
        QmpClient qmp = await QmpClient.ConnectAsync(server.SocketPath, Timeout);
        server.Override = _ => Task.FromResult(true);
        Task<JsonElement> pending = qmp.ExecuteAsync("anything");

        await qmp.DisposeAsync();

        await Assert.ThrowsAsync<ProtocolException>(() => pending);
        Assert.False(qmp.IsConnected);
    }

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        var watch = Stopwatch.StartNew();
        while (!condition() && watch.Elapsed < Timeout)
        {
            await Task.Delay(10);
        }

        Assert.True(condition());
    }
}
