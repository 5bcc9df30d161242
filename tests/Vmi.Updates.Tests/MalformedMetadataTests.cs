using System.Text;
using System.Text.Json.Nodes;
using Xunit;

namespace Vmi.Updates.Tests;

/// <summary>Badly formed metadata is refused as Malformed (or Unsupported), never with another exception type.</summary>
public sealed class MalformedMetadataTests : IClassFixture<MalformedMetadataTests.Files>
{
    private readonly Files _files;

    public MalformedMetadataTests(Files files) => _files = files;

    /// <summary>One valid feed's files (root, timestamp, snapshot, targets), made once for the class.</summary>
    public sealed class Files : IDisposable
    {
        private readonly TestFeed _feed = new();

        public Files()
        {
            _feed.Publish();
            Root = _feed.Read("1.root.json");
            Timestamp = _feed.Read("timestamp.json");
            Snapshot = _feed.Read("1.snapshot.json");
            Targets = _feed.Read("1.targets.json");
            TrustedRoot = MetadataFormat.Parse<RootMetadata>(Root, "root").Signed;
        }

        public byte[] Root { get; }
        public byte[] Timestamp { get; }
        public byte[] Snapshot { get; }
        public byte[] Targets { get; }
        public RootMetadata TrustedRoot { get; }

        public void Dispose() => _feed.Dispose();
    }

    private static byte[] Edit(byte[] file, Action<JsonObject> edit)
    {
        JsonObject o = JsonNode.Parse(file)!.AsObject();
        edit(o);
        return Encoding.UTF8.GetBytes(o.ToJsonString());
    }

    private static byte[] Text(byte[] file, string from, string to)
    {
        string s = Encoding.UTF8.GetString(file);
        Assert.Contains(from, s, StringComparison.Ordinal);
        return Encoding.UTF8.GetBytes(s.Replace(from, to, StringComparison.Ordinal));
    }

    private static JsonObject Signed(JsonObject file) => file["signed"]!.AsObject();

    private static UpdateRejectedException Refused<T>(byte[] bytes, UpdateRejection kind = UpdateRejection.Malformed) where T : Metadata
    {
        var e = Assert.Throws<UpdateRejectedException>(() => MetadataFormat.Parse<T>(bytes, "file.json"));
        Assert.True(e.Kind == kind, $"expected {kind}, got {e.Kind}: {e.Message}");
        Assert.Equal("file.json", e.File);
        if (kind == UpdateRejection.Malformed)
            Assert.Contains("malformed metadata", e.Message, StringComparison.Ordinal);
        return e;
    }

    [Fact]
    public void The_valid_files_parse()
    {
        Assert.Equal(1, MetadataFormat.Parse<RootMetadata>(_files.Root, "r").Signed.Version);
        Assert.Equal(1, MetadataFormat.Parse<TimestampMetadata>(_files.Timestamp, "t").Signed.Version);
        Assert.Equal(1, MetadataFormat.Parse<SnapshotMetadata>(_files.Snapshot, "s").Signed.Version);
        Assert.Equal(3, MetadataFormat.Parse<TargetsMetadata>(_files.Targets, "t").Signed.Targets.Count);
    }

    [Theory]
    [InlineData("")]
    [InlineData("hello")]
    [InlineData("[]")]
    [InlineData("{}")]
    [InlineData("null")]
    [InlineData("{\"signatures\":[]}")]
    [InlineData("{\"signed\":{}}")]
    [InlineData("{\"signed\":[],\"signatures\":[]}")]
    [InlineData("{\"signed\":{},\"signatures\":{}}")]
    public void Text_that_is_not_metadata_is_malformed(string text) => Refused<TimestampMetadata>(Encoding.UTF8.GetBytes(text));

