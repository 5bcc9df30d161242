using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Vmi.Core;

namespace Vmi.Qemu;

/// <summary>An asynchronous QMP event (<c>STOP</c>, <c>RESUME</c>, <c>SHUTDOWN</c>, ...).</summary>
/// <param name="Name">The event name as QEMU spells it.</param>
/// <param name="Data">The <c>data</c> object; an empty object when the event carries none.</param>
/// <param name="Timestamp">QEMU's timestamp of the event (host wall clock, microsecond resolution).</param>
public sealed record QmpEvent(string Name, JsonElement Data, DateTimeOffset Timestamp)
{
    /// <summary>Position of the event in this connection's event stream, starting at 1; see <see cref="QmpClient.EventSequence"/>.</summary>
    public long Sequence { get; init; }
}

/// <summary>
/// Client of the QEMU Machine Protocol over a unix socket (<c>-qmp unix:PATH,server=on,wait=off</c>).
/// </summary>
/// <remarks>
/// <para>Facts about QEMU 7.2 this client relies on or works around:</para>
/// <list type="bullet">
/// <item>Messages are one JSON object per line, terminated by <c>\r\n</c>. The first is the greeting
/// <c>{"QMP": {"version": ..., "capabilities": ["oob"]}}</c>; commands are refused until <c>qmp_capabilities</c> was sent.</item>
/// <item>A socket chardev serves one client at a time: a second client's connect succeeds but it gets no greeting until
/// the first disconnects, so a missing greeting usually means someone else holds the monitor.</item>
/// <item>Replies echo the request's <c>id</c> (any JSON value; this client uses numbers), which is how concurrent
/// <see cref="ExecuteAsync"/> calls are matched to their replies.</item>
/// <item>Events are not replies: <c>stop</c> emits <c>STOP</c> before its <c>{"return": {}}</c>, so a caller that awaits
/// <see cref="StopAsync"/> and only then starts waiting for <c>STOP</c> would miss it. The client keeps the last
/// <see cref="EventBufferSize"/> events; take <see cref="EventSequence"/> before acting and pass it to
/// <see cref="WaitForEventAsync(string, long, TimeSpan, CancellationToken)"/>.</item>
/// <item>Run states seen with QEMU 7.2: <c>prelaunch</c> with <c>-S</c> until the first <c>cont</c>, and again after
/// <c>system_reset</c> of a stopped VM; <c>debug</c> after a gdb breakpoint, watchpoint or step; <c>paused</c> after QMP
/// <c>stop</c>, a gdb attach or interrupt, or any gdb packet that reached the stub while the VM ran. A successful gdb
/// detach resumes the VM (<c>running</c>); <c>cont</c> on a running VM is accepted.</item>
/// <item><c>quit</c> may close the connection before its reply arrives; <see cref="QuitAsync"/> accepts either.</item>
/// <item><c>system_reset</c> on the <c>pc</c> machine does not map 0xe0000-0xfffff back to the BIOS ROM (the i440FX PAM
/// registers keep their value). SeaBIOS copes on its own reboot path by copying the ROM back, but a reset that lands while
/// SeaBIOS is copying itself into that RAM leaves a reset vector that jumps into zeros and the VM never boots. After
/// SeaBIOS ran, 0xffff0 reads its RAM copy; the ROM stays readable at 0xfffffff0.</item>
/// </list>
/// </remarks>
public sealed class QmpClient : IAsyncDisposable
{
    /// <summary>Longest QMP message accepted (one line of JSON). <c>query-qmp-schema</c>, the largest common reply, is well below it.</summary>
    public const int MaxMessageBytes = 16 * 1024 * 1024;

    /// <summary>Number of recent events kept for <see cref="WaitForEventAsync(string, long, TimeSpan, CancellationToken)"/>.</summary>
    public const int EventBufferSize = 256;

    private static readonly JsonElement EmptyObject = JsonDocument.Parse("{}").RootElement.Clone();

