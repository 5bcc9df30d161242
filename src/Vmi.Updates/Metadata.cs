using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Vmi.Updates;

/// <summary>The four top-level TUF roles.</summary>
public enum Role
{
    Root,
    Targets,
    Snapshot,
    Timestamp,
}

/// <summary>The keys a role trusts and how many of them must sign.</summary>
public sealed record RoleKeys(IReadOnlyList<string> KeyIds, int Threshold);

/// <summary>What a role says about another metadata file: its version, and optionally its length and hashes.</summary>
public sealed record MetaFileInfo(long Version, long? Length, IReadOnlyDictionary<string, string> Hashes);

/// <summary>A rule file of the bundle: its name, kind (<c>yara</c> or <c>network</c>), length and hashes.</summary>
public sealed record TargetFileInfo(string Name, string Kind, long Length, IReadOnlyDictionary<string, string> Hashes)
{
    /// <summary>Where the feed serves it (consistent snapshot: the SHA-256 prefix makes each version a new file).</summary>
    public string FeedPath => $"targets/{Hashes["sha256"]}.{Name}";
}

/// <summary>Fields every role's metadata has.</summary>
public abstract record Metadata
{
    public const string SpecVersion = "1.0.31";

    public required long Version { get; init; }
    public required DateTimeOffset Expires { get; init; }
    public abstract Role Role { get; }

    public bool IsExpired(DateTimeOffset now) => now >= Expires;
}

public sealed record RootMetadata : Metadata
{
    public override Role Role => Role.Root;
    public required IReadOnlyDictionary<string, UpdatePublicKey> Keys { get; init; }
    public required IReadOnlyDictionary<Role, RoleKeys> Roles { get; init; }
    public bool ConsistentSnapshot { get; init; } = true;

    /// <summary>The public keys of a role.</summary>
    public IEnumerable<UpdatePublicKey> KeysOf(Role role) => Roles[role].KeyIds.Select(id => Keys[id]);
}

public sealed record TimestampMetadata : Metadata
{
    public override Role Role => Role.Timestamp;
    /// <summary>What it says about <c>snapshot.json</c>.</summary>
    public required MetaFileInfo Snapshot { get; init; }
}

public sealed record SnapshotMetadata : Metadata
{
    public override Role Role => Role.Snapshot;
    /// <summary>What it says about <c>targets.json</c>.</summary>
    public required MetaFileInfo Targets { get; init; }
}

public sealed record TargetsMetadata : Metadata
{
    public override Role Role => Role.Targets;
    public required IReadOnlyList<TargetFileInfo> Targets { get; init; }
}

/// <summary>A metadata file as served: the parsed role, the canonical bytes that were signed, and the signatures.</summary>
public sealed class SignedMetadata<T> where T : Metadata
{
    internal SignedMetadata(T signed, byte[] raw, byte[] signedBytes, IReadOnlyList<(string KeyId, byte[] Signature)> signatures)
    {
        Signed = signed;
        Raw = raw;
        SignedBytes = signedBytes;
        Signatures = signatures;
    }

    public T Signed { get; }
    /// <summary>The file's bytes exactly as fetched (what the role above hashes).</summary>
    public byte[] Raw { get; }
    /// <summary>Canonical JSON of the <c>signed</c> object: what the signatures cover.</summary>
    public byte[] SignedBytes { get; }
    public IReadOnlyList<(string KeyId, byte[] Signature)> Signatures { get; }

