using System.Buffers;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Vmi.Updates;

namespace Vmi.Audit;

/// <summary>
/// The line format. Canonical JSON as <see cref="CanonicalJson"/> writes it (keys by code point, no
/// whitespace, only <c>"</c> and <c>\</c> escaped, integers only), extended in one way so every line stays
/// one line: control characters U+0000–U+001F are written as <c>\u00xx</c> (lower-case hex). For strings
/// without control characters the bytes are exactly <see cref="CanonicalJson.Encode(System.Text.Json.JsonElement)"/>'s.
/// A line is accepted only if it is byte-for-byte its own canonical encoding, so any edit changes a hash.
/// </summary>
internal static class AuditFormat
{
    public const string Zero = "0000000000000000000000000000000000000000000000000000000000000000";

    /// <summary>Longest line accepted; longer is an error, never an allocation.</summary>
    public const int MaxLineBytes = 1 << 20;

    public const string TimeFormat = "yyyy-MM-dd'T'HH:mm:ss.fffffff'Z'";

    public static string FormatTime(DateTimeOffset t) => t.UtcDateTime.ToString(TimeFormat, CultureInfo.InvariantCulture);

    public static bool TryParseTime(string s, out DateTimeOffset time)
    {
        if (DateTime.TryParseExact(s, TimeFormat, CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal, out DateTime dt))
        {
            time = new DateTimeOffset(dt, TimeSpan.Zero);
            return true;
        }
        time = default;
        return false;
    }

    public static string LineHash(ReadOnlySpan<byte> line) => Convert.ToHexStringLower(SHA256.HashData(line));

    /// <summary>Replaces lone surrogates (which UTF-8 cannot carry) with U+FFFD, so what is hashed is what is read back.</summary>
    public static string Clean(string s) =>
        s.AsSpan().IndexOfAnyInRange('\ud800', '\udfff') < 0 ? s : Encoding.UTF8.GetString(Encoding.UTF8.GetBytes(s));

    /// <summary>The record's canonical bytes; without the <c>hash</c> member when <paramref name="hash"/> is null.</summary>
    public static byte[] EncodeRecord(long sequence, string time, string actor, string action, string subject, string outcome,
        IEnumerable<KeyValuePair<string, string>> details, long checkpoints, string prev, string? hash)
    {
        byte[] unsigned = EncodeUnsignedRecord(sequence, time, actor, action, subject, outcome, details, checkpoints, prev, out int hashAt);
        return hash is null ? unsigned : WithHash(unsigned, hashAt, hash);
    }

    /// <summary>The record without <c>hash</c>; <paramref name="hashAt"/> is where <see cref="WithHash"/> inserts it.</summary>
    public static byte[] EncodeUnsignedRecord(long sequence, string time, string actor, string action, string subject, string outcome,
        IEnumerable<KeyValuePair<string, string>> details, long checkpoints, string prev, out int hashAt)
    {
        var w = new ArrayBufferWriter<byte>(512);
        // Members in code-point order: action, actor, checkpoints, details, hash, outcome, prev, sequence, subject, time, type.
        w.Write("{\"action\":"u8); Str(action, w);
        w.Write(",\"actor\":"u8); Str(actor, w);
        w.Write(",\"checkpoints\":"u8); Int(checkpoints, w);
        w.Write(",\"details\":{"u8);
        bool first = true;
        foreach (var (k, v) in details.OrderBy(p => p.Key, CodePointComparer.Instance))
        {
            if (!first)
                w.Write(","u8);
            first = false;
            Str(k, w);
            w.Write(":"u8);
            Str(v, w);
        }
        w.Write("}"u8);
        hashAt = w.WrittenCount;
        w.Write(",\"outcome\":"u8); Str(outcome, w);
        w.Write(",\"prev\":"u8); Str(prev, w);
        w.Write(",\"sequence\":"u8); Int(sequence, w);
        w.Write(",\"subject\":"u8); Str(subject, w);
        w.Write(",\"time\":"u8); Str(time, w);
        w.Write(",\"type\":\"record\"}"u8);
        return w.WrittenSpan.ToArray();
    }

