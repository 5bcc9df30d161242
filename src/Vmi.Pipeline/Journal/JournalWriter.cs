using System.Buffers;
using System.Buffers.Binary;
using MessagePack;
using Vmi.Events;

namespace Vmi.Pipeline.Journal;

/// <summary>When a <see cref="JournalWriter"/> flushes to its stream.</summary>
public enum JournalFlushPolicy
{
    /// <summary>Only on <see cref="JournalWriter.Flush"/> and dispose (fastest; a crash loses the buffered tail).</summary>
    Manual = 0,
    /// <summary>After every record.</summary>
    EveryRecord = 1,
    /// <summary>After every event that is never shed (control, finding, alert, health): those survive a crash, bulk telemetry is batched.</summary>
    NeverShed = 2,
}

/// <summary>
/// Appends events to a journal (<see cref="JournalFormat"/>): length-prefixed MessagePack. Thread-safe.
/// </summary>
public sealed class JournalWriter : IDisposable, IAsyncDisposable
{
    private readonly Stream _stream;
    private readonly bool _leaveOpen;
    private readonly Lock _gate = new();
    private readonly ArrayBufferWriter<byte> _buffer = new(4096);
    private bool _disposed;

    /// <summary>Starts a journal on <paramref name="stream"/> (writes the header at its current position).</summary>
    public JournalWriter(Stream stream, JournalFlushPolicy flush = JournalFlushPolicy.NeverShed, bool leaveOpen = false)
    {
        ArgumentNullException.ThrowIfNull(stream);
        if (!stream.CanWrite)
            throw new ArgumentException("the journal stream is not writable", nameof(stream));
        _stream = stream;
        _leaveOpen = leaveOpen;
        FlushPolicy = flush;
        Span<byte> header = stackalloc byte[JournalFormat.HeaderLength];
        JournalFormat.WriteHeader(header);
        _stream.Write(header);
        if (flush != JournalFlushPolicy.Manual)
            _stream.Flush();
    }

    /// <summary>Creates (or truncates) a journal file.</summary>
    public static JournalWriter Create(string path, JournalFlushPolicy flush = JournalFlushPolicy.NeverShed) =>
        new(new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read, 64 * 1024), flush);

    public JournalFlushPolicy FlushPolicy { get; }

    /// <summary>Records written.</summary>
    public long Records { get; private set; }

    /// <summary>Appends one event.</summary>
    /// <exception cref="JournalRecordTooLargeException">The event serializes to more than <see cref="JournalFormat.MaxRecordLength"/>.</exception>
    public void Append(VmiEvent e)
    {
        ArgumentNullException.ThrowIfNull(e);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _buffer.ResetWrittenCount();
            MessagePackSerializer.Serialize(_buffer, e, EventSerializer.Options);
            int length = _buffer.WrittenCount;
            if (length > JournalFormat.MaxRecordLength)
                throw new JournalRecordTooLargeException($"event {e.Id} ({e.Kind}) serializes to {length} bytes, over the journal's {JournalFormat.MaxRecordLength}-byte record limit")
                { Length = length, Limit = JournalFormat.MaxRecordLength, Record = Records };
            Span<byte> prefix = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32LittleEndian(prefix, (uint)length);
            _stream.Write(prefix);
            _stream.Write(_buffer.WrittenSpan);
            Records++;
            if (FlushPolicy == JournalFlushPolicy.EveryRecord || (FlushPolicy == JournalFlushPolicy.NeverShed && e.Class != EventClass.Telemetry))
                _stream.Flush();
        }
    }

    public void Flush()
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _stream.Flush();
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
                return;
            _disposed = true;
            _stream.Flush();
            if (!_leaveOpen)
                _stream.Dispose();
        }
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }
}
