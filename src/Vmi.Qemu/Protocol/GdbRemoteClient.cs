using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading.Channels;
using Vmi.Core;

namespace Vmi.Qemu;

/// <summary>
/// Client of the gdb remote serial protocol, written against QEMU's gdb stub (<c>-gdb tcp:127.0.0.1:PORT</c>) in all-stop mode.
/// </summary>
/// <remarks>
/// <para>Facts about QEMU 7.2's stub (system emulation) this client relies on or works around:</para>
/// <list type="bullet">
/// <item>Connecting stops a running VM (QMP status <c>paused</c>; a VM started with <c>-S</c> stays <c>prelaunch</c>).
/// The stub serves one client at a time. Stops for a breakpoint, watchpoint or step leave status <c>debug</c>; an interrupt
/// (0x03), and any other byte that reaches the stub while the VM runs, leaves <c>paused</c>.</item>
/// <item><c>qSupported</c> answers <c>PacketSize=1000;qXfer:features:read+;vContSupported+;multiprocess+</c>: no
/// <c>QStartNoAckMode</c> (acks stay on), multiprocess thread ids <c>p01.01</c>, <c>p01.02</c>, ... one thread per vCPU
/// in vCPU order, listed one per <c>qfThreadInfo</c>/<c>qsThreadInfo</c> reply.</item>
/// <item><c>p</c> (read one register) answers an empty packet until the client has read <c>target.xml</c> through
/// <c>qXfer:features:read</c> on this connection, so <see cref="ConnectAsync"/> always reads it.</item>
/// <item><c>m</c> reads at most 0x800 bytes (PacketSize / 2) and answers <c>E22</c> beyond; an unmapped address gives
/// <c>E14</c>. Addresses are virtual, translated with the selected vCPU's (<c>Hg</c>) paging; with paging off
/// (real mode, the BIOS) virtual equals physical and the <c>cs</c> base is not added.</item>
/// <item>Breakpoints and watchpoints apply to all vCPUs. Under TCG <c>Z0</c>–<c>Z4</c> all work, watchpoints of any length.
/// A watchpoint stop names the watchpoint's start address, not the byte touched, and is only taken for accesses through
/// the watched virtual address. QEMU never reports <c>hwbreak</c>/<c>swbreak</c>.</item>
/// <item>A stop moves the stub's selected thread to the vCPU that stopped; this client re-selects (<c>Hg</c>) as needed.</item>
/// <item>If the VM runs although the stub believes it stopped (QMP <c>cont</c> while attached), the next packet is neither
/// acknowledged nor answered: its first byte pauses the VM (QMP status <c>paused</c>), the rest is dropped, and the stub
/// sends a <c>T02</c> stop reply instead. The client takes a packet arriving in place of the ack as the answer, records the
/// stop and repeats the operation once. QMP <c>stop</c> while the client has resumed the VM also produces <c>T02</c>.</item>
/// <item>In multiprocess mode <c>D</c> without a process id is refused with <c>E22</c> (and a client that then closes the
/// socket leaves the VM stopped in status <c>debug</c>); <c>D;1</c> detaches and the stub resumes the VM (status
/// <c>running</c>).</item>
/// <item>The target description lists <c>cs_base</c>..<c>es_base</c> inside an XML comment; they do not exist (see the
/// numbering in <see cref="Registers"/>: rip 16, cs 18, fs_base 24, cr0 27, cr3 29, cr4 30, efer 32).</item>
/// <item>Ctrl-C (0x03) while the VM is stopped is ignored: no reply.</item>
/// </list>
/// <para>The client is safe to call from several threads; packets are exchanged one at a time. While the target runs
/// (after <see cref="ResumeAsync"/>) only <see cref="WaitForStopAsync"/>, <see cref="InterruptAsync"/> and
/// <see cref="DetachAsync"/> are allowed.</para>
/// </remarks>
public sealed class GdbRemoteClient : IAsyncDisposable
{
    /// <summary>Largest packet accepted from the stub, before and after run-length expansion.</summary>
    public const int MaxPacketBytes = 1024 * 1024;

    /// <summary>Largest single <see cref="ReadMemoryAsync"/>/<see cref="WriteMemoryAsync"/> request.</summary>
    public const int MaxTransferBytes = 64 * 1024 * 1024;

    private const int MaxDescriptionBytes = 1024 * 1024;
    private const int MaxDescriptionFiles = 32;
    private const int MaxThreads = 4096;
    private const int MaxChecksumFailures = 8;

    private readonly Socket _socket;
    private readonly string _endpoint;
    private readonly SemaphoreSlim _commandLock = new(1, 1);
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    // Acks and packets in arrival order; bounded so a flooding peer is slowed by TCP instead of filling memory.
    private readonly Channel<Incoming> _incoming = Channel.CreateBounded<Incoming>(
        new BoundedChannelOptions(64) { SingleReader = true, SingleWriter = true, FullMode = BoundedChannelFullMode.Wait });
    private readonly CancellationTokenSource _lifetime = new();
    private readonly Lock _stateLock = new();
    private TaskCompletionSource<GdbStopReply>? _stopWaiter;
    private GdbStopReply? _lastStop;
    private Exception? _closeReason;
    private Task _readLoop = Task.CompletedTask;
    private volatile bool _noAck;
    private string? _selectedThread;
    private int _orphanedReplies;
    private IReadOnlyList<string> _threads = [];
    private IReadOnlyList<GdbRegisterInfo> _registers = [];
    private Dictionary<string, GdbRegisterInfo> _registersByName = new(StringComparer.OrdinalIgnoreCase);
    private Dictionary<string, string> _features = new(StringComparer.Ordinal);
    private bool _vContContinue;
    private bool _vContStep;
    private int _disposed;

    private GdbRemoteClient(Socket socket, string endpoint)
    {
        _socket = socket;
        _endpoint = endpoint;
    }

    /// <summary>Registers from the target description, in register-number order.</summary>
    public IReadOnlyList<GdbRegisterInfo> Registers => _registers;

    /// <summary>The description's architecture (<c>i386:x86-64</c>), or null.</summary>
    public string? Architecture { get; private set; }

    /// <summary>The stub's <c>qSupported</c> features: <c>name</c> → <c>+</c>, <c>-</c>, <c>?</c> or the value after <c>=</c>.</summary>
    public IReadOnlyDictionary<string, string> Features => _features;

    /// <summary>The stub's maximum packet size (<c>PacketSize</c>), which bounds memory transfer chunks.</summary>
    public int PacketSize { get; private set; } = 0x400;

    /// <summary>Whether the stub agreed to multiprocess thread ids (<c>pPID.TID</c>).</summary>
    public bool IsMultiprocess { get; private set; }

    /// <summary>Whether acks were switched off (<c>QStartNoAckMode</c>); QEMU 7.2 does not offer it.</summary>
    public bool IsNoAckMode => _noAck;

    /// <summary>The thread ids last listed by the stub; index <c>n</c> is vCPU <c>n</c>.</summary>
    public IReadOnlyList<string> Threads => _threads;