    /// <summary>The full record line: <paramref name="unsigned"/> with <c>"hash":HASH</c> inserted at <paramref name="hashAt"/>.</summary>
    public static byte[] WithHash(byte[] unsigned, int hashAt, string hash)
    {
        ReadOnlySpan<byte> member = ",\"hash\":\""u8;
        byte[] full = new byte[unsigned.Length + member.Length + hash.Length + 1];
        unsigned.AsSpan(0, hashAt).CopyTo(full);
        int at = hashAt;
        member.CopyTo(full.AsSpan(at));
        at += member.Length;
        at += Encoding.ASCII.GetBytes(hash, full.AsSpan(at));
        full[at++] = (byte)'"';
        unsigned.AsSpan(hashAt).CopyTo(full.AsSpan(at));
        return full;
    }

    /// <summary>The checkpoint's canonical bytes; without the <c>sig</c> member when <paramref name="sig"/> is null.</summary>
    public static byte[] EncodeCheckpoint(string kind, long sequence, string hash, string time, string keyId, string prev, string? sig)
    {
        var w = new ArrayBufferWriter<byte>(400);
        w.Write("{\"hash\":"u8); Str(hash, w);
        w.Write(",\"keyid\":"u8); Str(keyId, w);
        w.Write(",\"kind\":"u8); Str(kind, w);
        w.Write(",\"prev\":"u8); Str(prev, w);
        w.Write(",\"sequence\":"u8); Int(sequence, w);
        if (sig is not null)
        {
            w.Write(",\"sig\":"u8); Str(sig, w);
        }
        w.Write(",\"time\":"u8); Str(time, w);
        w.Write(",\"type\":\"checkpoint\"}"u8);
        return w.WrittenSpan.ToArray();
    }

    private static void Int(long n, ArrayBufferWriter<byte> w)
    {
        Span<byte> buf = stackalloc byte[24];
        n.TryFormat(buf, out int written, default, CultureInfo.InvariantCulture);
        w.Write(buf[..written]);
    }

    private static void Str(string s, ArrayBufferWriter<byte> w)
    {
        w.Write("\""u8);
        ReadOnlySpan<char> rest = s;
        while (!rest.IsEmpty)
        {
            // Copy the longest run that needs no escaping straight into the buffer.
            int special = rest.IndexOfAny(NeedsEscape);
            ReadOnlySpan<char> run = special < 0 ? rest : rest[..special];
            if (!run.IsEmpty)
            {
                Span<byte> dest = w.GetSpan(Encoding.UTF8.GetMaxByteCount(run.Length));
                w.Advance(Encoding.UTF8.GetBytes(run, dest));
            }
            if (special < 0)
                break;
            char c = rest[special];
            if (c is '"' or '\\')
            {
                Span<byte> dest = w.GetSpan(2);
                dest[0] = (byte)'\\';
                dest[1] = (byte)c;
                w.Advance(2);
            }
            else
            {
                Span<byte> dest = w.GetSpan(6);
                "\\u00"u8.CopyTo(dest);
                dest[4] = (byte)"0123456789abcdef"[c >> 4];
                dest[5] = (byte)"0123456789abcdef"[c & 0xf];
                w.Advance(6);
            }
            rest = rest[(special + 1)..];
        }
        w.Write("\""u8);
    }

    private static readonly System.Buffers.SearchValues<char> NeedsEscape = System.Buffers.SearchValues.Create(
        "\"\\\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\u0008\u0009\u000a\u000b\u000c\u000d\u000e\u000f" +
        "\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001a\u001b\u001c\u001d\u001e\u001f");

    /// <summary>A parsed line: exactly one of <see cref="Record"/> and <see cref="Checkpoint"/> is set.</summary>
    public readonly record struct Parsed(AuditRecord? Record, AuditCheckpoint? Checkpoint, byte[] SignedBytes);

