using System.Text.Json;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Integration.Tests;

/// <summary>The <c>vmi rules</c> commands end to end, as a feed owner and a client use them (no guest needed).</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class RulesCliTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vmi-rules-cli-").FullName;

    private string P(string name) => Path.Combine(_dir, name);

    private async Task<CliResult> Vmi(params string[] args)
    {
        CliResult r = await VmiCli.RunAsync(args);
        output.WriteLine($"$ vmi {string.Join(' ', args)}\n{r.StandardOutput}{r.StandardError}(exit {r.ExitCode})");
        return r;
    }

    private async Task<CliResult> Ok(params string[] args)
    {
        CliResult r = await Vmi(args);
        Assert.True(r.ExitCode == 0, $"vmi {string.Join(' ', args)} failed: {r.StandardError}");
        return r;
    }

    private async Task CreateFeedAsync()
    {
        foreach (string k in new[] { "root", "targets", "snapshot", "timestamp" })
            await Ok("rules", "keygen", "--out", P(k + ".key"));
        await Ok("rules", "init", "--feed", P("feed"), "--root-key", P("root.key"), "--targets-key", P("targets.key.pub"),
            "--snapshot-key", P("snapshot.key.pub"), "--timestamp-key", P("timestamp.key.pub"));
    }

    private async Task<CliResult> PublishAsync(string targetsKey, params string[] rules)
    {
        var args = new List<string> { "rules", "publish", "--feed", P("feed"), "--rules" };
        args.AddRange(rules);
        args.AddRange(["--targets-key", targetsKey, "--snapshot-key", P("snapshot.key"), "--timestamp-key", P("timestamp.key")]);
        return await Vmi([.. args]);
    }

    [Fact]
    public async Task Keygen_init_publish_update_rotate_and_status_work_together()
    {
        await CreateFeedAsync();
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(P("root.key")));
        await File.WriteAllTextAsync(P("a.yar"), "rule a { strings: $a = \"first\" condition: $a }\n");
        await File.WriteAllTextAsync(P("net.rules"), "alert tcp any any -> any 80 (msg:\"x\"; sid:1;)\n");
        Assert.Equal(0, (await PublishAsync(P("targets.key"), P("a.yar"), P("net.rules"))).ExitCode);

        CliResult first = await Ok("rules", "update", "--feed", P("feed"), "--root", P("feed/1.root.json"), "--state", P("state"));
        Assert.Contains("installed bundle 1 (2 rule files", first.StandardOutput, StringComparison.Ordinal);
        Assert.Contains("up to date: bundle 1", (await Ok("rules", "update", "--state", P("state"))).StandardOutput, StringComparison.Ordinal);

        // Rotate the root and the targets key; the client follows with the old root as its anchor.
        await Ok("rules", "keygen", "--out", P("root2.key"));
        string targets2Id = (await Ok("rules", "keygen", "--out", P("targets2.key"))).StandardOutput.Split(' ')[0];
        await Ok("rules", "rotate-root", "--feed", P("feed"), "--sign-key", P("root.key"), P("root2.key"), "--root-key", P("root2.key.pub"), "--targets-key", P("targets2.key.pub"));
        await File.WriteAllTextAsync(P("b.yar"), "rule b { strings: $b = \"second\" condition: $b }\n");
        // The old targets key is no longer trusted by the feed's own root: publish refuses it.
        CliResult refused = await PublishAsync(P("targets.key"), P("a.yar"), P("b.yar"));
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("are targets keys of root v2", refused.StandardError, StringComparison.Ordinal);
        Assert.Equal(0, (await PublishAsync(P("targets2.key"), P("a.yar"), P("b.yar"))).ExitCode);
        CliResult second = await Ok("rules", "update", "--state", P("state"));
        Assert.Contains("installed bundle 2", second.StandardOutput, StringComparison.Ordinal);
        Assert.Contains("root v2", second.StandardOutput, StringComparison.Ordinal);

        CliResult status = await Ok("rules", "status", "--state", P("state"), "--json");
        using var doc = JsonDocument.Parse(status.StandardOutput);
        JsonElement active = doc.RootElement.GetProperty("active");
        Assert.Equal(2, active.GetProperty("version").GetInt64());
        Assert.Equal(2, active.GetProperty("rootVersion").GetInt64());
        Assert.Equal([targets2Id], active.GetProperty("signedBy").EnumerateArray().Select(k => k.GetString()));
        Assert.Equal(["a.yar", "b.yar"], active.GetProperty("files").EnumerateArray().Select(f => f.GetProperty("name").GetString()).Order());
        Assert.Equal(4, doc.RootElement.GetProperty("roles").GetArrayLength());
        Assert.True(File.Exists(Path.Combine(P("state"), "bundles", "2", "b.yar")));
    }

    [Fact]
    public async Task Bad_inputs_are_one_clear_error_each_and_change_nothing()
    {
        await CreateFeedAsync();
        await File.WriteAllTextAsync(P("a.yar"), "rule a { strings: $a = \"first\" condition: $a }\n");
        Assert.Equal(0, (await PublishAsync(P("targets.key"), P("a.yar"))).ExitCode);
        await Ok("rules", "update", "--feed", P("feed"), "--root", P("feed/1.root.json"), "--state", P("state"));

        // A rule file that does not compile is not published.
        await File.WriteAllTextAsync(P("broken.yar"), "rule broken { condition: and }\n");
        CliResult broken = await PublishAsync(P("targets.key"), P("broken.yar"));
        Assert.Equal(1, broken.ExitCode);
        Assert.Contains("broken.yar(1,", broken.StandardError, StringComparison.Ordinal);
        Assert.Contains("up to date: bundle 1", (await Ok("rules", "update", "--state", P("state"))).StandardOutput, StringComparison.Ordinal);

        // A private key readable by others is refused.
        File.SetUnixFileMode(P("targets.key"), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherRead);
        CliResult loose = await PublishAsync(P("targets.key"), P("a.yar"));
        Assert.Equal(1, loose.ExitCode);
        Assert.Contains("chmod 600", loose.StandardError, StringComparison.Ordinal);

        // A missing key file, a key file that is not one, an existing key file for keygen.
        Assert.Contains("does not exist", (await Vmi("rules", "publish", "--feed", P("feed"), "--rules", P("a.yar"), "--targets-key", P("nope.key"),
            "--snapshot-key", P("snapshot.key"), "--timestamp-key", P("timestamp.key"))).StandardError, StringComparison.Ordinal);
        await File.WriteAllTextAsync(P("junk.key"), "{\"hello\": 1}");
        File.SetUnixFileMode(P("junk.key"), UnixFileMode.UserRead | UnixFileMode.UserWrite);
        Assert.Contains("is not an Ed25519 private key file", (await Vmi("rules", "timestamp", "--feed", P("feed"), "--timestamp-key", P("junk.key"))).StandardError, StringComparison.Ordinal);
        Assert.Contains("never overwritten", (await Vmi("rules", "keygen", "--out", P("root.key"))).StandardError, StringComparison.Ordinal);

        // A feed over plain http, and an https feed nobody serves.
        CliResult http = await Vmi("rules", "update", "--feed", "http://127.0.0.1:9/", "--state", P("state"));
        Assert.Equal(1, http.ExitCode);
        Assert.Contains("not http://", http.StandardError, StringComparison.Ordinal);
        CliResult down = await Vmi("rules", "update", "--feed", "https://127.0.0.1:9/", "--state", P("state"));
        Assert.Equal(1, down.ExitCode);
        Assert.Contains("update rejected (unavailable)", down.StandardError, StringComparison.Ordinal);
        Assert.Contains("bundle 1 stays in force", down.StandardError, StringComparison.Ordinal);

        // A client without a trusted root, and an old root given by hand to a state that trusts one.
        CliResult noRoot = await Vmi("rules", "update", "--feed", P("feed"), "--state", P("fresh-state"));
        Assert.Contains("no trusted root yet", noRoot.StandardError, StringComparison.Ordinal);
        await Ok("rules", "keygen", "--out", P("root2.key"));
        await Ok("rules", "rotate-root", "--feed", P("feed"), "--sign-key", P("root.key"), P("root2.key"), "--root-key", P("root2.key.pub"));
        await Ok("rules", "update", "--state", P("state"));
        CliResult replay = await Vmi("rules", "update", "--root", P("feed/1.root.json"), "--state", P("state"));
        Assert.Equal(1, replay.ExitCode);
        Assert.Contains("update rejected (rollback)", replay.StandardError, StringComparison.Ordinal);

        // A timestamp re-signed to expire soon: the status warns before it does.
        await Ok("rules", "timestamp", "--feed", P("feed"), "--timestamp-key", P("timestamp.key"), "--valid-for", "timestamp=1h");
        await Ok("rules", "update", "--state", P("state"));
        CliResult status = await Ok("rules", "status", "--state", P("state"));
        Assert.Contains("warning: timestamp v", status.StandardOutput, StringComparison.Ordinal);
        Assert.Contains("bundle:  1", status.StandardOutput, StringComparison.Ordinal);
        Assert.Contains("rejected (rollback)", status.StandardOutput, StringComparison.Ordinal);
        CliResult badDuration = await Vmi("rules", "timestamp", "--feed", P("feed"), "--timestamp-key", P("timestamp.key"), "--valid-for", "timestamp=soon");
        Assert.Equal(2, badDuration.ExitCode);
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
            // Temporary folder.
        }
    }
}

