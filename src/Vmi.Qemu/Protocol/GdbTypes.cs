using System.Collections.ObjectModel;
using Vmi.Core;

namespace Vmi.Qemu;

/// <summary>Breakpoint and watchpoint types of the <c>Z</c>/<c>z</c> packets; the value is the digit after <c>Z</c>.</summary>
public enum GdbBreakpointKind
{
    /// <summary><c>Z0</c>: software breakpoint. QEMU's stub implements it without patching guest memory.</summary>
    Software = 0,

    /// <summary><c>Z1</c>: hardware (execute) breakpoint.</summary>
    Hardware = 1,

    /// <summary><c>Z2</c>: write watchpoint.</summary>
    WriteWatch = 2,

    /// <summary><c>Z3</c>: read watchpoint.</summary>
    ReadWatch = 3,

    /// <summary><c>Z4</c>: access (read or write) watchpoint.</summary>
    AccessWatch = 4,
}

/// <summary>One register of the target description.</summary>
/// <param name="Name">Name as the target description spells it (<c>rip</c>, <c>cr3</c>, <c>fs_base</c>).</param>
/// <param name="Number">Number used by the <c>p</c>/<c>P</c> packets and the position in the <c>g</c> packet.</param>
/// <param name="BitSize">Width in bits.</param>
/// <param name="Group">The description's <c>group</c> attribute (<c>float</c>, <c>vector</c>), or null.</param>
public sealed record GdbRegisterInfo(string Name, int Number, int BitSize, string? Group)
{
    /// <summary>The description's <c>type</c> attribute (<c>int64</c>, <c>code_ptr</c>, <c>x64_cr0</c>...), or null.</summary>
    public string? Type { get; init; }

    /// <summary>Name of the <c>feature</c> element that declares the register (<c>org.gnu.gdb.i386.core</c>), or null.</summary>
    public string? Feature { get; init; }
}

/// <summary>What a stop reply reports.</summary>
public enum GdbStopKind
{
    /// <summary><c>S</c> or <c>T</c>: the target stopped with a signal (5 = SIGTRAP for breakpoints, watchpoints, steps; 2 = SIGINT for interrupts and stops from outside).</summary>
    Signal = 0,

    /// <summary><c>W</c>: the process exited; <see cref="GdbStopReply.Signal"/> holds the exit status.</summary>
    Exited = 1,

    /// <summary><c>X</c>: the process was terminated; <see cref="GdbStopReply.Signal"/> holds the signal.</summary>
    Terminated = 2,
}

/// <summary>A parsed stop reply (<c>S</c>, <c>T</c>, <c>W</c> or <c>X</c> packet).</summary>
/// <param name="Signal">The signal for <c>S</c>/<c>T</c>/<c>X</c>, the exit status for <c>W</c>.</param>
/// <param name="ThreadId">The <c>thread:</c> value exactly as sent (<c>p01.01</c> or <c>01</c>), or null.</param>
/// <param name="WatchKind">
/// <see cref="GdbBreakpointKind.WriteWatch"/>/<see cref="GdbBreakpointKind.ReadWatch"/>/<see cref="GdbBreakpointKind.AccessWatch"/>
/// for <c>watch</c>/<c>rwatch</c>/<c>awatch</c>, <see cref="GdbBreakpointKind.Hardware"/>/<see cref="GdbBreakpointKind.Software"/> for
/// <c>hwbreak</c>/<c>swbreak</c>; null when the reply gives no reason.
/// </param>
/// <param name="WatchAddress">The address after <c>watch:</c>/<c>rwatch:</c>/<c>awatch:</c>.</param>
/// <param name="Raw">The reply as received.</param>
/// <remarks>
/// QEMU 7.2 sends <c>T05thread:p01.01;</c> after a step or breakpoint (no <c>hwbreak</c>/<c>swbreak</c> reason),
/// <c>T05thread:p01.01;watch:0000000000000410;</c> after a watchpoint hit — the address is the watchpoint's start as
/// it was inserted, not the byte the guest touched — and <c>T02thread:p01.01;</c> when the VM was stopped by an
/// interrupt, by QMP <c>stop</c>, or by a packet that arrived while the VM ran.
/// </remarks>
public sealed record GdbStopReply(int Signal, string? ThreadId, GdbBreakpointKind? WatchKind, ulong? WatchAddress, string Raw)
{
    private static readonly ReadOnlyDictionary<string, string> NoPairs = new(new Dictionary<string, string>());

    /// <summary>Whether this is a signal stop, an exit or a termination.</summary>
    public GdbStopKind Kind { get; init; }

    /// <summary>The <c>process:</c> value of a <c>W</c>/<c>X</c> reply (multiprocess form), or null.</summary>
    public string? ProcessId { get; init; }