    /// <summary>Parses one line strictly. Returns null and a reason instead of throwing on any malformed input.</summary>
    public static Parsed? TryParse(ReadOnlyMemory<byte> line, out string error)
    {
        if (!System.Text.Unicode.Utf8.IsValid(line.Span))
            return Fail("not valid UTF-8", out error);
        JsonDocument doc;
        try
        {
            doc = CanonicalJson.ParseStrict(line, "the line");
        }
        catch (Exception e) when (e is FormatException or InvalidOperationException or ArgumentException)
        {
            error = "not valid JSON (" + e.Message + ")";
            return null;
        }
        using (doc)
        {
            JsonElement root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                error = "not a JSON object";
                return null;
            }
            string? type = GetString(root, "type");
            try
            {
                return type switch
                {
                    "record" => ParseRecord(root, line.Span, out error),
                    "checkpoint" => ParseCheckpoint(root, line.Span, out error),
                    _ => Fail($"unknown line type \"{type}\"", out error),
                };
            }
            catch (Exception e) when (e is FormatException or InvalidOperationException or ArgumentException)
            {
                // Defence in depth: the checks above should leave nothing to throw, but a bad line must stay a result.
                return Fail("malformed line (" + e.Message + ")", out error);
            }
        }
    }

    private static Parsed? Fail(string reason, out string error)
    {
        error = reason;
        return null;
    }

    private static readonly HashSet<string> RecordMembers = ["type", "sequence", "time", "actor", "action", "subject", "outcome", "details", "checkpoints", "prev", "hash"];
    private static readonly HashSet<string> CheckpointMembers = ["type", "kind", "sequence", "hash", "time", "keyid", "prev", "sig"];

    private static Parsed? ParseRecord(JsonElement root, ReadOnlySpan<byte> line, out string error)
    {
        if (!HasExactly(root, RecordMembers, out string? member))
            return Fail($"malformed record: unexpected or missing member \"{member}\"", out error);
        string? time = GetString(root, "time"), actor = GetString(root, "actor"), action = GetString(root, "action"),
            subject = GetString(root, "subject"), outcome = GetString(root, "outcome"), prev = GetString(root, "prev"), hash = GetString(root, "hash");
        long? sequence = GetLong(root, "sequence"), checkpoints = GetLong(root, "checkpoints");
        if (time is null || actor is null || action is null || subject is null || outcome is null || prev is null || hash is null || sequence is null || checkpoints is null)
            return Fail("malformed record: a member has the wrong type", out error);
        if (!TryParseTime(time, out DateTimeOffset t))
            return Fail($"malformed record: time \"{time}\" is not {TimeFormat}", out error);
        if (!AuditRecord.TryParseOutcome(outcome, out AuditOutcome o))
            return Fail($"malformed record: unknown outcome \"{outcome}\"", out error);
        if (!IsHash(prev) || !IsHash(hash))
            return Fail("malformed record: prev and hash must be 64 lower-case hex digits", out error);
        JsonElement d = root.GetProperty("details");
        if (d.ValueKind != JsonValueKind.Object)
            return Fail("malformed record: details is not an object", out error);
        var details = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (JsonProperty p in d.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.String)
                return Fail($"malformed record: details.{p.Name} is not a string", out error);
            details[p.Name] = p.Value.GetString()!;
        }
        byte[] unsigned = EncodeUnsignedRecord(sequence.Value, time, actor, action, subject, outcome, details, checkpoints.Value, prev, out int hashAt);
        if (!line.SequenceEqual(WithHash(unsigned, hashAt, hash)))
            return Fail("the line is not in canonical form (it was edited)", out error);
        error = "";
        var record = new AuditRecord
        {
            Sequence = sequence.Value, Time = t, Actor = actor, Action = action, Subject = subject, Outcome = o,
            Details = details, Checkpoints = checkpoints.Value, Prev = prev, Hash = hash,
        };
        return new Parsed(record, null, unsigned);
    }

    private static Parsed? ParseCheckpoint(JsonElement root, ReadOnlySpan<byte> line, out string error)
    {
        if (!HasExactly(root, CheckpointMembers, out string? member))
            return Fail($"malformed checkpoint: unexpected or missing member \"{member}\"", out error);
        string? kind = GetString(root, "kind"), hash = GetString(root, "hash"), time = GetString(root, "time"),
            keyId = GetString(root, "keyid"), prev = GetString(root, "prev"), sig = GetString(root, "sig");
        long? sequence = GetLong(root, "sequence");
        if (kind is null || hash is null || time is null || keyId is null || prev is null || sig is null || sequence is null)
            return Fail("malformed checkpoint: a member has the wrong type", out error);
        CheckpointKind k;
        switch (kind)
        {
            case "open": k = CheckpointKind.Open; break;
            case "periodic": k = CheckpointKind.Periodic; break;
            case "close": k = CheckpointKind.Close; break;
            default: return Fail($"malformed checkpoint: unknown kind \"{kind}\"", out error);
        }
        if (!TryParseTime(time, out DateTimeOffset t))
            return Fail($"malformed checkpoint: time \"{time}\" is not {TimeFormat}", out error);
        if (!IsHash(prev) || !IsHash(hash) || !IsHash(keyId) || !IsHex(sig, 128))
            return Fail("malformed checkpoint: prev, hash, keyid or sig is not lower-case hex of the right length", out error);
        byte[] unsigned = EncodeCheckpoint(kind, sequence.Value, hash, time, keyId, prev, null);
        byte[] full = EncodeCheckpoint(kind, sequence.Value, hash, time, keyId, prev, sig);
        if (!line.SequenceEqual(full))
            return Fail("the line is not in canonical form (it was edited)", out error);
        error = "";
        var cp = new AuditCheckpoint { Kind = k, Sequence = sequence.Value, Hash = hash, Time = t, KeyId = keyId, Prev = prev, Signature = sig };
        return new Parsed(null, cp, unsigned);
    }

    private static bool HasExactly(JsonElement o, HashSet<string> members, out string? offending)
    {
        int n = 0;
        foreach (JsonProperty p in o.EnumerateObject())
        {
            if (!members.Contains(p.Name))
            {
                offending = p.Name;
                return false;
            }
            n++;
        }
        if (n != members.Count)
        {
            offending = members.First(m => !o.TryGetProperty(m, out _));
            return false;
        }
        offending = null;
        return true;
    }

    private static string? GetString(JsonElement o, string name) =>
        o.TryGetProperty(name, out JsonElement v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static long? GetLong(JsonElement o, string name) =>
        o.TryGetProperty(name, out JsonElement v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out long n) ? n : null;

    public static bool IsHash(string s) => IsHex(s, 64);

    private static bool IsHex(string s, int length)
    {
        if (s.Length != length)
            return false;
        foreach (char c in s)
        {
            if (!char.IsAsciiHexDigitLower(c) && !char.IsAsciiDigit(c))
                return false;
        }
        return true;
    }

    /// <summary>Orders strings by Unicode code point, as canonical JSON sorts keys.</summary>
    private sealed class CodePointComparer : IComparer<string>
    {
        public static readonly CodePointComparer Instance = new();

        public int Compare(string? x, string? y)
        {
            var ex = (x ?? "").EnumerateRunes();
            var ey = (y ?? "").EnumerateRunes();
            while (true)
            {
                bool hx = ex.MoveNext(), hy = ey.MoveNext();
                if (!hx || !hy)
                    return hx == hy ? 0 : hx ? 1 : -1;
                int c = ex.Current.Value.CompareTo(ey.Current.Value);
                if (c != 0)
                    return c;
            }
        }
    }
}