    private readonly Socket _socket;
    private readonly string _path;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly ConcurrentDictionary<long, PendingCommand> _pending = new();
    private readonly Lock _eventLock = new();
    private readonly Queue<QmpEvent> _events = new();
    private readonly List<EventWaiter> _eventWaiters = [];
    private readonly CancellationTokenSource _lifetime = new();
    private readonly TaskCompletionSource<JsonElement> _greeting = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task _readLoop = Task.CompletedTask;
    private long _nextId;
    private long _eventSequence;
    private Exception? _closeReason;
    private int _disposed;

    private QmpClient(Socket socket, string path)
    {
        _socket = socket;
        _path = path;
    }

    /// <summary>Raised on the connection's reader for every event, after it was buffered. A handler's exception is swallowed so it cannot end the connection; keep handlers short.</summary>
    public event EventHandler<QmpEvent>? EventReceived;

    /// <summary>The greeting's <c>QMP</c> object: <c>version.qemu.major/minor/micro</c>, <c>version.package</c>, <c>capabilities</c>.</summary>
    public JsonElement Greeting { get; private set; }

    /// <summary>How long <see cref="ExecuteAsync"/> waits for a reply before failing with <see cref="ProtocolTimeoutException"/>. Default 30 s.</summary>
    public TimeSpan CommandTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Whether the connection is open: not disposed, not closed by QEMU, no protocol violation seen.</summary>
    public bool IsConnected => Volatile.Read(ref _closeReason) is null;

    /// <summary>The <see cref="QmpEvent.Sequence"/> of the last event received so far (0 before the first).</summary>
    public long EventSequence
    {
        get
        {
            lock (_eventLock)
            {
                return _eventSequence;
            }
        }
    }

