using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Vmi.Updates;

namespace Vmi.Audit;

/// <summary>Options for <see cref="AuditLog.Open"/>.</summary>
public sealed class AuditLogOptions
{
    /// <summary>A checkpoint after this many records (default 100).</summary>
    public int CheckpointEveryRecords { get; init; } = 100;

    /// <summary>A checkpoint when this much time has passed since the last one, at the next append or <see cref="AuditLog.Flush"/> (default 60 s).</summary>
    public TimeSpan CheckpointInterval { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// True (default): fsync after every record, so an acknowledged record survives a power cut.
    /// False: records reach the OS at once but are fsynced only at checkpoints and <see cref="AuditLog.Flush"/>;
    /// a power cut can lose the records since the last checkpoint (a crash of the process loses nothing).
    /// </summary>
    public bool SyncEveryAppend { get; init; } = true;

    /// <summary>The clock (tests substitute their own).</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;
}

/// <summary>
/// An append-only, hash-chained audit log with Ed25519-signed checkpoints (see <see cref="AuditRecord"/> and
/// <see cref="AuditCheckpoint"/> for the line format). There is deliberately no way to change or remove a
/// record through this type: the file is opened with <see cref="FileMode.Append"/>, and opening always
/// begins with a signed <c>open</c> checkpoint and ends (on <see cref="Dispose"/>) with a <c>close</c> one.
/// </summary>
/// <remarks>
/// The signing key belongs to the audit service account, not to administrators: whoever holds it can
/// rewrite history undetectably. Verifiers need only the public key (<c>KEY.pub</c>).
/// Thread-safe: appends are serialized, so sequences are contiguous.
/// </remarks>
public sealed partial class AuditLog : IDisposable
{
    private readonly Lock _lock = new();
    private readonly FileStream _file;
    private readonly FileStream _writerLock;
    private readonly SigningKey _signer;
    private readonly AuditLogOptions _options;
    private long _sequence;
    private long _checkpoints;
    private long _covered;
    private string _lastRecordHash;
    private string _lastLineHash;
    private DateTimeOffset _lastCheckpointTime;
    private bool _faulted;
    private bool _disposed;

    private AuditLog(string path, FileStream writerLock, FileStream file, SigningKey signer, AuditLogOptions options, ChainChecker state)
    {
        Path = path;
        _writerLock = writerLock;
        _file = file;
        _signer = signer;
        _options = options;
        _sequence = state.LastSequence;
        _checkpoints = state.CheckpointCount;
        _covered = state.LastCoveredSequence;
        _lastRecordHash = state.LastRecordHash;
        _lastLineHash = state.LastLineHash;
    }

    public string Path { get; }

    /// <summary>The last record's sequence (0 before the first).</summary>
    public long LastSequence
    {
        get
        {
            lock (_lock)
                return _sequence;
        }
    }