    /// <summary>How long to wait for the reply to a packet (and for the stop after a step or interrupt). Default 10 s.</summary>
    /// <remarks>A missing reply abandons the connection: a late reply could otherwise be taken for the answer to a later packet.</remarks>
    public TimeSpan ReplyTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>The most recent stop reply (from the initial <c>?</c>, a step, a breakpoint, an interrupt).</summary>
    public GdbStopReply? LastStop => Volatile.Read(ref _lastStop);

    /// <summary>Whether the client resumed the target and has not yet seen it stop.</summary>
    public bool IsRunning
    {
        get
        {
            lock (_stateLock)
            {
                return _stopWaiter is not null;
            }
        }
    }

    /// <summary>Whether the connection is usable: not disposed, detached, closed by the stub or broken.</summary>
    public bool IsConnected => Volatile.Read(ref _closeReason) is null;

    /// <summary>
    /// Connects to a gdb stub, negotiates features (<c>qSupported</c>, <c>QStartNoAckMode</c> if offered), reads the stop state
    /// (<c>?</c>), the target description (<c>target.xml</c> and its includes) and the thread list. Attaching stops a QEMU VM.
    /// </summary>
    /// <param name="host">Host name or address of the stub; use loopback.</param>
    /// <param name="port">TCP port of the stub.</param>
    /// <param name="timeout">Time allowed for everything; the connect is retried until then because QEMU may still be starting.</param>
    /// <param name="ct">Cancels the attempt.</param>
    /// <exception cref="TargetException">No stub answered within <paramref name="timeout"/>, or it reports no live target.</exception>
    /// <exception cref="ProtocolException">The peer does not speak the protocol.</exception>
    public static async Task<GdbRemoteClient> ConnectAsync(string host, int port, TimeSpan timeout, CancellationToken ct = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(host);
        ArgumentOutOfRangeException.ThrowIfLessThan(port, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(port, 65535);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(timeout, TimeSpan.Zero);
        long start = Stopwatch.GetTimestamp();
        TimeSpan Remaining() => timeout - Stopwatch.GetElapsedTime(start);
        string endpoint = $"{host}:{port}";

        Socket socket = await ConnectSocketAsync(host, port, endpoint, timeout, Remaining, ct).ConfigureAwait(false);
        var client = new GdbRemoteClient(socket, endpoint);
        client._readLoop = Task.Run(client.ReadLoopAsync, CancellationToken.None);
        TimeSpan saved = client.ReplyTimeout;
        try
        {
            client.ReplyTimeout = Clamp(Remaining());
            await client.HandshakeAsync(ct).ConfigureAwait(false);
            client.ReplyTimeout = saved;
            return client;
        }
        catch (ProtocolTimeoutException e)
        {
            await client.DisposeAsync().ConfigureAwait(false);
            throw new TargetException($"The gdb stub at {endpoint} accepted the connection but did not complete the handshake within {timeout.TotalSeconds:0.#} s: {e.Message}", e);
        }
        catch
        {
            await client.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Lists the stub's threads (<c>qfThreadInfo</c>/<c>qsThreadInfo</c>); for QEMU one per vCPU, index = vCPU number.</summary>
    public Task<IReadOnlyList<string>> ListThreadsAsync(CancellationToken ct = default) =>
        RunAsync(ListThreadsLockedAsync, ct);

    /// <summary>Reads one register of at most 64 bits on vCPU <paramref name="vcpu"/> (<c>Hg</c>, then <c>p</c>).</summary>
    /// <param name="name">Register name as in <see cref="Registers"/>, case-insensitive: <c>rip</c>, <c>rsp</c>, <c>cr3</c>, <c>efer</c>, <c>cs</c>, <c>fs_base</c>, <c>k_gs_base</c>...</param>
    /// <param name="vcpu">vCPU index (position in <see cref="Threads"/>).</param>
    /// <param name="ct">Cancels the read.</param>
    /// <exception cref="ProtocolException">Unknown register (the message lists the known ones), a register wider than 64 bits, or an error reply.</exception>
    public async Task<ulong> ReadRegisterAsync(string name, int vcpu = 0, CancellationToken ct = default)
    {
        GdbRegisterInfo register = FindRegister(name);
        if (register.BitSize > 64)
        {
            throw new ProtocolException($"Register '{register.Name}' is {register.BitSize} bits wide; read it with {nameof(ReadRegisterBytesAsync)}.");
        }

        byte[] value = await ReadRegisterBytesAsync(register.Name, vcpu, ct).ConfigureAwait(false);
        return ToUInt64(value);
    }

    /// <summary>Reads one register of any width, as the target's little-endian bytes.</summary>
    /// <exception cref="ProtocolException">Unknown register or an error reply.</exception>
    public Task<byte[]> ReadRegisterBytesAsync(string name, int vcpu = 0, CancellationToken ct = default)
    {
        GdbRegisterInfo register = FindRegister(name);
        return RunAsync(async token =>
        {
            await SelectThreadLockedAsync(vcpu, token).ConfigureAwait(false);
            return await ReadRegisterLockedAsync(register, token).ConfigureAwait(false);
        }, ct);
    }

    /// <summary>Reads every register of at most 64 bits on one vCPU: one <c>g</c> packet, <c>p</c> for any it does not cover.</summary>
    /// <returns>Name → value; the dictionary ignores case. Registers the stub marks unavailable are left out.</returns>
    public Task<IReadOnlyDictionary<string, ulong>> ReadRegistersAsync(int vcpu = 0, CancellationToken ct = default) =>
        RunAsync<IReadOnlyDictionary<string, ulong>>(async token =>
        {
            await SelectThreadLockedAsync(vcpu, token).ConfigureAwait(false);
            string reply = await ExchangeAsync("g", token).ConfigureAwait(false);
            ThrowIfError(reply, "g");
            if (!IsHexOrUnavailable(reply))
            {
                throw new ProtocolException($"gdb stub at {_endpoint}: 'g' reply is not hex: '{GdbPacket.Truncate(reply)}'.");
            }

            var values = new Dictionary<string, ulong>(StringComparer.OrdinalIgnoreCase);
            var covered = new HashSet<int>();
            int offset = 0;
            int expectedNumber = 0;
            foreach (GdbRegisterInfo register in _registers)
            {
                // The g packet is the registers in number order; a gap in the numbering makes the layout unknowable.
                int chars = (register.BitSize + 7) / 8 * 2;
                if (register.Number != expectedNumber || offset + chars > reply.Length)
                {
                    break;
                }

                string slice = reply.Substring(offset, chars);
                offset += chars;
                expectedNumber++;
                covered.Add(register.Number);
                if (register.BitSize <= 64 && !slice.Contains('x', StringComparison.Ordinal))
                {
                    values[register.Name] = ToUInt64(GdbPacket.FromHex(slice));
                }
            }

            foreach (GdbRegisterInfo register in _registers)
            {
                if (register.BitSize <= 64 && !covered.Contains(register.Number))
                {
                    byte[]? value = await TryReadRegisterLockedAsync(register, throwOnError: false, token).ConfigureAwait(false);
                    if (value is not null)
                    {
                        values[register.Name] = ToUInt64(value);
                    }
                }
            }

            return values;
        }, ct);

    /// <summary>Reads guest memory at a virtual address as vCPU <paramref name="vcpu"/> sees it (<c>m</c>, in chunks of PacketSize / 2).</summary>
    /// <exception cref="ArgumentOutOfRangeException">Negative length, longer than <see cref="MaxTransferBytes"/>, or the range wraps around.</exception>
    /// <exception cref="ProtocolException">The stub cannot read the range (unmapped address: <c>E14</c>).</exception>
    public async Task<byte[]> ReadMemoryAsync(ulong virtualAddress, int length, int vcpu = 0, CancellationToken ct = default) =>
        await ReadMemoryCoreAsync(virtualAddress, length, vcpu, throwOnError: true, ct).ConfigureAwait(false)
        ?? throw new UnreachableException();

    /// <summary>Like <see cref="ReadMemoryAsync"/>, but returns null when the stub answers with an error (unmapped address).</summary>
    public Task<byte[]?> TryReadMemoryAsync(ulong virtualAddress, int length, int vcpu = 0, CancellationToken ct = default) =>
        ReadMemoryCoreAsync(virtualAddress, length, vcpu, throwOnError: false, ct);

    /// <summary>Writes guest memory at a virtual address (<c>M</c>, chunked). Use it to patch code: TCG drops its translations for written code.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Longer than <see cref="MaxTransferBytes"/> or the range wraps around.</exception>
    /// <exception cref="ProtocolException">The stub refused the write.</exception>
    public Task WriteMemoryAsync(ulong virtualAddress, ReadOnlyMemory<byte> data, int vcpu = 0, CancellationToken ct = default)
    {
        CheckRange(virtualAddress, data.Length);
        return RunAsync(async token =>
        {
            await SelectThreadLockedAsync(vcpu, token).ConfigureAwait(false);
            int chunk = Math.Max(16, (PacketSize - 40) / 2);
            for (int done = 0; done < data.Length; done += chunk)
            {
                int n = Math.Min(chunk, data.Length - done);
                ulong address = virtualAddress + (ulong)done;
                string packet = string.Create(CultureInfo.InvariantCulture, $"M{address:x},{n:x}:{GdbPacket.ToHex(data.Span.Slice(done, n))}");
                string reply = await ExchangeAsync(packet, token).ConfigureAwait(false);
                if (reply != "OK")
                {
                    throw new ProtocolException($"gdb stub at {_endpoint} refused to write {n} bytes at 0x{address:x}: '{GdbPacket.Truncate(reply)}'.");
                }
            }

            return true;
        }, ct);
    }

    /// <summary>Inserts a breakpoint or watchpoint (<c>Z</c>) for all vCPUs.</summary>
    /// <param name="kind">Breakpoint or watchpoint type.</param>
    /// <param name="address">Virtual address.</param>
    /// <param name="length">Bytes watched for watchpoints; for breakpoints the architecture's "kind", 1 on x86.</param>
    /// <param name="ct">Cancels the request.</param>
    /// <exception cref="ProtocolException">The stub does not support this kind (empty reply) or refused it (<c>E..</c>).</exception>
    public Task InsertBreakpointAsync(GdbBreakpointKind kind, ulong address, ulong length, CancellationToken ct = default) =>
        BreakpointAsync('Z', kind, address, length, ct);

    /// <summary>Removes a breakpoint or watchpoint (<c>z</c>); the arguments must match the insertion.</summary>
    /// <exception cref="ProtocolException">Unsupported, or no such breakpoint (QEMU: <c>E22</c>).</exception>
    public Task RemoveBreakpointAsync(GdbBreakpointKind kind, ulong address, ulong length, CancellationToken ct = default) =>
        BreakpointAsync('z', kind, address, length, ct);

    /// <summary>Resumes all vCPUs (<c>vCont;c</c>, or <c>c</c>) and returns once the packet is sent; the stub answers only when the target stops.</summary>
    public Task ResumeAsync(CancellationToken ct = default) =>
        RunAsync(async token =>
        {
            await StartRunningLockedAsync(_vContContinue ? "vCont;c" : "c", token).ConfigureAwait(false);
            return true;
        }, ct);

    /// <summary>Executes one instruction on vCPU <paramref name="vcpu"/> (<c>vCont;s:thread</c>) and returns the stop that follows.</summary>
    /// <exception cref="ProtocolTimeoutException">No stop within <see cref="ReplyTimeout"/> (the target is then still considered running).</exception>
    public async Task<GdbStopReply> StepAsync(int vcpu = 0, CancellationToken ct = default)
    {
        TaskCompletionSource<GdbStopReply> waiter = await RunAsync(async token =>
        {
            string thread = await ThreadForLockedAsync(vcpu, token).ConfigureAwait(false);
            if (_vContStep)
            {
                return await StartRunningLockedAsync($"vCont;s:{thread}", token).ConfigureAwait(false);
            }

            await ExpectOkAsync($"Hc{thread}", token).ConfigureAwait(false);
            return await StartRunningLockedAsync("s", token).ConfigureAwait(false);
        }, ct).ConfigureAwait(false);
        return await AwaitStopAsync(waiter, ReplyTimeout, "a single step", ct).ConfigureAwait(false)
               ?? throw new ProtocolTimeoutException($"gdb stub at {_endpoint}: no stop within {ReplyTimeout.TotalSeconds:0.#} s after a single step.");
    }

    /// <summary>Waits until the target stops (breakpoint, watchpoint, interrupt, QMP <c>stop</c>) and returns the stop reply.</summary>
    /// <remarks>Returns <see cref="LastStop"/> at once when the target is not running.</remarks>
    /// <exception cref="ProtocolTimeoutException">The target did not stop within <paramref name="timeout"/>; it keeps running.</exception>
    public async Task<GdbStopReply> WaitForStopAsync(TimeSpan timeout, CancellationToken ct = default) =>
        await TryWaitForStopAsync(timeout, ct).ConfigureAwait(false)
        ?? throw new ProtocolTimeoutException($"The target behind the gdb stub at {_endpoint} did not stop within {timeout.TotalSeconds:0.###} s.");

    /// <summary>Like <see cref="WaitForStopAsync"/>, but returns null on timeout.</summary>
    public Task<GdbStopReply?> TryWaitForStopAsync(TimeSpan timeout, CancellationToken ct = default)
    {
        TaskCompletionSource<GdbStopReply>? waiter;
        lock (_stateLock)
        {
            waiter = _stopWaiter;
        }

        if (waiter is null)
        {
            // An exit ('W'/'X') closes the session: it is still the answer for a waiter that comes late.
            if (LastStop is { TargetAlive: false } ended)
                return Task.FromResult<GdbStopReply?>(ended);
            ThrowIfClosed();
            return Task.FromResult<GdbStopReply?>(LastStop ?? throw new InvalidOperationException("The target has not been resumed and reported no stop."));
        }

        return AwaitStopAsync(waiter, timeout, "waiting", ct);
    }

    /// <summary>Stops a running target (sends 0x03) and returns its stop reply; on a target that is not running, asks for the stop state (<c>?</c>).</summary>
    /// <remarks>The <c>?</c> path also stops a VM that runs behind the stub's back (QMP <c>cont</c>): the stub pauses the VM and reports <c>T02</c>.</remarks>
    /// <exception cref="ProtocolTimeoutException">No stop within <see cref="ReplyTimeout"/>.</exception>
    public async Task<GdbStopReply> InterruptAsync(CancellationToken ct = default)
    {
        TaskCompletionSource<GdbStopReply>? waiter;
        lock (_stateLock)
        {
            waiter = _stopWaiter;
        }

        if (waiter is null)
        {
            return await RunAsync(QueryStopLockedAsync, ct, retryOnStaleStop: false).ConfigureAwait(false);
        }

        await WriteRawAsync([GdbPacket.InterruptByte], ct).ConfigureAwait(false);
        return await AwaitStopAsync(waiter, ReplyTimeout, "an interrupt", ct).ConfigureAwait(false)
               ?? throw new ProtocolTimeoutException($"gdb stub at {_endpoint}: no stop within {ReplyTimeout.TotalSeconds:0.#} s after an interrupt.");
    }

    /// <summary>Detaches (<c>D;pid</c> in multiprocess mode, else <c>D</c>) and closes the connection. QEMU resumes the VM.</summary>
    /// <remarks>A running target is interrupted first. Disposing without detaching leaves a QEMU VM stopped (status <c>debug</c>).</remarks>
    /// <exception cref="ProtocolException">The stub refused both forms of the packet.</exception>
    public async Task DetachAsync(CancellationToken ct = default)
    {
        if (IsRunning)
        {
            await InterruptAsync(ct).ConfigureAwait(false);
        }

        await RunAsync(async token =>
        {
            string? pid = ProcessIdOf(_threads.Count > 0 ? _threads[0] : LastStop?.ThreadId);
            string first = IsMultiprocess && pid is not null ? $"D;{pid}" : "D";
            string reply = await ExchangeAsync(first, token).ConfigureAwait(false);
            if (reply != "OK" && pid is not null)
            {
                // Stubs disagree on whether multiprocess mode requires the pid; try the other form once.
                reply = await ExchangeAsync(first == "D" ? $"D;{pid}" : "D", token).ConfigureAwait(false);
            }

            if (reply != "OK")
            {
                throw new ProtocolException($"gdb stub at {_endpoint} refused to detach: '{GdbPacket.Truncate(reply)}'.");
            }

            return true;
        }, ct).ConfigureAwait(false);
        Close(new ProtocolException($"Detached from the gdb stub at {_endpoint}."));
    }

    /// <summary>Closes the connection without detaching: a QEMU VM stays stopped (status <c>debug</c>) until resumed over QMP.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        Close(new ProtocolException($"The gdb client for {_endpoint} was disposed."));
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

    // ---- connection and handshake -------------------------------------------------------------

    private static Task<Socket> ConnectSocketAsync(string host, int port, string endpoint, TimeSpan timeout, Func<TimeSpan> remaining, CancellationToken ct) =>
        SocketConnector.ConnectWithRetryAsync(
            () => new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true },
            (socket, token) => IPAddress.TryParse(host, out IPAddress? address)
                ? socket.ConnectAsync(new IPEndPoint(address, port), token)
                : socket.ConnectAsync(host, port, token),
            remaining,
            last =>
            {
                string message = $"Could not connect to the gdb stub at {endpoint} within {timeout.TotalSeconds:0.#} s ({last?.Message ?? "timed out"}). " +
                                 $"Is QEMU running with -gdb tcp:{endpoint}?";
                return last is null ? new TargetException(message) : new TargetException(message, last);
            },
            ct);

    private Task HandshakeAsync(CancellationToken ct) =>
        RunAsync(async token =>
        {
            string supported = await ExchangeAsync("qSupported:multiprocess+;swbreak+;hwbreak+;vContSupported+;xmlRegisters=i386", token).ConfigureAwait(false);
            ThrowIfError(supported, "qSupported");
            _features = ParseFeatures(supported);
            if (_features.TryGetValue("PacketSize", out string? size))
            {
                PacketSize = GdbPacket.TryParseHexNumber(size, out ulong packetSize) && packetSize >= 64
                    ? (int)Math.Min(packetSize, MaxPacketBytes)
                    : throw new ProtocolException($"gdb stub at {_endpoint} announced PacketSize={size}.");
            }

            IsMultiprocess = Supports("multiprocess");
            if (Supports("QStartNoAckMode") && await ExchangeAsync("QStartNoAckMode", token).ConfigureAwait(false) == "OK")
            {
                _noAck = true;
            }

            GdbStopReply stop = await QueryStopLockedAsync(token).ConfigureAwait(false);
            if (!stop.TargetAlive)
            {
                throw new TargetException($"The gdb stub at {_endpoint} has no live target: '{stop.Raw}'.");
            }

            if (Supports("qXfer:features:read"))
            {
                await LoadTargetDescriptionLockedAsync(token).ConfigureAwait(false);
            }

            await ListThreadsLockedAsync(token).ConfigureAwait(false);
            string vCont = await ExchangeAsync("vCont?", token).ConfigureAwait(false);
            if (vCont.StartsWith("vCont", StringComparison.Ordinal))
            {
                string[] actions = vCont.Split(';');
                _vContContinue = actions.Contains("c");
                _vContStep = actions.Contains("s");
            }

            return true;
        }, ct);

    private bool Supports(string feature) => _features.TryGetValue(feature, out string? value) && value == "+";

    private Dictionary<string, string> ParseFeatures(string reply)
    {
        var features = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string item in reply.Split(';', StringSplitOptions.RemoveEmptyEntries))
        {
            int equals = item.IndexOf('=', StringComparison.Ordinal);
            if (equals > 0)
            {
                features[item[..equals]] = item[(equals + 1)..];
            }
            else if (item.Length > 1 && item[^1] is '+' or '-' or '?')
            {
                features[item[..^1]] = item[^1..];
            }
            else
            {
                throw new ProtocolException($"gdb stub at {_endpoint}: malformed qSupported item '{GdbPacket.Truncate(item)}'.");
            }
        }

        return features;
    }

    private async Task<GdbStopReply> QueryStopLockedAsync(CancellationToken ct)
    {
        string reply = await ExchangeAsync("?", ct).ConfigureAwait(false);
        GdbStopReply stop = GdbStopReply.Parse(reply);
        OnStopped(stop);
        return stop;
    }

    private async Task LoadTargetDescriptionLockedAsync(CancellationToken ct)
    {
        var registers = new List<GdbRegisterInfo>();
        var loaded = new HashSet<string>(StringComparer.Ordinal);
        int total = 0;
        int nextNumber = 0;

        async Task LoadAsync(string annex, int depth)
        {
            if (depth > 8 || !loaded.Add(annex) || loaded.Count > MaxDescriptionFiles)
            {
                throw new ProtocolException($"gdb stub at {_endpoint}: target description includes are nested too deep, repeat, or are too many (at '{annex}').");
            }

            byte[] file = await ReadXferLockedAsync("features", annex, MaxDescriptionBytes - total, ct).ConfigureAwait(false);
            total += file.Length;
            GdbTargetDescription.Parsed parsed = GdbTargetDescription.Parse(Encoding.UTF8.GetString(file), annex);
            Architecture ??= parsed.Architecture;
            foreach (GdbTargetDescription.Item item in parsed.Items)
            {
                switch (item)
                {
                    case GdbTargetDescription.IncludeItem include:
                        if (!GdbTargetDescription.IsSafeAnnex(include.Href))
                        {
                            throw new ProtocolException($"gdb stub at {_endpoint}: target description '{annex}' includes '{GdbPacket.Truncate(include.Href)}', not a plain file name.");
                        }

                        await LoadAsync(include.Href, depth + 1).ConfigureAwait(false);
                        break;
                    case GdbTargetDescription.RegisterItem reg:
                        int number = reg.RegNum ?? nextNumber;
                        nextNumber = number + 1;
                        registers.Add(new GdbRegisterInfo(reg.Name, number, reg.BitSize, reg.Group) { Type = reg.Type, Feature = reg.Feature });
                        if (registers.Count > GdbTargetDescription.MaxRegisters)
                        {
                            throw new ProtocolException($"gdb stub at {_endpoint}: the target description declares more than {GdbTargetDescription.MaxRegisters} registers.");
                        }

                        break;
                    default:
                        throw new UnreachableException();
                }
            }
        }

        await LoadAsync("target.xml", 0).ConfigureAwait(false);
        var byName = new Dictionary<string, GdbRegisterInfo>(StringComparer.OrdinalIgnoreCase);
        var numbers = new HashSet<int>();
        foreach (GdbRegisterInfo register in registers)
        {
            if (!byName.TryAdd(register.Name, register) || !numbers.Add(register.Number))
            {
                throw new ProtocolException($"gdb stub at {_endpoint}: the target description declares register '{register.Name}' (number {register.Number}) twice.");
            }
        }

        _registers = [.. registers.OrderBy(r => r.Number)];
        _registersByName = byName;
    }

    private async Task<byte[]> ReadXferLockedAsync(string obj, string annex, int limit, CancellationToken ct)
    {
        var data = new List<byte>();
        int chunk = Math.Max(64, PacketSize - 5);
        while (true)
        {
            string reply = await ExchangeAsync(string.Create(CultureInfo.InvariantCulture, $"qXfer:{obj}:read:{annex}:{data.Count:x},{chunk:x}"), ct).ConfigureAwait(false);
            if (reply.Length == 0)
            {
                throw new ProtocolException($"gdb stub at {_endpoint} does not support qXfer:{obj}:read.");
            }

            if (reply[0] is not ('m' or 'l'))
            {
                throw new ProtocolException($"gdb stub at {_endpoint} could not read '{annex}': '{GdbPacket.Truncate(reply)}'.");
            }

            // qXfer data is binary: escaped, and carried byte-per-char in the Latin-1 packet string.
            byte[] part = GdbPacket.Unescape(Encoding.Latin1.GetBytes(reply, 1, reply.Length - 1));
            if (data.Count + part.Length > limit)
            {
                throw new ProtocolException($"gdb stub at {_endpoint}: '{annex}' is larger than {limit} bytes.");
            }

            data.AddRange(part);
            if (reply[0] == 'l')
            {
                return [.. data];
            }

            if (part.Length == 0)
            {
                throw new ProtocolException($"gdb stub at {_endpoint}: qXfer of '{annex}' made no progress.");
            }
        }
    }

    private async Task<IReadOnlyList<string>> ListThreadsLockedAsync(CancellationToken ct)
    {
        var threads = new List<string>();
        string reply = await ExchangeAsync("qfThreadInfo", ct).ConfigureAwait(false);
        while (true)
        {
            if (reply == "l")
            {
                break;
            }

            if (reply.Length < 2 || reply[0] != 'm')
            {
                throw new ProtocolException($"gdb stub at {_endpoint}: unexpected thread list reply '{GdbPacket.Truncate(reply)}'.");
            }

            foreach (string id in reply[1..].Split(','))
            {
                if (!IsThreadId(id))
                {
                    throw new ProtocolException($"gdb stub at {_endpoint}: '{GdbPacket.Truncate(id)}' is not a thread id.");
                }

                threads.Add(id);
            }

            if (threads.Count > MaxThreads)
            {
                throw new ProtocolException($"gdb stub at {_endpoint} lists more than {MaxThreads} threads.");
            }

            reply = await ExchangeAsync("qsThreadInfo", ct).ConfigureAwait(false);
        }

        _threads = threads;
        return threads;
    }

    // "p1.2", "p01.01", "p1.-1", "01", "-1": multiprocess form or plain, hex.
    private static bool IsThreadId(string id)
    {
        ReadOnlySpan<char> s = id;
        if (s.Length is 0 or > 40)
        {
            return false;
        }

        if (s[0] == 'p')
        {
            int dot = s.IndexOf('.');
            return dot > 1 && IsThreadNumber(s[1..dot]) && IsThreadNumber(s[(dot + 1)..]);
        }

        return IsThreadNumber(s);

        static bool IsThreadNumber(ReadOnlySpan<char> n) =>
            n is "-1" || (n.Length > 0 && !n.ContainsAnyExcept("0123456789abcdefABCDEF"));
    }

    private static string? ProcessIdOf(string? threadId)
    {
        if (threadId is null || !threadId.StartsWith('p'))
        {
            return null;
        }

        int dot = threadId.IndexOf('.', StringComparison.Ordinal);
        return dot > 1 ? threadId[1..dot] : null;
    }

    // ---- operations -----------------------------------------------------------------------------

    private async Task<string> ThreadForLockedAsync(int vcpu, CancellationToken ct)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(vcpu);
        if (vcpu >= _threads.Count)
        {
            await ListThreadsLockedAsync(ct).ConfigureAwait(false);
        }

        return vcpu < _threads.Count
            ? _threads[vcpu]
            : throw new ArgumentOutOfRangeException(nameof(vcpu), vcpu, $"The target has {_threads.Count} vCPU thread(s).");
    }

