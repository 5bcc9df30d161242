using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using NSec.Cryptography;
using Vmi.Core;

namespace Vmi.Updates;

/// <summary>An Ed25519 public key as TUF lists it; the key id is the SHA-256 of its canonical JSON.</summary>
public sealed class UpdatePublicKey : IEquatable<UpdatePublicKey>
{
    private readonly byte[] _raw;
    private readonly NSec.Cryptography.PublicKey _key;

    /// <exception cref="FormatException">Not a 32-byte Ed25519 public key.</exception>
    public UpdatePublicKey(ReadOnlySpan<byte> raw)
    {
        if (raw.Length != 32)
            throw new FormatException($"an Ed25519 public key is 32 bytes, not {raw.Length}");
        _raw = raw.ToArray();
        if (!NSec.Cryptography.PublicKey.TryImport(SignatureAlgorithm.Ed25519, _raw, KeyBlobFormat.RawPublicKey, out NSec.Cryptography.PublicKey? key) || key is null)
            throw new FormatException("not a valid Ed25519 public key");
        _key = key;
        KeyId = Convert.ToHexStringLower(SHA256.HashData(CanonicalJson.Encode(ToJson())));
    }

    /// <summary>64 hex digits: SHA-256 of the key's canonical JSON (as TUF computes it).</summary>
    public string KeyId { get; }

    /// <summary>The 32 key bytes in hex.</summary>
    public string PublicHex => Convert.ToHexStringLower(_raw);

    /// <summary>The first 8 hex digits of the key id, for messages.</summary>
    public string ShortId => KeyId[..8];

    public JsonObject ToJson() => new()
    {
        ["keytype"] = "ed25519",
        ["scheme"] = "ed25519",
        ["keyval"] = new JsonObject { ["public"] = PublicHex },
    };

    /// <exception cref="FormatException">Not an ed25519 key object.</exception>
    public static UpdatePublicKey FromJson(JsonElement key)
    {
        if (key.ValueKind != JsonValueKind.Object)
            throw new FormatException("a key must be an object");
        string keytype = Field(key, "keytype"), scheme = Field(key, "scheme");
        if (keytype != "ed25519" || scheme != "ed25519")
            throw new FormatException($"only ed25519 keys are supported, not keytype \"{keytype}\" scheme \"{scheme}\"");
        if (!key.TryGetProperty("keyval", out JsonElement keyval) || keyval.ValueKind != JsonValueKind.Object)
            throw new FormatException("a key needs a keyval object");
        return new UpdatePublicKey(Hex(Field(keyval, "public"), "keyval.public"));
    }

    public bool Verify(ReadOnlySpan<byte> data, ReadOnlySpan<byte> signature) =>
        signature.Length == SignatureAlgorithm.Ed25519.SignatureSize && SignatureAlgorithm.Ed25519.Verify(_key, data, signature);

    public bool Equals(UpdatePublicKey? other) => other is not null && KeyId == other.KeyId;
    public override bool Equals(object? obj) => Equals(obj as UpdatePublicKey);
    public override int GetHashCode() => KeyId.GetHashCode(StringComparison.Ordinal);
    public override string ToString() => "ed25519:" + ShortId;

    internal static string Field(JsonElement o, string name) =>
        o.TryGetProperty(name, out JsonElement v) && v.ValueKind == JsonValueKind.String ? v.GetString()! : throw new FormatException($"missing string field \"{name}\"");

    internal static byte[] Hex(string s, string what)
    {
        if (s.Length % 2 != 0 || s.Length > 1024)
            throw new FormatException($"{what} is not hex of a sensible length");
        try
        {
            return Convert.FromHexString(s);
        }
        catch (FormatException e)
        {
            throw new FormatException($"{what} is not hex: {e.Message}", e);
        }
    }
}

/// <summary>
/// An Ed25519 private key, kept in a file in securesystemslib's JSON layout
/// (<c>{"keytype":"ed25519","scheme":"ed25519","keyval":{"public":HEX,"private":HEX}}</c>, the private
/// part being the 32-byte seed). Files are created mode 0600; a key file others can read is refused.
/// </summary>
public sealed class SigningKey : IDisposable
{
    private readonly Key _key;

    private SigningKey(Key key)
    {
        _key = key;
        Public = new UpdatePublicKey(key.PublicKey.Export(KeyBlobFormat.RawPublicKey));
    }