    /// <summary>Connects to QEMU's QMP socket, reads the greeting and negotiates capabilities.</summary>
    /// <param name="unixSocketPath">Path of the unix socket QEMU listens on.</param>
    /// <param name="timeout">Time allowed for everything; the connect is retried until then because QEMU may not have created the socket yet.</param>
    /// <param name="ct">Cancels the attempt.</param>
    /// <exception cref="TargetException">No QMP server answered within <paramref name="timeout"/>.</exception>
    /// <exception cref="ProtocolException">The peer does not speak QMP.</exception>
    public static async Task<QmpClient> ConnectAsync(string unixSocketPath, TimeSpan timeout, CancellationToken ct = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(unixSocketPath);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(timeout, TimeSpan.Zero);
        long start = Stopwatch.GetTimestamp();
        TimeSpan Remaining() => timeout - Stopwatch.GetElapsedTime(start);

        Socket socket = await ConnectSocketAsync(unixSocketPath, timeout, Remaining, ct).ConfigureAwait(false);
        var client = new QmpClient(socket, unixSocketPath);
        client._readLoop = Task.Run(client.ReadLoopAsync, CancellationToken.None);
        try
        {
            try
            {
                client.Greeting = await client._greeting.Task.WaitAsync(Clamp(Remaining()), ct).ConfigureAwait(false);
            }
            catch (TimeoutException e)
            {
                throw new TargetException(
                    $"QMP socket '{unixSocketPath}' accepted the connection but sent no greeting within {timeout.TotalSeconds:0.#} s. " +
                    "QEMU serves one QMP client per socket at a time: is another client connected?", e);
            }

            TimeSpan saved = client.CommandTimeout;
            client.CommandTimeout = Clamp(Remaining());
            try
            {
                await client.ExecuteAsync("qmp_capabilities", null, ct).ConfigureAwait(false);
            }
            finally
            {
                client.CommandTimeout = saved;
            }

            return client;
        }
        catch
        {
            await client.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Executes a QMP command and returns its <c>return</c> value. Safe to call concurrently.</summary>
    /// <param name="command">The command name (<c>query-status</c>).</param>
    /// <param name="arguments">
    /// The <c>arguments</c> object, null for none: a <see cref="JsonElement"/> or <see cref="System.Text.Json.Nodes.JsonObject"/>,
    /// a dictionary (names with dashes, such as <c>command-line</c>, need one), or an object <see cref="JsonSerializer"/> turns into a
    /// JSON object (an anonymous type). JSON types, dictionaries, lists and primitives are written without reflection, so they also
    /// work under NativeAOT and in file-based apps, where reflection-based serialization is off.
    /// </param>
    /// <param name="ct">Cancels waiting for the reply (the command may still run in QEMU).</param>
    /// <exception cref="QmpErrorException">QEMU answered with an error; it carries the error class and description.</exception>
    /// <exception cref="ProtocolTimeoutException">No reply within <see cref="CommandTimeout"/>.</exception>
    /// <exception cref="ProtocolException">The connection is closed or broke.</exception>
    public async Task<JsonElement> ExecuteAsync(string command, object? arguments = null, CancellationToken ct = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(command);
        byte[] message = SerializeCommand(command, arguments, Interlocked.Increment(ref _nextId), out long id);
        var pending = new PendingCommand(command, new TaskCompletionSource<JsonElement>(TaskCreationOptions.RunContinuationsAsynchronously));
        _pending[id] = pending;
        try
        {
            // Registered first and checked second, so a close that races with us fails this command too.
            ThrowIfClosed();
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(CommandTimeout);
            try
            {
                await SendAsync(message, timeout.Token).ConfigureAwait(false);
                return await pending.Reply.Task.WaitAsync(timeout.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested && timeout.IsCancellationRequested)
            {
                throw new ProtocolTimeoutException(
                    $"QMP command '{command}' got no reply from '{_path}' within {CommandTimeout.TotalSeconds:0.#} s.");
            }
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    /// <summary>Runs a human monitor (HMP) command line through <c>human-monitor-command</c> and returns its output.</summary>
    /// <remarks>QEMU 7.2 answers <c>info registers</c> in about 7 ms; the output uses <c>\r\n</c> line ends.</remarks>
    public async Task<string> HumanMonitorCommandAsync(string commandLine, CancellationToken ct = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(commandLine);
        var arguments = new Dictionary<string, string> { ["command-line"] = commandLine };
        JsonElement result = await ExecuteAsync("human-monitor-command", arguments, ct).ConfigureAwait(false);
        return result.ValueKind == JsonValueKind.String
            ? result.GetString()!
            : throw new ProtocolException($"QMP human-monitor-command returned {result.ValueKind}, expected a string.");
    }

    /// <summary>Returns the run state from <c>query-status</c>: <c>running</c>, <c>paused</c>, <c>debug</c>, <c>prelaunch</c>, <c>shutdown</c>, ...</summary>
    public async Task<string> QueryStatusAsync(CancellationToken ct = default)
    {
        JsonElement result = await ExecuteAsync("query-status", null, ct).ConfigureAwait(false);
        return result.ValueKind == JsonValueKind.Object
               && result.TryGetProperty("status", out JsonElement status)
               && status.ValueKind == JsonValueKind.String
            ? status.GetString()!
            : throw new ProtocolException($"QMP query-status returned no status: {Excerpt(result.GetRawText())}");
    }

    /// <summary>Pauses all vCPUs (<c>stop</c>). QEMU emits <c>STOP</c> before the reply.</summary>
    public Task StopAsync(CancellationToken ct = default) => ExecuteAsync("stop", null, ct);

    /// <summary>Resumes the VM (<c>cont</c>), also from <c>prelaunch</c> and <c>debug</c>. QEMU emits <c>RESUME</c>.</summary>
    public Task ContinueAsync(CancellationToken ct = default) => ExecuteAsync("cont", null, ct);

    /// <summary>Asks QEMU to exit (<c>quit</c>). Returns when the reply arrives or the connection closes, whichever comes first.</summary>
    public async Task QuitAsync(CancellationToken ct = default)
    {
        try
        {
            await ExecuteAsync("quit", null, ct).ConfigureAwait(false);
        }
        catch (ProtocolException) when (!IsConnected)
        {
            // QEMU exited before (or instead of) replying: that is what was asked for.
        }
    }

    /// <summary>Waits for the next event named <paramref name="name"/> received after this call started.</summary>
    /// <remarks>
    /// Events that arrived before the call are not matched. To catch an event caused by a command, read <see cref="EventSequence"/>
    /// before sending the command and use <see cref="WaitForEventAsync(string, long, TimeSpan, CancellationToken)"/>.
    /// </remarks>
    /// <exception cref="ProtocolTimeoutException">No such event within <paramref name="timeout"/>.</exception>
    /// <exception cref="ProtocolException">The connection closed while waiting.</exception>
    public Task<QmpEvent> WaitForEventAsync(string name, TimeSpan timeout, CancellationToken ct = default) =>
        WaitForEventAsync(name, EventSequence, timeout, ct);

    /// <summary>
    /// Waits for the first event named <paramref name="name"/> whose <see cref="QmpEvent.Sequence"/> is greater than
    /// <paramref name="afterSequence"/>, looking in the buffer of the last <see cref="EventBufferSize"/> events first.
    /// </summary>
    /// <exception cref="ProtocolTimeoutException">No such event within <paramref name="timeout"/>.</exception>
    /// <exception cref="ProtocolException">The connection closed while waiting.</exception>
    public async Task<QmpEvent> WaitForEventAsync(string name, long afterSequence, TimeSpan timeout, CancellationToken ct = default) =>
        await TryWaitForEventAsync(name, afterSequence, timeout, ct).ConfigureAwait(false)
        ?? throw new ProtocolTimeoutException($"QMP event '{name}' did not arrive within {timeout.TotalSeconds:0.###} s.");

    /// <summary>Like <see cref="WaitForEventAsync(string, long, TimeSpan, CancellationToken)"/>, but returns null on timeout.</summary>
    /// <exception cref="ProtocolException">The connection closed while waiting.</exception>
    public async Task<QmpEvent?> TryWaitForEventAsync(string name, long afterSequence, TimeSpan timeout, CancellationToken ct = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        EventWaiter waiter;
        lock (_eventLock)
        {
            foreach (QmpEvent buffered in _events)
            {
                if (buffered.Sequence > afterSequence && buffered.Name == name)
                {
                    return buffered;
                }
            }

            ThrowIfClosed();
            waiter = new EventWaiter(name, afterSequence);
            _eventWaiters.Add(waiter);
        }

        try
        {
            return await waiter.Event.Task.WaitAsync(timeout, ct).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            return null;
        }
        finally
        {
            lock (_eventLock)
            {
                _eventWaiters.Remove(waiter);
            }
        }
    }

    /// <summary>A snapshot of the buffered events, oldest first.</summary>
    public IReadOnlyList<QmpEvent> GetBufferedEvents()
    {
        lock (_eventLock)
        {
            return [.. _events];
        }
    }

    /// <summary>Closes the connection. Pending commands and waits fail with <see cref="ProtocolException"/>. QEMU keeps running.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        Close(new ProtocolException($"The QMP client for '{_path}' was disposed."));
        await _lifetime.CancelAsync().ConfigureAwait(false);
        try
        {
            await _readLoop.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // The read loop ends by cancellation on dispose.
        }

        _socket.Dispose();
        _lifetime.Dispose();
    }

    private static Task<Socket> ConnectSocketAsync(string path, TimeSpan timeout, Func<TimeSpan> remaining, CancellationToken ct) =>
        SocketConnector.ConnectWithRetryAsync(
            () => new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified),
            (socket, token) => socket.ConnectAsync(new UnixDomainSocketEndPoint(path), token),
            remaining,
            last => new TargetException(
                $"Could not connect to the QMP socket '{path}' within {timeout.TotalSeconds:0.#} s ({(last is null ? "timed out" : last.Message)}). " +
                $"Is QEMU running with -qmp unix:{path},server=on,wait=off?", last ?? new SocketException((int)SocketError.TimedOut)),
            ct);

    private static TimeSpan Clamp(TimeSpan t) => t > TimeSpan.FromMilliseconds(1) ? t : TimeSpan.FromMilliseconds(1);

    private static byte[] SerializeCommand(string command, object? arguments, long nextId, out long id)
    {
        id = nextId;
        var buffer = new ArrayBufferWriter<byte>(128);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("execute", command);
            if (arguments is not null)
            {
                writer.WritePropertyName("arguments");
                long before = writer.BytesPending + writer.BytesCommitted;
                WriteArguments(writer, arguments);
                writer.Flush();
                if (buffer.WrittenSpan[(int)before] != (byte)'{')
                {
                    throw new ArgumentException($"QMP arguments must be a JSON object, not {arguments.GetType().Name}.", nameof(arguments));
                }
            }

            writer.WriteNumber("id", id);
            writer.WriteEndObject();
        }

        buffer.Write("\n"u8);
        return buffer.WrittenSpan.ToArray();
    }

    // JSON values, JSON nodes, dictionaries, lists and primitives are written without reflection, so QMP calls also work
    // where reflection-based serialization is off (NativeAOT, trimmed, file-based apps); other objects (anonymous types,
    // records) fall back to JsonSerializer.
    private static void WriteArguments(Utf8JsonWriter writer, object? value)
    {
        switch (value)
        {
            case null:
                writer.WriteNullValue();
                break;
            case JsonElement element:
                element.WriteTo(writer);
                break;
            case JsonDocument document:
                document.RootElement.WriteTo(writer);
                break;
            case System.Text.Json.Nodes.JsonNode node:
                node.WriteTo(writer);
                break;
            case string text:
                writer.WriteStringValue(text);
                break;
            case bool flag:
                writer.WriteBooleanValue(flag);
                break;
            case int or long or short or sbyte:
                writer.WriteNumberValue(Convert.ToInt64(value, System.Globalization.CultureInfo.InvariantCulture));
                break;
            case uint or ulong or ushort or byte:
                writer.WriteNumberValue(Convert.ToUInt64(value, System.Globalization.CultureInfo.InvariantCulture));
                break;
            case double or float or decimal:
                writer.WriteNumberValue(Convert.ToDouble(value, System.Globalization.CultureInfo.InvariantCulture));
                break;
            case System.Collections.IDictionary dictionary:
                writer.WriteStartObject();
                foreach (System.Collections.DictionaryEntry entry in dictionary)
                {
                    writer.WritePropertyName(entry.Key as string ?? throw new ArgumentException("QMP argument names must be strings.", nameof(value)));
                    WriteArguments(writer, entry.Value);
                }

                writer.WriteEndObject();
                break;
            case IEnumerable<KeyValuePair<string, object?>> pairs:
                writer.WriteStartObject();
                foreach (KeyValuePair<string, object?> pair in pairs)
                {
                    writer.WritePropertyName(pair.Key);
                    WriteArguments(writer, pair.Value);
                }

                writer.WriteEndObject();
                break;
            case IEnumerable<KeyValuePair<string, string>> stringPairs:
                writer.WriteStartObject();
                foreach (KeyValuePair<string, string> pair in stringPairs)
                {
                    writer.WriteString(pair.Key, pair.Value);
                }

                writer.WriteEndObject();
                break;
            case System.Collections.IEnumerable list:
                writer.WriteStartArray();
                foreach (object? item in list)
                {
                    WriteArguments(writer, item);
                }

                writer.WriteEndArray();
                break;
            default:
                JsonSerializer.Serialize(writer, value, value.GetType());
                break;
        }
    }

    private async Task SendAsync(byte[] message, CancellationToken ct)
    {
        await _writeLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            ThrowIfClosed();
            int sent = 0;
            while (sent < message.Length)
            {
                sent += await _socket.SendAsync(message.AsMemory(sent), SocketFlags.None, ct).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException or ObjectDisposedException)
        {
            // A half-written command leaves the stream unusable.
            var reason = new ProtocolException($"Sending to the QMP socket '{_path}' failed: {e.Message}", e);
            Close(reason);
            if (e is OperationCanceledException)
            {
                throw;
            }

            throw reason;
        }
        finally
        {
            _writeLock.Release();
        }
    }

    private async Task ReadLoopAsync()
    {
        var buffer = new byte[64 * 1024];
        int count = 0;
        Exception reason;
        try
        {
            while (true)
            {
                if (count == buffer.Length)
                {
                    if (buffer.Length >= MaxMessageBytes)
                    {
                        throw new ProtocolException($"QMP at '{_path}' sent a message longer than {MaxMessageBytes} bytes without a line end.");
                    }

                    Array.Resize(ref buffer, Math.Min(buffer.Length * 2, MaxMessageBytes));
                }

                int received = await _socket.ReceiveAsync(buffer.AsMemory(count), SocketFlags.None, _lifetime.Token).ConfigureAwait(false);
                if (received == 0)
                {
                    reason = new ProtocolException($"QEMU closed the QMP connection '{_path}'.");
                    break;
                }

                int scan = count;
                count += received;
                int lineStart = 0;
                int newline;
                while ((newline = buffer.AsSpan(scan, count - scan).IndexOf((byte)'\n')) >= 0)
                {
                    newline += scan;
                    HandleMessage(buffer.AsSpan(lineStart, newline - lineStart));
                    lineStart = scan = newline + 1;
                }

                if (lineStart > 0)
                {
                    Buffer.BlockCopy(buffer, lineStart, buffer, 0, count - lineStart);
                    count -= lineStart;
                }
            }
        }
        catch (OperationCanceledException) when (_lifetime.IsCancellationRequested)
        {
            reason = new ProtocolException($"The QMP client for '{_path}' was disposed.");
        }
        catch (ProtocolException e)
        {
            reason = e;
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            reason = new ProtocolException($"The QMP connection '{_path}' failed: {e.Message}", e);
        }

        Close(reason);
    }

    private void HandleMessage(ReadOnlySpan<byte> line)
    {
        line = line.TrimEnd("\r\n\t "u8).TrimStart("\r\n\t "u8);
        if (line.IsEmpty)
        {
            return;
        }

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(line.ToArray());
        }
        catch (JsonException e)
        {
            throw new ProtocolException($"QMP at '{_path}' sent malformed JSON: {Excerpt(Encoding.UTF8.GetString(line))}", e);
        }

        using (document)
        {
            JsonElement root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new ProtocolException($"QMP at '{_path}' sent a message that is not a JSON object: {Excerpt(root.GetRawText())}");
            }

            if (root.TryGetProperty("QMP", out JsonElement greeting))
            {
                _greeting.TrySetResult(greeting.Clone());
            }
            else if (root.TryGetProperty("event", out JsonElement name))
            {
                OnEvent(root, name);
            }
            else if (root.TryGetProperty("return", out JsonElement result))
            {
                if (TryTakePending(root, out PendingCommand? pending))
                {
                    pending.Reply.TrySetResult(result.Clone());
                }
            }
            else if (root.TryGetProperty("error", out JsonElement error))
            {
                OnError(root, error);
            }
            else
            {
                throw new ProtocolException($"QMP at '{_path}' sent a message that is neither greeting, event nor reply: {Excerpt(root.GetRawText())}");
            }
        }
    }

