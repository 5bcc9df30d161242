using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace Vmi.Qemu.Tests.Fakes;

/// <summary>
/// An in-process QMP server on a unix socket in a temporary folder. By default it greets like QEMU 7.2 and answers
/// qmp_capabilities, query-status, stop (STOP event first, as QEMU does), cont, human-monitor-command and quit.
/// </summary>
internal sealed class FakeQmpServer : IAsyncDisposable
{
    public const string Greeting =
        """{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}""";

    private readonly DirectoryInfo _folder;
    private readonly CancellationTokenSource _cts = new();
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private Socket? _listener;
    private Socket? _client;
    private Task _serve = Task.CompletedTask;
    private string _status = "running";

    public FakeQmpServer(bool listenNow = true)
    {
        _folder = Directory.CreateTempSubdirectory("vmi-qmp-fake-");
        SocketPath = Path.Combine(_folder.FullName, "qmp.sock");
        if (listenNow)
        {
            Listen();
        }
    }

    public string SocketPath { get; }

    public bool SendGreeting { get; set; } = true;

    /// <summary>Every request received, in order.</summary>
    public ConcurrentQueue<JsonElement> Requests { get; } = new();

    /// <summary>Consulted first: return true when the request was handled.</summary>
    public Func<JsonElement, Task<bool>>? Override { get; set; }

    public void Listen()
    {
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(SocketPath));
        _listener.Listen(4);
        _serve = Task.Run(ServeAsync);
    }

    public Task SendLineAsync(string json) => SendRawAsync(Encoding.UTF8.GetBytes(json + "\r\n"));

    public async Task SendRawAsync(byte[] data)
    {
        Socket client = _client ?? throw new InvalidOperationException("No client connected.");
        await _writeLock.WaitAsync();
        try
        {
            await client.SendAsync(data, SocketFlags.None);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    public Task SendEventAsync(string name, string? data = null) =>
        SendLineAsync("""{"timestamp": {"seconds": 1700000000, "microseconds": 123456}, "event": """ + JsonSerializer.Serialize(name)
                      + (data is null ? "" : ", \"data\": " + data) + "}");

    public Task ReplyAsync(JsonElement request, string returnJson) =>
        SendLineAsync($$"""{"return": {{returnJson}}, "id": {{request.GetProperty("id").GetRawText()}} }""");

    public Task ReplyErrorAsync(JsonElement request, string errorClass, string description) =>
        SendLineAsync($$"""{"id": {{request.GetProperty("id").GetRawText()}}, "error": {"class": "{{errorClass}}", "desc": "{{description}}"} }""");

    public void CloseClient()
    {
        _client?.Shutdown(SocketShutdown.Both);
        _client?.Dispose();
    }

    private async Task ServeAsync()
    {
        try
        {
            _client = await _listener!.AcceptAsync(_cts.Token);
            if (SendGreeting)
            {
                await SendLineAsync(Greeting);
            }

            var buffer = new byte[65536];
            var pending = new List<byte>();
            while (!_cts.IsCancellationRequested)
            {
                int n = await _client.ReceiveAsync(buffer, SocketFlags.None, _cts.Token);
                if (n == 0)
                {
                    return;
                }

                pending.AddRange(buffer.AsSpan(0, n));
                int newline;
                while ((newline = pending.IndexOf((byte)'\n')) >= 0)
                {
                    string line = Encoding.UTF8.GetString([.. pending.GetRange(0, newline)]);
                    pending.RemoveRange(0, newline + 1);
                    JsonElement request = JsonDocument.Parse(line).RootElement.Clone();
                    Requests.Enqueue(request);
                    if (Override is null || !await Override(request))
                    {
                        await HandleDefaultAsync(request);
                    }
                }
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
            // Shutting down, or the client went away.
        }
    }

    private async Task HandleDefaultAsync(JsonElement request)
    {
        switch (request.GetProperty("execute").GetString())
        {
            case "qmp_capabilities":
                await ReplyAsync(request, "{}");
                break;
            case "query-status":
                await ReplyAsync(request, $$"""{"status": "{{_status}}", "singlestep": false, "running": {{(_status == "running" ? "true" : "false")}}}""");
                break;
            case "stop":
                _status = "paused";
                await SendEventAsync("STOP");
                await ReplyAsync(request, "{}");
                break;
            case "cont":
                _status = "running";
                await SendEventAsync("RESUME");
                await ReplyAsync(request, "{}");
                break;
            case "human-monitor-command":
                string line = request.GetProperty("arguments").GetProperty("command-line").GetString()!;
                await ReplyAsync(request, JsonSerializer.Serialize($"you said: {line}\r\n"));
                break;
            case "quit":
                await ReplyAsync(request, "{}");
                await SendEventAsync("SHUTDOWN", """{"guest": false, "reason": "host-qmp-quit"}""");
                CloseClient();
                break;
            default:
                await ReplyErrorAsync(request, "CommandNotFound", $"The command {request.GetProperty("execute").GetString()} has not been found");
                break;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _cts.CancelAsync();
        _listener?.Dispose();
        _client?.Dispose();
        try
        {
            await _serve;
        }
        catch (OperationCanceledException)
        {
        }

        _cts.Dispose();
        try
        {
            _folder.Delete(recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