    private async Task SelectThreadLockedAsync(int vcpu, CancellationToken ct)
    {
        string thread = await ThreadForLockedAsync(vcpu, ct).ConfigureAwait(false);
        if (_selectedThread == thread)
        {
            return;
        }

        await ExpectOkAsync($"Hg{thread}", ct).ConfigureAwait(false);
        _selectedThread = thread;
    }

    private GdbRegisterInfo FindRegister(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (_registersByName.TryGetValue(name, out GdbRegisterInfo? register))
        {
            return register;
        }

        string known = _registers.Count == 0 ? "none (the stub gave no target description)" : string.Join(", ", _registers.Select(r => r.Name));
        throw new ProtocolException($"The gdb stub at {_endpoint} has no register '{name}'. Registers: {known}.");
    }

    private async Task<byte[]> ReadRegisterLockedAsync(GdbRegisterInfo register, CancellationToken ct) =>
        await TryReadRegisterLockedAsync(register, throwOnError: true, ct).ConfigureAwait(false) ?? throw new UnreachableException();

    private async Task<byte[]?> TryReadRegisterLockedAsync(GdbRegisterInfo register, bool throwOnError, CancellationToken ct)
    {
        string reply = await ExchangeAsync(string.Create(CultureInfo.InvariantCulture, $"p{register.Number:x}"), ct).ConfigureAwait(false);
        string? problem = null;
        if (reply.Length == 0)
        {
            problem = "the stub does not support 'p' (QEMU answers it only after target.xml was read on the connection)";
        }
        else if (IsError(reply))
        {
            problem = $"error reply '{reply}'";
        }
        else if (reply.Contains('x', StringComparison.Ordinal))
        {
            problem = "the stub reports the value unavailable";
        }
        else if (reply.Length != (register.BitSize + 7) / 8 * 2)
        {
            problem = $"reply '{GdbPacket.Truncate(reply)}' does not have {register.BitSize} bits";
        }

        if (problem is null)
        {
            return GdbPacket.FromHex(reply);
        }

        return throwOnError
            ? throw new ProtocolException($"gdb stub at {_endpoint}: cannot read register '{register.Name}' (number {register.Number}): {problem}.")
            : null;
    }