    private bool TryTakePending(JsonElement root, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out PendingCommand? pending)
    {
        pending = null;
        return root.TryGetProperty("id", out JsonElement id)
               && id.ValueKind == JsonValueKind.Number
               && id.TryGetInt64(out long value)
               && _pending.TryRemove(value, out pending);
    }

    private void OnError(JsonElement root, JsonElement error)
    {
        string errorClass = error.ValueKind == JsonValueKind.Object && error.TryGetProperty("class", out JsonElement c) && c.ValueKind == JsonValueKind.String
            ? c.GetString()! : "(no class)";
        string description = error.ValueKind == JsonValueKind.Object && error.TryGetProperty("desc", out JsonElement d) && d.ValueKind == JsonValueKind.String
            ? d.GetString()! : "(no description)";
        if (TryTakePending(root, out PendingCommand? pending))
        {
            pending.Reply.TrySetException(new QmpErrorException(pending.Command, errorClass, description));
            return;
        }

        if (!root.TryGetProperty("id", out _))
        {
            // QEMU answers without an id only when it could not parse the request at all; it cannot say which one.
            foreach (long key in _pending.Keys)
            {
                if (_pending.TryRemove(key, out PendingCommand? orphan))
                {
                    orphan.Reply.TrySetException(new QmpErrorException(orphan.Command, errorClass, description));
                }
            }
        }
    }