    [Fact]
    public void Broken_json_is_malformed()
    {
        byte[] ts = _files.Timestamp;
        Refused<TimestampMetadata>(ts[..(ts.Length / 2)]);
        Refused<TimestampMetadata>([.. ts, (byte)'x']);
        Refused<TimestampMetadata>([.. "/* c */"u8, .. ts]);
        Refused<TimestampMetadata>([0xEF, 0xBB, 0xBF, .. ts]);
        Refused<TimestampMetadata>(Text(ts, "\"version\":1}}", "\"version\":1,}}"));
        Refused<TimestampMetadata>(Text(ts, "\"_type\":\"timestamp\"", "\"_type\":\"timest\\ud800amp\""));
        Refused<TimestampMetadata>(Text(ts, "\"_type\":\"timestamp\"", "\"_type\":\"timestamp\",\"x\":\"\\udfff\""));
        byte[] invalidUtf8 = Text(ts, "\"_type\":\"timestamp\"", "\"_type\":\"timestamp\",\"x\":\"#\"");
        invalidUtf8[Array.IndexOf(invalidUtf8, (byte)'#')] = 0xC3;
        Refused<TimestampMetadata>(invalidUtf8);
        string deep = new string('[', 40) + new string(']', 40);
        Refused<TimestampMetadata>(Text(ts, "\"_type\":\"timestamp\"", "\"_type\":\"timestamp\",\"x\":" + deep));
    }

    [Fact]
    public void Duplicate_keys_are_malformed_at_any_depth()
    {
        byte[] ts = _files.Timestamp;
        Refused<TimestampMetadata>(Text(ts, "{\"signatures\":", "{\"signed\":{},\"signatures\":"));
        Refused<TimestampMetadata>(Text(ts, "\"_type\":\"timestamp\"", "\"_type\":\"timestamp\",\"_type\":\"timestamp\""));
        // The classic: two versions, and parsers that disagree on which one counts.
        Refused<TimestampMetadata>(Text(ts, "\"spec_version\"", "\"version\":1000000,\"spec_version\""));
        Refused<TimestampMetadata>(Text(ts, "\"length\":", "\"length\":1,\"length\":"));
        Refused<TimestampMetadata>(Text(ts, "\"keyid\":", "\"keyid\":\"00\",\"keyid\":"));
        Refused<RootMetadata>(Text(_files.Root, "\"keytype\":\"ed25519\"", "\"keytype\":\"ed25519\",\"keytype\":\"ed25519\""));
    }

