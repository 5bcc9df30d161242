using System.Collections;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Xunit;

namespace Vmi.Events.Tests;

public sealed partial class EcsTests
{
    public static TheoryData<string> EventTypes() => SerializationTests.EventTypes();

    private static VmiEvent Sample(string type) => SampleEvents.All().Single(e => e.GetType().Name == type);

    [GeneratedRegex(@"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z$")]
    private static partial Regex IsoUtc();

    [Theory]
    [MemberData(nameof(EventTypes))]
    public void Common_fields_are_present(string type)
    {
        VmiEvent e = Sample(type);
        EcsDocument d = e.ToEcs();
        Assert.Matches(IsoUtc(), (string)d["@timestamp"]!);
        Assert.Equal(e.Time, DateTimeOffset.Parse((string)d["@timestamp"]!, CultureInfo.InvariantCulture));
        Assert.Equal(e.Id.ToString(), d["event.id"]);
        Assert.Equal(e.Kind, d["event.action"]);
        Assert.Equal("vmi." + e.Kind, d["event.dataset"]);
        Assert.Equal("vmi", d["event.module"]);
        Assert.Equal(e.Sequence, d["event.sequence"]);
        Assert.Equal(e.VmId, d["host.name"]);
        Assert.Equal(EcsDocument.EcsVersion, d["ecs.version"]);
        Assert.Equal(1, d["vmi.schema_version"]);
        Assert.IsAssignableFrom<IEnumerable<string>>(d["event.category"]);
        Assert.IsAssignableFrom<IEnumerable<string>>(d["event.type"]);
    }

    [Theory]
    [InlineData(nameof(ProcessStarted), "event", "process-started")]
    [InlineData(nameof(ProcessExited), "event", "process-exited")]
    [InlineData(nameof(ProcessExec), "event", "process-exec")]
    [InlineData(nameof(ModuleLoaded), "event", "module-loaded")]
    [InlineData(nameof(MemoryAccess), "event", "memory-write")]
    [InlineData(nameof(BreakpointHit), "event", "breakpoint")]
    [InlineData(nameof(SweepTick), "event", "sweep")]
    [InlineData(nameof(IntegrityFinding), "state", "integrity-finding")]
    [InlineData(nameof(NetworkFlow), "event", "network-flow")]
    [InlineData(nameof(SignatureMatch), "event", "signature-match")]
    [InlineData(nameof(Alert), "alert", "alert")]
    [InlineData(nameof(DetectorFault), "metric", "detector-fault")]
    [InlineData(nameof(TelemetryShed), "metric", "telemetry-shed")]
    public void Event_kind_and_action_follow_the_class(string type, string kind, string action)
    {
        EcsDocument d = Sample(type).ToEcs();
        Assert.Equal(kind, d["event.kind"]);
        Assert.Equal(action, d["event.action"]);
    }

    [Fact]
    public void Timestamp_is_utc_whatever_the_offset()
    {
        var e = new SweepTick { VmId = "v", Time = new DateTimeOffset(2025, 1, 2, 3, 4, 5, TimeSpan.FromHours(2)).AddTicks(1234567), Reason = SweepReason.Periodic };
        Assert.Equal("2025-01-02T01:04:05.1234567Z", e.ToEcs()["@timestamp"]);
    }

    [Fact]
    public void Alert_carries_rule_severity_threat_and_evidence()
    {
        var a = (Alert)Sample(nameof(Alert));
        EcsDocument d = a.ToEcs();
        Assert.Equal(99, d["event.severity"]);
        Assert.Equal("critical", d["vmi.alert.severity"]);
        Assert.Equal(a.Title, d["message"]);
        Assert.Equal(a.Detector, d["rule.name"]);
        Assert.Equal(a.Key, d["vmi.alert.key"]);
        Assert.Equal(4321, d["process.pid"]);
        Assert.Equal("insmod", d["process.name"]);
        Assert.Equal("MITRE ATT&CK", d["threat.framework"]);
        Assert.Equal(["T1014", "T1547.006"], (IEnumerable<string>)d["threat.technique.id"]!);
        Assert.Equal(["Rootkit", "Kernel Modules and Extensions"], (IEnumerable<string>)d["threat.technique.name"]!);
        Assert.Equal(["https://attack.mitre.org/techniques/T1014/", "https://attack.mitre.org/techniques/T1547/006/"], (IEnumerable<string>)d["threat.technique.reference"]!);
        Assert.Equal(["Defense Evasion", "Persistence"], (IEnumerable<string>)d["threat.tactic.name"]!);
        Assert.Equal("62", d["vmi.evidence.entry"]);
        Assert.Equal(["00000000-0000-4000-8000-000000000005", "00000000-0000-4000-8000-000000000008"], (IEnumerable<string>)d["vmi.related_events"]!);
        Assert.Equal("1.0.0", d["rule.version"]);
    }