    private void OnEvent(JsonElement root, JsonElement nameElement)
    {
        if (nameElement.ValueKind != JsonValueKind.String)
        {
            throw new ProtocolException($"QMP at '{_path}' sent an event without a name: {Excerpt(root.GetRawText())}");
        }

        JsonElement data = root.TryGetProperty("data", out JsonElement d) ? d.Clone() : EmptyObject;
        DateTimeOffset timestamp = DateTimeOffset.UtcNow;
        if (root.TryGetProperty("timestamp", out JsonElement ts) && ts.ValueKind == JsonValueKind.Object
            && ts.TryGetProperty("seconds", out JsonElement s) && s.TryGetInt64(out long seconds)
            && ts.TryGetProperty("microseconds", out JsonElement us) && us.TryGetInt64(out long micros)
            && seconds is >= 0 and < 253402300799 && micros is >= 0 and < 1_000_000)
        {
            timestamp = DateTimeOffset.FromUnixTimeSeconds(seconds).AddTicks(micros * 10);
        }

        QmpEvent qmpEvent;
        List<EventWaiter>? matched = null;
        lock (_eventLock)
        {
            qmpEvent = new QmpEvent(nameElement.GetString()!, data, timestamp) { Sequence = ++_eventSequence };
            _events.Enqueue(qmpEvent);
            if (_events.Count > EventBufferSize)
            {
                _events.Dequeue();
            }

            for (int i = _eventWaiters.Count - 1; i >= 0; i--)
            {
                EventWaiter waiter = _eventWaiters[i];
                if (waiter.Name == qmpEvent.Name && qmpEvent.Sequence > waiter.AfterSequence)
                {
                    (matched ??= []).Add(waiter);
                    _eventWaiters.RemoveAt(i);
                }
            }
        }

        if (matched is not null)
        {
            foreach (EventWaiter waiter in matched)
            {
                waiter.Event.TrySetResult(qmpEvent);
            }
        }

        try
        {
            EventReceived?.Invoke(this, qmpEvent);
        }
#pragma warning disable CA1031 // A subscriber's bug must not end the connection for everyone else.
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    private void Close(Exception reason)
    {
        if (Interlocked.CompareExchange(ref _closeReason, reason, null) is not null)
        {
            return;
        }

        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Already gone.
        }

        _greeting.TrySetException(reason);
        foreach (long key in _pending.Keys)
        {
            if (_pending.TryRemove(key, out PendingCommand? pending))
            {
                pending.Reply.TrySetException(new ProtocolException($"QMP command '{pending.Command}' got no reply: {reason.Message}", reason));
            }
        }

        lock (_eventLock)
        {
            foreach (EventWaiter waiter in _eventWaiters)
            {
                waiter.Event.TrySetException(new ProtocolException($"Stopped waiting for QMP event '{waiter.Name}': {reason.Message}", reason));
            }

            _eventWaiters.Clear();
        }
    }

    private void ThrowIfClosed()
    {
        Exception? reason = Volatile.Read(ref _closeReason);
        if (reason is not null)
        {
            throw new ProtocolException($"The QMP connection '{_path}' is closed: {reason.Message}", reason);
        }
    }

    private static string Excerpt(string text) => text.Length <= 200 ? text : string.Concat(text.AsSpan(0, 200), "...");

    private sealed record PendingCommand(string Command, TaskCompletionSource<JsonElement> Reply);

    private sealed class EventWaiter(string name, long afterSequence)
    {
        public string Name { get; } = name;
        public long AfterSequence { get; } = afterSequence;
        public TaskCompletionSource<QmpEvent> Event { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
