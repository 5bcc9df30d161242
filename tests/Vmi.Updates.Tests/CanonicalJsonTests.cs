using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit;

namespace Vmi.Updates.Tests;

/// <summary>Canonical JSON (securesystemslib's encode_canonical) and key ids, on known vectors.</summary>
public sealed class CanonicalJsonTests
{
    private static string Canonical(string json)
    {
        using JsonDocument doc = JsonDocument.Parse(json);
        return Encoding.UTF8.GetString(CanonicalJson.Encode(doc.RootElement));
    }

    [Theory]
    [InlineData("{\"b\":1,\"a\":2}", "{\"a\":2,\"b\":1}")]
    [InlineData("{ \"a\" : [ 1 , 2 ] ,\n \"c\" : { } }", "{\"a\":[1,2],\"c\":{}}")]
    [InlineData("{\"c\":{\"z\":[3,2,1],\"y\":null},\"b\":[{\"d\":1,\"a\":2}],\"a\":true}", "{\"a\":true,\"b\":[{\"a\":2,\"d\":1}],\"c\":{\"y\":null,\"z\":[3,2,1]}}")]
    [InlineData("[0,-1,-0,9223372036854775807,-9223372036854775808]", "[0,-1,0,9223372036854775807,-9223372036854775808]")]
    [InlineData("[true,false,null,\"\",[],{}]", "[true,false,null,\"\",[],{}]")]
    [InlineData("{\"B\":1,\"a\":2,\"_\":3,\"A\":4,\"aa\":5,\"\":6}", "{\"\":6,\"A\":4,\"B\":1,\"_\":3,\"a\":2,\"aa\":5}")]
    public void Keys_are_sorted_whitespace_is_dropped_and_integers_are_plain(string input, string expected) =>
        Assert.Equal(expected, Canonical(input));

    [Fact]
    public void Only_backslash_and_quote_are_escaped_everything_else_is_raw_utf8()
    {
        string input = "{\"s\":\"q\\\" b\\\\ s\\/ n\\n t\\t c\\u0001 e\\u00e9 x\\ud83d\\ude00\"}";
        byte[] expected = [.. "{\"s\":\"q\\\" b\\\\ s/ n\n t\t c\u0001 e"u8, 0xC3, 0xA9, .. " x"u8, 0xF0, 0x9F, 0x98, 0x80, .. "\"}"u8];
        using JsonDocument doc = JsonDocument.Parse(input);
        Assert.Equal(expected, CanonicalJson.Encode(doc.RootElement));
    }

    [Fact]
    public void Keys_are_ordered_by_code_point_not_by_utf16_unit()
    {
        // U+E000 is one UTF-16 unit (0xE000); U+1F600 is a surrogate pair starting 0xD83D. By UTF-16 units the emoji
        // would come first; by code point (Python's order) U+E000 does.
        string canonical = Canonical("{\"\\ud83d\\ude00\":2,\"\\ue000\":1,\"z\":0}");
        Assert.Equal("{\"z\":0,\"\ue000\":1,\"\ud83d\ude00\":2}", canonical);
    }

    [Theory]
    [InlineData("1.5")]
    [InlineData("1.0")]
    [InlineData("1e2")]
    [InlineData("{\"a\":[0.1]}")]
    [InlineData("99999999999999999999")]
    public void Numbers_other_than_64_bit_integers_are_refused(string json)
    {
        using JsonDocument doc = JsonDocument.Parse(json);
        Assert.Throws<FormatException>(() => CanonicalJson.Encode(doc.RootElement));
    }

    [Fact]
    public void Encoding_a_node_and_an_element_give_the_same_bytes()
    {
        const string json = "{\"z\":[1,{\"b\":\"x\\\"y\",\"a\":null}],\"a\":-5}";
        using JsonDocument doc = JsonDocument.Parse(json);
        Assert.Equal(CanonicalJson.Encode(doc.RootElement), CanonicalJson.Encode(JsonNode.Parse(json)!));
    }

