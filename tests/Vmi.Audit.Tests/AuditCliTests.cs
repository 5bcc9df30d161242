using Xunit;
namespace Vmi.Audit.Tests;

public sealed class AuditCliTests : IDisposable
{
    private readonly AuditTestKit _kit = new();

    public void Dispose() => _kit.Dispose();

    private string PublicKeyFile()
    {
        string path = Path.Combine(_kit.Directory, "audit.pub");
        File.WriteAllText(path, _kit.Key.Public.ToJson().ToJsonString());
        return path;
    }

    [Fact]
    public void Verify_prints_intact_and_exits_0()
    {
        _kit.WriteStandardLog();
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        Assert.Equal(0, AuditCli.Verify(_kit.LogPath, PublicKeyFile(), stdout, stderr));
        Assert.Equal("intact: 12 records, 4 checkpoints, last sequence 12, closed", stdout.ToString().Trim());
        Assert.Equal("", stderr.ToString());
    }

    [Fact]
    public void Verify_prints_the_first_bad_line_and_exits_1()
    {
        _kit.WriteStandardLog();
        List<string> lines = _kit.Lines();
        lines.RemoveAt(8);
        _kit.WriteLines(lines);
        var stdout = new StringWriter();
        Assert.Equal(1, AuditCli.Verify(_kit.LogPath, PublicKeyFile(), stdout, new StringWriter()));
        Assert.StartsWith("TAMPERED at line 9 (sequence 8): expected sequence 7, found 8", stdout.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void Verify_exits_2_for_a_missing_log_or_key()
    {
        var stderr = new StringWriter();
        Assert.Equal(2, AuditCli.Verify(Path.Combine(_kit.Directory, "none.log"), PublicKeyFile(), new StringWriter(), stderr));
        Assert.Contains("does not exist", stderr.ToString(), StringComparison.Ordinal);
        _kit.WriteStandardLog();
        stderr = new StringWriter();
        Assert.Equal(2, AuditCli.Verify(_kit.LogPath, Path.Combine(_kit.Directory, "none.pub"), new StringWriter(), stderr));
        Assert.Contains("does not exist", stderr.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void Show_prints_the_last_records_escaped()
    {
        using (var log = AuditLog.Open(_kit.LogPath, _kit.Key, _kit.Options()))
        {
            log.Append("cli:root", "rules.update", "rules-2026", AuditOutcome.Success, new Dictionary<string, string> { ["version"] = "42" });
            log.Append("service", "alert.raised", "vm 1\n\u001b[31mfake", AuditOutcome.Success);
            log.Append("api:bob", "monitor.stop", "vm-2", AuditOutcome.Rejected);
        }
        var stdout = new StringWriter();
        Assert.Equal(0, AuditCli.Show(_kit.LogPath, 2, stdout));
        string[] lines = stdout.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(3, lines.Length);
        Assert.Equal("2 2026-11-01T12:00:00.0000000Z service alert.raised \"vm 1\\u000a\\u001b[31mfake\" success", lines[0]);
        Assert.Equal("3 2026-11-01T12:00:00.0000000Z api:bob monitor.stop vm-2 rejected", lines[1]);
        Assert.Contains("not verified", lines[2], StringComparison.Ordinal);
    }

    [Fact]
    public void Keygen_writes_a_private_key_only_the_owner_can_read_and_refuses_to_overwrite()
    {
        string key = Path.Combine(_kit.Directory, "audit.key");
        var stdout = new StringWriter();
        Assert.Equal(0, AuditCli.Keygen(key, stdout));
        Assert.Contains("not by administrators", stdout.ToString(), StringComparison.Ordinal);
        if (!OperatingSystem.IsWindows())
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(key));
        Assert.True(File.Exists(key + ".pub"));
        Assert.Equal(2, AuditCli.Keygen(key, new StringWriter()));

        using var signer = Vmi.Updates.SigningKey.Load(key);
        string log = Path.Combine(_kit.Directory, "k.log");
        using (var l = AuditLog.Open(log, signer))
            l.Append("cli:root", "audit.keygen", key, AuditOutcome.Success);
        Assert.Equal(0, AuditCli.Verify(log, key + ".pub", new StringWriter(), new StringWriter()));
    }
}
