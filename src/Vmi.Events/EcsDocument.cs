using System.Buffers;
using System.Text;
using System.Text.Json;

namespace Vmi.Events;

/// <summary>
/// An event as Elastic Common Schema fields: dotted field names (<c>process.pid</c>) to values
/// (strings, numbers, booleans, string lists). Names outside ECS live under <c>vmi.</c>.
/// </summary>
public sealed class EcsDocument : SortedDictionary<string, object?>
{
    /// <summary>The ECS version the field names follow.</summary>
    public const string EcsVersion = "8.11.0";

    public EcsDocument() : base(StringComparer.Ordinal)
    {
    }

    /// <summary>Sets a field only when the value is not null.</summary>
    public void SetIfNotNull(string field, object? value)
    {
        if (value is not null)
            this[field] = value;
    }

    [ThreadStatic]
    private static ArrayBufferWriter<byte>? t_buffer;

    private static readonly JsonWriterOptions CompactWriter = new();
    private static readonly JsonWriterOptions IndentedWriter = new() { Indented = true };

    /// <summary>
    /// A field name segment made safe for nesting: a free-form key (an evidence name) with a dot in it
    /// would otherwise split into objects and could collide with a sibling value.
    /// </summary>
    internal static string Segment(string key) =>
        key.Length == 0 ? "_" : key.Replace('.', '_');

    /// <summary>The fields as a nested JSON object (<c>{"process":{"pid":1}}</c>), the shape Elasticsearch and Kibana expect.</summary>
    /// <exception cref="InvalidOperationException">A field is both a value and the parent of another field (<c>a</c> and <c>a.b</c>).</exception>
    public string ToNestedJson(bool indented = false)
    {
        // Streams the sorted names: all names under one prefix are contiguous in ordinal order, so each
        // object is opened once, filled, and closed when a name outside it comes (no intermediate tree).
        // One buffer per thread: the store maps tens of thousands of events a second.
        ArrayBufferWriter<byte> buffer = t_buffer ??= new ArrayBufferWriter<byte>(4096);
        buffer.ResetWrittenCount();
        using (var writer = new Utf8JsonWriter(buffer, indented ? IndentedWriter : CompactWriter))
        {
            writer.WriteStartObject();
            var prefixes = new List<string>(4);
            string previous = "";
            int open = 0; // the open objects are the path previous[..open] ("" = only the root)
            foreach (var (name, value) in this)
            {
                CheckNotParentOfValue(prefixes, name);
                int split = name == "@timestamp" ? -1 : name.LastIndexOf('.');
                int parent = Math.Max(split, 0);
                while (open > 0 && !IsPathPrefix(previous.AsSpan(0, open), name.AsSpan(0, parent)))
                {
                    writer.WriteEndObject();
                    open = Math.Max(previous.LastIndexOf('.', open - 1), 0);
                }
                for (int start = open == 0 ? 0 : open + 1; parent > 0 && start <= parent;)
                {
                    int end = name.IndexOf('.', start);
                    if (end < 0 || end > parent)
                        end = parent;
                    writer.WriteStartObject(name.AsSpan(start, end - start));
                    start = end + 1;
                }
                previous = name;
                open = parent;
                writer.WritePropertyName(name.AsSpan(split + 1));
                WriteValue(writer, value);
            }
            for (; open > 0; open = Math.Max(previous.LastIndexOf('.', open - 1), 0))
                writer.WriteEndObject();
            writer.WriteEndObject();
        }
        string json = Encoding.UTF8.GetString(buffer.WrittenSpan);
        if (buffer.Capacity > 1 << 16)
            t_buffer = null; // an outsized event does not pin its buffer to the thread
        return json;
    }

    /// <summary><paramref name="path"/> is <paramref name="of"/> or one of its ancestors (<c>a.b</c> of <c>a.b.c</c>, not of <c>a.bc</c>).</summary>
    private static bool IsPathPrefix(ReadOnlySpan<char> path, ReadOnlySpan<char> of) =>
        of.StartsWith(path, StringComparison.Ordinal) && (of.Length == path.Length || of[path.Length] == '.');

    /// <summary>
    /// Refuses <c>a.b</c> after a value named <c>a</c>: nesting would have to drop one of them. In ordinal
    /// order every name between <c>a</c> and <c>a.b</c> starts with <c>a</c>, so the earlier names that are
    /// prefixes of the current one form a short chain, kept in <paramref name="prefixes"/>.
    /// </summary>
    private static void CheckNotParentOfValue(List<string> prefixes, string name)
    {
        while (prefixes.Count > 0 && !name.StartsWith(prefixes[^1], StringComparison.Ordinal))
            prefixes.RemoveAt(prefixes.Count - 1);
        foreach (string p in prefixes)
        {
            if (name.Length > p.Length && name[p.Length] == '.' && p != "@timestamp")
                throw new InvalidOperationException($"ECS field '{name}' is nested under '{p}', which is a value.");
        }
        prefixes.Add(name);
    }

    private static void WriteValue(Utf8JsonWriter writer, object? value)
    {
        switch (value)
        {
            case null:
                writer.WriteNullValue();
                break;
            case string s:
                writer.WriteStringValue(s);
                break;
            case bool b:
                writer.WriteBooleanValue(b);
                break;
            case int i:
                writer.WriteNumberValue(i);
                break;
            case long l:
                writer.WriteNumberValue(l);
                break;
            case uint u:
                writer.WriteNumberValue(u);
                break;
            case ulong ul:
                writer.WriteNumberValue(ul);
                break;
            case IEnumerable<string?> strings:
                writer.WriteStartArray();
                foreach (string? s in strings)
                {
                    if (s is null)
                        writer.WriteNullValue();
                    else
                        writer.WriteStringValue(s);
                }
                writer.WriteEndArray();
                break;
            default:
                JsonSerializer.Serialize(writer, value, value.GetType());
                break;
        }
    }
}
