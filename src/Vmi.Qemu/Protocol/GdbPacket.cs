using System.Globalization;
using System.Text;
using Vmi.Core;

namespace Vmi.Qemu;

/// <summary>
/// Framing helpers of the GDB remote serial protocol: <c>$payload#cc</c> with a modulo-256 checksum,
/// binary escaping (<c>}</c> followed by the byte XOR 0x20) and run-length encoding (<c>X*n</c>).
/// </summary>
/// <remarks>
/// The checksum covers the payload exactly as transmitted (escaped and run-length encoded).
/// Run-length encoding is expanded by the receiver of every packet, before anything else; escaping only
/// applies to binary payloads (<c>qXfer</c> replies, <c>X</c> requests) and is undone by the code that
/// knows the payload is binary. QEMU 7.2 never run-length encodes, gdbserver does.
/// </remarks>
public static class GdbPacket
{
    /// <summary>The byte that starts an escape sequence in binary data.</summary>
    public const byte EscapeByte = (byte)'}';

    /// <summary>The interrupt request (Ctrl-C) a client sends outside any packet to stop a running target.</summary>
    public const byte InterruptByte = 0x03;

    /// <summary>Modulo-256 sum of the bytes between <c>$</c> and <c>#</c>.</summary>
    public static byte Checksum(ReadOnlySpan<byte> payload)
    {
        byte sum = 0;
        foreach (byte b in payload)
        {
            sum += b;
        }

        return sum;
    }

    /// <summary>Frames an ASCII payload as <c>$payload#cc</c>. The payload must not contain unescaped <c>$ # } *</c>.</summary>
    /// <exception cref="ArgumentException">The payload contains a byte that must be escaped.</exception>
    public static byte[] Frame(string payload)
    {
        ArgumentNullException.ThrowIfNull(payload);
        return Frame(Encoding.ASCII.GetBytes(payload));
    }

    /// <summary>Frames an already escaped payload as <c>$payload#cc</c>.</summary>
    /// <exception cref="ArgumentException">The payload contains an unescaped <c>$</c>, <c>#</c> or <c>*</c>.</exception>
    public static byte[] Frame(ReadOnlySpan<byte> payload)
    {
        // '}' is allowed: it is how an escaped payload carries the special bytes.
        if (payload.IndexOfAny((byte)'$', (byte)'#', (byte)'*') >= 0)
        {
            throw new ArgumentException("A packet payload must not contain unescaped '$', '#' or '*'.", nameof(payload));
        }

        var framed = new byte[payload.Length + 4];
        framed[0] = (byte)'$';
        payload.CopyTo(framed.AsSpan(1));
        framed[payload.Length + 1] = (byte)'#';
        byte sum = Checksum(payload);
        framed[payload.Length + 2] = HexDigit(sum >> 4);
        framed[payload.Length + 3] = HexDigit(sum & 0xf);
        return framed;
    }

    /// <summary>Escapes binary data for a packet: each of <c># $ } *</c> becomes <c>}</c> followed by the byte XOR 0x20.</summary>
    public static byte[] Escape(ReadOnlySpan<byte> data)
    {
        var output = new List<byte>(data.Length + 8);
        foreach (byte b in data)
        {
            if (b is (byte)'#' or (byte)'$' or (byte)'}' or (byte)'*')
            {
                output.Add(EscapeByte);
                output.Add((byte)(b ^ 0x20));
            }
            else
            {
                output.Add(b);
            }
        }

        return [.. output];
    }

    /// <summary>Undoes <see cref="Escape"/>.</summary>
    /// <exception cref="ProtocolException">The data ends in the middle of an escape sequence.</exception>
    public static byte[] Unescape(ReadOnlySpan<byte> data)
    {
        var output = new byte[data.Length];
        int n = 0;
        for (int i = 0; i < data.Length; i++)
        {
            if (data[i] != EscapeByte)
            {
                output[n++] = data[i];
                continue;
            }

            if (++i == data.Length)
            {
                throw new ProtocolException("gdb remote protocol: binary data ends with a lone escape byte '}'.");
            }

            output[n++] = (byte)(data[i] ^ 0x20);
        }

        return output.AsSpan(0, n).ToArray();
    }