    /// <summary>
    /// Checks the signatures against <paramref name="role"/>'s keys in <paramref name="root"/> and returns
    /// the key ids that signed validly.
    /// </summary>
    /// <exception cref="UpdateRejectedException">Below the role's threshold, with the reason: untrusted keys only, invalid signatures, or too few.</exception>
    public IReadOnlyList<string> Verify(RootMetadata root, Role role, string file)
    {
        RoleKeys keys = root.Roles[role];
        var valid = new List<string>();
        var invalid = new List<string>();
        var untrusted = new List<string>();
        foreach (var (keyId, signature) in Signatures)
        {
            if (!keys.KeyIds.Contains(keyId) || !root.Keys.TryGetValue(keyId, out UpdatePublicKey? key))
            {
                untrusted.Add(keyId.Length > 8 ? keyId[..8] : keyId);
                continue;
            }
            if (valid.Contains(keyId))
                continue; // one key counts once toward the threshold
            if (key.Verify(SignedBytes, signature))
                valid.Add(keyId);
            else
                invalid.Add(key.ShortId);
        }
        if (valid.Count >= keys.Threshold)
            return valid;
        string role_ = Name(role);
        string detail = $"{valid.Count} valid signature{(valid.Count == 1 ? "" : "s")} from the {role_} role's keys, {keys.Threshold} required"
            + (invalid.Count > 0 ? $"; signatures by {string.Join(", ", invalid)} do not verify" : "")
            + (untrusted.Count > 0 ? $"; signed by {string.Join(", ", untrusted)}, which root v{root.Version} does not trust for {role_}" : "");
        UpdateRejection kind = invalid.Count > 0 ? UpdateRejection.InvalidSignature
            : valid.Count > 0 ? UpdateRejection.ThresholdNotMet
            : untrusted.Count > 0 ? UpdateRejection.UntrustedKey
            : UpdateRejection.ThresholdNotMet;
        string what = kind switch
        {
            UpdateRejection.InvalidSignature => "the content does not match its signatures (changed after signing)",
            UpdateRejection.UntrustedKey => "signed by the wrong key",
            _ => "not signed by enough keys",
        };
        throw new UpdateRejectedException(kind, file, $"{what}: {detail}.");
    }

    internal static string Name(Role role) => role.ToString().ToLowerInvariant();
}

/// <summary>Reads and writes TUF metadata files (ed25519, no delegations).</summary>
public static partial class MetadataFormat
{
    /// <summary>Signatures accepted on one file at most (a feed with more is malformed).</summary>
    public const int MaxSignatures = 64;
    /// <summary>Keys in one root at most.</summary>
    public const int MaxKeys = 64;
    /// <summary>Rule files in one bundle at most.</summary>
    public const int MaxTargets = 4096;

    [GeneratedRegex("^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")]
    private static partial Regex SafeName();

    /// <summary>
    /// True when <paramref name="name"/> is a plain file name (no path, no leading dot) other than <c>bundle.json</c>,
    /// the manifest the store writes next to a bundle's rule files.
    /// </summary>
    public static bool IsSafeTargetName(string name) => SafeName().IsMatch(name) && !name.Contains("..", StringComparison.Ordinal)
        && !name.Equals("bundle.json", StringComparison.OrdinalIgnoreCase);

    /// <summary>Parses a metadata file and checks that it is the expected role; signatures are not checked here.</summary>
    /// <exception cref="UpdateRejectedException">Malformed or unsupported.</exception>
    public static SignedMetadata<T> Parse<T>(byte[] raw, string file) where T : Metadata
    {
        try
        {
            using JsonDocument doc = CanonicalJson.ParseStrict(raw, file);
            JsonElement top = doc.RootElement;
            if (top.ValueKind != JsonValueKind.Object || !top.TryGetProperty("signed", out JsonElement signed) || signed.ValueKind != JsonValueKind.Object)
                throw new FormatException("no \"signed\" object");
            if (!top.TryGetProperty("signatures", out JsonElement sigs) || sigs.ValueKind != JsonValueKind.Array)
                throw new FormatException("no \"signatures\" array");
            if (sigs.GetArrayLength() > MaxSignatures)
                throw new FormatException($"more than {MaxSignatures} signatures");
            var signatures = new List<(string, byte[])>();
            foreach (JsonElement s in sigs.EnumerateArray())
            {
                if (s.ValueKind != JsonValueKind.Object)
                    throw new FormatException("a signature must be an object");
                signatures.Add((UpdatePublicKey.Field(s, "keyid"), UpdatePublicKey.Hex(UpdatePublicKey.Field(s, "sig"), "sig")));
            }
            string type = UpdatePublicKey.Field(signed, "_type");
            string spec = UpdatePublicKey.Field(signed, "spec_version");
            if (!spec.StartsWith("1.", StringComparison.Ordinal))
                throw new UpdateRejectedException(UpdateRejection.Unsupported, file, $"spec_version {spec}: this client implements TUF 1.x.");
            long version = Int(signed, "version");
            if (version < 1)
                throw new FormatException($"version {version} is not positive");
            DateTimeOffset expires = Time(signed, "expires");
            Metadata parsed = type switch
            {
                "root" => ParseRoot(signed, version, expires, file),
                "timestamp" => new TimestampMetadata { Version = version, Expires = expires, Snapshot = Meta(signed, "snapshot.json", file) },
                "snapshot" => new SnapshotMetadata { Version = version, Expires = expires, Targets = Meta(signed, "targets.json", file) },
                "targets" => ParseTargets(signed, version, expires, file),
                _ => throw new FormatException($"unknown _type \"{type}\""),
            };
            if (parsed is not T typed)
                throw new FormatException($"it is {type} metadata, not {typeof(T).Name.Replace("Metadata", "", StringComparison.Ordinal).ToLowerInvariant()}");
            return new SignedMetadata<T>(typed, raw, CanonicalJson.Encode(signed), signatures);
        }
        catch (FormatException e)
        {
            throw new UpdateRejectedException(UpdateRejection.Malformed, file, $"malformed metadata: {e.Message}.", e);
        }
        catch (Exception e) when (e is InvalidOperationException or KeyNotFoundException or OverflowException)
        {
            throw new UpdateRejectedException(UpdateRejection.Malformed, file, $"malformed metadata: {e.Message}.", e);
        }
    }

