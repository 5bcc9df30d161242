using System.Text;
using Vmi.Core;
using Xunit;

namespace Vmi.Qemu.Tests;

public class GdbPacketTests
{
    [Theory]
    [InlineData("", 0x00)]
    [InlineData("OK", 0x9a)]
    [InlineData("qSupported", 0x37)]
    [InlineData("g", 0x67)]
    public void Checksum_is_the_byte_sum_modulo_256(string payload, int expected) =>
        Assert.Equal(expected, GdbPacket.Checksum(Encoding.ASCII.GetBytes(payload)));

    [Fact]
    public void Frame_wraps_payload_with_dollar_hash_and_two_hex_digits() =>
        Assert.Equal("$m1000,4#8e", Encoding.ASCII.GetString(GdbPacket.Frame("m1000,4")));

    [Theory]
    [InlineData("a#b")]
    [InlineData("a$b")]
    [InlineData("a*b")]
    public void Frame_refuses_unescaped_special_bytes(string payload) =>
        Assert.Throws<ArgumentException>(() => GdbPacket.Frame(payload));

    [Fact]
    public void Escape_and_unescape_round_trip_every_byte()
    {
        byte[] all = Enumerable.Range(0, 256).Select(i => (byte)i).ToArray();
        byte[] escaped = GdbPacket.Escape(all);
        Assert.Equal(256 + 4, escaped.Length);
        Assert.DoesNotContain((byte)'#', escaped);
        Assert.DoesNotContain((byte)'$', escaped);
        Assert.DoesNotContain((byte)'*', escaped);
        Assert.Equal(all, GdbPacket.Unescape(escaped));
    }

    [Fact]
    public void Escape_uses_brace_and_xor_0x20() =>
        Assert.Equal("}]}\u0003}\u0004}\n", Encoding.Latin1.GetString(GdbPacket.Escape("}#$*"u8)));

    [Fact]
    public void Unescape_rejects_a_trailing_lone_escape()
    {
        var e = Assert.Throws<ProtocolException>(() => GdbPacket.Unescape("abc}"u8));
        Assert.Contains("escape", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("0* ", "0000")] // ' ' = 32 = 3 + 29: three more copies
    [InlineData("a*!b", "aaaaab")]
    [InlineData("12*\"", "1222222")] // '"' = 34: five more
    [InlineData("x*~", "x")] // 126 - 29 = 97 more
    [InlineData("no runs", "no runs")]
    public void ExpandRunLength_repeats_the_previous_byte(string raw, string expected)
    {
        if (expected == "x")
        {
            expected = new string('x', 98);
        }

        Assert.Equal(expected, Encoding.Latin1.GetString(GdbPacket.ExpandRunLength(Encoding.Latin1.GetBytes(raw), 1024)));
    }

    [Theory]
    [InlineData("*  ")]
    [InlineData("a*")]
    [InlineData("a*\u0010")]
    public void ExpandRunLength_rejects_malformed_runs(string raw) =>
        Assert.Throws<ProtocolException>(() => GdbPacket.ExpandRunLength(Encoding.Latin1.GetBytes(raw), 1024));

    [Fact]
    public void ExpandRunLength_refuses_to_grow_beyond_the_limit()
    {
        byte[] bomb = Encoding.Latin1.GetBytes(string.Concat(Enumerable.Repeat("0*~", 100)));
        var e = Assert.Throws<ProtocolException>(() => GdbPacket.ExpandRunLength(bomb, 1000));
        Assert.Contains("limit", e.Message, StringComparison.Ordinal);
        Assert.Equal(98 * 100, GdbPacket.ExpandRunLength(bomb, 98 * 100).Length);
    }

    [Fact]
    public void FromHex_decodes_and_rejects_garbage()
    {
        Assert.Equal(new byte[] { 0xde, 0xad, 0xBE, 0xef }, GdbPacket.FromHex("deadBEEF"));
        Assert.Throws<ProtocolException>(() => GdbPacket.FromHex("abc"));
        Assert.Throws<ProtocolException>(() => GdbPacket.FromHex("zz"));
    }

    [Fact]
    public void Run_length_encoding_of_the_fake_stub_round_trips()
    {
        string payload = new string('0', 300) + "12" + new string('f', 7) + new string('a', 8) + "b";
        string encoded = Fakes.FakeGdbStub.RunLengthEncode(payload);
        Assert.True(encoded.Length < payload.Length / 4);
        Assert.DoesNotContain('#', encoded);
        Assert.DoesNotContain('$', encoded);
        Assert.Equal(payload, Encoding.Latin1.GetString(GdbPacket.ExpandRunLength(Encoding.Latin1.GetBytes(encoded), 4096)));
    }
}

public class GdbStopReplyTests
{
    [Fact]
    public void S_reply_carries_only_the_signal()
    {
        GdbStopReply stop = GdbStopReply.Parse("S05");
        Assert.Equal(5, stop.Signal);
        Assert.Equal(GdbStopKind.Signal, stop.Kind);
        Assert.Null(stop.ThreadId);
        Assert.Null(stop.WatchKind);
        Assert.True(stop.TargetAlive);
    }