    /// <summary>
    /// Opens (or creates) the log, verifies all of it with <paramref name="signer"/>'s public key, and writes an
    /// <c>open</c> checkpoint. The chain continues from the last record.
    /// </summary>
    /// <exception cref="AuditLogException">The log fails verification (a corrupt or tampered tail is never appended to), was signed with another key, or cannot be opened.</exception>
    public static AuditLog Open(string path, SigningKey signer, AuditLogOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(signer);
        options ??= new AuditLogOptions();
        if (options.CheckpointEveryRecords < 1)
            throw new ArgumentOutOfRangeException(nameof(options), "CheckpointEveryRecords must be at least 1");
        FileStream writerLock;
        try
        {
            // One writer per log: two would fork the chain. The lock file (never deleted, so there is no
            // race between unlinking and locking) is held exclusively while the log is open; readers do not
            // need it, so 'vmi audit verify' works on a live log.
            writerLock = new FileStream(path + ".lock", FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException e) when (File.Exists(path + ".lock"))
        {
            throw new AuditLogException($"another process (or another AuditLog in this one) is writing the audit log {path}: its lock file {path}.lock is held. Only one writer may append; stop the other one first.", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new AuditLogException($"cannot create the lock file {path}.lock for the audit log: {e.Message}", e);
        }
        FileStream file;
        try
        {
            // Append-only: the OS positions every write at the end, and this stream cannot seek back.
            // FileShare.Read: readers (verify, show) are fine, a second writer is not.
            var fileOptions = new FileStreamOptions { Mode = FileMode.Append, Access = FileAccess.Write, Share = FileShare.Read, BufferSize = 0 };
            if (!OperatingSystem.IsWindows())
                fileOptions.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead;
            file = new FileStream(path, fileOptions);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            writerLock.Dispose();
            throw new AuditLogException($"cannot open the audit log {path} for appending: {e.Message}", e);
        }
        try
        {
            var checker = new ChainChecker(signer.Public);
            using (var read = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, FileOptions.SequentialScan))
                checker.Run(read);
            if (checker.Failure is { } f)
                throw new AuditLogException(
                    $"the audit log {path} fails verification at line {f.Line}{(f.Sequence is long s ? $" (sequence {s})" : "")}: {f.Reason}. " +
                    "Refusing to append after it. Keep the file as evidence, move it aside, and start a new log; 'vmi audit verify' shows the details.");
            var log = new AuditLog(path, writerLock, file, signer, options, checker);
            lock (log._lock)
                log.WriteCheckpoint(CheckpointKind.Open);
            return log;
        }
        catch (AuditLogException)
        {
            file.Dispose();
            writerLock.Dispose();
            throw;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            file.Dispose();
            writerLock.Dispose();
            throw new AuditLogException($"cannot read the audit log {path}: {e.Message}", e);
        }
    }

    [GeneratedRegex(@"^[a-z0-9]+(-[a-z0-9]+)*(\.[a-z0-9]+(-[a-z0-9]+)*)*$", RegexOptions.CultureInvariant)]
    private static partial Regex ActionPattern();

    /// <summary>Appends one record (and a checkpoint when one is due). Returns the record as written.</summary>
    /// <param name="actor">Who acted, e.g. <c>"cli:root"</c> or <c>"service"</c>; not empty.</param>
    /// <param name="action">Dotted kebab-case, e.g. <c>"rules.update"</c>.</param>
    /// <param name="subject">What was acted on; may be empty.</param>
    /// <param name="outcome">How it ended.</param>
    /// <param name="details">Further facts; control characters and any Unicode are kept (escaped on disk).</param>
    /// <exception cref="ArgumentException">An empty actor, a malformed action, or a record over 1 MiB.</exception>
    /// <exception cref="AuditLogException">The write failed; the log accepts no more records (reopen it).</exception>
    /// <exception cref="ObjectDisposedException">The log was closed.</exception>
    public AuditRecord Append(string actor, string action, string subject, AuditOutcome outcome, IReadOnlyDictionary<string, string>? details = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(actor);
        ArgumentNullException.ThrowIfNull(action);
        ArgumentNullException.ThrowIfNull(subject);
        if (action.Length > 200 || !ActionPattern().IsMatch(action))
            throw new ArgumentException($"audit action \"{action}\" is not dotted kebab-case like \"rules.update\" or \"monitor.start\"", nameof(action));
        string outcomeName = AuditRecord.OutcomeName(outcome);
        actor = AuditFormat.Clean(actor);
        subject = AuditFormat.Clean(subject);
        var clean = new Dictionary<string, string>(StringComparer.Ordinal);
        if (details is not null)
        {
            foreach (var (k, v) in details)
                clean[AuditFormat.Clean(k)] = AuditFormat.Clean(v ?? "");
        }
        lock (_lock)
        {
            ThrowIfUnusable();
            long seq = _sequence + 1;
            DateTimeOffset now = _options.Time.GetUtcNow();
            string time = AuditFormat.FormatTime(now);
            byte[] unsigned = AuditFormat.EncodeUnsignedRecord(seq, time, actor, action, subject, outcomeName, clean, _checkpoints, _lastLineHash, out int hashAt);
            string hash = Convert.ToHexStringLower(SHA256.HashData(unsigned));
            byte[] line = AuditFormat.WithHash(unsigned, hashAt, hash);
            if (line.Length > AuditFormat.MaxLineBytes)
                throw new ArgumentException($"the audit record is {line.Length} bytes; at most {AuditFormat.MaxLineBytes} are allowed (shorten the details)", nameof(details));
            var record = new AuditRecord
            {
                Sequence = seq, Time = AuditFormat.TryParseTime(time, out var t) ? t : now, Actor = actor, Action = action, Subject = subject,
                Outcome = outcome, Details = clean, Checkpoints = _checkpoints, Prev = _lastLineHash, Hash = hash,
            };
            WriteLine(line, _options.SyncEveryAppend);
            _sequence = seq;
            _lastRecordHash = hash;
            if (_sequence - _covered >= _options.CheckpointEveryRecords || now - _lastCheckpointTime >= _options.CheckpointInterval)
                WriteCheckpoint(CheckpointKind.Periodic);
            return record;
        }
    }

    /// <summary>Writes a checkpoint now if any record is not yet covered by one, and fsyncs.</summary>
    /// <exception cref="AuditLogException">The write failed.</exception>
    public void Checkpoint()
    {
        lock (_lock)
        {
            ThrowIfUnusable();
            if (_sequence > _covered)
                WriteCheckpoint(CheckpointKind.Periodic);
            else
                Sync();
        }
    }

    /// <summary>Fsyncs, writing a checkpoint first if the checkpoint interval has passed with records uncovered.</summary>
    /// <exception cref="AuditLogException">The write failed.</exception>
    public void Flush()
    {
        lock (_lock)
        {
            ThrowIfUnusable();
            if (_sequence > _covered && _options.Time.GetUtcNow() - _lastCheckpointTime >= _options.CheckpointInterval)
                WriteCheckpoint(CheckpointKind.Periodic);
            else
                Sync();
        }
    }

    /// <summary>Writes the <c>close</c> checkpoint and closes the file.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed)
                return;
            _disposed = true;
            try
            {
                if (!_faulted)
                    WriteCheckpoint(CheckpointKind.Close);
            }
            catch (AuditLogException)
            {
                // Dispose must not throw; the missing close checkpoint is itself what verify reports.
            }
            finally
            {
                _file.Dispose();
                _writerLock.Dispose();
            }
        }
    }