    [Theory]
    [InlineData("_type")]
    [InlineData("version")]
    [InlineData("expires")]
    [InlineData("spec_version")]
    [InlineData("meta")]
    public void A_missing_field_of_the_signed_timestamp_is_malformed(string field) =>
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => Signed(f).Remove(field)));

    [Fact]
    public void Missing_fields_elsewhere_are_malformed()
    {
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => f.Remove("signatures")));
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => f.Remove("signed")));
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => f["signatures"]![0]!.AsObject().Remove("keyid")));
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => f["signatures"]![0]!.AsObject().Remove("sig")));
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => Signed(f)["meta"]!.AsObject().Remove("snapshot.json")));
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => Signed(f)["meta"]!["snapshot.json"]!.AsObject().Remove("version")));
        Refused<SnapshotMetadata>(Edit(_files.Snapshot, f => Signed(f)["meta"]!.AsObject().Remove("targets.json")));
        Refused<TargetsMetadata>(Edit(_files.Targets, f => Signed(f).Remove("targets")));
        Refused<TargetsMetadata>(Edit(_files.Targets, f => Signed(f)["targets"]!["eicar.yar"]!.AsObject().Remove("length")));
        Refused<TargetsMetadata>(Edit(_files.Targets, f => Signed(f)["targets"]!["eicar.yar"]!.AsObject().Remove("hashes")));
        Refused<TargetsMetadata>(Edit(_files.Targets, f => Signed(f)["targets"]!["eicar.yar"]!["hashes"]!.AsObject().Remove("sha256")));
        Refused<RootMetadata>(Edit(_files.Root, f => Signed(f).Remove("keys")));
        Refused<RootMetadata>(Edit(_files.Root, f => Signed(f).Remove("roles")));
        Refused<RootMetadata>(Edit(_files.Root, f => Signed(f)["roles"]!.AsObject().Remove("snapshot")));
        Refused<RootMetadata>(Edit(_files.Root, f => Signed(f)["roles"]!["timestamp"]!.AsObject().Remove("threshold")));
        Refused<RootMetadata>(Edit(_files.Root, f => Signed(f)["roles"]!["timestamp"]!.AsObject().Remove("keyids")));
    }

    [Fact]
    public void A_file_of_another_role_or_an_unknown_type_is_malformed()
    {
        var e = Refused<TimestampMetadata>(_files.Snapshot);
        Assert.Contains("snapshot metadata, not timestamp", e.Message, StringComparison.Ordinal);
        Refused<SnapshotMetadata>(_files.Timestamp);
        Refused<TargetsMetadata>(_files.Root);
        Refused<RootMetadata>(_files.Targets);
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => Signed(f)["_type"] = "Timestamp"));
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => Signed(f)["_type"] = "mirrors"));
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => Signed(f)["_type"] = 1));
    }

    [Theory]
    [InlineData("1.5")]
    [InlineData("1.0")]
    [InlineData("1e0")]
    [InlineData("\"1\"")]
    [InlineData("true")]
    [InlineData("null")]
    [InlineData("0")]
    [InlineData("-1")]
    [InlineData("99999999999999999999")]
    [InlineData("[1]")]
    public void A_version_that_is_not_a_positive_integer_is_malformed(string version)
    {
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => Signed(f)["version"] = JsonNode.Parse(version)));
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => Signed(f)["meta"]!["snapshot.json"]!["version"] = JsonNode.Parse(version)));
    }

    [Fact]
    public void A_float_anywhere_in_the_signed_content_is_malformed_because_canonical_json_has_integers_only()
    {
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => Signed(f)["custom"] = JsonNode.Parse("{\"ratio\":0.5}")));
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => Signed(f)["meta"]!["snapshot.json"]!["length"] = JsonNode.Parse("100.0")));
        Refused<TargetsMetadata>(Edit(_files.Targets, f => Signed(f)["targets"]!["eicar.yar"]!["length"] = JsonNode.Parse("1e2")));
    }

    [Theory]
    [InlineData("2026-03-02 12:00:00")]
    [InlineData("2026-03-02T12:00:00+00:00")]
    [InlineData("2026-03-02T12:00:00.5Z")]
    [InlineData("2026-13-02T12:00:00Z")]
    [InlineData("tomorrow")]
    [InlineData("")]
    public void An_expiry_not_in_tufs_time_format_is_malformed(string expires) =>
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => Signed(f)["expires"] = expires));

    [Fact]
    public void Bad_hashes_lengths_and_signatures_are_malformed()
    {
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => Signed(f)["meta"]!["snapshot.json"]!["hashes"]!["sha256"] = "abcd"));
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => Signed(f)["meta"]!["snapshot.json"]!["hashes"]!["sha256"] = new string('g', 64)));
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => Signed(f)["meta"]!["snapshot.json"]!["hashes"] = new JsonObject()));
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => Signed(f)["meta"]!["snapshot.json"]!["hashes"] = new JsonObject { ["md5"] = "00" }));
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => Signed(f)["meta"]!["snapshot.json"]!["hashes"]!["sha512"] = 5));
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => Signed(f)["meta"]!["snapshot.json"]!["length"] = -1));
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => Signed(f)["meta"]!["snapshot.json"]!["length"] = "10"));
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => Signed(f)["meta"]!["snapshot.json"] = new JsonArray()));
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => f["signatures"]![0]!["sig"] = "xyz"));
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => f["signatures"]![0]!["sig"] = "abc"));
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => f["signatures"]![0]!["sig"] = new string('a', 2000)));
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => f["signatures"]![0]!["keyid"] = 7));
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => f["signatures"]![0] = "sig"));
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f =>
        {
            var sigs = f["signatures"]!.AsArray();
            for (int i = 0; i < MetadataFormat.MaxSignatures; i++)
                sigs.Add(sigs[0]!.DeepClone());
        }));
        Refused<TargetsMetadata>(Edit(_files.Targets, f => Signed(f)["targets"]!["eicar.yar"]!["length"] = -5));
        Refused<TargetsMetadata>(Edit(_files.Targets, f => Signed(f)["targets"]!["eicar.yar"]!["custom"]!["kind"] = "exe"));
        Refused<TargetsMetadata>(Edit(_files.Targets, f => Signed(f)["targets"]!["eicar.yar"] = "file"));
    }

    [Theory]
    [InlineData("../x")]
    [InlineData("..")]
    [InlineData("x/../../y")]
    [InlineData("/etc/passwd")]
    [InlineData("a/b.yar")]
    [InlineData("a\\b.yar")]
    [InlineData(".hidden.yar")]
    [InlineData("x..y.yar")]
    [InlineData("")]
    [InlineData("name with space.yar")]
    [InlineData("caf\u00e9.yar")]
    [InlineData("nul\u0000.yar")]
    public void A_target_name_that_is_not_a_plain_file_name_is_malformed(string name)
    {
        var e = Refused<TargetsMetadata>(Edit(_files.Targets, f =>
        {
            var targets = Signed(f)["targets"]!.AsObject();
            targets[name] = targets["eicar.yar"]!.DeepClone();
        }));
        Assert.Contains("not a plain file name", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_target_name_of_129_characters_is_malformed_and_128_is_fine()
    {
        byte[] With(string name) => Edit(_files.Targets, f =>
        {
            var targets = Signed(f)["targets"]!.AsObject();
            targets[name] = targets["eicar.yar"]!.DeepClone();
        });
        Refused<TargetsMetadata>(With(new string('a', 129)));
        Assert.Equal(4, MetadataFormat.Parse<TargetsMetadata>(With(new string('a', 128)), "t").Signed.Targets.Count);
    }

    [Fact]
    public void Bad_roots_are_malformed()
    {
        byte[] root = _files.Root;
        string someKey = Signed(JsonNode.Parse(root)!.AsObject())["keys"]!.AsObject().First().Key;
        Refused<RootMetadata>(Edit(root, f =>
        {
            var keys = Signed(f)["keys"]!.AsObject();
            JsonNode k = keys[someKey]!.DeepClone();
            keys.Remove(someKey);
            keys[new string('0', 64)] = k; // a key id that is not the key's hash
        }));
        Refused<RootMetadata>(Edit(root, f => Signed(f)["keys"]![someKey]!["keytype"] = "rsa"));
        Refused<RootMetadata>(Edit(root, f => Signed(f)["keys"]![someKey]!["scheme"] = "rsassa-pss-sha256"));
        Refused<RootMetadata>(Edit(root, f => Signed(f)["keys"]![someKey]!["keyval"]!["public"] = "abcd"));
        Refused<RootMetadata>(Edit(root, f => Signed(f)["keys"]![someKey]!["keyval"] = "abcd"));
        Refused<RootMetadata>(Edit(root, f => Signed(f)["roles"]!["timestamp"]!["threshold"] = 0));
        Refused<RootMetadata>(Edit(root, f => Signed(f)["roles"]!["timestamp"]!["threshold"] = 2));
        Refused<RootMetadata>(Edit(root, f => Signed(f)["roles"]!["timestamp"]!["threshold"] = -1));
        Refused<RootMetadata>(Edit(root, f => Signed(f)["roles"]!["timestamp"]!["keyids"] = "x"));
        Refused<RootMetadata>(Edit(root, f => Signed(f)["roles"]!["timestamp"]!["keyids"] = new JsonArray(new string('1', 64))));
        Refused<RootMetadata>(Edit(root, f => Signed(f)["roles"]!["timestamp"]!["keyids"] = new JsonArray(3)));
        Refused<RootMetadata>(Edit(root, f =>
        {
            var ids = Signed(f)["roles"]!["timestamp"]!["keyids"]!.AsArray();
            ids.Add(ids[0]!.DeepClone());
        }));
    }

    [Fact]
    public void Features_this_client_does_not_implement_are_unsupported()
    {
        Refused<TimestampMetadata>(Edit(_files.Timestamp, f => Signed(f)["spec_version"] = "2.0.0"), UpdateRejection.Unsupported);
        Refused<RootMetadata>(Edit(_files.Root, f => Signed(f)["consistent_snapshot"] = false), UpdateRejection.Unsupported);
        Refused<RootMetadata>(Edit(_files.Root, f => Signed(f).Remove("consistent_snapshot")), UpdateRejection.Unsupported);
        Refused<TargetsMetadata>(Edit(_files.Targets, f => Signed(f)["delegations"] = JsonNode.Parse("{\"keys\":{},\"roles\":[{\"name\":\"x\"}]}")), UpdateRejection.Unsupported);
        // Delegations without roles delegate nothing: accepted.
        Assert.Equal(3, MetadataFormat.Parse<TargetsMetadata>(Edit(_files.Targets, f => Signed(f)["delegations"] = JsonNode.Parse("{\"keys\":{},\"roles\":[]}")), "t").Signed.Targets.Count);
    }

    [Fact]
    public async Task Malformed_files_served_by_the_feed_are_refused_and_the_bundle_stays()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        byte[] honest = feed.Read("timestamp.json");

        feed.Write("timestamp.json", "<html>502 Bad Gateway</html>"u8.ToArray());
        var e = await feed.AssertRejectedAsync(UpdateRejection.Malformed, null, "not valid JSON");
        Assert.Equal("timestamp.json", e.File);

        feed.Write("timestamp.json", Text(honest, "\"spec_version\"", "\"version\":1000000,\"spec_version\""));
        await feed.AssertRejectedAsync(UpdateRejection.Malformed, null, "twice");

        feed.Write("timestamp.json", feed.Read("1.snapshot.json"));
        await feed.AssertRejectedAsync(UpdateRejection.Malformed, null, "not timestamp");

        feed.Write("timestamp.json", honest);
        Assert.False((await feed.Client().UpdateAsync()).Installed);
    }

    [Fact]
    public async Task A_validly_signed_target_named_dot_dot_slash_x_is_malformed_and_nothing_is_written_outside_the_state()
    {
        using var feed = new TestFeed();
        await feed.InstallFirstBundleAsync();
        TargetsMetadata next = feed.Publish();
        byte[] evil = "rule evil { condition: true }\n"u8.ToArray();
        TargetsMetadata escaping = next with { Targets = [.. next.Targets, new TargetFileInfo("../x", "yara", evil.Length, MetadataFormat.HashesOf(evil))] };
        feed.ServeTargets(MetadataFormat.Sign(escaping, feed.TargetsKeys), next.Version);
        var e = await feed.AssertRejectedAsync(UpdateRejection.Malformed, null, "\"../x\" is not a plain file name");
        Assert.Equal("2.targets.json", e.File);
        Assert.False(File.Exists(Path.Combine(feed.StateDir, "bundles", "x")));
        Assert.False(File.Exists(Path.Combine(feed.StateDir, "x")));
        Assert.False(File.Exists(Path.Combine(feed.Base, "x")));
    }

    /// <summary>
    /// Random mutations of valid files (bytes flipped, cut, duplicated, JSON-ish characters inserted; values replaced
    /// with other types; fields removed): each one parses as each role or is refused with UpdateRejectedException,
    /// and one that parses then verifies or is refused the same way. Nothing else may escape.
    /// </summary>
    [Fact]
    public void Random_mutations_of_valid_metadata_parse_or_are_rejected_never_anything_else()
    {
        var random = new Random(20260301);
        var failures = new List<string>();
        int parsed = 0, rejected = 0;
        foreach (var (name, original) in new[] { ("root", _files.Root), ("timestamp", _files.Timestamp), ("snapshot", _files.Snapshot), ("targets", _files.Targets) })
        {
            for (int i = 0; i < 1500; i++)
            {
                byte[] mutated = i % 3 == 2 ? StructuralMutation(random, original) : ByteMutation(random, original);
                foreach (var (role, parse) in Parsers)
                {
                    try
                    {
                        parse(mutated, _files.TrustedRoot);
                        parsed++;
                    }
                    catch (UpdateRejectedException)
                    {
                        rejected++;
                    }
                    catch (Exception e)
                    {
                        failures.Add($"{name} mutation {i} parsed as {role}: {e.GetType().Name}: {e.Message}\n  {Encoding.UTF8.GetString(mutated)}");
                    }
                }
            }
        }
        Assert.True(failures.Count == 0, $"{failures.Count} mutations threw something else than UpdateRejectedException:\n{string.Join("\n", failures.Take(10))}");
        Assert.True(parsed > 0 && rejected > 0, $"parsed {parsed}, rejected {rejected}: the mutations do not exercise both paths");
    }

    [Fact]
    public async Task Random_mutations_of_a_served_timestamp_never_crash_the_client_or_replace_the_bundle()
    {
        using var feed = new TestFeed();
        InstalledBundle before = await feed.InstallFirstBundleAsync();
        byte[] honest = feed.Read("timestamp.json");
        var random = new Random(7);
        for (int i = 0; i < 25; i++)
        {
            feed.Write("timestamp.json", i % 2 == 0 ? ByteMutation(random, honest) : StructuralMutation(random, honest));
            try
            {
                await feed.Client().UpdateAsync();
            }
            catch (UpdateRejectedException)
            {
                // Expected for nearly all.
            }
            Assert.Equal(before.Version, feed.Store.Active!.Version);
        }
        feed.Write("timestamp.json", honest);
    }

    private static readonly (string Role, Action<byte[], RootMetadata> Parse)[] Parsers =
    [
        ("root", (b, _) =>
        {
            var r = MetadataFormat.Parse<RootMetadata>(b, "root.json");
            r.Verify(r.Signed, Role.Root, "root.json");
        }),
        ("timestamp", (b, root) => MetadataFormat.Parse<TimestampMetadata>(b, "timestamp.json").Verify(root, Role.Timestamp, "timestamp.json")),
        ("snapshot", (b, root) => MetadataFormat.Parse<SnapshotMetadata>(b, "snapshot.json").Verify(root, Role.Snapshot, "snapshot.json")),
        ("targets", (b, root) => MetadataFormat.Parse<TargetsMetadata>(b, "targets.json").Verify(root, Role.Targets, "targets.json")),
    ];

    private const string JsonBits = "{}[]\":,0123456789-+.eE\\/ntfrul\u00e9\ud83d\ude00 \t\n";

    private static byte[] ByteMutation(Random random, byte[] original)
    {
        var bytes = new List<byte>(original);
        int edits = 1 + random.Next(4);
        for (int e = 0; e < edits && bytes.Count > 0; e++)
        {
            int at = random.Next(bytes.Count);
            switch (random.Next(6))
            {
                case 0:
                    bytes[at] ^= (byte)(1 << random.Next(8));
                    break;
                case 1:
                    bytes.RemoveRange(at, Math.Min(1 + random.Next(8), bytes.Count - at));
                    break;
                case 2:
                    bytes.InsertRange(at, Encoding.UTF8.GetBytes(JsonBits[random.Next(JsonBits.Length)].ToString()));
                    break;
                case 3:
                    int len = Math.Min(1 + random.Next(32), bytes.Count - at);
                    bytes.InsertRange(at, bytes.GetRange(at, len));
                    break;
                case 4:
                    bytes[at] = (byte)random.Next(256);
                    break;
                default:
                    bytes.RemoveRange(at, bytes.Count - at);
                    break;
            }
        }
        return [.. bytes];
    }

    private static byte[] StructuralMutation(Random random, byte[] original)
    {
        JsonNode root = JsonNode.Parse(original)!;
        var containers = new List<JsonNode>();
        Collect(root, containers);
        JsonNode target = containers[random.Next(containers.Count)];
        JsonNode? replacement = RandomValue(random);
        if (target is JsonObject o && o.Count > 0)
        {
            string key = o.ElementAt(random.Next(o.Count)).Key;
            switch (random.Next(3))
            {
                case 0:
                    o.Remove(key);
                    break;
                case 1:
                    o[key] = replacement;
                    break;
                default:
                    o[key + (random.Next(2) == 0 ? "" : "x")] = replacement;
                    break;
            }
        }
        else if (target is JsonArray a)
        {
            if (a.Count > 0 && random.Next(2) == 0)
                a[random.Next(a.Count)] = replacement;
            else
                a.Add(replacement);
        }
        return Encoding.UTF8.GetBytes(root.ToJsonString());
    }

    private static void Collect(JsonNode? node, List<JsonNode> into)
    {
        if (node is JsonObject o)
        {
            into.Add(o);
            foreach (var (_, v) in o)
                Collect(v, into);
        }
        else if (node is JsonArray a)
        {
            into.Add(a);
            foreach (JsonNode? v in a)
                Collect(v, into);
        }
    }

    private static JsonNode? RandomValue(Random random) => random.Next(14) switch
    {
        0 => JsonValue.Create(random.Next(-2, 5)),
        1 => JsonNode.Parse("1.5")!,
        2 => JsonNode.Parse("99999999999999999999999")!,
        3 => JsonValue.Create(long.MaxValue),
        4 => JsonValue.Create("")!,
        5 => JsonValue.Create(new string('a', 64))!,
        6 => JsonValue.Create("../../etc/passwd")!,
        7 => JsonValue.Create(true),
        8 => null,
        9 => new JsonArray(1, "x"),
        10 => new JsonObject { ["keyid"] = "00", ["sig"] = "00" },
        11 => JsonValue.Create("2026-03-01T12:00:00Z")!,
        12 => new JsonObject(),
        _ => JsonValue.Create("ed25519")!,
    };
}