    [Theory]
    [InlineData("T05thread:p01.01;watch:ffffffff81e00000;", GdbBreakpointKind.WriteWatch, 0xffffffff81e00000UL)]
    [InlineData("T05thread:p01.02;rwatch:0000000000000400;", GdbBreakpointKind.ReadWatch, 0x400UL)]
    [InlineData("T05thread:01;awatch:7000;", GdbBreakpointKind.AccessWatch, 0x7000UL)]
    public void Watchpoint_stops_name_kind_and_address(string raw, GdbBreakpointKind kind, ulong address)
    {
        GdbStopReply stop = GdbStopReply.Parse(raw);
        Assert.Equal(5, stop.Signal);
        Assert.Equal(kind, stop.WatchKind);
        Assert.Equal(address, stop.WatchAddress);
        Assert.Equal(raw, stop.Raw);
        Assert.StartsWith(raw.Contains("p01.02", StringComparison.Ordinal) ? "p01.02" : raw.Contains("p01", StringComparison.Ordinal) ? "p01.01" : "01", stop.ThreadId, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("T05hwbreak:;thread:p1.1;", GdbBreakpointKind.Hardware)]
    [InlineData("T05swbreak:;thread:p1.1;", GdbBreakpointKind.Software)]
    public void Breakpoint_reasons_are_recognised(string raw, GdbBreakpointKind kind)
    {
        GdbStopReply stop = GdbStopReply.Parse(raw);
        Assert.Equal(kind, stop.WatchKind);
        Assert.Null(stop.WatchAddress);
        Assert.Equal("p1.1", stop.ThreadId);
    }

    [Fact]
    public void T_reply_keeps_register_pairs_and_unknown_pairs()
    {
        GdbStopReply stop = GdbStopReply.Parse("T0206:0000000000000000;07:f0ff000000000000;10:f0ff000000000000;thread:p1.1;core:0;");
        Assert.Equal(2, stop.Signal);
        Assert.Equal("f0ff000000000000", stop.Pairs["10"]);
        Assert.Equal("0", stop.Pairs["core"]);
    }

    [Fact]
    public void Exit_and_termination_replies()
    {
        GdbStopReply exited = GdbStopReply.Parse("W00");
        Assert.Equal(GdbStopKind.Exited, exited.Kind);
        Assert.Equal(0, exited.Signal);
        Assert.False(exited.TargetAlive);

        GdbStopReply killed = GdbStopReply.Parse("X09;process:1");
        Assert.Equal(GdbStopKind.Terminated, killed.Kind);
        Assert.Equal(9, killed.Signal);
        Assert.Equal("1", killed.ProcessId);
    }

    [Theory]
    [InlineData("")]
    [InlineData("OK")]
    [InlineData("E14")]
    [InlineData("T5")]
    [InlineData("S05junk")]
    [InlineData("T05thread")]
    [InlineData("T05watch:nothex;")]
    [InlineData("W00;nonsense")]
    public void Malformed_replies_are_rejected(string raw)
    {
        Assert.False(GdbStopReply.TryParse(raw, out _));
        Assert.Throws<ProtocolException>(() => GdbStopReply.Parse(raw));
    }
}
