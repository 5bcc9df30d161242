using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Vmi.Qemu;

namespace Vmi.Qemu.Tests.Fakes;

/// <summary>
/// An in-process gdb stub on 127.0.0.1 that behaves like QEMU 7.2's by default (one client, acks, multiprocess thread ids,
/// qXfer target description with an include and an XML comment hiding registers) and lets a test override any packet.
/// </summary>
internal sealed class FakeGdbStub : IAsyncDisposable
{
    public const string TargetXml =
        """<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd"><target><architecture>i386:x86-64</architecture><xi:include href="regs.xml"/></target>""";

    // Special characters ($ # } *) inside the comment force escaping in qXfer replies.
    public const string RegsXml = """
        <?xml version="1.0"?>
        <!DOCTYPE target SYSTEM "gdb-target.dtd">
        <!-- costs: $5 # of regs } and * are escaped -->
        <feature name="org.gnu.gdb.i386.core">
          <reg name="rax" bitsize="64" type="int64" regnum="0"/>
          <reg name="rbx" bitsize="64" type="int64"/>
          <reg name="rip" bitsize="64" type="code_ptr"/>
          <reg name="eflags" bitsize="32" type="i386_eflags"/>
          <reg name="cs" bitsize="32" type="int32"/>
          <!--reg name="cs_base" bitsize="64" type="int64"/-->
          <reg name="fs_base" bitsize="64" type="int64"/>
          <reg name="cr0" bitsize="64" type="x64_cr0"/>
          <reg name="cr3" bitsize="64" type="x64_cr3"/>
          <reg name="xmm0" bitsize="128" type="vec128" group="vector"/>
          <reg name="efer" bitsize="64" type="x64_efer" regnum="20"/>
        </feature>
        """;

    private readonly TcpListener _listener;
    private readonly CancellationTokenSource _cts = new();
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly Task _serve;
    private Socket? _client;
    private bool _noAckActive;

    public FakeGdbStub(int port = 0)
    {
        _listener = new TcpListener(IPAddress.Loopback, port);
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _serve = Task.Run(ServeAsync);
    }

    public int Port { get; }

    /// <summary>The last frame sent; resent when the client answers '-'.</summary>
    public byte[]? LastFrame { get; set; }

    /// <summary>Packets received, in order (payload only; 0x03 is recorded as "\x03").</summary>
    public ConcurrentQueue<string> Received { get; } = new();

    /// <summary>'+' and '-' bytes received from the client.</summary>
    public ConcurrentQueue<char> AcksReceived { get; } = new();

    /// <summary>Number of packets with a bad checksum received.</summary>
    public int BadChecksums { get; private set; }

    public bool AckMode { get; set; } = true;

    public bool OfferNoAck { get; set; }

    public bool Multiprocess { get; set; } = true;

    public int PacketSizeValue { get; set; } = 0x80;

    public bool UseRunLengthEncoding { get; set; } = true;

    /// <summary>Register values per vCPU, by number.</summary>
    public Dictionary<int, ulong>[] RegisterValues { get; } =
    [
        new() { [0] = 0x1111, [1] = 0x2222, [2] = 0x1122334455667788, [3] = 0x46, [4] = 0x10, [5] = 0x7fff0000, [6] = 0x80050033, [7] = 0x1000, [20] = 0xd01 },
        new() { [0] = 0xaaaa, [1] = 0xbbbb, [2] = 0xffffffff81000000, [3] = 0x2, [4] = 0x10, [5] = 0, [6] = 0x80050033, [7] = 0x2000, [20] = 0xd01 },
    ];

    /// <summary>Guest memory; reads outside it answer E14.</summary>
    public byte[] Memory { get; } = new byte[0x10000];

    public ulong MemoryBase { get; set; } = 0x100000;

    public string? SelectedThread { get; private set; }

    public bool Running { get; private set; }

    public List<string> Breakpoints { get; } = [];

    /// <summary>Consulted before the default behaviour: return a reply payload, or null to fall through. <see cref="NoReply"/> sends nothing.</summary>
    public Func<string, Task<string?>>? Override { get; set; }

    public const string NoReply = "\0no-reply";

    public Task<string?> Default(string packet) => Task.FromResult<string?>(DefaultReply(packet));

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

    public Task SendRawAsync(string data) => SendRawAsync(Encoding.Latin1.GetBytes(data));

    /// <summary>Sends a packet (run-length encoded when enabled).</summary>
    public Task SendPacketAsync(string payload)
    {
        byte[] body = Encoding.Latin1.GetBytes(UseRunLengthEncoding ? RunLengthEncode(payload) : payload);
        byte[] frame = FrameBytes(body);
        LastFrame = frame;
        return SendRawAsync(frame);
    }