    private async Task<byte[]?> ReadMemoryCoreAsync(ulong virtualAddress, int length, int vcpu, bool throwOnError, CancellationToken ct)
    {
        CheckRange(virtualAddress, length);
        if (length == 0)
        {
            return [];
        }

        return await RunAsync<byte[]?>(async token =>
        {
            await SelectThreadLockedAsync(vcpu, token).ConfigureAwait(false);
            var result = new byte[length];
            int chunk = Math.Max(16, PacketSize / 2);
            int done = 0;
            while (done < length)
            {
                int n = Math.Min(chunk, length - done);
                ulong address = virtualAddress + (ulong)done;
                string reply = await ExchangeAsync(string.Create(CultureInfo.InvariantCulture, $"m{address:x},{n:x}"), token).ConfigureAwait(false);
                if (IsError(reply) || reply.Length == 0)
                {
                    return throwOnError
                        ? throw new ProtocolException($"gdb stub at {_endpoint} cannot read {n} bytes at virtual address 0x{address:x} (vCPU {vcpu}): '{reply}'.")
                        : null;
                }

                if (reply.Length % 2 != 0 || reply.Length / 2 > n)
                {
                    throw new ProtocolException($"gdb stub at {_endpoint}: 'm' reply of {reply.Length} characters for {n} bytes.");
                }

                // A stub may return fewer bytes than asked (gdbserver stops at an unreadable page); ask again from there.
                byte[] bytes = GdbPacket.FromHex(reply);
                bytes.CopyTo(result, done);
                done += bytes.Length;
            }

            return result;
        }, ct).ConfigureAwait(false);
    }