    private static RootMetadata ParseRoot(JsonElement signed, long version, DateTimeOffset expires, string file)
    {
        JsonElement keysJson = Obj(signed, "keys");
        var keys = new Dictionary<string, UpdatePublicKey>(StringComparer.Ordinal);
        foreach (JsonProperty k in keysJson.EnumerateObject())
        {
            if (keys.Count >= MaxKeys)
                throw new FormatException($"more than {MaxKeys} keys");
            UpdatePublicKey key = UpdatePublicKey.FromJson(k.Value);
            if (key.KeyId != k.Name)
                throw new FormatException($"key id {k.Name} is not the SHA-256 of its key ({key.KeyId})");
            keys[k.Name] = key;
        }
        JsonElement rolesJson = Obj(signed, "roles");
        var roles = new Dictionary<Role, RoleKeys>();
        foreach (Role role in Enum.GetValues<Role>())
        {
            string name = SignedMetadata<RootMetadata>.Name(role);
            if (!rolesJson.TryGetProperty(name, out JsonElement r) || r.ValueKind != JsonValueKind.Object)
                throw new FormatException($"roles has no \"{name}\"");
            long threshold = Int(r, "threshold");
            if (!r.TryGetProperty("keyids", out JsonElement ids) || ids.ValueKind != JsonValueKind.Array)
                throw new FormatException($"role {name} has no keyids array");
            var keyIds = new List<string>();
            foreach (JsonElement id in ids.EnumerateArray())
            {
                string s = id.ValueKind == JsonValueKind.String ? id.GetString()! : throw new FormatException($"role {name}: a key id is not a string");
                if (!keys.ContainsKey(s))
                    throw new FormatException($"role {name} lists key {s}, which is not in keys");
                if (keyIds.Contains(s))
                    throw new FormatException($"role {name} lists key {s} twice");
                keyIds.Add(s);
            }
            if (threshold < 1 || threshold > keyIds.Count)
                throw new FormatException($"role {name} has threshold {threshold} with {keyIds.Count} keys");
            roles[role] = new RoleKeys(keyIds, (int)threshold);
        }
        bool consistent = signed.TryGetProperty("consistent_snapshot", out JsonElement c) && c.ValueKind == JsonValueKind.True;
        if (!consistent)
            throw new UpdateRejectedException(UpdateRejection.Unsupported, file, "consistent_snapshot is not true: this client fetches versioned metadata and hash-named targets only.");
        return new RootMetadata { Version = version, Expires = expires, Keys = keys, Roles = roles, ConsistentSnapshot = true };
    }

