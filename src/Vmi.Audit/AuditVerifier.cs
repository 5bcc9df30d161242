using System.Security.Cryptography;
using Vmi.Updates;

namespace Vmi.Audit;

/// <summary>Options for <see cref="AuditVerifier.Verify(string, UpdatePublicKey, AuditVerifyOptions?)"/>.</summary>
public sealed class AuditVerifyOptions
{
    /// <summary>
    /// An anchor kept outside the log (a monitoring system, a ticket, yesterday's report): the log must
    /// reach at least this sequence. Without it, truncation back to exactly a checkpoint is not detectable.
    /// </summary>
    public long? ExpectedLastSequence { get; init; }

    /// <summary>
    /// Verifying a live log: records after the last checkpoint (at most N records or T seconds' worth)
    /// are reported as a warning instead of as tampering.
    /// </summary>
    public bool AllowUnsealedTail { get; init; }
}

/// <summary>The outcome of verifying an audit log. When <see cref="Intact"/> is false, <see cref="BadLine"/> is the first bad line.</summary>
public sealed class AuditVerification
{
    public required bool Intact { get; init; }

    /// <summary>Records read before verification stopped (all of them when intact).</summary>
    public required long Records { get; init; }

    /// <summary>Checkpoints read before verification stopped.</summary>
    public required long Checkpoints { get; init; }

    /// <summary>The last good record's sequence (0 if none).</summary>
    public required long LastSequence { get; init; }

    /// <summary>The log ends with a close checkpoint: the service shut it cleanly, and nothing was cut off after that.</summary>
    public required bool Closed { get; init; }

    /// <summary>1-based line number of the first bad line (for a missing line: the line where it should be).</summary>
    public long? BadLine { get; init; }

    /// <summary>The sequence of the first bad record, or the one a bad checkpoint claims to cover, when known.</summary>
    public long? BadSequence { get; init; }

    /// <summary>What is wrong, in words.</summary>
    public string? Reason { get; init; }

    /// <summary>Things that are not tampering but limit what the log proves (records sealed only after a crash, an open log).</summary>
    public required IReadOnlyList<string> Warnings { get; init; }
}

/// <summary>
/// Verifies an audit log written by <see cref="AuditLog"/> against the audit public key.
/// </summary>
/// <remarks>
/// <para>Detected, naming the first bad line: a changed record (its hash no longer matches; or, if the hash
/// was recomputed, the next line's <c>prev</c> or the covering checkpoint's signed hash no longer matches),
/// removed records (a sequence gap), inserted records (a repeated sequence or a broken <c>prev</c>),
/// reordered records, a removed, moved, duplicated or changed checkpoint, a checkpoint signed by another
/// key, records appended after a close checkpoint, a file that ends mid-line, and records at the end that no
/// signed checkpoint covers (truncation, or appending without the key).</para>
/// <para>Not detectable from the file alone: truncation back to exactly a checkpoint (including deleting the
/// whole file, or replacing it with an older copy) — unless the log was closed cleanly
/// (<see cref="AuditVerification.Closed"/>) and is expected to be, or an anchor is given with
/// <see cref="AuditVerifyOptions.ExpectedLastSequence"/>; rewriting by someone who holds the audit private
/// key; and records appended while the service was down after an unclean shutdown, which the next open
/// checkpoint seals — those are reported in <see cref="AuditVerification.Warnings"/>. The log also cannot say
/// whether the service was asked to record everything it should have (an action never logged).</para>
/// </remarks>
public static class AuditVerifier
{
    /// <summary>Verifies the log at <paramref name="path"/>. Tampering is a result, never an exception.</summary>
    /// <exception cref="AuditLogException">The file cannot be opened or read.</exception>
    public static AuditVerification Verify(string path, UpdatePublicKey key, AuditVerifyOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(key);
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, FileOptions.SequentialScan);
            return Verify(stream, key, options);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new AuditLogException($"cannot read the audit log {path}: {e.Message}", e);
        }
    }

    /// <summary>Verifies a log read from <paramref name="stream"/> (from its current position to its end).</summary>
    /// <exception cref="IOException">The stream fails.</exception>
    public static AuditVerification Verify(Stream stream, UpdatePublicKey key, AuditVerifyOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(key);
        options ??= new AuditVerifyOptions();
        var checker = new ChainChecker(key);
        checker.Run(stream);
        if (checker.Failure is { } f)
            return checker.Result(f.Line, f.Sequence, f.Reason);
        if (checker.LastSequence > checker.LastCoveredSequence)
        {
            string what = $"records {checker.LastCoveredSequence + 1}..{checker.LastSequence} at the end are not covered by a signed checkpoint";
            if (!options.AllowUnsealedTail)
                return checker.Result(checker.FirstUnsealedLine, checker.LastCoveredSequence + 1,
                    what + ": the log was truncated (a checkpoint removed), records were appended without the audit key, or the service is still running or crashed (verify a live log with the unsealed tail allowed)");
            checker.Warnings.Add(what + " (allowed: the log is live)");
        }
        if (options.ExpectedLastSequence is long expected && checker.LastSequence < expected)
            return checker.Result(checker.Lines + 1, checker.LastSequence + 1,
                $"the log ends at sequence {checker.LastSequence}, but sequence {expected} was expected: it was truncated");
        if (!checker.Closed && checker.Lines > 0)
            checker.Warnings.Add("the log does not end with a close checkpoint: the service is running or stopped uncleanly, or the log was truncated back to a checkpoint (give the expected last sequence to rule that out)");
        return checker.Result(null, null, null);
    }
}

