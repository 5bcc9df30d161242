using Vmi.Core;

namespace Vmi.Pipeline.Journal;

/// <summary>A journal cannot be read or written.</summary>
public class JournalException : VmiException
{
    public JournalException() { }
    public JournalException(string message) : base(message) { }
    public JournalException(string message, Exception innerException) : base(message, innerException) { }
}

/// <summary>The bytes are not a journal, or a record is not an event.</summary>
public class JournalFormatException : JournalException
{
    public JournalFormatException() { }
    public JournalFormatException(string message) : base(message) { }
    public JournalFormatException(string message, Exception innerException) : base(message, innerException) { }

    /// <summary>Byte offset of the bad header or record.</summary>
    public long Offset { get; init; }

    /// <summary>Index of the bad record (0-based), -1 for the header.</summary>
    public long Record { get; init; } = -1;
}

/// <summary>A record claims a length over the limit: the journal is corrupt or hostile, and reading stops before allocating it.</summary>
public class JournalRecordTooLargeException : JournalException
{
    public JournalRecordTooLargeException() { }
    public JournalRecordTooLargeException(string message) : base(message) { }
    public JournalRecordTooLargeException(string message, Exception innerException) : base(message, innerException) { }

    public long Offset { get; init; }
    public long Record { get; init; }
    /// <summary>The length the record claimed.</summary>
    public long Length { get; init; }
    public int Limit { get; init; }
}

/// <summary>Why a journal read ended early without an error: a truncated tail (a crash mid-write).</summary>
/// <param name="Offset">Where the incomplete part starts.</param>
/// <param name="Record">Index of the incomplete record.</param>
/// <param name="Message">What was missing.</param>
public sealed record JournalProblem(long Offset, long Record, string Message);
