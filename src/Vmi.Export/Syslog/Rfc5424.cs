using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Vmi.Export.Syslog;

/// <summary>Settings of the RFC 5424 formatter.</summary>
public sealed record Rfc5424Options
{
    /// <summary>
    /// Facility code (0–23). Default 10, <c>authpriv</c> ("security/authorization messages, private"): the
    /// records are security events, and most syslog servers keep that facility in a restricted file.
    /// Use 16–23 (<c>local0</c>–<c>local7</c>) to route them separately.
    /// </summary>
    public int Facility { get; init; } = 10;

    /// <summary>APP-NAME.</summary>
    public string AppName { get; init; } = "vmi";

    /// <summary>
    /// SD-ID of the structured-data element holding the event fields. The default uses 32473, the IANA
    /// example enterprise number (RFC 5612): a deployment must replace it with its own private enterprise number.
    /// </summary>
    public string StructuredDataId { get; init; } = "vmi@32473";

    /// <summary>MSG is cut to this many UTF-8 bytes (after the BOM, on a character boundary, with "…" appended).</summary>
    public int MaxMessageBytes { get; init; } = 8 * 1024;

    /// <summary>Each PARAM-VALUE is cut to this many characters (the structured data stays bounded too).</summary>
    public int MaxParamChars { get; init; } = 1024;
}

/// <summary>
/// Formats an <see cref="ExportItem"/> (its ECS document) as an RFC 5424 syslog message:
/// <c>&lt;PRI&gt;1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG</c>. PRI is facility×8 + severity
/// (alert severity critical→2, high→3, medium→4, low→5, info→6; other events 6); TIMESTAMP is RFC 3339 UTC
/// with microseconds; HOSTNAME is the VM (<c>host.name</c>) or <c>-</c>; MSGID is <c>event.kind</c>; the
/// structured data carries the key fields (id, seq, vm, kind, action, dataset, detector, severity, rule, pid,
/// process, technique); MSG is a UTF-8 BOM and the event's <c>message</c>.
/// </summary>
public sealed class Rfc5424Formatter
{
    private static readonly byte[] Bom = [0xEF, 0xBB, 0xBF];

    // SD param name → ECS path. Names follow SD-NAME: printable US-ASCII, no '=', ' ', ']', '"', ≤ 32 chars.
    private static readonly (string Name, string Path)[] Params =
    [
        ("id", "event.id"), ("seq", "event.sequence"), ("vm", "host.name"), ("kind", "event.kind"),
        ("action", "event.action"), ("dataset", "event.dataset"), ("detector", "rule.name"),
        ("severity", "vmi.alert.severity"), ("rule", "rule.id"), ("pid", "process.pid"),
        ("process", "process.name"), ("technique", "threat.technique.id"),
    ];

    private readonly Rfc5424Options _options;
    private readonly string _sdId;
    private readonly string _appName;

    /// <param name="options">Facility, names, bounds.</param>
    /// <exception cref="ArgumentException">Facility out of 0–23, or an SD-ID/APP-NAME that breaks RFC 5424's rules.</exception>
    public Rfc5424Formatter(Rfc5424Options? options = null)
    {
        _options = options ?? new Rfc5424Options();
        if (_options.Facility is < 0 or > 23)
            throw new ArgumentException("Syslog facility must be 0–23.", nameof(options));
        if (!IsSdName(_options.StructuredDataId))
            throw new ArgumentException($"'{_options.StructuredDataId}' is not a valid SD-ID.", nameof(options));
        _sdId = _options.StructuredDataId;
        _appName = Header(_options.AppName, 48);
        if (_options.MaxMessageBytes < 16)
            throw new ArgumentException("MaxMessageBytes must be at least 16.", nameof(options));
    }

    /// <summary>RFC 5424 SD-NAME: 1–32 printable US-ASCII characters except <c>=</c>, space, <c>]</c> and <c>"</c>.</summary>
    public static bool IsSdName(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return name.Length is >= 1 and <= 32 && name.All(c => c is > ' ' and < (char)127 and not '=' and not ']' and not '"');
    }

    /// <summary>Syslog severity of an alert severity name (critical→2 … info→6); 6 (informational) for anything else.</summary>
    public static int SeverityOf(string? alertSeverity) => alertSeverity switch
    {
        "critical" => 2,
        "high" => 3,
        "medium" => 4,
        "low" => 5,
        _ => 6,
    };