/// <summary>The line-by-line chain check shared by <see cref="AuditVerifier"/> and <see cref="AuditLog.Open"/>.</summary>
internal sealed class ChainChecker(UpdatePublicKey key)
{
    public readonly record struct Bad(long Line, long? Sequence, string Reason);

    public Bad? Failure { get; private set; }
    public long Lines { get; private set; }
    public long Records { get; private set; }
    public long CheckpointCount { get; private set; }
    public long LastSequence { get; private set; }
    public string LastRecordHash { get; private set; } = AuditFormat.Zero;
    public string LastLineHash { get; private set; } = AuditFormat.Zero;
    public long LastCoveredSequence { get; private set; }
    public long FirstUnsealedLine { get; private set; }
    public bool Closed { get; private set; }
    public long CloseLine { get; private set; }
    public List<string> Warnings { get; } = [];

    private long _lastRecordLine;
    private bool _lastLineWasRecord;

    public void Run(Stream stream)
    {
        var reader = new BoundedLineReader(stream);
        while (Failure is null)
        {
            BoundedLineReader.Status status = reader.Next(out ReadOnlyMemory<byte> line);
            switch (status)
            {
                case BoundedLineReader.Status.End:
                    return;
                case BoundedLineReader.Status.TooLong:
                    Failure = new Bad(Lines + 1, null, $"line longer than {AuditFormat.MaxLineBytes} bytes: garbage or a forged line");
                    return;
                case BoundedLineReader.Status.Unterminated:
                    Failure = new Bad(Lines + 1, null, "the file ends mid-line: it was truncated, or a write was interrupted");
                    return;
                default:
                    Line(line);
                    break;
            }
        }
    }

    public AuditVerification Result(long? badLine, long? badSequence, string? reason) => new()
    {
        Intact = reason is null,
        Records = Records,
        Checkpoints = CheckpointCount,
        LastSequence = LastSequence,
        Closed = Closed,
        BadLine = badLine,
        BadSequence = badSequence,
        Reason = reason,
        Warnings = Warnings,
    };

    private void Line(ReadOnlyMemory<byte> bytes)
    {
        long line = ++Lines;
        AuditFormat.Parsed? parsed = AuditFormat.TryParse(bytes, out string error);
        if (parsed is null)
        {
            Failure = new Bad(line, null, error);
            return;
        }
        string lineHash = AuditFormat.LineHash(bytes.Span);
        if (parsed.Value.Record is { } r)
            Record(line, r, parsed.Value.SignedBytes, lineHash);
        else
            Checkpoint(line, parsed.Value.Checkpoint!, parsed.Value.SignedBytes, lineHash);
    }

