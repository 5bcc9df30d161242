using System.Buffers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Vmi.Updates;

/// <summary>
/// Canonical JSON as TUF signs it (securesystemslib's <c>encode_canonical</c>, OLPC style): object keys
/// sorted by code point, no whitespace, strings with only <c>\</c> and <c>"</c> escaped, integers only.
/// The bytes signed are the canonical form of a metadata file's <c>signed</c> object, so a signature does
/// not depend on how the file was laid out.
/// </summary>
public static class CanonicalJson
{
    /// <summary>Deepest nesting accepted when parsing metadata (TUF metadata is at most about 6 deep).</summary>
    public const int MaxDepth = 16;

    /// <exception cref="FormatException">A number is not an integer.</exception>
    public static byte[] Encode(JsonElement element)
    {
        var buffer = new ArrayBufferWriter<byte>(256);
        Write(element, buffer);
        return buffer.WrittenSpan.ToArray();
    }

    /// <exception cref="FormatException">A number is not an integer.</exception>
    public static byte[] Encode(JsonNode node) => Encode(JsonSerializer.SerializeToElement(node));

    private static void Write(JsonElement e, ArrayBufferWriter<byte> w)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
                w.Write("{"u8);
                bool first = true;
                foreach (JsonProperty p in e.EnumerateObject().OrderBy(p => p.Name, CodePointComparer.Instance))
                {
                    if (!first)
                        w.Write(","u8);
                    first = false;
                    WriteString(p.Name, w);
                    w.Write(":"u8);
                    Write(p.Value, w);
                }
                w.Write("}"u8);
                break;
            case JsonValueKind.Array:
                w.Write("["u8);
                bool firstItem = true;
                foreach (JsonElement item in e.EnumerateArray())
                {
                    if (!firstItem)
                        w.Write(","u8);
                    firstItem = false;
                    Write(item, w);
                }
                w.Write("]"u8);
                break;
            case JsonValueKind.String:
                WriteString(e.GetString()!, w);
                break;
            case JsonValueKind.Number:
                if (!e.TryGetInt64(out long n))
                    throw new FormatException($"canonical JSON allows integers only, not {e.GetRawText()}");
                w.Write(Encoding.ASCII.GetBytes(n.ToString(System.Globalization.CultureInfo.InvariantCulture)));
                break;
            case JsonValueKind.True:
                w.Write("true"u8);
                break;
            case JsonValueKind.False:
                w.Write("false"u8);
                break;
            case JsonValueKind.Null:
                w.Write("null"u8);
                break;
            default:
                throw new FormatException($"unexpected JSON value kind {e.ValueKind}");
        }
    }

    private static void WriteString(string s, ArrayBufferWriter<byte> w)
    {
        var sb = new StringBuilder(s.Length + 2);
        sb.Append('"');
        foreach (char c in s)
        {
            if (c is '"' or '\\')
                sb.Append('\\');
            sb.Append(c);
        }
        sb.Append('"');
        w.Write(Encoding.UTF8.GetBytes(sb.ToString()));
    }

    /// <summary>
    /// Parses untrusted JSON strictly: bounded depth, no comments or trailing commas, no duplicate object
    /// keys (two parsers could otherwise read different values from one signed file).
    /// </summary>
    /// <exception cref="FormatException">Not JSON, too deep, or a duplicate key; the message names <paramref name="what"/>.</exception>
    public static JsonDocument ParseStrict(ReadOnlyMemory<byte> json, string what)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = MaxDepth, AllowTrailingCommas = false, CommentHandling = JsonCommentHandling.Disallow });
        }
        catch (JsonException e)
        {
            throw new FormatException($"{what} is not valid JSON: {e.Message}", e);
        }
        try
        {
            CheckDuplicates(doc.RootElement, what);
        }
        catch
        {
            doc.Dispose();
            throw;
        }
        return doc;
    }

    private static void CheckDuplicates(JsonElement e, string what)
    {
        if (e.ValueKind == JsonValueKind.Object)
        {
            var names = new HashSet<string>(StringComparer.Ordinal);
            foreach (JsonProperty p in e.EnumerateObject())
            {
                if (!names.Add(p.Name))
                    throw new FormatException($"{what} has the key \"{p.Name}\" twice in one object");
                CheckDuplicates(p.Value, what);
            }
        }
        else if (e.ValueKind == JsonValueKind.Array)
        {
            foreach (JsonElement item in e.EnumerateArray())
                CheckDuplicates(item, what);
        }
    }

    /// <summary>Orders strings by Unicode code point (Python's order), not by UTF-16 unit.</summary>
    private sealed class CodePointComparer : IComparer<string>
    {
        public static readonly CodePointComparer Instance = new();

        public int Compare(string? x, string? y)
        {
            if (ReferenceEquals(x, y))
                return 0;
            if (x is null)
                return -1;
            if (y is null)
                return 1;
            var ex = x.EnumerateRunes();
            var ey = y.EnumerateRunes();
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
