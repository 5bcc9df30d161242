using Xunit;
using System.Security.Cryptography;
using System.Text;
using Vmi.Updates;

namespace Vmi.Audit.Tests;

internal sealed class FakeTime : TimeProvider
{
    public DateTimeOffset UtcNow { get; set; } = new(2026, 11, 1, 12, 0, 0, TimeSpan.Zero);

    public override DateTimeOffset GetUtcNow() => UtcNow;

    public void Advance(TimeSpan by) => UtcNow += by;
}

/// <summary>A temp directory with an audit key and helpers to write and tamper with logs.</summary>
internal sealed class AuditTestKit : IDisposable
{
    public AuditTestKit()
    {
        Directory = System.IO.Directory.CreateTempSubdirectory("vmi-audit-test-").FullName;
        Key = SigningKey.FromSeed(Enumerable.Repeat((byte)7, 32).ToArray());
        OtherKey = SigningKey.FromSeed(Enumerable.Repeat((byte)9, 32).ToArray());
        LogPath = Path.Combine(Directory, "audit.log");
    }

    public string Directory { get; }
    public string LogPath { get; }
    public SigningKey Key { get; }
    public SigningKey OtherKey { get; }
    public FakeTime Time { get; } = new();

    public AuditLogOptions Options(int every = 5) => new() { CheckpointEveryRecords = every, Time = Time, SyncEveryAppend = false };

    /// <summary>
    /// Writes 12 records with a checkpoint every 5. Lines: 1 open checkpoint; 2–6 records 1–5; 7 checkpoint;
    /// 8–12 records 6–10; 13 checkpoint; 14–15 records 11–12; 16 close checkpoint.
    /// </summary>
    public void WriteStandardLog(int records = 12)
    {
        using var log = AuditLog.Open(LogPath, Key, Options());
        for (int i = 1; i <= records; i++)
        {
            Time.Advance(TimeSpan.FromSeconds(1));
            log.Append("cli:root", i % 2 == 0 ? "rules.update" : "monitor.start", "vm-" + i, AuditOutcome.Success,
                new Dictionary<string, string> { ["n"] = i.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        }
    }

    public AuditVerification Verify(AuditVerifyOptions? options = null) => AuditVerifier.Verify(LogPath, Key.Public, options);

    public List<string> Lines()
    {
        string text = File.ReadAllText(LogPath);
        var lines = text.Split('\n').ToList();
        Assert.Equal("", lines[^1]);
        lines.RemoveAt(lines.Count - 1);
        return lines;
    }

    public void WriteLines(IEnumerable<string> lines) => File.WriteAllText(LogPath, string.Concat(lines.Select(l => l + "\n")));

    public static AuditRecord ParseRecord(string line) =>
        AuditFormat.TryParse(Encoding.UTF8.GetBytes(line), out string error)?.Record ?? throw new InvalidOperationException(error);

    public static AuditCheckpoint ParseCheckpoint(string line) =>
        AuditFormat.TryParse(Encoding.UTF8.GetBytes(line), out string error)?.Checkpoint ?? throw new InvalidOperationException(error);

    public static string LineHash(string line) => AuditFormat.LineHash(Encoding.UTF8.GetBytes(line));

    /// <summary>A record line with a correct hash of its own, as a forger with the format spec would write it.</summary>
    public static string ForgeRecord(long sequence, string subject, long checkpoints, string prev, string time = "2026-11-01T12:30:00.0000000Z", string action = "rules.update")
    {
        var details = new Dictionary<string, string> { ["forged"] = "yes" };
        byte[] unsigned = AuditFormat.EncodeRecord(sequence, time, "cli:root", action, subject, "success", details, checkpoints, prev, null);
        string hash = Convert.ToHexStringLower(SHA256.HashData(unsigned));
        return Encoding.UTF8.GetString(AuditFormat.EncodeRecord(sequence, time, "cli:root", action, subject, "success", details, checkpoints, prev, hash));
    }

    /// <summary>The same record with another subject and its own hash recomputed.</summary>
    public static string Rehash(AuditRecord r, string subject) =>
        EncodeWithHash(r.Sequence, AuditFormat.FormatTime(r.Time), r.Actor, r.Action, subject, AuditRecord.OutcomeName(r.Outcome), r.Details, r.Checkpoints, r.Prev);

    private static string EncodeWithHash(long seq, string time, string actor, string action, string subject, string outcome, IReadOnlyDictionary<string, string> details, long cps, string prev)
    {
        byte[] unsigned = AuditFormat.EncodeRecord(seq, time, actor, action, subject, outcome, details, cps, prev, null);
        string hash = Convert.ToHexStringLower(SHA256.HashData(unsigned));
        return Encoding.UTF8.GetString(AuditFormat.EncodeRecord(seq, time, actor, action, subject, outcome, details, cps, prev, hash));
    }

    /// <summary>A checkpoint signed by <paramref name="signer"/> that claims key id <paramref name="keyId"/>.</summary>
    public static string SignCheckpoint(SigningKey signer, string keyId, string kind, long sequence, string hash, string prev, string time = "2026-11-01T12:30:00.0000000Z")
    {
        byte[] unsigned = AuditFormat.EncodeCheckpoint(kind, sequence, hash, time, keyId, prev, null);
        string sig = Convert.ToHexStringLower(signer.Sign(unsigned));
        return Encoding.UTF8.GetString(AuditFormat.EncodeCheckpoint(kind, sequence, hash, time, keyId, prev, sig));
    }

    public void Dispose()
    {
        Key.Dispose();
        OtherKey.Dispose();
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
