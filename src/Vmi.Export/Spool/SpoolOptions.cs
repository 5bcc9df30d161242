namespace Vmi.Export.Spool;

/// <summary>What an append does when the spool has reached <see cref="SpoolOptions.MaxBytes"/>.</summary>
public enum SpoolFullPolicy
{
    /// <summary>
    /// Refuse the new record with <see cref="SpoolFullException"/> and count it in
    /// <see cref="SpoolCounters.Rejected"/>: nothing already spooled is lost, the producer is told at once
    /// (back-pressure). The default: an alert already on disk is never thrown away to make room.
    /// </summary>
    Reject = 0,
    /// <summary>
    /// Delete the oldest whole segment (its unsent records counted in <see cref="SpoolCounters.Dropped"/>)
    /// and accept the new record: the freshest data wins during a long outage.
    /// </summary>
    DropOldest = 1,
}

/// <summary>How far an appended record is pushed before the append returns.</summary>
public enum SpoolDurability
{
    /// <summary>Handed to the operating system (one write per append call): survives the process being killed, not a power cut.</summary>
    ProcessCrash = 0,
    /// <summary>fsync'd (one per append call): survives a power cut too, at the price of one disk flush per call.</summary>
    PowerLoss = 1,
}

/// <summary>Settings of a <see cref="DurableSpool"/>.</summary>
public sealed record SpoolOptions
{
    /// <summary>Folder of the segment files, the cursor and the dead-letter file (created when missing).</summary>
    public required string Directory { get; init; }

    /// <summary>Bound on the disk the segments may use, headers included.</summary>
    public long MaxBytes { get; init; } = 256L << 20;

    /// <summary>A segment is closed and a new one started past this size; whole segments are deleted once acknowledged.</summary>
    public long SegmentBytes { get; init; } = 16L << 20;

    /// <summary>Largest record accepted; on open, a length field above it marks corruption.</summary>
    public int MaxRecordBytes { get; init; } = 4 << 20;

    public SpoolFullPolicy FullPolicy { get; init; } = SpoolFullPolicy.Reject;

    public SpoolDurability Durability { get; init; } = SpoolDurability.ProcessCrash;
}

/// <summary>What the spool did since it was opened.</summary>
/// <param name="Appended">Records accepted.</param>
/// <param name="Rejected">Records refused because the spool was full (<see cref="SpoolFullPolicy.Reject"/>).</param>
/// <param name="Dropped">Unsent records deleted to make room (<see cref="SpoolFullPolicy.DropOldest"/>).</param>
/// <param name="RecoveredTailBytes">Bytes of torn or corrupt records cut off when the spool was opened.</param>
/// <param name="Pending">Records appended and not yet acknowledged.</param>
/// <param name="Bytes">Disk used by the segments now.</param>
public readonly record struct SpoolCounters(long Appended, long Rejected, long Dropped, long RecoveredTailBytes, long Pending, long Bytes);

/// <summary>A record read back from the spool with its position.</summary>
/// <param name="Sequence">Position in the spool; <see cref="DurableSpool.Commit"/> takes the position after the last acknowledged one.</param>
/// <param name="Item">The record.</param>
public readonly record struct SpoolRecord(long Sequence, ExportItem Item);
