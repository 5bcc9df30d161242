using System.ComponentModel;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit;

namespace Vmi.Updates.Tests;

/// <summary>
/// Differential tests against the reference implementation: Python's securesystemslib (Debian package
/// python3-securesystemslib) encodes the same JSON documents canonically, computes key ids, and verifies the
/// signatures of a feed this library wrote. Byte-for-byte agreement is what lets other TUF tools read our feeds.
/// </summary>
public sealed class SecuresystemslibDifferentialTests
{
    private const string Script = """
        import sys, json, hashlib
        import securesystemslib.formats as formats
        import securesystemslib.keys as keys

        with open(sys.argv[1], encoding="utf-8") as f:
            request = json.load(f)
        out = {"canonical": [], "keyids": [], "verified": []}
        for d in request["documents"]:
            try:
                out["canonical"].append(formats.encode_canonical(d).encode("utf-8").hex())
            except Exception as e:
                out["canonical"].append("error: " + type(e).__name__)
        for pub in request["keys"]:
            meta = {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": pub}}
            out["keyids"].append(hashlib.sha256(formats.encode_canonical(meta).encode("utf-8")).hexdigest())
        for item in request["files"]:
            md, pubs = item["file"], item["keys"]
            data = formats.encode_canonical(md["signed"]).encode("utf-8")
            ok = len(md["signatures"]) > 0
            for s in md["signatures"]:
                key = {"keytype": "ed25519", "scheme": "ed25519", "keyid": s["keyid"], "keyval": {"public": pubs[s["keyid"]]}}
                ok = ok and keys.verify_signature(key, s, data)
            out["verified"].append(ok)
        json.dump(out, sys.stdout)
        """;

    private static readonly Lazy<string?> Python = new(FindPython);

    /// <summary>The first python3 that can import securesystemslib (Debian's lives under /usr/bin, not in a pyenv).</summary>
    private static string? FindPython()
    {
        foreach (string candidate in new[] { "/usr/bin/python3", "python3" })
        {
            try
            {
                var (code, _, _) = Run(candidate, ["-c", "import securesystemslib.formats, securesystemslib.keys"], null);
                if (code == 0)
                    return candidate;
            }
            catch (Win32Exception)
            {
                // Not there; try the next.
            }
        }
        return null;
    }

    private static string RequirePython() => Python.Value ?? throw new Xunit.Sdk.XunitException(
        "Python's securesystemslib is not installed (tried /usr/bin/python3 and python3 on PATH): "
        + "install the Debian package python3-securesystemslib (apt-get install python3-securesystemslib); "
        + "the differential tests of canonical JSON, key ids and signatures need it.");