    public UpdatePublicKey Public { get; }

    public string KeyId => Public.KeyId;

    public static SigningKey Generate() =>
        new(Key.Create(SignatureAlgorithm.Ed25519, new KeyCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport }));

    /// <summary>From a 32-byte seed (tests use fixed seeds for reproducible feeds).</summary>
    public static SigningKey FromSeed(ReadOnlySpan<byte> seed) =>
        new(Key.Import(SignatureAlgorithm.Ed25519, seed, KeyBlobFormat.RawPrivateKey, new KeyCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport }));

    public byte[] Sign(ReadOnlySpan<byte> data) => SignatureAlgorithm.Ed25519.Sign(_key, data);

    /// <summary>Writes the private key (mode 0600, refusing to overwrite) and its public half to <c>PATH.pub</c>.</summary>
    /// <exception cref="VmiException">The file exists or cannot be written.</exception>
    public void Save(string path)
    {
        var json = Public.ToJson();
        ((JsonObject)json["keyval"]!)["private"] = Convert.ToHexStringLower(_key.Export(KeyBlobFormat.RawPrivateKey));
        try
        {
            var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
            if (!OperatingSystem.IsWindows())
                options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            using (var f = new FileStream(path, options))
                f.Write(Encoding.UTF8.GetBytes(json.ToJsonString() + "\n"));
            File.WriteAllText(path + ".pub", Public.ToJson().ToJsonString() + "\n");
        }
        catch (IOException e)
        {
            throw new VmiException($"cannot write the key file {path}: {e.Message} (key files are never overwritten; choose another name).", e);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new VmiException($"cannot write the key file {path}: {e.Message}", e);
        }
    }

    /// <summary>Loads a private key file.</summary>
    /// <exception cref="VmiException">Missing, readable by others, or not a key file.</exception>
    public static SigningKey Load(string path)
    {
        byte[] bytes = ReadKeyFile(path, requirePrivate: true);
        try
        {
            using JsonDocument doc = CanonicalJson.ParseStrict(bytes, path);
            JsonElement keyval = doc.RootElement.GetProperty("keyval");
            byte[] seed = UpdatePublicKey.Hex(UpdatePublicKey.Field(keyval, "private"), "keyval.private");
            if (seed.Length != 32)
                throw new FormatException($"the private key is {seed.Length} bytes, not 32");
            var key = FromSeed(seed);
            UpdatePublicKey listed = UpdatePublicKey.FromJson(doc.RootElement);
            if (listed.KeyId != key.KeyId)
                throw new FormatException("its public key does not belong to its private key");
            return key;
        }
        catch (Exception e) when (e is FormatException or KeyNotFoundException or InvalidOperationException)
        {
            throw new VmiException($"{path} is not an Ed25519 private key file: {e.Message}", e);
        }
    }

    /// <summary>Loads a public key: a <c>.pub</c> file, or the public half of a private key file.</summary>
    /// <exception cref="VmiException">Missing or not a key file.</exception>
    public static UpdatePublicKey LoadPublic(string path)
    {
        byte[] bytes = ReadKeyFile(path, requirePrivate: false);
        try
        {
            using JsonDocument doc = CanonicalJson.ParseStrict(bytes, path);
            return UpdatePublicKey.FromJson(doc.RootElement);
        }
        catch (FormatException e)
        {
            throw new VmiException($"{path} is not an Ed25519 key file: {e.Message}", e);
        }
    }

    private static byte[] ReadKeyFile(string path, bool requirePrivate)
    {
        if (!File.Exists(path))
            throw new VmiException($"key file {path} does not exist (create one with 'vmi rules keygen --out {path}').");
        if (requirePrivate && !OperatingSystem.IsWindows())
        {
            UnixFileMode mode = File.GetUnixFileMode(path);
            if ((mode & (UnixFileMode.GroupRead | UnixFileMode.OtherRead | UnixFileMode.GroupWrite | UnixFileMode.OtherWrite)) != 0)
                throw new VmiException($"private key file {path} is readable or writable by others (mode {Convert.ToString((int)mode, 8)}); run 'chmod 600 {path}'.");
        }
        var info = new FileInfo(path);
        if (info.Length > 4096)
            throw new VmiException($"{path} is {info.Length} bytes: too large to be a key file.");
        return File.ReadAllBytes(path);
    }

    public void Dispose() => _key.Dispose();
}
