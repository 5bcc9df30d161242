using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Vmi.Core;
using Vmi.Qemu.Tests.Fakes;
using Xunit;

namespace Vmi.Qemu.Tests;

/// <summary>The gdb client against an in-process fake stub: framing, acks, escaping, run-length encoding, errors, timeouts.</summary>
public class GdbRemoteClientTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(5);

    private static Task<GdbRemoteClient> ConnectAsync(FakeGdbStub stub) =>
        GdbRemoteClient.ConnectAsync("127.0.0.1", stub.Port, Timeout);

    [Fact]
    public async Task Connect_reads_features_stop_state_description_and_threads()
    {
        await using var stub = new FakeGdbStub();
        await using GdbRemoteClient gdb = await ConnectAsync(stub);

        Assert.True(gdb.IsConnected);
        Assert.Equal("i386:x86-64", gdb.Architecture);
        Assert.Equal(0x80, gdb.PacketSize);
        Assert.True(gdb.IsMultiprocess);
        Assert.False(gdb.IsNoAckMode);
        Assert.Equal(["p01.01", "p01.02"], gdb.Threads);
        Assert.Equal("T05thread:p01.01;", gdb.LastStop?.Raw);

        // The commented-out cs_base takes no number; regnum="20" restarts the numbering.
        Assert.Equal(
            ["rax:0:64", "rbx:1:64", "rip:2:64", "eflags:3:32", "cs:4:32", "fs_base:5:64", "cr0:6:64", "cr3:7:64", "xmm0:8:128", "efer:20:64"],
            gdb.Registers.Select(r => $"{r.Name}:{r.Number}:{r.BitSize}"));
        Assert.Equal("vector", gdb.Registers.Single(r => r.Name == "xmm0").Group);
        Assert.Equal("org.gnu.gdb.i386.core", gdb.Registers[0].Feature);
        Assert.Equal("code_ptr", gdb.Registers[2].Type);

        // The description was fetched in several escaped chunks (PacketSize 0x80).
        Assert.True(stub.Received.Count(p => p.StartsWith("qXfer:features:read:regs.xml", StringComparison.Ordinal)) > 3);
        Assert.Contains("qSupported:multiprocess+;swbreak+;hwbreak+;vContSupported+;xmlRegisters=i386", stub.Received);
    }

    [Fact]
    public async Task In_ack_mode_every_reply_is_acknowledged()
    {
        await using var stub = new FakeGdbStub();
        await using GdbRemoteClient gdb = await ConnectAsync(stub);
        await gdb.ReadRegisterAsync("rip");

        int repliesSent = stub.Received.Count; // this fake answers every packet once
        await WaitUntilAsync(() => stub.AcksReceived.Count >= repliesSent);
        Assert.All(stub.AcksReceived, a => Assert.Equal('+', a));
    }

    [Fact]
    public async Task No_ack_mode_is_used_when_offered()
    {
        await using var stub = new FakeGdbStub { OfferNoAck = true };
        await using GdbRemoteClient gdb = await ConnectAsync(stub);
        Assert.True(gdb.IsNoAckMode);
        int acksAfterHandshake = stub.AcksReceived.Count;

        Assert.Equal(0x1122334455667788UL, await gdb.ReadRegisterAsync("rip"));
        await Task.Delay(50);
        Assert.Equal(acksAfterHandshake, stub.AcksReceived.Count);
    }

    [Fact]
    public async Task Registers_are_little_endian_and_per_vcpu()
    {
        await using var stub = new FakeGdbStub();
        await using GdbRemoteClient gdb = await ConnectAsync(stub);

        Assert.Equal(0x1122334455667788UL, await gdb.ReadRegisterAsync("rip"));
        Assert.Equal(0x1000UL, await gdb.ReadRegisterAsync("CR3"));
        Assert.Equal(0x46UL, await gdb.ReadRegisterAsync("eflags"));
        Assert.Equal(0xffffffff81000000UL, await gdb.ReadRegisterAsync("rip", vcpu: 1));
        Assert.Equal(0x2000UL, await gdb.ReadRegisterAsync("cr3", vcpu: 1));
        Assert.Equal(0xd01UL, await gdb.ReadRegisterAsync("efer", vcpu: 1));
        Assert.Contains("Hgp01.02", stub.Received);
        Assert.Contains("p14", stub.Received); // efer is register 20 = 0x14

        byte[] xmm = await gdb.ReadRegisterBytesAsync("xmm0");
        Assert.Equal(16, xmm.Length);
        await Assert.ThrowsAsync<ProtocolException>(() => gdb.ReadRegisterAsync("xmm0"));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => gdb.ReadRegisterAsync("rip", vcpu: 2));
    }

    [Fact]
    public async Task Unknown_register_names_list_the_known_ones()
    {
        await using var stub = new FakeGdbStub();
        await using GdbRemoteClient gdb = await ConnectAsync(stub);
        var e = await Assert.ThrowsAsync<ProtocolException>(() => gdb.ReadRegisterAsync("cs_base"));
        Assert.Contains("cs_base", e.Message, StringComparison.Ordinal);
        Assert.Contains("rip, eflags, cs, fs_base, cr0, cr3", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ReadRegisters_uses_g_and_p_for_what_g_does_not_cover()
    {
        await using var stub = new FakeGdbStub();
        await using GdbRemoteClient gdb = await ConnectAsync(stub);
        IReadOnlyDictionary<string, ulong> registers = await gdb.ReadRegistersAsync();

        Assert.Equal(0x1111UL, registers["rax"]);
        Assert.Equal(0x1122334455667788UL, registers["RIP"]);
        Assert.Equal(0x10UL, registers["cs"]);
        Assert.Equal(0x80050033UL, registers["cr0"]);
        Assert.Equal(0xd01UL, registers["efer"]);
        Assert.False(registers.ContainsKey("xmm0"));
        Assert.Contains("g", stub.Received);
        Assert.Contains("p14", stub.Received);
        Assert.DoesNotContain("p2", stub.Received);
    }

    [Fact]
    public async Task Memory_reads_are_chunked_run_length_decoded_and_exact()
    {
        await using var stub = new FakeGdbStub();
        for (int i = 0; i < 0x100; i++)
        {
            stub.Memory[0x1000 + i] = i % 16 < 8 ? (byte)0 : (byte)i; // zero runs get run-length encoded
        }

        await using GdbRemoteClient gdb = await ConnectAsync(stub);
        byte[] data = await gdb.ReadMemoryAsync(stub.MemoryBase + 0x1000, 0x100);

        Assert.Equal(stub.Memory.AsSpan(0x1000, 0x100).ToArray(), data);
        Assert.Equal(4, stub.Received.Count(p => p.StartsWith('m'))); // PacketSize 0x80 → 0x40 bytes per 'm'
        Assert.Empty(await gdb.ReadMemoryAsync(stub.MemoryBase, 0));
    }

    [Fact]
    public async Task Memory_read_errors_throw_or_return_null()
    {
        await using var stub = new FakeGdbStub();
        await using GdbRemoteClient gdb = await ConnectAsync(stub);

        var e = await Assert.ThrowsAsync<ProtocolException>(() => gdb.ReadMemoryAsync(0x10, 4));
        Assert.Contains("E14", e.Message, StringComparison.Ordinal);
        Assert.Contains("0x10", e.Message, StringComparison.Ordinal);
        Assert.Null(await gdb.TryReadMemoryAsync(0x10, 4));
        Assert.NotNull(await gdb.TryReadMemoryAsync(stub.MemoryBase, 4));

        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => gdb.ReadMemoryAsync(0x1000, -1));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => gdb.ReadMemoryAsync(ulong.MaxValue - 2, 4));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => gdb.ReadMemoryAsync(0, GdbRemoteClient.MaxTransferBytes + 1));
        Assert.True(gdb.IsConnected);
    }

    [Fact]
    public async Task Memory_writes_are_chunked_hex()
    {
        await using var stub = new FakeGdbStub();
        await using GdbRemoteClient gdb = await ConnectAsync(stub);
        byte[] data = Enumerable.Range(0, 200).Select(i => (byte)(i * 7)).ToArray();

        await gdb.WriteMemoryAsync(stub.MemoryBase + 0x2000, data);

        Assert.Equal(data, stub.Memory.AsSpan(0x2000, 200).ToArray());
        Assert.True(stub.Received.Count(p => p.StartsWith('M')) >= 4);
        await Assert.ThrowsAsync<ProtocolException>(() => gdb.WriteMemoryAsync(0x10, new byte[] { 1 }));
    }

    [Fact]
    public async Task Breakpoints_map_to_Z_packets_and_empty_reply_means_unsupported()
    {
        await using var stub = new FakeGdbStub();
        await using GdbRemoteClient gdb = await ConnectAsync(stub);

        await gdb.InsertBreakpointAsync(GdbBreakpointKind.WriteWatch, 0xffffffff81000000, 8);
        Assert.Contains("Z2,ffffffff81000000,8", stub.Received);
        await gdb.RemoveBreakpointAsync(GdbBreakpointKind.WriteWatch, 0xffffffff81000000, 8);
        Assert.Contains("z2,ffffffff81000000,8", stub.Received);

        var removeAgain = await Assert.ThrowsAsync<ProtocolException>(() => gdb.RemoveBreakpointAsync(GdbBreakpointKind.WriteWatch, 0xffffffff81000000, 8));
        Assert.Contains("E22", removeAgain.Message, StringComparison.Ordinal);

        stub.Override = p => Task.FromResult<string?>(p.StartsWith("Z4", StringComparison.Ordinal) ? "" : null);
        var unsupported = await Assert.ThrowsAsync<ProtocolException>(() => gdb.InsertBreakpointAsync(GdbBreakpointKind.AccessWatch, 0x1000, 4));
        Assert.Contains("does not support", unsupported.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => gdb.InsertBreakpointAsync((GdbBreakpointKind)7, 0x1000, 1));
    }

    [Fact]
    public async Task Resume_then_watchpoint_stop_is_reported()
    {
        await using var stub = new FakeGdbStub();
        await using GdbRemoteClient gdb = await ConnectAsync(stub);

        await gdb.ResumeAsync();
        Assert.True(gdb.IsRunning);
        Assert.Contains("vCont;c", stub.Received);
        await Assert.ThrowsAsync<InvalidOperationException>(() => gdb.ReadRegisterAsync("rip"));
        Assert.Null(await gdb.TryWaitForStopAsync(TimeSpan.FromMilliseconds(100)));
        await Assert.ThrowsAsync<ProtocolTimeoutException>(() => gdb.WaitForStopAsync(TimeSpan.FromMilliseconds(50)));

        await stub.SendPacketAsync("T05thread:p01.02;watch:0000000000100400;");
        GdbStopReply stop = await gdb.WaitForStopAsync(Timeout);

        Assert.False(gdb.IsRunning);
        Assert.Equal(GdbBreakpointKind.WriteWatch, stop.WatchKind);
        Assert.Equal(0x100400UL, stop.WatchAddress);
        Assert.Equal("p01.02", stop.ThreadId);
        Assert.Same(stop, gdb.LastStop);
        Assert.Same(stop, await gdb.WaitForStopAsync(Timeout)); // not running: the last stop at once
        Assert.Equal(0x1122334455667788UL, await gdb.ReadRegisterAsync("rip"));
    }

    [Fact]
    public async Task Interrupt_sends_ctrl_c_and_returns_the_stop()
    {
        await using var stub = new FakeGdbStub();
        await using GdbRemoteClient gdb = await ConnectAsync(stub);
        await gdb.ResumeAsync();

        GdbStopReply stop = await gdb.InterruptAsync();

        Assert.Equal(2, stop.Signal);
        Assert.Contains("\x03", stub.Received);
        Assert.False(gdb.IsRunning);

        // On a stopped target it asks for the stop state instead of sending 0x03 (which QEMU ignores).
        GdbStopReply again = await gdb.InterruptAsync();
        Assert.Equal(5, again.Signal);
        Assert.Single(stub.Received, p => p == "\x03");
    }

    [Fact]
    public async Task Step_uses_vCont_with_the_vcpu_thread()
    {
        await using var stub = new FakeGdbStub();
        await using GdbRemoteClient gdb = await ConnectAsync(stub);

        GdbStopReply stop = await gdb.StepAsync(vcpu: 1);

        Assert.Equal(5, stop.Signal);
        Assert.Contains("vCont;s:p01.02", stub.Received);
        Assert.False(gdb.IsRunning);
    }

    [Fact]
    public async Task Plain_thread_ids_work_without_multiprocess()
    {
        await using var stub = new FakeGdbStub { Multiprocess = false };
        await using GdbRemoteClient gdb = await ConnectAsync(stub);

        Assert.False(gdb.IsMultiprocess);
        Assert.Equal(["1", "2"], await gdb.ListThreadsAsync());
        Assert.Equal(0x2000UL, await gdb.ReadRegisterAsync("cr3", vcpu: 1));
        Assert.Contains("Hg2", stub.Received);

        await gdb.DetachAsync();
        Assert.Contains("D", stub.Received);
        Assert.False(gdb.IsConnected);
    }

    [Fact]
    public async Task Detach_in_multiprocess_mode_names_the_process()
    {
        await using var stub = new FakeGdbStub();
        await using GdbRemoteClient gdb = await ConnectAsync(stub);

        await gdb.DetachAsync();

        Assert.Contains("D;01", stub.Received);
        Assert.DoesNotContain("D", stub.Received);
        Assert.False(gdb.IsConnected);
        await Assert.ThrowsAsync<ProtocolException>(() => gdb.ReadRegisterAsync("rip"));
    }

    [Fact]
    public async Task Console_output_packets_are_ignored()
    {
        await using var stub = new FakeGdbStub();
        await using GdbRemoteClient gdb = await ConnectAsync(stub);
        stub.Override = async p =>
        {
            if (p != "p7")
            {
                return null;
            }

            await stub.SendPacketAsync("O48656c6c6f0a");
            return null;
        };

        Assert.Equal(0x1000UL, await gdb.ReadRegisterAsync("cr3"));
    }

    [Fact]
    public async Task Bad_checksum_in_ack_mode_is_nacked_and_retransmitted()
    {
        await using var stub = new FakeGdbStub();
        await using GdbRemoteClient gdb = await ConnectAsync(stub);
        bool corrupted = false;
        stub.Override = async p =>
        {
            if (p != "p7" || corrupted)
            {
                return null;
            }

            corrupted = true;
            string good = await stub.Default(p) ?? throw new InvalidOperationException();
            byte[] frame = FakeGdbStub.FrameBytes(Encoding.ASCII.GetBytes(good));
            byte[] bad = [.. frame];
            bad[^1] = bad[^1] == (byte)'0' ? (byte)'1' : (byte)'0';
            await stub.SendRawAsync(bad);
            // The stub resends its last frame on '-'; make that the good one.
            stub.LastFrame = frame;
            return FakeGdbStub.NoReply;
        };

        Assert.Equal(0x1000UL, await gdb.ReadRegisterAsync("cr3"));
        Assert.Contains('-', stub.AcksReceived);
        Assert.True(gdb.IsConnected);
    }

    [Fact]
    public async Task Bad_checksum_in_no_ack_mode_breaks_the_connection()
    {
        await using var stub = new FakeGdbStub { OfferNoAck = true };
        await using GdbRemoteClient gdb = await ConnectAsync(stub);
        stub.Override = async p =>
        {
            if (p != "p7")
            {
                return null;
            }

            await stub.SendRawAsync("$0010000000000000#00");
            return FakeGdbStub.NoReply;
        };

        var e = await Assert.ThrowsAsync<ProtocolException>(() => gdb.ReadRegisterAsync("cr3"));
        Assert.Contains("checksum", e.Message, StringComparison.Ordinal);
        Assert.False(gdb.IsConnected);
    }

    [Fact]
    public async Task Garbage_from_the_peer_is_a_protocol_error_not_a_hang()
    {
        await using var stub = new FakeGdbStub();
        await using GdbRemoteClient gdb = await ConnectAsync(stub);
        stub.Override = async p =>
        {
            await stub.SendRawAsync("HTTP/1.1 400 Bad Request\r\n\r\n");
            return FakeGdbStub.NoReply;
        };

        var watch = Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<ProtocolException>(() => gdb.ReadMemoryAsync(stub.MemoryBase, 4));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(3));
        Assert.Contains("does not speak the gdb remote protocol", e.Message, StringComparison.Ordinal);
        Assert.False(gdb.IsConnected);
    }

    [Fact]
    public async Task Oversized_packets_are_refused()
    {
        await using var stub = new FakeGdbStub();
        await using GdbRemoteClient gdb = await ConnectAsync(stub);
        stub.Override = async p =>
        {
            var huge = new byte[GdbRemoteClient.MaxPacketBytes + 1024];
            huge.AsSpan().Fill((byte)'a');
            huge[0] = (byte)'$';
            try
            {
                await stub.SendRawAsync(huge);
            }
            catch (SocketException)
            {
                // The client hangs up half way, as it should.
            }

            return FakeGdbStub.NoReply;
        };

        var e = await Assert.ThrowsAsync<ProtocolException>(() => gdb.ReadMemoryAsync(stub.MemoryBase, 4));
        Assert.Contains("longer than", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_length_bombs_are_refused()
    {
        await using var stub = new FakeGdbStub();
        await using GdbRemoteClient gdb = await ConnectAsync(stub);
        stub.Override = async p =>
        {
            await stub.SendRawAsync(FakeGdbStub.FrameBytes(Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("0*~", 20_000)))));
            return FakeGdbStub.NoReply;
        };

        var e = await Assert.ThrowsAsync<ProtocolException>(() => gdb.ReadMemoryAsync(stub.MemoryBase, 4));
        Assert.Contains("limit", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_silent_peer_times_out_and_the_connection_is_abandoned()
    {
        await using var stub = new FakeGdbStub();
        await using GdbRemoteClient gdb = await ConnectAsync(stub);
        gdb.ReplyTimeout = TimeSpan.FromMilliseconds(300);
        stub.Override = p => Task.FromResult<string?>(p.StartsWith('m') ? FakeGdbStub.NoReply : null);

        var watch = Stopwatch.StartNew();
        await Assert.ThrowsAsync<ProtocolTimeoutException>(() => gdb.ReadMemoryAsync(stub.MemoryBase, 4));
        Assert.InRange(watch.Elapsed, TimeSpan.FromMilliseconds(250), TimeSpan.FromSeconds(3));
        Assert.False(gdb.IsConnected);
    }

    [Fact]
    public async Task Connect_to_a_peer_that_never_answers_fails_within_the_timeout()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        Task<Socket> accepted = listener.AcceptSocketAsync();

        var watch = Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<TargetException>(() => GdbRemoteClient.ConnectAsync("127.0.0.1", port, TimeSpan.FromMilliseconds(500)));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(3));
        Assert.Contains("handshake", e.Message, StringComparison.Ordinal);
        (await accepted).Dispose();
    }

    [Fact]
    public async Task Connect_retries_until_the_stub_listens()
    {
        int port;
        using (var probe = new TcpListener(IPAddress.Loopback, 0))
        {
            probe.Start();
            port = ((IPEndPoint)probe.LocalEndpoint).Port;
        }

        Task<GdbRemoteClient> connecting = GdbRemoteClient.ConnectAsync("127.0.0.1", port, Timeout);
        await Task.Delay(300);
        await using var stub = new FakeGdbStub(port);
        await using GdbRemoteClient gdb = await connecting;
        Assert.True(gdb.IsConnected);
    }

    [Fact]
    public async Task Connect_to_nothing_fails_with_a_target_exception()
    {
        int port;
        using (var probe = new TcpListener(IPAddress.Loopback, 0))
        {
            probe.Start();
            port = ((IPEndPoint)probe.LocalEndpoint).Port;
        }

        var watch = Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<TargetException>(() => GdbRemoteClient.ConnectAsync("127.0.0.1", port, TimeSpan.FromMilliseconds(400)));
        Assert.InRange(watch.Elapsed, TimeSpan.FromMilliseconds(350), TimeSpan.FromSeconds(3));
        Assert.Contains($"127.0.0.1:{port}", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_stop_reply_instead_of_an_answer_is_recorded_and_the_operation_repeated()
    {
        // QEMU does this when the VM was resumed over QMP behind the stub's back: the packet stops the VM and is dropped.
        await using var stub = new FakeGdbStub();
        await using GdbRemoteClient gdb = await ConnectAsync(stub);
        bool swallowed = false;
        stub.Override = p =>
        {
            if (swallowed || !p.StartsWith('m'))
            {
                return Task.FromResult<string?>(null);
            }

            swallowed = true;
            return Task.FromResult<string?>("T02thread:p01.01;");
        };
        stub.Memory[0] = 0x5a;

        byte[] data = await gdb.ReadMemoryAsync(stub.MemoryBase, 1);

        Assert.Equal(0x5a, data[0]);
        Assert.Equal(2, gdb.LastStop?.Signal);
        Assert.Equal(2, stub.Received.Count(p => p.StartsWith('m')));
    }

    [Fact]
    public async Task A_cancelled_request_does_not_leave_its_reply_for_the_next()
    {
        await using var stub = new FakeGdbStub();
        await using GdbRemoteClient gdb = await ConnectAsync(stub);
        var release = new TaskCompletionSource();
        stub.Override = async p =>
        {
            if (p != "p7")
            {
                return null;
            }

            await release.Task;
            return "ffffffffffffffff";
        };

        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => gdb.ReadRegisterAsync("cr3", ct: cts.Token));
        stub.Override = null;
        release.SetResult();
        // Stub serves packets in order, so the late p7 reply precedes this one and must be skipped.
        Assert.Equal(0x80050033UL, await gdb.ReadRegisterAsync("cr0"));
        Assert.True(gdb.IsConnected);
    }

    [Fact]
    public async Task Exit_reply_ends_the_session()
    {
        await using var stub = new FakeGdbStub();
        await using GdbRemoteClient gdb = await ConnectAsync(stub);
        await gdb.ResumeAsync();
        await stub.SendPacketAsync("W00");

        GdbStopReply stop = await gdb.WaitForStopAsync(Timeout);

        Assert.Equal(GdbStopKind.Exited, stop.Kind);
        Assert.False(gdb.IsConnected);
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
