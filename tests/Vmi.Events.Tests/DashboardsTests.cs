using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using Xunit;
using YamlDotNet.Serialization;

namespace Vmi.Events.Tests;

/// <summary>
/// Offline checks of dashboards/ and docker-compose.yml: no Elasticsearch, Kibana or Docker engine runs
/// where the tests run, so these check what can be checked without them. The index template must map
/// every field Vmi's ECS documents carry (with a compatible type); the Kibana saved objects must be
/// well formed, every reference must resolve, and every field a dashboard uses must be mapped and
/// produced by Vmi; the compose file must parse, pin its images and keep security on.
/// </summary>
public sealed partial class DashboardsTests
{
    public const string AlertsPattern = "logs-vmi.alerts-*";
    public const string EventsPattern = "logs-vmi.events-*";

    private static readonly string Root = FindRepoRoot();
    private static readonly string DashboardsDir = Path.Combine(Root, "dashboards");

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Vmi.sln")))
                return dir.FullName;
        }
        throw new InvalidOperationException("Vmi.sln not found above " + AppContext.BaseDirectory);
    }

    // ---- the index template ---------------------------------------------------------------------

    private static JsonElement Template() =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(DashboardsDir, "index-template.json"))).RootElement;

    /// <summary>The template's mapped fields: dotted name to type (objects are walked, not listed).</summary>
    private static Dictionary<string, string> MappedFields()
    {
        var fields = new Dictionary<string, string>(StringComparer.Ordinal);
        void Walk(JsonElement properties, string prefix)
        {
            foreach (JsonProperty p in properties.EnumerateObject())
            {
                string name = prefix + p.Name;
                if (p.Value.TryGetProperty("properties", out JsonElement sub))
                    Walk(sub, name + ".");
                else
                    fields[name] = p.Value.GetProperty("type").GetString()!;
            }
        }
        Walk(Template().GetProperty("template").GetProperty("mappings").GetProperty("properties"), "");
        return fields;
    }

    /// <summary>The mapping type of a field: its own, or that of a flattened field it lies under (<c>vmi.evidence.x</c>).</summary>
    private static string? MappingOf(Dictionary<string, string> mapped, string field)
    {
        if (mapped.TryGetValue(field, out string? type))
            return type;
        for (int dot = field.LastIndexOf('.'); dot > 0; dot = field.LastIndexOf('.', dot - 1))
        {
            if (mapped.TryGetValue(field[..dot], out string? parent) && parent == "flattened")
                return parent;
        }
        return null;
    }

    private static readonly HashSet<string> NumericTypes = new(StringComparer.Ordinal) { "long", "integer", "short", "byte", "unsigned_long", "double", "float" };
    private static readonly HashSet<string> StringTypes = new(StringComparer.Ordinal) { "keyword", "constant_keyword", "wildcard", "text", "match_only_text", "flattened", "ip", "date", "date_nanos" };

    /// <summary>Why <paramref name="value"/> cannot be indexed as <paramref name="type"/>, or null when it can.</summary>
    private static string? Incompatibility(string type, object? value)
    {
        switch (value)
        {
            case null:
                return null;
            case bool:
                return type == "boolean" ? null : $"a boolean mapped as {type}";
            case int or long or uint or ulong:
                return NumericTypes.Contains(type) ? null : $"a number mapped as {type}";
            case string s:
                if (!StringTypes.Contains(type))
                    return $"a string mapped as {type}";
                if (type == "ip" && !IPAddress.TryParse(s, out _))
                    return $"'{s}' is not an IP address";
                if (type is "date" or "date_nanos" && !DateTimeOffset.TryParse(s, System.Globalization.CultureInfo.InvariantCulture, System.Globalization.DateTimeStyles.RoundtripKind, out _))
                    return $"'{s}' is not a date";
                return null;
            case IEnumerable<string?> list:
                return list.Select(s => Incompatibility(type, s)).FirstOrDefault(r => r is not null);
            default:
                return $"a {value.GetType().Name} (not a JSON scalar or string list)";
        }
    }

    /// <summary>
    /// Which data stream each event goes to: alerts to logs-vmi.alerts-*, every other event (detector
    /// faults and shed counts too) to logs-vmi.events-*. The exporter must route the same way.
    /// </summary>
    private static string PatternFor(VmiEvent e) => e is Alert ? AlertsPattern : EventsPattern;

    /// <summary>
    /// Every event type with every field set, plus variants with the optional fields left out and every
    /// kind of memory access, so that each field and each <c>event.action</c> Vmi can write is seen.
    /// </summary>
    private static IEnumerable<VmiEvent> AllEvents()
    {
        foreach (VmiEvent e in SampleEvents.All())
            yield return e;
        yield return new Alert { VmId = "vm-c", Time = SampleEvents.Time, Detector = "d", Title = "t", Severity = Severity.Info, Key = "k" };
        foreach (MemoryAccessKind access in Enum.GetValues<MemoryAccessKind>())
            yield return new MemoryAccess { VmId = "vm-c", Time = SampleEvents.Time, Access = access, Hook = "h" };
        foreach (DetectorFaultKind fault in Enum.GetValues<DetectorFaultKind>())
            yield return new DetectorFault { VmId = "vm-c", Time = SampleEvents.Time, Detector = "d", Fault = fault, Message = "m" };
    }

    /// <summary>Per index pattern: the fields Vmi's documents there carry, with the values seen.</summary>
    private static Dictionary<string, Dictionary<string, HashSet<string>>> ProducedFields()
    {
        var produced = new Dictionary<string, Dictionary<string, HashSet<string>>>(StringComparer.Ordinal)
        {
            [AlertsPattern] = new(StringComparer.Ordinal),
            [EventsPattern] = new(StringComparer.Ordinal),
        };
        foreach (VmiEvent e in AllEvents())
        {
            var fields = produced[PatternFor(e)];
            foreach (var (name, value) in e.ToEcs())
            {
                if (!fields.TryGetValue(name, out var values))
                    fields[name] = values = new HashSet<string>(StringComparer.Ordinal);
                if (value is string s)
                    values.Add(s);
                else if (value is IEnumerable<string?> list)
                    values.UnionWith(list.OfType<string>());
            }
        }
        return produced;
    }

    [Fact]
    public void Index_template_targets_the_vmi_data_streams_and_wins_over_logs()
    {
        JsonElement t = Template();
        Assert.Equal([AlertsPattern, EventsPattern], t.GetProperty("index_patterns").EnumerateArray().Select(p => p.GetString()));
        Assert.Equal(JsonValueKind.Object, t.GetProperty("data_stream").ValueKind);
        // The built-in logs template (logs-*-*) has priority 100: a higher one takes the vmi streams.
        Assert.True(t.GetProperty("priority").GetInt32() > 100);
        Assert.Equal("date", MappedFields()["@timestamp"]);
        // Component templates are optional: the template still loads on a cluster without them.
        var composed = t.GetProperty("composed_of").EnumerateArray().Select(c => c.GetString()).ToList();
        var optional = t.GetProperty("ignore_missing_component_templates").EnumerateArray().Select(c => c.GetString()).ToList();
        Assert.All(composed, c => Assert.Contains(c, optional));
    }

    [Fact]
    public void Index_template_maps_every_field_Vmi_writes_with_a_compatible_type()
    {
        Dictionary<string, string> mapped = MappedFields();
        var problems = new List<string>();
        foreach (VmiEvent e in AllEvents())
        {
            EcsDocument d = e.ToEcs();
            _ = d.ToNestedJson(); // the shape Elasticsearch receives must build
            foreach (var (name, value) in d)
            {
                string? type = MappingOf(mapped, name);
                string? why = type is null ? "not mapped" : Incompatibility(type, value);
                if (why is not null)
                    problems.Add($"{e.Kind}: {name}: {why}");
            }
        }
        Assert.True(problems.Count == 0, "dashboards/index-template.json does not fit Vmi's ECS documents:\n" + string.Join('\n', problems.Distinct()));
    }

    // ---- the Kibana saved objects -----------------------------------------------------------------

    private sealed record SavedObject(string Type, string Id, JsonElement Attributes, IReadOnlyList<(string Name, string Type, string Id)> References);

    private static List<SavedObject> SavedObjects()
    {
        var objects = new List<SavedObject>();
        int n = 0;
        foreach (string line in File.ReadLines(Path.Combine(DashboardsDir, "vmi-dashboards.ndjson")))
        {
            n++;
            Assert.False(string.IsNullOrWhiteSpace(line), $"line {n} is empty");
            JsonElement o = JsonDocument.Parse(line).RootElement;
            Assert.Equal(JsonValueKind.Object, o.GetProperty("attributes").ValueKind);
            var refs = o.GetProperty("references").EnumerateArray()
                .Select(r => (r.GetProperty("name").GetString()!, r.GetProperty("type").GetString()!, r.GetProperty("id").GetString()!))
                .ToList();
            objects.Add(new SavedObject(o.GetProperty("type").GetString()!, o.GetProperty("id").GetString()!, o.GetProperty("attributes"), refs));
            // Without these Kibana would run every migration from the first version on import.
            Assert.False(string.IsNullOrEmpty(o.GetProperty("typeMigrationVersion").GetString()), $"line {n}: typeMigrationVersion");
            Assert.False(string.IsNullOrEmpty(o.GetProperty("coreMigrationVersion").GetString()), $"line {n}: coreMigrationVersion");
        }
        return objects;
    }

    private static JsonElement ParseString(JsonElement owner, string property) =>
        JsonDocument.Parse(owner.GetProperty(property).GetString()!).RootElement;

    [Fact]
    public void Saved_objects_are_well_formed_and_unique()
    {
        List<SavedObject> objects = SavedObjects();
        Assert.Empty(objects.GroupBy(o => (o.Type, o.Id)).Where(g => g.Count() > 1).Select(g => g.Key));
        Assert.All(objects, o => Assert.Contains(o.Type, new[] { "index-pattern", "search", "lens", "dashboard" }));
        Assert.All(objects, o => Assert.False(string.IsNullOrWhiteSpace(o.Attributes.GetProperty("title").GetString())));
        Assert.All(objects, o => Assert.Equal(o.References.Count, o.References.Select(r => r.Name).Distinct().Count()));

        // The data views are the template's index patterns, on @timestamp.
        var views = objects.Where(o => o.Type == "index-pattern").ToList();
        Assert.Equal([AlertsPattern, EventsPattern], views.Select(v => v.Attributes.GetProperty("title").GetString()).Order(StringComparer.Ordinal));
        Assert.All(views, v => Assert.Equal("@timestamp", v.Attributes.GetProperty("timeFieldName").GetString()));

        // The three dashboards the issue asks for.
        Assert.Equal(
            ["Vmi: Alerts overview", "Vmi: Detector health", "Vmi: VM timeline"],
            objects.Where(o => o.Type == "dashboard").Select(o => o.Attributes.GetProperty("title").GetString()).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Every_reference_resolves_to_an_object_in_the_file()
    {
        List<SavedObject> objects = SavedObjects();
        var ids = objects.Select(o => (o.Type, o.Id)).ToHashSet();
        var dangling = objects.SelectMany(o => o.References.Where(r => !ids.Contains((r.Type, r.Id))).Select(r => $"{o.Type}/{o.Id} -> {r.Type}/{r.Id}")).ToList();
        Assert.True(dangling.Count == 0, "references to objects not in the file:\n" + string.Join('\n', dangling));
    }

    [Fact]
    public void Every_panel_control_layer_and_search_source_has_its_reference()
    {
        foreach (SavedObject o in SavedObjects())
        {
            var byName = o.References.ToDictionary(r => r.Name, r => r, StringComparer.Ordinal);
            var used = new HashSet<string>(StringComparer.Ordinal);
            switch (o.Type)
            {
                case "dashboard":
                {
                    JsonElement panels = ParseString(o.Attributes, "panelsJSON");
                    var indexes = new HashSet<string>(StringComparer.Ordinal);
                    foreach (JsonElement panel in panels.EnumerateArray())
                    {
                        string index = panel.GetProperty("panelIndex").GetString()!;
                        Assert.True(indexes.Add(index), $"{o.Id}: panelIndex {index} twice");
                        JsonElement grid = panel.GetProperty("gridData");
                        Assert.Equal(index, grid.GetProperty("i").GetString());
                        Assert.InRange(grid.GetProperty("x").GetInt32() + grid.GetProperty("w").GetInt32(), 1, 48);
                        // Kibana 8 matches "<panelIndex>:<panelRefName>" (older exports: the bare panelRefName).
                        string refName = panel.GetProperty("panelRefName").GetString()!;
                        string name = byName.ContainsKey(index + ":" + refName) ? index + ":" + refName : refName;
                        Assert.True(byName.TryGetValue(name, out var target), $"{o.Id}: panel {index} has no reference {refName}");
                        Assert.Equal(panel.GetProperty("type").GetString(), target.Type);
                        used.Add(name);
                    }
                    _ = ParseString(o.Attributes, "optionsJSON");
                    _ = ParseString(o.Attributes.GetProperty("kibanaSavedObjectMeta"), "searchSourceJSON");
                    if (o.Attributes.TryGetProperty("controlGroupInput", out JsonElement controls))
                    {
                        _ = ParseString(controls, "ignoreParentSettingsJSON");
                        foreach (JsonProperty control in ParseString(controls, "panelsJSON").EnumerateObject())
                        {
                            string name = $"controlGroup_{control.Name}:optionsListDataView";
                            Assert.True(byName.TryGetValue(name, out var view), $"{o.Id}: control {control.Name} has no data view reference");
                            Assert.Equal("index-pattern", view.Type);
                            Assert.Equal(control.Name, control.Value.GetProperty("explicitInput").GetProperty("id").GetString());
                            used.Add(name);
                        }
                    }
                    break;
                }
                case "lens":
                    foreach (JsonProperty layer in LensLayers(o))
                    {
                        string name = "indexpattern-datasource-layer-" + layer.Name;
                        Assert.True(byName.TryGetValue(name, out var view), $"{o.Id}: layer {layer.Name} has no data view reference");
                        Assert.Equal("index-pattern", view.Type);
                        used.Add(name);
                    }
                    break;
                case "search":
                {
                    JsonElement source = ParseString(o.Attributes.GetProperty("kibanaSavedObjectMeta"), "searchSourceJSON");
                    string name = source.GetProperty("indexRefName").GetString()!;
                    Assert.True(byName.TryGetValue(name, out var view), $"{o.Id}: no reference {name}");
                    Assert.Equal("index-pattern", view.Type);
                    used.Add(name);
                    break;
                }
            }
            Assert.Equal(o.References.Select(r => r.Name).Order(StringComparer.Ordinal), used.Order(StringComparer.Ordinal));
        }
    }

    private static IEnumerable<JsonProperty> LensLayers(SavedObject lens) =>
        lens.Attributes.GetProperty("state").GetProperty("datasourceStates").GetProperty("formBased").GetProperty("layers").EnumerateObject();

    /// <summary><c>field : "value"</c> and <c>field &gt;= 73</c> terms of a KQL query.</summary>
    [GeneratedRegex(@"(?<field>[A-Za-z_@][\w.@]*)\s*(?:(?<op>:)\s*""(?<value>[^""]*)""|(?<op>[<>]=?)\s*(?<number>\d+))")]
    private static partial Regex KqlTerm();

    /// <summary>Every use of a field by a saved object: (data view id, field, what it is used for, the query value if any).</summary>
    private static List<(string Object, string View, string Field, string Use, string? Value)> FieldUses(List<SavedObject> objects)
    {
        var uses = new List<(string, string, string, string, string?)>();
        void Query(SavedObject o, string view, string? kql)
        {
            foreach (Match m in KqlTerm().Matches(kql ?? ""))
                uses.Add((o.Id, view, m.Groups["field"].Value, m.Groups["op"].Value == ":" ? "query" : "range", m.Groups["value"].Success ? m.Groups["value"].Value : null));
        }
        foreach (SavedObject o in objects)
        {
            switch (o.Type)
            {
                case "lens":
                    JsonElement state = o.Attributes.GetProperty("state");
                    foreach (JsonProperty layer in LensLayers(o))
                    {
                        string view = o.References.Single(r => r.Name == "indexpattern-datasource-layer-" + layer.Name).Id;
                        foreach (JsonProperty column in layer.Value.GetProperty("columns").EnumerateObject())
                        {
                            string field = column.Value.GetProperty("sourceField").GetString()!;
                            if (field != "___records___") // count of documents
                                uses.Add((o.Id, view, field, column.Value.GetProperty("operationType").GetString()!, null));
                        }
                        Query(o, view, state.GetProperty("query").GetProperty("query").GetString());
                    }
                    break;
                case "search":
                {
                    string view = o.References.Single().Id;
                    foreach (JsonElement column in o.Attributes.GetProperty("columns").EnumerateArray())
                        uses.Add((o.Id, view, column.GetString()!, "column", null));
                    JsonElement source = ParseString(o.Attributes.GetProperty("kibanaSavedObjectMeta"), "searchSourceJSON");
                    Query(o, view, source.GetProperty("query").GetProperty("query").GetString());
                    break;
                }
                case "dashboard":
                    if (o.Attributes.TryGetProperty("controlGroupInput", out JsonElement controls))
                    {
                        foreach (JsonProperty control in ParseString(controls, "panelsJSON").EnumerateObject())
                        {
                            string view = o.References.Single(r => r.Name == $"controlGroup_{control.Name}:optionsListDataView").Id;
                            uses.Add((o.Id, view, control.Value.GetProperty("explicitInput").GetProperty("fieldName").GetString()!, "control", null));
                        }
                    }
                    break;
            }
        }
        return uses;
    }

    [Fact]
    public void Every_field_a_dashboard_uses_is_mapped_and_written_by_Vmi()
    {
        List<SavedObject> objects = SavedObjects();
        var patternOf = objects.Where(o => o.Type == "index-pattern").ToDictionary(o => o.Id, o => o.Attributes.GetProperty("title").GetString()!);
        Dictionary<string, string> mapped = MappedFields();
        var produced = ProducedFields();
        var uses = FieldUses(objects);
        Assert.NotEmpty(uses);

        var problems = new List<string>();
        foreach (var (obj, view, field, use, value) in uses)
        {
            string pattern = patternOf[view];
            string? type = MappingOf(mapped, field);
            if (type is null)
            {
                problems.Add($"{obj}: {field} is not mapped by the index template");
                continue;
            }
            bool fits = use switch
            {
                "date_histogram" => type is "date" or "date_nanos",
                "terms" or "control" => type is "keyword" or "constant_keyword" or "ip" or "boolean" || NumericTypes.Contains(type),
                "sum" or "average" or "min" or "max" or "median" or "range" => NumericTypes.Contains(type),
                _ => true, // unique_count, columns, query terms: any type
            };
            if (!fits)
                problems.Add($"{obj}: {use} on {field}, which is mapped as {type}");
            if (!produced[pattern].TryGetValue(field, out var seen))
                problems.Add($"{obj}: {field} is not in any document Vmi writes to {pattern}");
            else if (value is not null && field.StartsWith("event.", StringComparison.Ordinal) && !seen.Contains(value))
                problems.Add($"{obj}: queries {field} : \"{value}\", a value Vmi never writes to {pattern} (it writes {string.Join(", ", seen.Order(StringComparer.Ordinal))})");
        }
        Assert.True(problems.Count == 0, "dashboards/vmi-dashboards.ndjson uses fields Vmi does not provide:\n" + string.Join('\n', problems.Distinct()));
    }

    // ---- docker-compose.yml -----------------------------------------------------------------------

    private static Dictionary<object, object> Compose() =>
        new DeserializerBuilder().Build().Deserialize<Dictionary<object, object>>(File.ReadAllText(Path.Combine(Root, "docker-compose.yml")));

    private static Dictionary<object, object> Service(string name) =>
        (Dictionary<object, object>)((Dictionary<object, object>)Compose()["services"])[name];

    /// <summary>A service's environment (list of KEY=VALUE or a map) as a dictionary.</summary>
    private static Dictionary<string, string> EnvOf(Dictionary<object, object> service)
    {
        var env = new Dictionary<string, string>(StringComparer.Ordinal);
        switch (service.GetValueOrDefault("environment"))
        {
            case List<object> list:
                foreach (string item in list.Cast<string>())
                {
                    int eq = item.IndexOf('=', StringComparison.Ordinal);
                    env[eq < 0 ? item : item[..eq]] = eq < 0 ? "" : item[(eq + 1)..];
                }
                break;
            case Dictionary<object, object> map:
                foreach (var (k, v) in map)
                    env[(string)k] = v?.ToString() ?? "";
                break;
        }
        return env;
    }

    [Fact]
    public void Compose_services_are_all_there_and_every_image_is_pinned()
    {
        var services = (Dictionary<object, object>)Compose()["services"];
        Assert.Equal(["elasticsearch", "kibana", "setup", "vmi", "vmi-lab"], services.Keys.Cast<string>().Order(StringComparer.Ordinal));
        foreach (var (name, value) in services)
        {
            var service = (Dictionary<object, object>)value;
            Assert.True(service.ContainsKey("image") || service.ContainsKey("build"), $"{name}: neither image nor build");
            if (service.ContainsKey("build"))
                continue; // built here (vmi:dev)
            string image = (string)service["image"];
            int colon = image.LastIndexOf(':');
            Assert.True(colon > image.LastIndexOf('/'), $"{name}: image {image} has no tag");
            string tag = image[(colon + 1)..];
            Assert.Matches(@"^\d+\.\d+\.\d+$", tag);
        }
        // Kibana must match Elasticsearch's version exactly.
        string Version(string s) => ((string)Service(s)["image"]).Split(':')[^1];
        Assert.Equal(Version("elasticsearch"), Version("kibana"));
    }

    [Fact]
    public void Compose_keeps_the_lab_service_as_it_was()
    {
        var lab = Service("vmi-lab");
        Assert.Equal(".", lab["build"]);
        Assert.Equal(["lab", "run", "--accel", "tcg"], ((List<object>)lab["command"]).Cast<string>());
        Assert.Equal("1gb", lab["shm_size"]);
    }

    [Fact]
    public void Compose_stack_runs_with_security_on()
    {
        var es = EnvOf(Service("elasticsearch"));
        Assert.Equal("true", es["xpack.security.enabled"]);
        Assert.Equal("single-node", es["discovery.type"]);
        Assert.StartsWith("${ELASTIC_PASSWORD", es["ELASTIC_PASSWORD"], StringComparison.Ordinal);

        var kibana = EnvOf(Service("kibana"));
        Assert.Equal("kibana_system", kibana["ELASTICSEARCH_USERNAME"]);
        Assert.StartsWith("${KIBANA_PASSWORD", kibana["ELASTICSEARCH_PASSWORD"], StringComparison.Ordinal);
        Assert.Equal("http://elasticsearch:9200", kibana["ELASTICSEARCH_HOSTS"]);

        var vmi = EnvOf(Service("vmi"));
        Assert.Equal("http://elasticsearch:9200", vmi["VMI_ES_URL"]);
        Assert.Contains("VMI_ES_USERNAME", vmi.Keys);
        Assert.Contains("VMI_ES_PASSWORD", vmi.Keys);
        Assert.Contains("VMI_ES_API_KEY", vmi.Keys);

        foreach (string name in new[] { "elasticsearch", "kibana" })
            Assert.True(Service(name).ContainsKey("healthcheck"), $"{name} has no healthcheck");

        // Nothing anywhere turns security off, and ports are published on loopback only.
        string text = File.ReadAllText(Path.Combine(Root, "docker-compose.yml"));
        Assert.DoesNotContain("xpack.security.enabled=false", text, StringComparison.Ordinal);
        foreach (var (name, value) in (Dictionary<object, object>)Compose()["services"])
        {
            if (((Dictionary<object, object>)value).GetValueOrDefault("ports") is List<object> ports)
                Assert.All(ports.Cast<string>(), p => Assert.StartsWith("127.0.0.1:", p, StringComparison.Ordinal));
        }
    }

    [GeneratedRegex(@"\$\{(?<name>[A-Z_][A-Z0-9_]*)")]
    private static partial Regex ComposeVariable();

    [Fact]
    public void Env_example_lists_every_variable_the_compose_file_reads()
    {
        string compose = File.ReadAllText(Path.Combine(Root, "docker-compose.yml"));
        var example = File.ReadAllLines(Path.Combine(Root, ".env.example"))
            .Where(l => l.Contains('=', StringComparison.Ordinal) && !l.StartsWith('#'))
            .Select(l => l[..l.IndexOf('=', StringComparison.Ordinal)])
            .ToHashSet(StringComparer.Ordinal);
        var read = ComposeVariable().Matches(compose).Select(m => m.Groups["name"].Value).ToHashSet(StringComparer.Ordinal);
        Assert.NotEmpty(read);
        Assert.Empty(read.Except(example));
    }

    [Fact]
    public void Compose_setup_job_loads_the_template_and_imports_the_dashboards()
    {
        var setup = Service("setup");
        var env = EnvOf(setup);
        Assert.Equal("http://elasticsearch:9200", env["ES_URL"]);
        Assert.Equal("http://kibana:5601", env["KIBANA_URL"]);

        // ./dashboards is mounted where the script is run from and where it finds its files.
        string dir = env["DASHBOARDS_DIR"];
        string mount = ((List<object>)setup["volumes"]).Cast<string>().Single(v => v.StartsWith("./dashboards:", StringComparison.Ordinal));
        Assert.Equal(dir, mount.Split(':')[1]);
        var entrypoint = ((List<object>)setup["entrypoint"]).Cast<string>().ToList();
        string scriptInContainer = entrypoint[^1];
        Assert.StartsWith(dir + "/", scriptInContainer, StringComparison.Ordinal);
        string script = Path.Combine(DashboardsDir, scriptInContainer[(dir.Length + 1)..]);
        Assert.True(File.Exists(script), $"{script} does not exist");

        // The script loads the files that exist here, through the APIs the README documents.
        string text = File.ReadAllText(script);
        foreach (string file in new[] { "index-template.json", "vmi-dashboards.ndjson" })
        {
            Assert.Contains("${DASHBOARDS_DIR}/" + file, text, StringComparison.Ordinal);
            Assert.True(File.Exists(Path.Combine(DashboardsDir, file)), file);
        }
        Assert.Contains("/_security/user/kibana_system/_password", text, StringComparison.Ordinal);
        Assert.Contains("PUT /_index_template/logs-vmi ", text, StringComparison.Ordinal);
        Assert.Contains("/api/saved_objects/_import?overwrite=true", text, StringComparison.Ordinal);
        Assert.Contains("kbn-xsrf: true", text, StringComparison.Ordinal);

        // The vmi_writer role the exporter writes with covers both data streams.
        Assert.Contains($"\"names\": [\"{AlertsPattern}\", \"{EventsPattern}\"]", text, StringComparison.Ordinal);
    }
}