/// <summary>Reads newline-terminated lines with a hard length bound.</summary>
internal sealed class BoundedLineReader(Stream stream, int maxLine = AuditFormat.MaxLineBytes)
{
    private readonly byte[] _chunk = new byte[64 * 1024];
    private int _pos, _len;
    private byte[] _line = new byte[4096];

    public enum Status { Line, End, TooLong, Unterminated }

    /// <summary>The next line (without its newline); valid until the next call.</summary>
    public Status Next(out ReadOnlyMemory<byte> line)
    {
        int used = 0;
        while (true)
        {
            if (_pos == _len)
            {
                _len = stream.Read(_chunk, 0, _chunk.Length);
                _pos = 0;
                if (_len == 0)
                {
                    line = _line.AsMemory(0, used);
                    return used == 0 ? Status.End : Status.Unterminated;
                }
            }
            ReadOnlySpan<byte> avail = _chunk.AsSpan(_pos, _len - _pos);
            int nl = avail.IndexOf((byte)'\n');
            int take = nl < 0 ? avail.Length : nl;
            if (used + take > maxLine)
            {
                line = default;
                return Status.TooLong;
            }
            if (used + take > _line.Length)
                Array.Resize(ref _line, Math.Min(maxLine, Math.Max(_line.Length * 2, used + take)));
            avail[..take].CopyTo(_line.AsSpan(used));
            used += take;
            _pos += take;
            if (nl >= 0)
            {
                _pos++;
                line = _line.AsMemory(0, used);
                return Status.Line;
            }
        }
    }
}