    private static TargetsMetadata ParseTargets(JsonElement signed, long version, DateTimeOffset expires, string file)
    {
        if (signed.TryGetProperty("delegations", out JsonElement d) && d.ValueKind == JsonValueKind.Object
            && d.TryGetProperty("roles", out JsonElement dr) && dr.ValueKind == JsonValueKind.Array && dr.GetArrayLength() > 0)
            throw new UpdateRejectedException(UpdateRejection.Unsupported, file, "delegated targets roles are not supported; publish every rule file from the top-level targets role.");
        JsonElement targetsJson = Obj(signed, "targets");
        var targets = new List<TargetFileInfo>();
        foreach (JsonProperty t in targetsJson.EnumerateObject())
        {
            if (targets.Count >= MaxTargets)
                throw new FormatException($"more than {MaxTargets} targets");
            if (!IsSafeTargetName(t.Name))
                throw new FormatException($"target name \"{t.Name}\" is not a plain file name");
            if (t.Value.ValueKind != JsonValueKind.Object)
                throw new FormatException($"target {t.Name} is not an object");
            long length = Int(t.Value, "length");
            if (length < 0)
                throw new FormatException($"target {t.Name} has a negative length");
            var hashes = Hashes(t.Value, $"target {t.Name}");
            if (!hashes.ContainsKey("sha256"))
                throw new FormatException($"target {t.Name} has no sha256 hash");
            string kind = "yara";
            if (t.Value.TryGetProperty("custom", out JsonElement custom) && custom.ValueKind == JsonValueKind.Object
                && custom.TryGetProperty("kind", out JsonElement k) && k.ValueKind == JsonValueKind.String)
                kind = k.GetString()!;
            if (kind is not ("yara" or "network"))
                throw new FormatException($"target {t.Name} has kind \"{kind}\" (yara or network)");
            targets.Add(new TargetFileInfo(t.Name, kind, length, hashes));
        }
        return new TargetsMetadata { Version = version, Expires = expires, Targets = targets };
    }

    private static MetaFileInfo Meta(JsonElement signed, string name, string file)
    {
        JsonElement meta = Obj(signed, "meta");
        if (!meta.TryGetProperty(name, out JsonElement m) || m.ValueKind != JsonValueKind.Object)
            throw new UpdateRejectedException(UpdateRejection.Malformed, file, $"malformed metadata: meta has no \"{name}\".");
        long v = Int(m, "version");
        if (v < 1)
            throw new FormatException($"meta {name} version {v} is not positive");
        long? length = m.TryGetProperty("length", out JsonElement l) ? (l.TryGetInt64(out long n) && n >= 0 ? n : throw new FormatException($"meta {name} length is not a non-negative integer")) : null;
        var hashes = m.TryGetProperty("hashes", out _) ? Hashes(m, $"meta {name}") : new Dictionary<string, string>();
        return new MetaFileInfo(v, length, hashes);
    }

    private static Dictionary<string, string> Hashes(JsonElement o, string what)
    {
        JsonElement h = Obj(o, "hashes");
        var hashes = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (JsonProperty p in h.EnumerateObject())
        {
            int digits = p.Name switch { "sha256" => 64, "sha512" => 128, _ => 0 };
            if (digits == 0)
                continue; // other algorithms are ignored, as TUF allows
            string v = p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString()! : throw new FormatException($"{what}: hash {p.Name} is not a string");
            if (v.Length != digits || !v.All(char.IsAsciiHexDigit))
                throw new FormatException($"{what}: {p.Name} is not {digits} hex digits");
            hashes[p.Name] = v.ToLowerInvariant();
        }
        if (hashes.Count == 0)
            throw new FormatException($"{what} has no sha256 or sha512 hash");
        return hashes;
    }

    private static JsonElement Obj(JsonElement o, string name) =>
        o.TryGetProperty(name, out JsonElement v) && v.ValueKind == JsonValueKind.Object ? v : throw new FormatException($"missing object \"{name}\"");

    private static long Int(JsonElement o, string name) =>
        o.TryGetProperty(name, out JsonElement v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out long n) ? n : throw new FormatException($"missing integer \"{name}\"");