    [Fact]
    public void ParseStrict_refuses_duplicates_comments_trailing_commas_and_deep_nesting()
    {
        Assert.Throws<FormatException>(() => CanonicalJson.ParseStrict("{\"a\":1,\"a\":2}"u8.ToArray(), "x"));
        Assert.Throws<FormatException>(() => CanonicalJson.ParseStrict("{\"o\":[{\"a\":1,\"b\":{\"c\":1,\"c\":1}}]}"u8.ToArray(), "x"));
        Assert.Throws<FormatException>(() => CanonicalJson.ParseStrict("{\"a\":1 /* c */}"u8.ToArray(), "x"));
        Assert.Throws<FormatException>(() => CanonicalJson.ParseStrict("{\"a\":1,}"u8.ToArray(), "x"));
        Assert.Throws<FormatException>(() => CanonicalJson.ParseStrict(Encoding.UTF8.GetBytes(new string('[', 17) + new string(']', 17)), "x"));
        using JsonDocument ok = CanonicalJson.ParseStrict(Encoding.UTF8.GetBytes(new string('[', 16) + new string(']', 16)), "x");
        using JsonDocument twoObjects = CanonicalJson.ParseStrict("[{\"a\":1},{\"a\":2}]"u8.ToArray(), "x");
        var e = Assert.Throws<FormatException>(() => CanonicalJson.ParseStrict("{\"a\":1,\"a\":2}"u8.ToArray(), "timestamp.json"));
        Assert.Contains("timestamp.json", e.Message, StringComparison.Ordinal);
    }

    // RFC 8032, section 7.1, TEST 1.
    private const string Rfc8032Seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    private const string Rfc8032Public = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    private const string Rfc8032EmptySignature = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

    [Fact]
    public void The_key_id_of_a_known_key_is_the_sha256_of_its_canonical_key_json()
    {
        using SigningKey key = SigningKey.FromSeed(Convert.FromHexString(Rfc8032Seed));
        Assert.Equal(Rfc8032Public, key.Public.PublicHex);
        Assert.Equal(Rfc8032EmptySignature, Convert.ToHexStringLower(key.Sign([])));
        Assert.True(key.Public.Verify([], Convert.FromHexString(Rfc8032EmptySignature)));

        string keyJson = $"{{\"keytype\":\"ed25519\",\"keyval\":{{\"public\":\"{Rfc8032Public}\"}},\"scheme\":\"ed25519\"}}";
        Assert.Equal(keyJson, Encoding.UTF8.GetString(CanonicalJson.Encode(key.Public.ToJson())));
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(keyJson))), key.KeyId);
        Assert.Equal("74c181c7ad8a0855d4b55e44d2ba87aabdddb196832571f15f92fece332e4916", key.KeyId);
        Assert.Equal("74c181c7", key.Public.ShortId);
        Assert.Equal(key.KeyId, new UpdatePublicKey(Convert.FromHexString(Rfc8032Public)).KeyId);
        using JsonDocument parsed = JsonDocument.Parse(keyJson);
        Assert.Equal(key.KeyId, UpdatePublicKey.FromJson(parsed.RootElement).KeyId);
    }

    [Fact]
    public void Metadata_files_are_written_in_canonical_form_and_signatures_cover_the_canonical_signed_object()
    {
        using var feed = new TestFeed();
        feed.Publish();
        foreach (string name in new[] { "1.root.json", "timestamp.json", "1.snapshot.json", "1.targets.json" })
        {
            byte[] file = feed.Read(name);
            using JsonDocument doc = JsonDocument.Parse(file);
            Assert.Equal(file, CanonicalJson.Encode(doc.RootElement));
            byte[] signedBytes = CanonicalJson.Encode(doc.RootElement.GetProperty("signed"));
            RootMetadata root = feed.Publisher.LatestRoot();
            JsonElement sig = doc.RootElement.GetProperty("signatures")[0];
            UpdatePublicKey key = root.Keys[sig.GetProperty("keyid").GetString()!];
            Assert.True(key.Verify(signedBytes, Convert.FromHexString(sig.GetProperty("sig").GetString()!)), name);
        }
    }

    [Fact]
    public void Private_key_files_round_trip_and_are_created_readable_by_the_owner_only()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"vmi-updates-tests-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            using SigningKey key = SigningKey.Generate();
            string path = Path.Combine(dir, "targets.key");
            key.Save(path);
            if (!OperatingSystem.IsWindows())
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
            using SigningKey loaded = SigningKey.Load(path);
            Assert.Equal(key.KeyId, loaded.KeyId);
            Assert.Equal(key.KeyId, SigningKey.LoadPublic(path + ".pub").KeyId);
            Assert.Equal(key.KeyId, SigningKey.LoadPublic(path).KeyId);
            Assert.Throws<Vmi.Core.VmiException>(() => key.Save(path));
            if (!OperatingSystem.IsWindows())
            {
                File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherRead);
                var e = Assert.Throws<Vmi.Core.VmiException>(() => SigningKey.Load(path));
                Assert.Contains("chmod 600", e.Message, StringComparison.Ordinal);
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
