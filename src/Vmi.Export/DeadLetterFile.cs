using System.Text;
using System.Text.Json;

namespace Vmi.Export;

/// <summary>
/// Records a destination refused for good, kept with the reason so nothing vanishes silently: one JSON
/// object per line, <c>{"time","sink","id","stream","status","error_type","reason","document"}</c>, where
/// <c>document</c> is the record's own JSON. Written (and flushed to disk) before the spool cursor moves
/// past the record.
/// </summary>
public sealed class DeadLetterFile(string path)
{
    private readonly Lock _lock = new();

    /// <summary>The file (created on the first rejected record).</summary>
    public string Path { get; } = path;

    /// <summary>Appends the rejected records and flushes them to disk.</summary>
    /// <exception cref="ExportException">The file cannot be written.</exception>
    public void Write(string sink, IReadOnlyList<(ExportItem Item, ItemResult Result)> rejected)
    {
        ArgumentNullException.ThrowIfNull(rejected);
        if (rejected.Count == 0)
            return;
        using var buffer = new MemoryStream();
        foreach (var (item, result) in rejected)
        {
            using (var w = new Utf8JsonWriter(buffer))
            {
                w.WriteStartObject();
                w.WriteString("time", DateTimeOffset.UtcNow);
                w.WriteString("sink", sink);
                w.WriteString("id", item.Id);
                w.WriteString("stream", item.Stream == ExportStream.Alerts ? "alerts" : "events");
                w.WriteNumber("status", result.Status);
                w.WriteString("error_type", result.ErrorType);
                w.WriteString("reason", result.Reason);
                w.WritePropertyName("document");
                try
                {
                    using var doc = JsonDocument.Parse(item.Json);
                    doc.WriteTo(w);
                }
                catch (JsonException)
                {
                    w.WriteStringValue(item.Json); // not JSON at all (maybe why it was refused): kept verbatim
                }
                w.WriteEndObject();
            }
            buffer.WriteByte((byte)'\n');
        }
        lock (_lock)
        {
            try
            {
                using var f = new FileStream(Path, FileMode.Append, FileAccess.Write, FileShare.Read);
                buffer.Position = 0;
                buffer.CopyTo(f);
                f.Flush(flushToDisk: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new ExportException($"Cannot write the dead-letter file {Path}: {e.Message}", e);
            }
        }
    }

    /// <summary>Reads the dead-letter lines back (for tools and tests).</summary>
    public IReadOnlyList<JsonElement> ReadAll()
    {
        if (!File.Exists(Path))
            return [];
        var lines = new List<JsonElement>();
        foreach (string line in File.ReadLines(Path, Encoding.UTF8))
        {
            if (line.Length > 0)
                lines.Add(JsonDocument.Parse(line).RootElement.Clone());
        }
        return lines;
    }
}