    [Fact]
    public void Alert_without_techniques_or_pid_has_no_threat_or_process_fields()
    {
        var a = new Alert { VmId = "v", Time = SampleEvents.Time, Detector = "d", Title = "t", Severity = Severity.Info, Key = "k" };
        EcsDocument d = a.ToEcs();
        Assert.DoesNotContain(d.Keys, k => k.StartsWith("threat.", StringComparison.Ordinal) || k.StartsWith("process.", StringComparison.Ordinal));
        Assert.Equal(0, d["event.severity"]);
    }

    [Theory]
    [InlineData(nameof(ProcessStarted), 1234)]
    [InlineData(nameof(ProcessExited), 1234)]
    [InlineData(nameof(ProcessExec), 4321)]
    [InlineData(nameof(SignatureMatch), 777)]
    [InlineData(nameof(Alert), 4321)]
    public void Process_events_carry_the_pid(string type, int pid) =>
        Assert.Equal(pid, Sample(type).ToEcs()["process.pid"]);

    [Fact]
    public void Process_started_maps_parent_args_and_users()
    {
        EcsDocument d = Sample(nameof(ProcessStarted)).ToEcs();
        Assert.Equal(1, d["process.parent.pid"]);
        Assert.Equal(["/usr/sbin/sshd", "-D"], (IEnumerable<string>)d["process.args"]!);
        Assert.Equal("/usr/sbin/sshd", d["process.executable"]);
        Assert.Equal("1000", d["user.id"]);
        Assert.Equal("0", d["user.effective.id"]);
        Assert.Equal("0xffff888003a1c000", d["vmi.task"]);
    }

    [Fact]
    public void Addresses_and_bytes_are_lower_hex()
    {
        EcsDocument d = Sample(nameof(MemoryAccess)).ToEcs();
        Assert.Equal("0xffffffffc0a01234", d["vmi.rip"]);
        Assert.Equal("0x2a00000", d["vmi.gpa"]);
        Assert.Equal("1020304050607080", d["vmi.old_value"]);
        Assert.Equal("deadbeef00000000", d["vmi.new_value"]);
    }

    [Fact]
    public void Network_flow_uses_ecs_network_fields()
    {
        EcsDocument d = Sample(nameof(NetworkFlow)).ToEcs();
        Assert.Equal("tcp", d["network.transport"]);
        Assert.Equal("192.0.2.10", d["source.ip"]);
        Assert.Equal(443, d["destination.port"]);
        Assert.Equal(123456L, d["network.bytes"]);
    }

    [Theory]
    [MemberData(nameof(EventTypes))]
    public void Nested_json_parses_back_to_the_same_values(string type)
    {
        EcsDocument d = Sample(type).ToEcs();
        foreach (bool indented in new[] { false, true })
        {
            using JsonDocument json = JsonDocument.Parse(d.ToNestedJson(indented));
            int leaves = CountLeaves(json.RootElement);
            Assert.Equal(d.Count, leaves);
            foreach (var (name, value) in d)
            {
                JsonElement node = json.RootElement;
                string[] path = name == "@timestamp" ? [name] : name.Split('.');
                foreach (string part in path)
                {
                    Assert.Equal(JsonValueKind.Object, node.ValueKind);
                    node = node.GetProperty(part);
                }
                AssertJsonEquals(value, node, name);
            }
        }
        Assert.Equal(JsonValueKind.Object, JsonDocument.Parse(d.ToNestedJson()).RootElement.GetProperty("event").ValueKind);
    }