    private static DateTimeOffset Time(JsonElement o, string name)
    {
        string s = UpdatePublicKey.Field(o, name);
        // TUF: "YYYY-MM-DDTHH:MM:SSZ", UTC.
        if (!DateTimeOffset.TryParseExact(s, "yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out DateTimeOffset t))
            throw new FormatException($"\"{name}\" is \"{s}\", not YYYY-MM-DDTHH:MM:SSZ");
        return t;
    }

    // ---- writing ----

    public static string FormatTime(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);

    /// <summary>The <c>signed</c> object of a role.</summary>
    public static JsonObject ToJson(Metadata m)
    {
        var o = new JsonObject
        {
            ["_type"] = SignedMetadata<RootMetadata>.Name(m.Role),
            ["spec_version"] = Metadata.SpecVersion,
            ["version"] = m.Version,
            ["expires"] = FormatTime(m.Expires),
        };
        switch (m)
        {
            case RootMetadata r:
                o["consistent_snapshot"] = true;
                var keys = new JsonObject();
                foreach (var (id, key) in r.Keys)
                    keys[id] = key.ToJson();
                o["keys"] = keys;
                var roles = new JsonObject();
                foreach (var (role, rk) in r.Roles)
                    roles[SignedMetadata<RootMetadata>.Name(role)] = new JsonObject { ["keyids"] = new JsonArray([.. rk.KeyIds.Select(k => (JsonNode)k)]), ["threshold"] = rk.Threshold };
                o["roles"] = roles;
                break;
            case TimestampMetadata t:
                o["meta"] = new JsonObject { ["snapshot.json"] = MetaJson(t.Snapshot) };
                break;
            case SnapshotMetadata s:
                o["meta"] = new JsonObject { ["targets.json"] = MetaJson(s.Targets) };
                break;
            case TargetsMetadata t:
                var targets = new JsonObject();
                foreach (TargetFileInfo f in t.Targets)
                {
                    targets[f.Name] = new JsonObject
                    {
                        ["length"] = f.Length,
                        ["hashes"] = HashJson(f.Hashes),
                        ["custom"] = new JsonObject { ["kind"] = f.Kind },
                    };
                }
                o["targets"] = targets;
                break;
        }
        return o;
    }

    private static JsonObject MetaJson(MetaFileInfo m)
    {
        var o = new JsonObject { ["version"] = m.Version };
        if (m.Length is long l)
            o["length"] = l;
        if (m.Hashes.Count > 0)
            o["hashes"] = HashJson(m.Hashes);
        return o;
    }

    private static JsonObject HashJson(IReadOnlyDictionary<string, string> hashes)
    {
        var o = new JsonObject();
        foreach (var (k, v) in hashes)
            o[k] = v;
        return o;
    }

    /// <summary>Signs a role with each key and returns the file's bytes (canonical JSON).</summary>
    public static byte[] Sign(Metadata m, IEnumerable<SigningKey> keys)
    {
        byte[] signedBytes = CanonicalJson.Encode(ToJson(m));
        var sigs = new JsonArray();
        foreach (SigningKey k in keys.DistinctBy(k => k.KeyId))
            sigs.Add(new JsonObject { ["keyid"] = k.KeyId, ["sig"] = Convert.ToHexStringLower(k.Sign(signedBytes)) });
        var file = new JsonObject { ["signatures"] = sigs, ["signed"] = ToJson(m) };
        return CanonicalJson.Encode(file);
    }

    /// <summary>SHA-256 and SHA-512 of a file, lower-case hex.</summary>
    public static Dictionary<string, string> HashesOf(ReadOnlySpan<byte> data) => new(StringComparer.Ordinal)
    {
        ["sha256"] = Convert.ToHexStringLower(SHA256.HashData(data)),
        ["sha512"] = Convert.ToHexStringLower(SHA512.HashData(data)),
    };

    /// <summary>Checks a file against the length and every hash listed for it.</summary>
    public static bool Matches(ReadOnlySpan<byte> data, long? length, IReadOnlyDictionary<string, string> hashes)
    {
        if (length is long l && data.Length != l)
            return false;
        foreach (var (alg, expected) in hashes)
        {
            string actual = alg switch
            {
                "sha256" => Convert.ToHexStringLower(SHA256.HashData(data)),
                "sha512" => Convert.ToHexStringLower(SHA512.HashData(data)),
                _ => expected,
            };
            if (!CryptographicOperations.FixedTimeEquals(System.Text.Encoding.ASCII.GetBytes(actual), System.Text.Encoding.ASCII.GetBytes(expected)))
                return false;
        }
        return true;
    }
}