    public static byte[] FrameBytes(byte[] body)
    {
        byte sum = GdbPacket.Checksum(body);
        var frame = new byte[body.Length + 4];
        frame[0] = (byte)'$';
        body.CopyTo(frame, 1);
        frame[^3] = (byte)'#';
        Encoding.ASCII.GetBytes(sum.ToString("x2", CultureInfo.InvariantCulture)).CopyTo(frame, frame.Length - 2);
        return frame;
    }

    /// <summary>gdbserver's encoding: runs of 4 or more become c*n with n + 29 printable and never '$' or '#'.</summary>
    public static string RunLengthEncode(string payload)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < payload.Length;)
        {
            char c = payload[i];
            int run = 1;
            while (i + run < payload.Length && payload[i + run] == c && run < 98)
            {
                run++;
            }

            int extra = run - 1;
            while (extra + 29 is '$' or '#')
            {
                extra--;
            }

            if (extra >= 3 && c is not ('*' or '}' or '#' or '$'))
            {
                sb.Append(c).Append('*').Append((char)(extra + 29));
                i += extra + 1;
            }
            else
            {
                sb.Append(c);
                i++;
            }
        }

        return sb.ToString();
    }

    private async Task ServeAsync()
    {
        try
        {
            _client = await _listener.AcceptSocketAsync(_cts.Token);
            _client.NoDelay = true; // acks and replies are tiny separate writes: Nagle would delay each by a round trip
            var buffer = new byte[65536];
            var packet = new List<byte>();
            int state = 0; // 0 idle, 1 payload, 2 checksum 1, 3 checksum 2
            int checksum = 0;
            while (!_cts.IsCancellationRequested)
            {
                int n = await _client.ReceiveAsync(buffer, SocketFlags.None, _cts.Token);
                if (n == 0)
                {
                    return;
                }

                for (int i = 0; i < n; i++)
                {
                    byte b = buffer[i];
                    switch (state)
                    {
                        case 0 when b == '$':
                            packet.Clear();
                            state = 1;
                            break;
                        case 0 when b is (byte)'+' or (byte)'-':
                            AcksReceived.Enqueue((char)b);
                            if (b == '-' && LastFrame is not null)
                            {
                                await SendRawAsync(LastFrame);
                            }

                            break;
                        case 0 when b == 0x03:
                            Received.Enqueue("\x03");
                            await HandleAsync("\x03");
                            break;
                        case 0:
                            break;
                        case 1 when b == '#':
                            state = 2;
                            break;
                        case 1:
                            packet.Add(b);
                            break;
                        case 2:
                            checksum = Hex(b) << 4;
                            state = 3;
                            break;
                        default:
                            checksum |= Hex(b);
                            state = 0;
                            byte[] body = [.. packet];
                            if (GdbPacket.Checksum(body) != checksum)
                            {
                                BadChecksums++;
                                if (!_noAckActive && AckMode)
                                {
                                    await SendRawAsync("-");
                                }

                                break;
                            }

                            if (!_noAckActive && AckMode)
                            {
                                await SendRawAsync("+");
                            }

                            string payload = Encoding.Latin1.GetString(body);
                            Received.Enqueue(payload);
                            await HandleAsync(payload);
                            break;
                    }
                }
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
            // Shutting down, or the client went away.
        }
    }

    private async Task HandleAsync(string payload)
    {
        string? reply = Override is null ? null : await Override(payload);
        reply ??= DefaultReply(payload);
        if (payload == "QStartNoAckMode" && reply == "OK")
        {
            await SendPacketAsync(reply);
            _noAckActive = true;
            return;
        }

        if (reply is not null && reply != NoReply)
        {
            await SendPacketAsync(reply);
        }
    }

    private int SelectedVcpu => SelectedThread is "p01.02" or "2" or "p1.2" ? 1 : 0;

    private string? DefaultReply(string packet)
    {
        if (packet == "\x03")
        {
            if (!Running)
            {
                return NoReply;
            }

            Running = false;
            return Multiprocess ? "T02thread:p01.01;" : "T02thread:01;";
        }

        if (packet.StartsWith("qSupported", StringComparison.Ordinal))
        {
            string reply = $"PacketSize={PacketSizeValue:x};qXfer:features:read+;vContSupported+";
            if (Multiprocess)
            {
                reply += ";multiprocess+";
            }

            if (OfferNoAck)
            {
                reply += ";QStartNoAckMode+";
            }

            return reply;
        }

        if (packet == "QStartNoAckMode")
        {
            return OfferNoAck ? "OK" : "";
        }

        if (packet == "?")
        {
            return Multiprocess ? "T05thread:p01.01;" : "T05thread:01;";
        }

        if (packet.StartsWith("qXfer:features:read:", StringComparison.Ordinal))
        {
            string[] parts = packet["qXfer:features:read:".Length..].Split(':');
            string? file = parts[0] switch { "target.xml" => TargetXml, "regs.xml" => RegsXml, _ => null };
            if (file is null)
            {
                return "E00";
            }

            string[] range = parts[1].Split(',');
            int offset = int.Parse(range[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            int length = int.Parse(range[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            byte[] bytes = Encoding.UTF8.GetBytes(file);
            if (offset >= bytes.Length)
            {
                return "l";
            }

            // Keep the escaped chunk within the requested length (an escape doubles a byte).
            int take = Math.Min(length / 2, bytes.Length - offset);
            bool last = offset + take >= bytes.Length;
            return (last ? "l" : "m") + Encoding.Latin1.GetString(GdbPacket.Escape(bytes.AsSpan(offset, take)));
        }

        if (packet == "qfThreadInfo")
        {
            return Multiprocess ? "mp01.01" : "m1,2";
        }

        if (packet == "qsThreadInfo")
        {
            return Multiprocess && !_sentSecondThread ? SecondThread() : "l";
        }

        if (packet.StartsWith("Hg", StringComparison.Ordinal) || packet.StartsWith("Hc", StringComparison.Ordinal))
        {
            string thread = packet[2..];
            if (thread is "p01.01" or "p01.02" or "1" or "2" or "p1.1" or "p1.2")
            {
                if (packet[1] == 'g')
                {
                    SelectedThread = thread;
                }

                return "OK";
            }

            return "E22";
        }

        if (packet == "g")
        {
            var sb = new StringBuilder();
            foreach ((int number, int bits) in new[] { (0, 64), (1, 64), (2, 64), (3, 32), (4, 32), (5, 64), (6, 64), (7, 64), (8, 128) })
            {
                sb.Append(RegisterHex(number, bits));
            }

            return sb.ToString();
        }

        if (packet.StartsWith('p'))
        {
            int number = int.Parse(packet[1..], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            int bits = number switch { 3 or 4 => 32, 8 => 128, _ => 64 };
            return number is (>= 0 and <= 8) or 20 ? RegisterHex(number, bits) : "E14";
        }

        if (packet.StartsWith('m'))
        {
            (ulong address, int length) = ParseAddressLength(packet[1..]);
            if (length > PacketSizeValue / 2)
            {
                return "E22";
            }

            if (address < MemoryBase || address + (ulong)length > MemoryBase + (ulong)Memory.Length)
            {
                return "E14";
            }

            return Convert.ToHexStringLower(Memory, (int)(address - MemoryBase), length);
        }

        if (packet.StartsWith('M'))
        {
            int colon = packet.IndexOf(':', StringComparison.Ordinal);
            (ulong address, int length) = ParseAddressLength(packet[1..colon]);
            byte[] data = Convert.FromHexString(packet[(colon + 1)..]);
            if (data.Length != length || address < MemoryBase || address + (ulong)length > MemoryBase + (ulong)Memory.Length)
            {
                return "E14";
            }

            data.CopyTo(Memory, (int)(address - MemoryBase));
            return "OK";
        }

        if (packet[0] is 'Z' or 'z')
        {
            if (packet[0] == 'Z')
            {
                Breakpoints.Add(packet[1..]);
                return "OK";
            }

            return Breakpoints.Remove(packet[1..]) ? "OK" : "E22";
        }

        if (packet == "vCont?")
        {
            return "vCont;c;C;s;S";
        }

        if (packet is "vCont;c" or "c")
        {
            Running = true;
            return NoReply;
        }

        if (packet.StartsWith("vCont;s", StringComparison.Ordinal) || packet == "s")
        {
            RegisterValues[SelectedVcpu][2] += 2;
            return Multiprocess ? "T05thread:p01.01;" : "T05thread:01;";
        }

        if (packet == "D")
        {
            return Multiprocess ? "E22" : "OK";
        }

        if (packet.StartsWith("D;", StringComparison.Ordinal))
        {
            return "OK";
        }

        return "";
    }

    private bool _sentSecondThread;

    private string SecondThread()
    {
        _sentSecondThread = true;
        return "mp01.02";
    }

    private string RegisterHex(int number, int bits)
    {
        ulong value = RegisterValues[SelectedVcpu].GetValueOrDefault(number);
        Span<byte> le = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(le, value);
        var bytes = new byte[bits / 8];
        le[..Math.Min(8, bytes.Length)].CopyTo(bytes);
        return Convert.ToHexStringLower(bytes);
    }

    private static int Hex(byte b) => Convert.FromHexString(((char)b).ToString() + "0")[0] >> 4;

    private static (ulong Address, int Length) ParseAddressLength(string text)
    {
        string[] parts = text.Split(',');
        return (ulong.Parse(parts[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture),
                int.Parse(parts[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture));
    }

    public async ValueTask DisposeAsync()
    {
        await _cts.CancelAsync();
        _listener.Stop();
        _client?.Dispose();
        try
        {
            await _serve;
        }
        catch (OperationCanceledException)
        {
        }

        _cts.Dispose();
    }
}