    private void ThrowIfUnusable()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_faulted)
            throw new AuditLogException($"the audit log {Path} had a write failure and accepts no more records; reopen it (opening verifies it first).");
    }

    private void WriteCheckpoint(CheckpointKind kind)
    {
        DateTimeOffset now = _options.Time.GetUtcNow();
        string time = AuditFormat.FormatTime(now), kindName = AuditCheckpoint.KindName(kind);
        string hash = _sequence == 0 ? AuditFormat.Zero : _lastRecordHash;
        byte[] unsigned = AuditFormat.EncodeCheckpoint(kindName, _sequence, hash, time, _signer.KeyId, _lastLineHash, null);
        string sig = Convert.ToHexStringLower(_signer.Sign(unsigned));
        WriteLine(AuditFormat.EncodeCheckpoint(kindName, _sequence, hash, time, _signer.KeyId, _lastLineHash, sig), sync: true);
        _checkpoints++;
        _covered = _sequence;
        _lastCheckpointTime = now;
    }

    private void WriteLine(byte[] line, bool sync)
    {
        try
        {
            // One write of line + newline: a crash leaves at most one partial last line, which Open refuses.
            byte[] buffer = new byte[line.Length + 1];
            line.CopyTo(buffer, 0);
            buffer[^1] = (byte)'\n';
            _file.Write(buffer);
            if (sync)
                _file.Flush(flushToDisk: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _faulted = true;
            throw new AuditLogException($"cannot write to the audit log {Path}: {e.Message}", e);
        }
        _lastLineHash = AuditFormat.LineHash(line);
    }

    private void Sync()
    {
        try
        {
            _file.Flush(flushToDisk: true);
        }
        catch (IOException e)
        {
            _faulted = true;
            throw new AuditLogException($"cannot sync the audit log {Path}: {e.Message}", e);
        }
    }
}
