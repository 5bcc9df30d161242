using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.CompilerServices;
using MessagePack;
using Vmi.Events;

namespace Vmi.Pipeline.Journal;

/// <summary>
/// Reads a journal (<see cref="JournalFormat"/>) as untrusted input: every record length is checked
/// against a limit before anything is allocated, a record that is not an event is a typed error, and
/// a truncated tail ends the read with the events before it and a <see cref="Problem"/>.
/// </summary>
public sealed class JournalReader : IDisposable, IAsyncDisposable
{
    private readonly Stream _stream;
    private readonly bool _leaveOpen;
    private readonly int _maxRecordLength;
    private readonly byte[] _prefix = new byte[4];
    private byte[] _buffer = [];
    private bool _disposed;
    private bool _headerRead;
    private bool _ended;

    /// <param name="stream">The journal, positioned at its header.</param>
    /// <param name="leaveOpen">Leave <paramref name="stream"/> open on dispose.</param>
    /// <param name="maxRecordLength">Longest record accepted; 16 MiB by default.</param>
    public JournalReader(Stream stream, bool leaveOpen = false, int maxRecordLength = JournalFormat.MaxRecordLength)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxRecordLength, 1);
        _stream = stream;
        _leaveOpen = leaveOpen;
        _maxRecordLength = maxRecordLength;
    }

    public static JournalReader Open(string path) =>
        new(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 64 * 1024));

    /// <summary>Records read so far.</summary>
    public long Records { get; private set; }

    /// <summary>Byte offset of the next record.</summary>
    public long Offset { get; private set; }

    /// <summary>Set when the read ended at a truncated tail (the events before it were returned).</summary>
    public JournalProblem? Problem { get; private set; }

    /// <summary>The next event, or null at the end (clean, or truncated: see <see cref="Problem"/>).</summary>
    /// <exception cref="JournalFormatException">Not a journal, or a record is not an event.</exception>
    /// <exception cref="JournalRecordTooLargeException">A record claims more than the limit.</exception>
    public VmiEvent? Read() => ReadCoreAsync(sync: true, CancellationToken.None).GetAwaiter().GetResult();

    /// <inheritdoc cref="Read"/>
    public ValueTask<VmiEvent?> ReadAsync(CancellationToken cancellation = default) => ReadCoreAsync(sync: false, cancellation);

    /// <summary>Every event to the end.</summary>
    public IEnumerable<VmiEvent> ReadAll()
    {
        while (Read() is { } e)
            yield return e;
    }

    /// <summary>Every event to the end.</summary>
    public async IAsyncEnumerable<VmiEvent> ReadAllAsync([EnumeratorCancellation] CancellationToken cancellation = default)
    {
        while (await ReadAsync(cancellation).ConfigureAwait(false) is { } e)
            yield return e;
    }

    private async ValueTask<VmiEvent?> ReadCoreAsync(bool sync, CancellationToken cancellation)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_ended)
            return null;
        if (!_headerRead)
        {
            byte[] header = new byte[JournalFormat.HeaderLength];
            int got = await FillAsync(header, sync, cancellation).ConfigureAwait(false);
            if (got == 0)
                return End(null);
            if (got < header.Length && header.AsSpan(0, Math.Min(got, 4)).SequenceEqual(JournalFormat.Magic[..Math.Min(got, 4)]))
                return End(new JournalProblem(0, 0, $"truncated header: {got} of {JournalFormat.HeaderLength} bytes"));
            if (got < header.Length || !header.AsSpan(0, 4).SequenceEqual(JournalFormat.Magic))
                throw new JournalFormatException("not a Vmi journal: it does not start with 'VMIJ'") { Offset = 0 };
            uint version = BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(4));
            if (version != JournalFormat.Version)
                throw new JournalFormatException($"journal format version {version} is not supported (this build reads version {JournalFormat.Version})") { Offset = 4 };
            _headerRead = true;
            Offset = JournalFormat.HeaderLength;
        }

        long recordOffset = Offset;
        byte[] prefix = _prefix;
        int read = await FillAsync(prefix, sync, cancellation).ConfigureAwait(false);
        if (read == 0)
            return End(null);
        if (read < 4)
            return End(new JournalProblem(recordOffset, Records, $"truncated tail: record {Records} has {read} of 4 length bytes"));
        uint length = BinaryPrimitives.ReadUInt32LittleEndian(prefix);
        if (length > (uint)_maxRecordLength)
            throw new JournalRecordTooLargeException(Invariant($"journal record {Records} at offset {recordOffset} claims {length} bytes, over the {_maxRecordLength}-byte limit: the journal is corrupt"))
            { Offset = recordOffset, Record = Records, Length = length, Limit = _maxRecordLength };
        if (length == 0)
            throw new JournalFormatException(Invariant($"journal record {Records} at offset {recordOffset} is empty")) { Offset = recordOffset, Record = Records };

        // A seekable stream shorter than the record is a truncated tail: say so without allocating for it.
        if (_stream.CanSeek && _stream.Length - _stream.Position < length)
        {
            long have = _stream.Length - _stream.Position;
            _stream.Seek(0, SeekOrigin.End);
            return End(new JournalProblem(recordOffset, Records, Invariant($"truncated tail: record {Records} has {have} of {length} bytes")));
        }
        if (_buffer.Length < length)
            _buffer = new byte[Math.Max(length, Math.Min((uint)_maxRecordLength, (uint)_buffer.Length * 2))];
        var payload = _buffer.AsMemory(0, (int)length);
        int got2 = await FillAsync(payload, sync, cancellation).ConfigureAwait(false);
        if (got2 < length)
            return End(new JournalProblem(recordOffset, Records, Invariant($"truncated tail: record {Records} has {got2} of {length} bytes")));

        VmiEvent e;
        try
        {
            e = EventSerializer.Deserialize(payload);
        }
        catch (MessagePackSerializationException ex)
        {
            throw new JournalFormatException(Invariant($"journal record {Records} at offset {recordOffset} is not an event: {ex.Message}"), ex)
            { Offset = recordOffset, Record = Records };
        }
        Records++;
        Offset = recordOffset + 4 + length;
        return e;
    }

    private VmiEvent? End(JournalProblem? problem)
    {
        _ended = true;
        Problem = problem;
        return null;
    }

    private async ValueTask<int> FillAsync(Memory<byte> target, bool sync, CancellationToken cancellation)
    {
        int total = 0;
        while (total < target.Length)
        {
            int n = sync
                ? _stream.Read(target.Span[total..])
                : await _stream.ReadAsync(target[total..], cancellation).ConfigureAwait(false);
            if (n == 0)
                break;
            total += n;
        }
        return total;
    }

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        if (!_leaveOpen)
            _stream.Dispose();
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
            return;
        _disposed = true;
        if (!_leaveOpen)
            await _stream.DisposeAsync().ConfigureAwait(false);
    }
}