    [Fact]
    public void Evidence_keys_with_dots_do_not_split_or_collide()
    {
        var a = new Alert
        {
            VmId = "v", Time = SampleEvents.Time, Detector = "d", Title = "t", Severity = Severity.High, Key = "k",
            Evidence = new Dictionary<string, string> { ["module"] = "m", ["module.base"] = "0x1", [""] = "empty" },
        };
        EcsDocument d = a.ToEcs();
        using JsonDocument json = JsonDocument.Parse(d.ToNestedJson());
        JsonElement evidence = json.RootElement.GetProperty("vmi").GetProperty("evidence");
        Assert.Equal("m", evidence.GetProperty("module").GetString());
        Assert.Equal("0x1", evidence.GetProperty("module_base").GetString());
        Assert.Equal("empty", evidence.GetProperty("_").GetString());
    }

    [Fact]
    public void A_field_that_is_both_value_and_parent_is_refused_not_dropped()
    {
        var d = new EcsDocument { ["a"] = 1, ["a.b"] = 2 };
        Assert.Throws<InvalidOperationException>(() => d.ToNestedJson());
        var reverse = new EcsDocument { ["x.y.z"] = 1, ["x.y"] = 2 };
        Assert.Throws<InvalidOperationException>(() => reverse.ToNestedJson());
        // Names between the value and its would-be child ('-' sorts before '.').
        var apart = new EcsDocument { ["a"] = 1, ["a-x"] = 2, ["a.b"] = 3 };
        Assert.Throws<InvalidOperationException>(() => apart.ToNestedJson());
    }

    [Fact]
    public void Nesting_follows_segments_not_string_prefixes()
    {
        var d = new EcsDocument
        {
            ["a.b.c"] = 1, ["a.b-d"] = "2", ["a.b.e"] = 3L, ["a.bc"] = true, ["a.x.y.z"] = 4UL,
            ["ab"] = new[] { "p", "q" }, ["z"] = null, ["@timestamp"] = "t",
        };
        Assert.Equal(
            """{"@timestamp":"t","a":{"b":{"c":1,"e":3},"b-d":"2","bc":true,"x":{"y":{"z":4}}},"ab":["p","q"],"z":null}""",
            Canonical(d.ToNestedJson()));
        Assert.Equal(Canonical(d.ToNestedJson()), Canonical(d.ToNestedJson(indented: true)));
        Assert.Equal("{}", new EcsDocument().ToNestedJson());
    }

    /// <summary>The JSON with object members sorted, so tests do not depend on member order.</summary>
    private static string Canonical(string json)
    {
        static System.Text.Json.Nodes.JsonNode? Sort(System.Text.Json.Nodes.JsonNode? n) => n switch
        {
            System.Text.Json.Nodes.JsonObject o => new System.Text.Json.Nodes.JsonObject(
                o.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => KeyValuePair.Create(p.Key, Sort(p.Value?.DeepClone())))),
            _ => n?.DeepClone(),
        };
        return Sort(System.Text.Json.Nodes.JsonNode.Parse(json))!.ToJsonString();
    }

    [Fact]
    public void Set_if_not_null_skips_nulls()
    {
        var d = new EcsDocument();
        d.SetIfNotNull("a", null);
        d.SetIfNotNull("b", 0);
        Assert.Equal(["b"], d.Keys);
    }

    private static int CountLeaves(JsonElement e) =>
        e.ValueKind == JsonValueKind.Object ? e.EnumerateObject().Sum(p => CountLeaves(p.Value)) : 1;

    private static void AssertJsonEquals(object? expected, JsonElement actual, string field)
    {
        switch (expected)
        {
            case null:
                Assert.Equal(JsonValueKind.Null, actual.ValueKind);
                break;
            case string s:
                Assert.Equal(s, actual.GetString());
                break;
            case bool b:
                Assert.Equal(b, actual.GetBoolean());
                break;
            case int or long:
                Assert.Equal(Convert.ToInt64(expected, CultureInfo.InvariantCulture), actual.GetInt64());
                break;
            case ulong u:
                Assert.Equal(u, actual.GetUInt64());
                break;
            case IEnumerable list:
                Assert.Equal(JsonValueKind.Array, actual.ValueKind);
                Assert.Equal(list.Cast<object?>().Select(o => (string?)o), actual.EnumerateArray().Select(x => x.GetString()));
                break;
            default:
                Assert.Fail($"{field}: unexpected value type {expected.GetType()}");
                break;
        }
    }
}