    private void Record(long line, AuditRecord r, byte[] unsigned, string lineHash)
    {
        long seq = r.Sequence;
        if (Convert.ToHexStringLower(SHA256.HashData(unsigned)) != r.Hash)
        {
            Failure = new Bad(line, seq, "hash mismatch: the record was changed after it was written");
            return;
        }
        if (Closed)
        {
            Failure = new Bad(line, seq, $"record appended after the close checkpoint at line {CloseLine}, not covered by any signed checkpoint: the audit service did not write it (it starts every session with an open checkpoint), so it was appended without the audit key");
            return;
        }
        if (seq == LastSequence && LastSequence > 0)
        {
            Failure = r.Prev == LastLineHash
                ? new Bad(line, seq, $"sequence {seq} appears twice: this record was inserted")
                : new Bad(_lastRecordLine, seq, $"sequence {seq} appears twice: this record was inserted (the record after it is not chained to it)");
            return;
        }
        if (seq > LastSequence + 1)
        {
            Failure = new Bad(line, seq, $"expected sequence {LastSequence + 1}, found {seq}: record(s) {LastSequence + 1}..{seq - 1} removed, or records reordered");
            return;
        }
        if (seq <= LastSequence)
        {
            Failure = new Bad(line, seq, $"sequence {seq} after {LastSequence}: records reordered or inserted");
            return;
        }
        if (r.Checkpoints != CheckpointCount)
        {
            Failure = r.Checkpoints > CheckpointCount
                ? new Bad(line, seq, $"{r.Checkpoints - CheckpointCount} checkpoint(s) missing before this record: a checkpoint line was removed")
                : new Bad(line, seq, $"this record follows {r.Checkpoints} checkpoint(s) but the file has {CheckpointCount} before it: a checkpoint was inserted");
            return;
        }
        if (r.Prev != LastLineHash)
        {
            Failure = _lastLineWasRecord
                ? new Bad(_lastRecordLine, LastSequence, $"record changed and its hash recomputed to hide it: the next record (line {line}) is not chained to it")
                : new Bad(line, seq, "prev does not match the line before it: this record was forged, or a line before it was changed");
            return;
        }
        if (LastSequence == LastCoveredSequence)
            FirstUnsealedLine = line;
        Records++;
        LastSequence = seq;
        LastRecordHash = r.Hash;
        LastLineHash = lineHash;
        _lastRecordLine = line;
        _lastLineWasRecord = true;
    }

    private void Checkpoint(long line, AuditCheckpoint c, byte[] unsigned, string lineHash)
    {
        long seq = c.Sequence;
        if (c.KeyId != key.KeyId)
        {
            Failure = new Bad(line, seq, $"checkpoint signed by key {c.KeyId[..8]}, not by the audit key {key.ShortId}: forged (or verify with the right public key)");
            return;
        }
        if (!key.Verify(unsigned, Convert.FromHexString(c.Signature)))
        {
            Failure = new Bad(line, seq, "checkpoint signature is invalid: the checkpoint was changed or forged");
            return;
        }
        if (seq > LastSequence)
        {
            Failure = new Bad(line, seq, $"the signed checkpoint covers sequence {seq}, but the last record before it is {LastSequence}: record(s) {LastSequence + 1}..{seq} removed");
            return;
        }
        if (seq < LastSequence)
        {
            Failure = new Bad(line, seq, $"the signed checkpoint covers sequence {seq}, but records up to {LastSequence} precede it: records were inserted before it, or it was moved");
            return;
        }
        if (c.Hash != LastRecordHash)
        {
            Failure = LastSequence > 0
                ? new Bad(_lastRecordLine, seq, $"record changed and its hash recomputed to hide it: the signed checkpoint at line {line} vouches for a different hash")
                : new Bad(line, seq, "the signed checkpoint's hash does not match the start of the log");
            return;
        }
        if (c.Prev != LastLineHash)
        {
            Failure = new Bad(line, seq, "checkpoint is not chained to the line before it: it was moved or duplicated, or a line before it was removed");
            return;
        }
        if (Closed && c.Kind != CheckpointKind.Open)
        {
            Failure = new Bad(line, seq, $"a {AuditCheckpoint.KindName(c.Kind)} checkpoint follows the close checkpoint at line {CloseLine}; only an open checkpoint may");
            return;
        }
        if (c.Kind == CheckpointKind.Open && seq > LastCoveredSequence)
            Warnings.Add($"records {LastCoveredSequence + 1}..{seq} (from line {FirstUnsealedLine}) were left unsealed by an unclean shutdown and sealed by the open checkpoint at line {line}; anyone who could write the log while the service was down could have appended them");
        CheckpointCount++;
        LastCoveredSequence = seq;
        LastLineHash = lineHash;
        Closed = c.Kind == CheckpointKind.Close;
        if (Closed)
            CloseLine = line;
        _lastLineWasRecord = false;
    }
}
