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

    // One instance per shape: a fresh JsonSerializerOptions rebuilds its whole metadata cache on every call.
    private static readonly JsonSerializerOptions Compact = new();
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>
    /// A field name segment made safe for nesting: a free-form key (an evidence name) with a dot in it
    /// would otherwise split into objects and could collide with a sibling value.
    /// </summary>
    public static string Segment(string key) =>
        key.Length == 0 ? "_" : key.Replace('.', '_');

    /// <summary>The fields as a nested JSON object (<c>{"process":{"pid":1}}</c>), the shape Elasticsearch and Kibana expect.</summary>
    /// <exception cref="InvalidOperationException">A field is both a value and the parent of another field (<c>a</c> and <c>a.b</c>).</exception>
    public string ToNestedJson(bool indented = false)
    {
        var root = new SortedDictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (name, value) in this)
        {
            string[] parts = name == "@timestamp" ? [name] : name.Split('.');
            SortedDictionary<string, object?> node = root;
            for (int i = 0; i < parts.Length - 1; i++)
            {
                if (!node.TryGetValue(parts[i], out object? child))
                {
                    child = new SortedDictionary<string, object?>(StringComparer.Ordinal);
                    node[parts[i]] = child;
                }
                // Replacing the value with an object (or the reverse below) would silently drop a field.
                node = child as SortedDictionary<string, object?>
                    ?? throw new InvalidOperationException($"ECS field '{name}' is nested under '{string.Join('.', parts[..(i + 1)])}', which is a value.");
            }
            if (node.TryGetValue(parts[^1], out object? existing) && existing is SortedDictionary<string, object?>)
                throw new InvalidOperationException($"ECS field '{name}' is a value and also the parent of other fields.");
            node[parts[^1]] = value;
        }
        return JsonSerializer.Serialize(root, indented ? Indented : Compact);
    }
}