    /// <summary>Escapes a PARAM-VALUE: <c>"</c>, <c>\</c> and <c>]</c> get a backslash.</summary>
    public static string EscapeParamValue(string value)
    {
        ArgumentNullException.ThrowIfNull(value);
        var sb = new StringBuilder(value.Length + 8);
        foreach (char c in value)
        {
            if (c is '"' or '\\' or ']')
                sb.Append('\\');
            sb.Append(c);
        }
        return sb.ToString();
    }

    /// <summary>The message as UTF-8 bytes (without framing).</summary>
    public byte[] Format(ExportItem item)
    {
        ArgumentNullException.ThrowIfNull(item);
        using JsonDocument doc = JsonDocument.Parse(item.Json);
        JsonElement root = doc.RootElement;
        string? alertSeverity = Text(root, "vmi.alert.severity");
        bool isAlert = item.Stream == ExportStream.Alerts;
        int severity = isAlert ? SeverityOf(alertSeverity) : 6;
        int pri = _options.Facility * 8 + severity;
        string host = Header(Text(root, "host.name"), 255);
        string msgId = Header(Text(root, "event.kind"), 32);
        string timestamp = item.Time.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'", CultureInfo.InvariantCulture);

        var sb = new StringBuilder(512);
        sb.Append('<').Append(pri.ToString(CultureInfo.InvariantCulture)).Append(">1 ")
          .Append(timestamp).Append(' ').Append(host).Append(' ').Append(_appName).Append(" - ")
          .Append(msgId).Append(" [").Append(_sdId);
        foreach ((string name, string path) in Params)
        {
            string? value = name == "id" ? (Text(root, path) ?? item.Id) : Text(root, path);
            if (value is null)
                continue;
            if (value.Length > _options.MaxParamChars)
                value = value[.._options.MaxParamChars];
            sb.Append(' ').Append(name).Append("=\"").Append(EscapeParamValue(value)).Append('"');
        }
        sb.Append("] ");

        string message = Text(root, "message") ?? Text(root, "event.action") ?? "";
        byte[] head = Encoding.UTF8.GetBytes(sb.ToString());
        byte[] msg = Truncate(message, _options.MaxMessageBytes);
        var result = new byte[head.Length + Bom.Length + msg.Length];
        head.CopyTo(result, 0);
        Bom.CopyTo(result, head.Length);
        msg.CopyTo(result, head.Length + Bom.Length);
        return result;
    }

    private static byte[] Truncate(string message, int maxBytes)
    {
        byte[] all = Encoding.UTF8.GetBytes(message);
        if (all.Length <= maxBytes)
            return all;
        byte[] ellipsis = Encoding.UTF8.GetBytes("…");
        int cut = maxBytes - ellipsis.Length;
        while (cut > 0 && (all[cut] & 0xC0) == 0x80)
            cut--; // do not split a UTF-8 sequence
        var result = new byte[cut + ellipsis.Length];
        Array.Copy(all, result, cut);
        ellipsis.CopyTo(result, cut);
        return result;
    }

    /// <summary>A header field: printable US-ASCII without spaces, bounded, or <c>-</c> when empty.</summary>
    private static string Header(string? value, int max)
    {
        if (string.IsNullOrEmpty(value))
            return "-";
        var sb = new StringBuilder(Math.Min(value.Length, max));
        foreach (char c in value)
        {
            if (sb.Length == max)
                break;
            sb.Append(c is > ' ' and < (char)127 ? c : '_');
        }
        return sb.ToString();
    }

    /// <summary>The value at a dotted ECS path in the nested document, as text; arrays joined with commas.</summary>
    private static string? Text(JsonElement root, string path)
    {
        JsonElement e = root;
        foreach (string part in path.Split('.'))
        {
            if (e.ValueKind != JsonValueKind.Object || !e.TryGetProperty(part, out e))
                return null;
        }
        return e.ValueKind switch
        {
            JsonValueKind.String => e.GetString(),
            JsonValueKind.Number => e.GetRawText(),
            JsonValueKind.True => "true",
            JsonValueKind.False => "false",
            JsonValueKind.Array => string.Join(",", e.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.String ? x.GetString() : x.GetRawText())),
            JsonValueKind.Object => e.GetRawText(),
            _ => null,
        };
    }
}