    /// <summary>All <c>name:value</c> pairs of a <c>T</c> reply as sent, including register values (hex register number → hex value) and reasons.</summary>
    public IReadOnlyDictionary<string, string> Pairs { get; init; } = NoPairs;

    /// <summary>Whether the target still exists after this stop (false for <c>W</c> and <c>X</c>).</summary>
    public bool TargetAlive => Kind == GdbStopKind.Signal;

    /// <summary>Parses a stop reply.</summary>
    /// <exception cref="ProtocolException">The packet is not a well-formed stop reply.</exception>
    public static GdbStopReply Parse(string packet)
    {
        ArgumentNullException.ThrowIfNull(packet);
        return TryParse(packet, out var reply, out string? error)
            ? reply
            : throw new ProtocolException($"gdb remote protocol: '{GdbPacket.Truncate(packet)}' is not a stop reply: {error}.");
    }

    /// <summary>Parses a stop reply; false when the packet is not one.</summary>
    public static bool TryParse(string packet, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out GdbStopReply? reply) =>
        TryParse(packet, out reply, out _);

    /// <summary>Whether the packet has the shape of a stop reply (a letter S/T/W/X and two hex digits).</summary>
    /// <remarks>No reply to the packets this client sends outside of resuming starts that way, so the shape identifies a stop reply.</remarks>
    public static bool LooksLikeStopReply(string packet) =>
        packet is not null && packet.Length >= 3 && packet[0] is 'S' or 'T' or 'W' or 'X'
        && GdbPacket.HexValue(packet[1]) >= 0 && GdbPacket.HexValue(packet[2]) >= 0;

    private static bool TryParse(string packet, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out GdbStopReply? reply, out string? error)
    {
        reply = null;
        if (!LooksLikeStopReply(packet))
        {
            error = "expected S, T, W or X and two hex digits";
            return false;
        }

        int code = (GdbPacket.HexValue(packet[1]) << 4) | GdbPacket.HexValue(packet[2]);
        string rest = packet[3..];
        switch (packet[0])
        {
            case 'S':
                if (rest.Length != 0)
                {
                    error = "trailing data after S";
                    return false;
                }

                reply = new GdbStopReply(code, null, null, null, packet);
                error = null;
                return true;

            case 'W':
            case 'X':
                {
                    string? process = null;
                    if (rest.Length != 0)
                    {
                        if (!rest.StartsWith(";process:", StringComparison.Ordinal) || rest.Length == ";process:".Length)
                        {
                            error = "unexpected data after the exit code";
                            return false;
                        }

                        process = rest[";process:".Length..];
                    }

                    reply = new GdbStopReply(code, null, null, null, packet)
                    {
                        Kind = packet[0] == 'W' ? GdbStopKind.Exited : GdbStopKind.Terminated,
                        ProcessId = process,
                    };
                    error = null;
                    return true;
                }

            default:
                return TryParseT(packet, code, rest, out reply, out error);
        }
    }

    private static bool TryParseT(string packet, int signal, string rest, out GdbStopReply? reply, out string? error)
    {
        reply = null;
        var pairs = new Dictionary<string, string>(StringComparer.Ordinal);
        string? thread = null;
        GdbBreakpointKind? kind = null;
        ulong? address = null;
        foreach (string part in rest.Split(';'))
        {
            if (part.Length == 0)
            {
                continue;
            }

            int colon = part.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
            {
                error = $"pair '{GdbPacket.Truncate(part)}' has no name";
                return false;
            }

            string name = part[..colon];
            string value = part[(colon + 1)..];
            pairs[name] = value;
            switch (name)
            {
                case "thread":
                    thread = value;
                    break;
                case "watch" or "rwatch" or "awatch":
                    if (!GdbPacket.TryParseHexNumber(value, out ulong watched))
                    {
                        error = $"{name} address '{GdbPacket.Truncate(value)}' is not hex";
                        return false;
                    }

                    kind = name switch
                    {
                        "watch" => GdbBreakpointKind.WriteWatch,
                        "rwatch" => GdbBreakpointKind.ReadWatch,
                        _ => GdbBreakpointKind.AccessWatch,
                    };
                    address = watched;
                    break;
                case "hwbreak":
                    kind = GdbBreakpointKind.Hardware;
                    break;
                case "swbreak":
                    kind = GdbBreakpointKind.Software;
                    break;
                default:
                    // Register values (hex number:hex value), core:, library:, exec: and anything newer are kept as sent.
                    break;
            }
        }

        reply = new GdbStopReply(signal, thread, kind, address, packet) { Pairs = new ReadOnlyDictionary<string, string>(pairs) };
        error = null;
        return true;
    }
}