    /// <summary>
    /// Expands run-length encoding: <c>c*n</c> stands for <c>c</c> followed by <c>n - 29</c> more copies of it
    /// (gdb accepts any repeat count from 1 to 255, i.e. count bytes 30 and up).
    /// </summary>
    /// <param name="raw">The payload as received between <c>$</c> and <c>#</c>.</param>
    /// <param name="maxLength">The expanded payload may not be longer than this; a peer cannot make us allocate more.</param>
    /// <exception cref="ProtocolException">A <c>*</c> with nothing to repeat, a bad count, or expansion beyond <paramref name="maxLength"/>.</exception>
    public static byte[] ExpandRunLength(ReadOnlySpan<byte> raw, int maxLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxLength);
        int star = raw.IndexOf((byte)'*');
        if (star < 0)
        {
            if (raw.Length > maxLength)
            {
                throw new ProtocolException($"gdb remote protocol: a packet of {raw.Length} bytes exceeds the limit of {maxLength}.");
            }

            return raw.ToArray();
        }

        var output = new List<byte>(Math.Min(maxLength, raw.Length * 2));
        for (int i = 0; i < raw.Length; i++)
        {
            int add = 1;
            byte b = raw[i];
            if (b == (byte)'*')
            {
                if (output.Count == 0)
                {
                    throw new ProtocolException("gdb remote protocol: run-length marker '*' at the start of a packet.");
                }

                if (i + 1 >= raw.Length)
                {
                    throw new ProtocolException("gdb remote protocol: run-length marker '*' without a count.");
                }

                // The count byte is n + 29, so ' ' (32) means 3 more copies and '~' (126) means 97.
                add = raw[++i] - 29;
                if (add < 1)
                {
                    throw new ProtocolException($"gdb remote protocol: invalid run-length count byte 0x{raw[i]:x2}.");
                }

                b = output[^1];
            }

            if (output.Count + add > maxLength)
            {
                throw new ProtocolException($"gdb remote protocol: a packet expands beyond the limit of {maxLength} bytes.");
            }

            for (int r = 0; r < add; r++)
            {
                output.Add(b);
            }
        }

        return [.. output];
    }

    /// <summary>Lower-case hex of the bytes, two digits each.</summary>
    public static string ToHex(ReadOnlySpan<byte> data) => Convert.ToHexStringLower(data);

    /// <summary>Decodes hex pairs (either case).</summary>
    /// <exception cref="ProtocolException">Odd length or a non-hex character.</exception>
    public static byte[] FromHex(ReadOnlySpan<char> hex)
    {
        if (hex.Length % 2 != 0)
        {
            throw new ProtocolException($"gdb remote protocol: hex data of odd length {hex.Length}.");
        }

        var bytes = new byte[hex.Length / 2];
        for (int i = 0; i < bytes.Length; i++)
        {
            int hi = HexValue(hex[2 * i]);
            int lo = HexValue(hex[(2 * i) + 1]);
            if (hi < 0 || lo < 0)
            {
                throw new ProtocolException($"gdb remote protocol: '{Truncate(hex)}' is not hex data.");
            }

            bytes[i] = (byte)((hi << 4) | lo);
        }

        return bytes;
    }

    /// <summary>Parses a big-endian hex number as used in packet fields (addresses, lengths, thread ids).</summary>
    public static bool TryParseHexNumber(ReadOnlySpan<char> text, out ulong value) =>
        ulong.TryParse(text, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value) && text.Length > 0;

    internal static int HexValue(int c) => c switch
    {
        >= '0' and <= '9' => c - '0',
        >= 'a' and <= 'f' => c - 'a' + 10,
        >= 'A' and <= 'F' => c - 'A' + 10,
        _ => -1,
    };

    internal static byte HexDigit(int nibble) => (byte)"0123456789abcdef"[nibble];

    internal static string Truncate(ReadOnlySpan<char> text, int max = 80) =>
        text.Length <= max ? text.ToString() : string.Concat(text[..max], "...");
}