/// <summary>With VMI_AUDIT_LOG and VMI_AUDIT_KEY set, management commands land in the signed, hash-chained audit trail.</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class AuditCliTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vmi-audit-cli-").FullName;

    private string P(string name) => Path.Combine(_dir, name);

    [Fact]
    public async Task Rule_commands_are_audited_and_the_log_verifies_and_any_edit_is_named()
    {
        Assert.Equal(0, (await VmiCli.RunAsync("audit", "keygen", "--out", P("audit.key"))).ExitCode);
        var env = new Dictionary<string, string> { ["VMI_AUDIT_LOG"] = P("audit.log"), ["VMI_AUDIT_KEY"] = P("audit.key") };
        async Task<CliResult> Vmi(params string[] args)
        {
            CliResult r = await VmiCli.RunAsync(env, args);
            output.WriteLine($"$ vmi {string.Join(' ', args)}\n{r.StandardOutput}{r.StandardError}(exit {r.ExitCode})");
            return r;
        }
        foreach (string k in new[] { "root", "targets", "snapshot", "timestamp" })
            Assert.Equal(0, (await Vmi("rules", "keygen", "--out", P(k + ".key"))).ExitCode);
        Assert.Equal(0, (await Vmi("rules", "init", "--feed", P("feed"), "--root-key", P("root.key"), "--targets-key", P("targets.key.pub"),
            "--snapshot-key", P("snapshot.key.pub"), "--timestamp-key", P("timestamp.key.pub"))).ExitCode);
        await File.WriteAllTextAsync(P("a.yar"), "rule a { strings: $a = \"first\" condition: $a }\n");
        Assert.Equal(0, (await Vmi("rules", "publish", "--feed", P("feed"), "--rules", P("a.yar"), "--targets-key", P("targets.key"),
            "--snapshot-key", P("snapshot.key"), "--timestamp-key", P("timestamp.key"))).ExitCode);
        Assert.Equal(0, (await Vmi("rules", "update", "--feed", P("feed"), "--root", P("feed/1.root.json"), "--state", P("state"))).ExitCode);
        // A refused publish (wrong key for the role) and a rejected update are audited as well.
        Assert.Equal(1, (await Vmi("rules", "publish", "--feed", P("feed"), "--rules", P("a.yar"), "--targets-key", P("snapshot.key"),
            "--snapshot-key", P("snapshot.key"), "--timestamp-key", P("timestamp.key"))).ExitCode);
        Assert.Equal(1, (await Vmi("rules", "update", "--root", P("feed/1.root.json"), "--feed", "https://127.0.0.1:9/", "--state", P("state"))).ExitCode);

        CliResult verify = await Vmi("audit", "verify", P("audit.log"), "--key", P("audit.key.pub"));
        Assert.Equal(0, verify.ExitCode);
        Assert.Contains("intact: 5 records", verify.StandardOutput, StringComparison.Ordinal);
        CliResult show = await Vmi("audit", "show", P("audit.log"), "--last", "10");
        foreach (string action in new[] { "rules.init", "rules.publish", "rules.update" })
            Assert.Contains(action, show.StandardOutput, StringComparison.Ordinal);
        Assert.Contains("rejected", show.StandardOutput, StringComparison.Ordinal);

        // An administrator edits a record (here: turns the rejected update into a success): verify names the line.
        string[] lines = await File.ReadAllLinesAsync(P("audit.log"));
        int edited = Array.FindIndex(lines, l => l.Contains("\"outcome\":\"rejected\"", StringComparison.Ordinal));
        Assert.True(edited >= 0);
        lines[edited] = lines[edited].Replace("\"outcome\":\"rejected\"", "\"outcome\":\"success\"", StringComparison.Ordinal);
        await File.WriteAllLinesAsync(P("audit.log"), lines);
        CliResult tampered = await Vmi("audit", "verify", P("audit.log"), "--key", P("audit.key.pub"));
        Assert.Equal(1, tampered.ExitCode);
        Assert.Contains($"TAMPERED at line {edited + 1}", tampered.StandardOutput + tampered.StandardError, StringComparison.Ordinal);

        // Half-configured auditing stops a command before it acts.
        CliResult half = await VmiCli.RunAsync(new Dictionary<string, string> { ["VMI_AUDIT_LOG"] = P("other.log") }, "rules", "update", "--state", P("state"));
        Assert.Equal(1, half.ExitCode);
        Assert.Contains("auditing needs both VMI_AUDIT_LOG", half.StandardError, StringComparison.Ordinal);
        Assert.False(File.Exists(P("other.log")));
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
            // Temporary folder.
        }
    }
}