    private static (int Code, string Stdout, string Stderr) Run(string exe, IEnumerable<string> args, string? extraArg)
    {
        var psi = new ProcessStartInfo(exe)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            StandardOutputEncoding = Encoding.UTF8,
        };
        foreach (string a in args)
            psi.ArgumentList.Add(a);
        if (extraArg is not null)
            psi.ArgumentList.Add(extraArg);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {exe}");
        Task<string> stdout = p.StandardOutput.ReadToEndAsync();
        Task<string> stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromSeconds(60)))
        {
            p.Kill(entireProcessTree: true);
            throw new Xunit.Sdk.XunitException($"{exe} did not finish within 60 s");
        }
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    [Fact]
    public void Canonical_bytes_key_ids_and_signatures_agree_with_securesystemslib()
    {
        string python = RequirePython();
        using var feed = new TestFeed(timestampKeyCount: 2, timestampThreshold: 2);
        feed.Publish(files: [("unicode.yar", "rule caf\u00e9 { strings: $a = \"\u4e2d\ud83d\ude00\" condition: $a }\n"), ("c2.rules", "alert ip any any -> any any (sid:1;)\n")]);
        feed.RotateRoot([feed.NewKey()]);

        var documents = new JsonArray();
        foreach (string vector in Vectors)
            documents.Add(JsonNode.Parse(vector));
        var random = new Random(8032);
        for (int i = 0; i < 300; i++)
            documents.Add(RandomValue(random, 0));
        var files = new JsonArray();
        RootMetadata root = MetadataFormat.Parse<RootMetadata>(feed.Read("2.root.json"), "root").Signed;
        var publicKeys = new JsonObject();
        foreach (var (id, key) in root.Keys.Concat(MetadataFormat.Parse<RootMetadata>(feed.Read("1.root.json"), "root").Signed.Keys).DistinctBy(k => k.Key))
            publicKeys[id] = key.PublicHex;
        var names = new[] { "1.root.json", "2.root.json", "timestamp.json", "1.snapshot.json", "1.targets.json" };
        foreach (string name in names)
        {
            JsonNode file = JsonNode.Parse(feed.Read(name))!;
            documents.Add(file.DeepClone());
            documents.Add(file["signed"]!.DeepClone());
            files.Add(new JsonObject { ["file"] = file, ["keys"] = publicKeys.DeepClone() });
        }
        // A file changed after signing: the reference must refuse it too (the check has teeth).
        JsonNode tampered = JsonNode.Parse(feed.Read("timestamp.json"))!;
        tampered["signed"]!["version"] = 99;
        files.Add(new JsonObject { ["file"] = tampered, ["keys"] = publicKeys.DeepClone() });
        var keyHexes = new JsonArray([.. root.Keys.Values.Select(k => (JsonNode)k.PublicHex), (JsonNode)"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"]);

        string dir = Path.Combine(feed.Base, "differential");
        Directory.CreateDirectory(dir);
        string requestPath = Path.Combine(dir, "request.json");
        File.WriteAllText(requestPath, new JsonObject { ["documents"] = documents, ["keys"] = keyHexes, ["files"] = files }.ToJsonString());
        string scriptPath = Path.Combine(dir, "reference.py");
        File.WriteAllText(scriptPath, Script);

        var (code, stdout, stderr) = Run(python, [scriptPath], requestPath);
        Assert.True(code == 0, $"{python} {scriptPath} exited {code}: {stderr}");
        using JsonDocument reference = JsonDocument.Parse(stdout);

        // Canonical bytes: the same documents, as both sides read them from the same file.
        using JsonDocument request = JsonDocument.Parse(File.ReadAllBytes(requestPath));
        JsonElement[] docs = [.. request.RootElement.GetProperty("documents").EnumerateArray()];
        string[] expected = [.. reference.RootElement.GetProperty("canonical").EnumerateArray().Select(e => e.GetString()!)];
        Assert.Equal(docs.Length, expected.Length);
        var differences = new List<string>();
        for (int i = 0; i < docs.Length; i++)
        {
            string ours;
            try
            {
                ours = Convert.ToHexStringLower(CanonicalJson.Encode(docs[i]));
            }
            catch (FormatException)
            {
                ours = "error";
            }
            string theirs = expected[i].StartsWith("error", StringComparison.Ordinal) ? "error" : expected[i];
            if (ours != theirs)
                differences.Add($"document {i} {docs[i].GetRawText()}:\n  ours   {Show(ours)}\n  theirs {Show(theirs)} ({expected[i]})");
        }
        Assert.True(differences.Count == 0, $"{differences.Count} of {docs.Length} documents encode differently:\n{string.Join("\n", differences.Take(5))}");
        Assert.Contains("error", expected.Select(e => e.StartsWith("error", StringComparison.Ordinal) ? "error" : e)); // the float vectors

        // Key ids.
        string[] keyIds = [.. reference.RootElement.GetProperty("keyids").EnumerateArray().Select(e => e.GetString()!)];
        string[] ourIds = [.. keyHexes.Select(h => new UpdatePublicKey(Convert.FromHexString(h!.GetValue<string>())).KeyId)];
        Assert.Equal(ourIds, keyIds);
        Assert.Equal("74c181c7ad8a0855d4b55e44d2ba87aabdddb196832571f15f92fece332e4916", keyIds[^1]);

        // Signatures of every file we wrote verify with the reference; the tampered one does not.
        bool[] verified = [.. reference.RootElement.GetProperty("verified").EnumerateArray().Select(e => e.GetBoolean())];
        Assert.Equal([.. names.Select(_ => true), false], verified);
    }

    private static string Show(string hex) => hex == "error" ? "error" : Encoding.UTF8.GetString(Convert.FromHexString(hex));

    private static readonly string[] Vectors =
    [
        "{\"b\":1,\"a\":2}",
        "{ \"a\" : [ 1 , 2 ] ,\n \"c\" : { } }",
        "{\"c\":{\"z\":[3,2,1],\"y\":null},\"b\":[{\"d\":1,\"a\":2}],\"a\":true}",
        "[0,-1,-0,9223372036854775807,-9223372036854775808]",
        "[true,false,null,\"\",[],{}]",
        "{\"B\":1,\"a\":2,\"_\":3,\"A\":4,\"aa\":5,\"\":6}",
        "{\"s\":\"q\\\" b\\\\ s\\/ n\\n t\\t c\\u0001 z\\u0000 e\\u00e9 x\\ud83d\\ude00 \\u2028\"}",
        "{\"\\ud83d\\ude00\":2,\"\\ue000\":1,\"\\uffff\":3,\"z\":0,\"\\u00e9\":4}",
        "\"just a string\"",
        "42",
        "{\"a\":1.5}",
        "[1.0]",
        "{\"x\":[1e2]}",
    ];

    private const string Pool = "aZ09 _-./:\"\\\u0000\u0001\u001f\u007f\u00e9\u00ff\u0100\u4e2d\ue000\uffff\n\t\r";

    private static string RandomString(Random random)
    {
        var sb = new StringBuilder();
        int n = random.Next(8);
        for (int i = 0; i < n; i++)
        {
            if (random.Next(10) == 0)
                sb.Append(char.ConvertFromUtf32(0x1F600 + random.Next(64)));
            else
                sb.Append(Pool[random.Next(Pool.Length)]);
        }
        return sb.ToString();
    }

    private static JsonNode? RandomValue(Random random, int depth)
    {
        int kind = random.Next(depth >= 4 ? 5 : 7);
        switch (kind)
        {
            case 0:
                return JsonValue.Create(RandomString(random));
            case 1:
                return JsonValue.Create(random.Next(3) switch { 0 => random.Next(-1000, 1000), 1 => random.NextInt64(), _ => random.Next(2) == 0 ? long.MaxValue : long.MinValue });
            case 2:
                return JsonValue.Create(random.Next(2) == 0);
            case 3:
                return null;
            case 4:
                return JsonValue.Create(random.Next(-5, 5));
            case 5:
                var a = new JsonArray();
                for (int i = random.Next(5); i > 0; i--)
                    a.Add(RandomValue(random, depth + 1));
                return a;
            default:
                var o = new JsonObject();
                for (int i = random.Next(6); i > 0; i--)
                {
                    string key = RandomString(random);
                    if (!o.ContainsKey(key))
                        o[key] = RandomValue(random, depth + 1);
                }
                return o;
        }
    }
}