    private static void CheckRange(ulong address, int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, MaxTransferBytes);
        if (length > 0 && address + (ulong)(length - 1) < address)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, $"The range at 0x{address:x} wraps around the address space.");
        }
    }

    private Task BreakpointAsync(char verb, GdbBreakpointKind kind, ulong address, ulong length, CancellationToken ct)
    {
        if (!Enum.IsDefined(kind))
        {
            throw new ArgumentOutOfRangeException(nameof(kind), kind, "Not a breakpoint kind.");
        }

        ArgumentOutOfRangeException.ThrowIfZero(length);
        string packet = string.Create(CultureInfo.InvariantCulture, $"{verb}{(int)kind},{address:x},{length:x}");
        return RunAsync(async token =>
        {
            string reply = await ExchangeAsync(packet, token).ConfigureAwait(false);
            if (reply == "OK")
            {
                return true;
            }

            string action = verb == 'Z' ? "insert" : "remove";
            throw new ProtocolException(reply.Length == 0
                ? $"gdb stub at {_endpoint} does not support {kind} breakpoints ('{packet}' got an empty reply)."
                : $"gdb stub at {_endpoint} could not {action} the {kind} breakpoint at 0x{address:x} length {length}: '{reply}'.");
        }, ct);
    }

    private async Task<TaskCompletionSource<GdbStopReply>> StartRunningLockedAsync(string packet, CancellationToken ct)
    {
        await DiscardStaleRepliesAsync(ct).ConfigureAwait(false);
        var waiter = new TaskCompletionSource<GdbStopReply>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_stateLock)
        {
            _stopWaiter = waiter;
            _selectedThread = null;
        }

        try
        {
            await SendPacketAsync(packet, waiter.Task, ct).ConfigureAwait(false);
        }
        catch
        {
            lock (_stateLock)
            {
                if (_stopWaiter == waiter)
                {
                    _stopWaiter = null;
                }
            }

            throw;
        }

        return waiter;
    }

    private async Task<GdbStopReply?> AwaitStopAsync(TaskCompletionSource<GdbStopReply> waiter, TimeSpan timeout, string what, CancellationToken ct)
    {
        try
        {
            return await waiter.Task.WaitAsync(timeout, ct).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            return null;
        }
        catch (ProtocolException e) when (e is not ProtocolTimeoutException)
        {
            throw new ProtocolException($"gdb stub at {_endpoint}: {what} ended without a valid stop: {e.Message}", e);
        }
    }

    private async Task ExpectOkAsync(string packet, CancellationToken ct)
    {
        string reply = await ExchangeAsync(packet, ct).ConfigureAwait(false);
        if (reply != "OK")
        {
            throw new ProtocolException($"gdb stub at {_endpoint} answered '{GdbPacket.Truncate(packet)}' with '{GdbPacket.Truncate(reply)}'.");
        }
    }

    private void ThrowIfError(string reply, string packet)
    {
        if (IsError(reply))
        {
            throw new ProtocolException($"gdb stub at {_endpoint} answered '{packet}' with error '{reply}'.");
        }
    }

    // "E14", and the "E.text" form of newer stubs.
    private static bool IsError(string reply) =>
        reply.Length >= 2 && reply[0] == 'E' && (reply[1] == '.' || (reply.Length == 3 && GdbPacket.HexValue(reply[1]) >= 0 && GdbPacket.HexValue(reply[2]) >= 0));

    private static bool IsHexOrUnavailable(string reply) => !reply.AsSpan().ContainsAnyExcept("0123456789abcdefABCDEFx");

    private static ulong ToUInt64(byte[] littleEndian)
    {
        Span<byte> buffer = stackalloc byte[8];
        buffer.Clear();
        littleEndian.AsSpan(0, Math.Min(8, littleEndian.Length)).CopyTo(buffer);
        return BinaryPrimitives.ReadUInt64LittleEndian(buffer);
    }

    private static TimeSpan Clamp(TimeSpan t) => t > TimeSpan.FromMilliseconds(1) ? t : TimeSpan.FromMilliseconds(1);

    // ---- packet exchange --------------------------------------------------------------------------

    /// <summary>Runs <paramref name="body"/> under the command lock on a stopped target, once more if the stub answered with a stale stop.</summary>
    private async Task<T> RunAsync<T>(Func<CancellationToken, Task<T>> body, CancellationToken ct, bool retryOnStaleStop = true)
    {
        await _commandLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            ThrowIfClosed();
            if (IsRunning)
            {
                throw new InvalidOperationException("The target is running: wait for it to stop or interrupt it first.");
            }

            for (int attempt = 0; ; attempt++)
            {
                try
                {
                    return await body(ct).ConfigureAwait(false);
                }
                catch (StaleStopException) when (retryOnStaleStop && attempt == 0)
                {
                    // Either the VM had been resumed behind the stub's back (the stub stopped it and dropped our
                    // packet), or the stop reply was spontaneous (QEMU stops the VM when a client attaches) and our
                    // packet was processed after all: its reply may still come. Resynchronise before retrying.
                    await ResyncLockedAsync(ct).ConfigureAwait(false);
                }
            }
        }
        catch (StaleStopException e)
        {
            throw new ProtocolException($"gdb stub at {_endpoint} kept answering with stop replies ('{e.Message}').", e);
        }
        finally
        {
            _commandLock.Release();
        }
    }

    /// <summary>
    /// Sends '?' and discards every packet before its stop reply, so a reply that belonged to an earlier,
    /// possibly duplicated packet cannot answer the next one. Caller holds the command lock.
    /// </summary>
    private async Task ResyncLockedAsync(CancellationToken ct)
    {
        string? reply = await SendPacketAsync("?", null, ct).ConfigureAwait(false);
        for (int discarded = 0; discarded < 16; discarded++)
        {
            reply ??= await ReceiveReplyAsync("?", ct).ConfigureAwait(false);
            // The stop that made us resynchronise stays LastStop: '?' only restates that the target is stopped.
            if (GdbStopReply.TryParse(reply, out _))
                return;
            reply = null;
        }
        throw new ProtocolException($"gdb stub at {_endpoint} did not answer '?' with a stop reply after 16 other packets.");
    }

    /// <summary>Sends a packet and returns its reply. Caller holds the command lock.</summary>
    private async Task<string> ExchangeAsync(string packet, CancellationToken ct)
    {
        await DiscardStaleRepliesAsync(ct).ConfigureAwait(false);
        string? early = await SendPacketAsync(packet, null, ct).ConfigureAwait(false);
        string reply = early ?? await ReceiveReplyAsync(packet, ct).ConfigureAwait(false);
        if (packet != "?" && GdbStopReply.TryParse(reply, out GdbStopReply? stop))
        {
            OnStopped(stop);
            throw new StaleStopException(reply);
        }

        return reply;
    }

    private async Task DiscardStaleRepliesAsync(CancellationToken ct)
    {
        // Replies to packets whose caller gave up (cancellation) are still on their way; they must not answer the next packet.
        while (_orphanedReplies > 0)
        {
            string orphan = await ReceiveReplyAsync("(a cancelled request)", ct).ConfigureAwait(false);
            _orphanedReplies--;
            if (GdbStopReply.TryParse(orphan, out GdbStopReply? stop))
            {
                OnStopped(stop);
            }
        }

        while (_incoming.Reader.TryRead(out Incoming stale))
        {
            // Old acks, or a stop the stub reported while we believed the target stopped (QMP cont, then stop, behind our back).
            if (stale.Packet is not null && GdbStopReply.TryParse(stale.Packet, out GdbStopReply? stop))
            {
                OnStopped(stop);
            }
        }
    }

    private async Task<string> ReceiveReplyAsync(string packet, CancellationToken ct)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(ReplyTimeout);
        try
        {
            while (true)
            {
                Incoming item = await _incoming.Reader.ReadAsync(timeout.Token).ConfigureAwait(false);
                if (item.Packet is not null)
                {
                    return item.Packet;
                }
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            _orphanedReplies++;
            throw;
        }
        catch (OperationCanceledException)
        {
            var reason = new ProtocolTimeoutException(
                $"gdb stub at {_endpoint} did not answer '{GdbPacket.Truncate(packet)}' within {ReplyTimeout.TotalSeconds:0.###} s; the connection is abandoned.");
            Close(reason);
            throw reason;
        }
        catch (ChannelClosedException e)
        {
            throw ClosedException(e);
        }
    }

    /// <summary>
    /// Sends a packet; in ack mode waits for '+' and retransmits on '-'. Returns a packet that arrived instead of the ack:
    /// QEMU does not ack a packet that reached it while the VM ran; it uses the first byte to stop the VM, drops the rest
    /// and sends a stop reply. <paramref name="stopped"/>, when given, also ends the wait (the stop reply went to a stop waiter).
    /// </summary>
    private async Task<string?> SendPacketAsync(string payload, Task? stopped, CancellationToken ct)
    {
        byte[] frame = GdbPacket.Frame(Encoding.Latin1.GetBytes(payload));
        for (int attempt = 0; attempt < 4; attempt++)
        {
            await WriteRawAsync(frame, ct).ConfigureAwait(false);
            if (_noAck)
            {
                return null;
            }

            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(ReplyTimeout);
            try
            {
                while (true)
                {
                    ValueTask<Incoming> read = _incoming.Reader.ReadAsync(timeout.Token);
                    Incoming item;
                    if (stopped is null || read.IsCompleted)
                    {
                        item = await read.ConfigureAwait(false);
                    }
                    else
                    {
                        Task<Incoming> readTask = read.AsTask();
                        if (await Task.WhenAny(readTask, stopped).ConfigureAwait(false) != readTask)
                        {
                            // Leave the pending read to be cancelled; nothing it could still return matters here.
                            await timeout.CancelAsync().ConfigureAwait(false);
                            try
                            {
                                await readTask.ConfigureAwait(false);
                            }
                            catch (OperationCanceledException)
                            {
                                // Expected.
                            }

                            return null;
                        }

                        item = await readTask.ConfigureAwait(false);
                    }

                    if (item.Packet is not null)
                    {
                        return item.Packet;
                    }

                    if (item.Ack == '+')
                    {
                        return null;
                    }

                    break; // '-': send again
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                // Sent: its reply is on the way and must be discarded when it comes.
                _orphanedReplies++;
                throw;
            }
            catch (OperationCanceledException)
            {
                var reason = new ProtocolTimeoutException($"gdb stub at {_endpoint} did not acknowledge '{GdbPacket.Truncate(payload)}' within {ReplyTimeout.TotalSeconds:0.###} s.");
                Close(reason);
                throw reason;
            }
            catch (ChannelClosedException e)
            {
                throw ClosedException(e);
            }
        }

        throw new ProtocolException($"gdb stub at {_endpoint} rejected '{GdbPacket.Truncate(payload)}' four times (checksum errors on the line).");
    }

    private async Task WriteRawAsync(byte[] data, CancellationToken ct)
    {
        await _writeLock.WaitAsync(ct).ConfigureAwait(false);
        int sent = 0;
        try
        {
            ThrowIfClosed();
            while (sent < data.Length)
            {
                sent += await _socket.SendAsync(data.AsMemory(sent), SocketFlags.None, ct).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (sent > 0)
        {
            // Half a packet on the wire: the stream can no longer be framed.
            Close(new ProtocolException($"Sending to the gdb stub at {_endpoint} was cancelled halfway through a packet."));
            throw;
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            var reason = new ProtocolException($"Sending to the gdb stub at {_endpoint} failed: {e.Message}", e);
            Close(reason);
            throw reason;
        }
        finally
        {
            _writeLock.Release();
        }
    }

    private void OnStopped(GdbStopReply stop)
    {
        Volatile.Write(ref _lastStop, stop);
        lock (_stateLock)
        {
            // QEMU points its selected thread at the vCPU that stopped.
            _selectedThread = null;
        }

        if (!stop.TargetAlive)
        {
            Close(new ProtocolException($"The target behind the gdb stub at {_endpoint} is gone: '{stop.Raw}'."));
        }
    }

    // ---- reader -----------------------------------------------------------------------------------

    private enum FrameState
    {
        Idle,
        Payload,
        Checksum1,
        Checksum2,
    }

    private async Task ReadLoopAsync()
    {
        var buffer = new byte[16 * 1024];
        var raw = new byte[4096];
        int rawLength = 0;
        bool notification = false;
        int checksumHigh = 0;
        int checksumFailures = 0;
        var state = FrameState.Idle;
        Exception reason;
        try
        {
            while (true)
            {
                int received = await _socket.ReceiveAsync(buffer, SocketFlags.None, _lifetime.Token).ConfigureAwait(false);
                if (received == 0)
                {
                    reason = new ProtocolException($"The gdb stub at {_endpoint} closed the connection.");
                    break;
                }

                for (int i = 0; i < received; i++)
                {
                    byte b = buffer[i];
                    switch (state)
                    {
                        case FrameState.Idle:
                            if (b is (byte)'$' or (byte)'%')
                            {
                                notification = b == (byte)'%';
                                rawLength = 0;
                                state = FrameState.Payload;
                            }
                            else if (b is (byte)'+' or (byte)'-')
                            {
                                if (!_noAck)
                                {
                                    await _incoming.Writer.WriteAsync(new Incoming((char)b, null), _lifetime.Token).ConfigureAwait(false);
                                }
                            }
                            else
                            {
                                throw new ProtocolException(
                                    $"gdb stub at {_endpoint} sent byte 0x{b:x2} outside a packet; the peer does not speak the gdb remote protocol.");
                            }

                            break;

                        case FrameState.Payload:
                            if (b == (byte)'#')
                            {
                                state = FrameState.Checksum1;
                            }
                            else if (b == (byte)'$')
                            {
                                throw new ProtocolException($"gdb stub at {_endpoint} started a packet inside a packet.");
                            }
                            else
                            {
                                if (rawLength == MaxPacketBytes)
                                {
                                    throw new ProtocolException($"gdb stub at {_endpoint} sent a packet longer than {MaxPacketBytes} bytes.");
                                }

                                if (rawLength == raw.Length)
                                {
                                    Array.Resize(ref raw, Math.Min(raw.Length * 2, MaxPacketBytes));
                                }

                                raw[rawLength++] = b;
                            }

                            break;

                        case FrameState.Checksum1:
                            checksumHigh = GdbPacket.HexValue(b);
                            if (checksumHigh < 0)
                            {
                                throw new ProtocolException($"gdb stub at {_endpoint} sent checksum digit 0x{b:x2}.");
                            }

                            state = FrameState.Checksum2;
                            break;

                        case FrameState.Checksum2:
                            int low = GdbPacket.HexValue(b);
                            if (low < 0)
                            {
                                throw new ProtocolException($"gdb stub at {_endpoint} sent checksum digit 0x{b:x2}.");
                            }

                            state = FrameState.Idle;
                            byte expected = (byte)((checksumHigh << 4) | low);
                            byte actual = GdbPacket.Checksum(raw.AsSpan(0, rawLength));
                            if (expected != actual)
                            {
                                if (_noAck || ++checksumFailures > MaxChecksumFailures)
                                {
                                    throw new ProtocolException(
                                        $"gdb stub at {_endpoint} sent a packet with checksum {expected:x2}, computed {actual:x2}: " +
                                        $"'{GdbPacket.Truncate(Encoding.Latin1.GetString(raw, 0, rawLength))}'.");
                                }

                                await WriteRawAsync("-"u8.ToArray(), _lifetime.Token).ConfigureAwait(false);
                                break;
                            }

                            checksumFailures = 0;
                            if (!_noAck && !notification)
                            {
                                await WriteRawAsync("+"u8.ToArray(), _lifetime.Token).ConfigureAwait(false);
                            }

                            if (!notification)
                            {
                                // Latin-1 keeps one char per byte, so binary payloads survive the trip through a string.
                                string payload = Encoding.Latin1.GetString(GdbPacket.ExpandRunLength(raw.AsSpan(0, rawLength), MaxPacketBytes));
                                await DispatchAsync(payload).ConfigureAwait(false);
                            }

                            break;
                    }
                }
            }
        }
        catch (OperationCanceledException) when (_lifetime.IsCancellationRequested)
        {
            reason = new ProtocolException($"The gdb client for {_endpoint} was disposed.");
        }
        catch (ProtocolException e)
        {
            reason = e;
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or ChannelClosedException)
        {
            reason = new ProtocolException($"The connection to the gdb stub at {_endpoint} failed: {e.Message}", e);
        }

        Close(reason);
    }

    private async Task DispatchAsync(string payload)
    {
        // Console output (qRcmd, semihosting): "O" + hex. "OK" is a reply.
        if (payload.Length > 1 && payload[0] == 'O' && payload != "OK" && payload.Length % 2 == 1 && IsHexOrUnavailable(payload[1..]))
        {
            return;
        }

        TaskCompletionSource<GdbStopReply>? waiter;
        lock (_stateLock)
        {
            waiter = _stopWaiter;
            _stopWaiter = null;
        }

        if (waiter is null)
        {
            await _incoming.Writer.WriteAsync(new Incoming('\0', payload), _lifetime.Token).ConfigureAwait(false);
            return;
        }

        if (GdbStopReply.TryParse(payload, out GdbStopReply? stop))
        {
            OnStopped(stop);
            waiter.TrySetResult(stop);
        }
        else
        {
            waiter.TrySetException(new ProtocolException($"gdb stub at {_endpoint}: expected a stop reply, got '{GdbPacket.Truncate(payload)}'."));
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

        _incoming.Writer.TryComplete(reason);
        TaskCompletionSource<GdbStopReply>? waiter;
        lock (_stateLock)
        {
            waiter = _stopWaiter;
            _stopWaiter = null;
        }

        waiter?.TrySetException(new ProtocolException($"Stopped waiting for the target to stop: {reason.Message}", reason));
    }

    private void ThrowIfClosed()
    {
        Exception? reason = Volatile.Read(ref _closeReason);
        if (reason is not null)
        {
            throw new ProtocolException($"The connection to the gdb stub at {_endpoint} is closed: {reason.Message}", reason);
        }
    }

    private ProtocolException ClosedException(Exception e)
    {
        Exception? reason = Volatile.Read(ref _closeReason);
        return reason is ProtocolTimeoutException timeout
            ? new ProtocolTimeoutException(timeout.Message, timeout)
            : new ProtocolException($"The connection to the gdb stub at {_endpoint} is closed: {(reason ?? e).Message}", reason ?? e);
    }

    /// <summary>An ack ('+' or '-') or a packet, as the reader received them.</summary>
    private readonly record struct Incoming(char Ack, string? Packet);

    /// <summary>The stub answered a packet with a stop reply: it dropped the packet to stop a VM that was running behind its back.</summary>
    private sealed class StaleStopException(string reply) : Exception(reply);
}
