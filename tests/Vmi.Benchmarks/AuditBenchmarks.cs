using BenchmarkDotNet.Attributes;
using Vmi.Audit;
using Vmi.Updates;

namespace Vmi.Benchmarks;

/// <summary>
/// The audit log on a real file: appends with an fsync per record (the default: an acknowledged record
/// survives a power cut) and batched (fsync only at the checkpoints, every 100 records), each with the
/// signed checkpoints included; and verification of a 100 000-record log (hashing, parsing, re-encoding,
/// one Ed25519 verify per 100 records). Records/s = OperationsPerInvoke / mean seconds. A record with
/// three details is about 400 bytes on disk.
/// Run: <c>dotnet run -c Release --project tests/Vmi.Benchmarks -- --filter '*Audit*' --job short</c>.
/// </summary>
[MemoryDiagnoser]
public class AuditBenchmarks : IDisposable
{
    public const int FsyncRecords = 200;
    public const int BatchedRecords = 10_000;
    public const int VerifyRecords = 100_000;

    private static readonly Dictionary<string, string> Details = new()
    {
        ["vm"] = "vm-bench-01", ["detector"] = "syscall-table", ["key"] = "syscall-hook:62:0xffffffffc0a01234",
    };

    private string _directory = "";
    private SigningKey? _key;
    private AuditLog? _log;
    private string _verifyPath = "";

    [GlobalSetup(Targets = [nameof(AppendFsyncPerRecord)])]
    public void SetupFsync() => Setup(sync: true);

    [GlobalSetup(Targets = [nameof(AppendBatched)])]
    public void SetupBatched() => Setup(sync: false);

    private void Setup(bool sync)
    {
        _directory = Directory.CreateTempSubdirectory("vmi-audit-bench-").FullName;
        _key = SigningKey.Generate();
        _log = AuditLog.Open(Path.Combine(_directory, "audit.log"), _key, new AuditLogOptions { SyncEveryAppend = sync });
    }

    [GlobalSetup(Targets = [nameof(Verify)])]
    public void SetupVerify()
    {
        Setup(sync: false);
        _verifyPath = Path.Combine(_directory, "verify.log");
        using var log = AuditLog.Open(_verifyPath, _key!, new AuditLogOptions { SyncEveryAppend = false });
        for (int i = 0; i < VerifyRecords; i++)
            log.Append("service", "alert.raised", "vm-bench-01", AuditOutcome.Success, Details);
    }

    /// <summary>Bytes of the verify log, to turn records/s into MB/s.</summary>
    public long VerifyLogBytes => new FileInfo(_verifyPath).Length;

    [Benchmark(OperationsPerInvoke = FsyncRecords)]
    public long AppendFsyncPerRecord()
    {
        long last = 0;
        for (int i = 0; i < FsyncRecords; i++)
            last = _log!.Append("service", "alert.raised", "vm-bench-01", AuditOutcome.Success, Details).Sequence;
        return last;
    }

    [Benchmark(OperationsPerInvoke = BatchedRecords)]
    public long AppendBatched()
    {
        long last = 0;
        for (int i = 0; i < BatchedRecords; i++)
            last = _log!.Append("service", "alert.raised", "vm-bench-01", AuditOutcome.Success, Details).Sequence;
        _log!.Flush();
        return last;
    }

    [Benchmark(OperationsPerInvoke = VerifyRecords)]
    public long Verify()
    {
        AuditVerification v = AuditVerifier.Verify(_verifyPath, _key!.Public);
        return v.Intact ? v.Records : throw new InvalidOperationException(v.Reason);
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _log?.Dispose();
        _log = null;
        _key?.Dispose();
        _key = null;
        if (_directory.Length > 0 && Directory.Exists(_directory))
            Directory.Delete(_directory, recursive: true);
        GC.SuppressFinalize(this);
    }
}
