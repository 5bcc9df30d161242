using System.Buffers.Binary;
using System.Globalization;
using System.Numerics;
using System.Text;

namespace Vmi.Export.Spool;

/// <summary>
/// An append-only, crash-safe queue of export records on disk, so a destination outage or an exporter
/// crash loses nothing.
/// </summary>
/// <remarks>
/// <para>Layout of the folder:</para>
/// <list type="bullet">
/// <item><c>NNNNNNNNNNNNNNNNNNNN.seg</c>: segments named by the sequence number of their first record
/// (20 digits, so names sort in order). A segment is the 8-byte magic <c>VMISPL01</c> followed by
/// records <c>[u32 LE payload length][u32 LE CRC-32C of payload][payload]</c>. The payload is
/// <c>[u8 1][i64 LE UTC ticks][u8 stream][id][json]</c> with strings as 7-bit-length-prefixed UTF-8.</item>
/// <item><c>cursor</c>: <c>[i64 LE committed sequence][u32 LE CRC-32C of those 8 bytes]</c>, the position
/// after the last acknowledged record, replaced atomically (write <c>cursor.tmp</c>, fsync, rename).</item>
/// <item><c>lock</c>: held open exclusively while the spool is open, so two processes never share it.</item>
/// </list>
/// <para>On open every segment is scanned; the first record whose length is out of bounds, whose bytes
/// end early or whose checksum is wrong ends the segment, and the file is truncated there (a torn write
/// from a crash). The records after the cursor are then read again in order.</para>
/// <para>Thread-safe: one producer and one exporter may use it at once.</para>
/// </remarks>
public sealed class DurableSpool : IDisposable
{
    private static readonly byte[] Magic = "VMISPL01"u8.ToArray();
    private const int HeaderBytes = 8;
    private const int RecordHeaderBytes = 8;
    private const byte PayloadVersion = 1;

    private sealed class Segment(long firstSequence, string path)
    {
        public long FirstSequence { get; } = firstSequence;
        public string Path { get; } = path;
        public long Count { get; set; }
        public long Bytes { get; set; }
        public long End => FirstSequence + Count;
    }

    private readonly Lock _lock = new();
    private readonly SpoolOptions _options;
    private readonly List<Segment> _segments = [];
    private readonly FileStream _lockFile;
    private readonly string _cursorPath;
    private readonly MemoryStream _payload = new();
    private readonly SemaphoreSlim _dataAvailable = new(0, 1);
    private FileStream? _writer;
    private long _next;
    private long _committed;
    private long _totalBytes;

    // The read position runs ahead of the cursor: records handed out and not yet acknowledged.
    private long _readSequence;
    private Segment? _readSegment;
    private FileStream? _reader;
    private long _readSegmentSequence; // sequence of the record at _reader's position

    private long _appended;
    private long _rejected;
    private long _dropped;
    private long _recoveredTailBytes;
    private bool _disposed;

    private DurableSpool(SpoolOptions options, FileStream lockFile)
    {
        _options = options;
        _lockFile = lockFile;
        _cursorPath = Path.Combine(options.Directory, "cursor");
    }

    /// <summary>The folder of the spool.</summary>
    public string Directory => _options.Directory;

    /// <summary>Sequence number the next appended record gets.</summary>
    public long NextSequence { get { lock (_lock) return _next; } }

    /// <summary>Position after the last acknowledged record.</summary>
    public long CommittedSequence { get { lock (_lock) return _committed; } }

    /// <summary>Counts since open, and the current backlog and disk use.</summary>
    public SpoolCounters Counters
    {
        get
        {
            lock (_lock)
            {
                long pending = 0;
                foreach (Segment s in _segments)
                    pending += Math.Max(0, s.End - Math.Max(s.FirstSequence, _committed));
                return new SpoolCounters(_appended, _rejected, _dropped, _recoveredTailBytes, pending, _totalBytes);
            }
        }
    }

    /// <summary>Opens (or creates) the spool in <see cref="SpoolOptions.Directory"/>, cutting off a torn tail.</summary>
    /// <exception cref="ExportException">The folder cannot be created or written, or another process has the spool open.</exception>
    public static DurableSpool Open(SpoolOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrEmpty(options.Directory);
        if (options.SegmentBytes < HeaderBytes + RecordHeaderBytes || options.MaxBytes < options.SegmentBytes || options.MaxRecordBytes <= 0)
            throw new ArgumentException("Segment size, disk bound and record size must be positive, with the bound at least one segment.", nameof(options));
        FileStream lockFile;
        try
        {
            // Security events wait here: a new folder is readable by its owner only.
            if (OperatingSystem.IsWindows())
                System.IO.Directory.CreateDirectory(options.Directory);
            else
                System.IO.Directory.CreateDirectory(options.Directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            lockFile = new FileStream(Path.Combine(options.Directory, "lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException e)
        {
            throw new ExportException($"Cannot open the export spool in {options.Directory}: {e.Message} (is another exporter using it?)", e);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new ExportException($"Cannot open the export spool in {options.Directory}: {e.Message}", e);
        }
        var spool = new DurableSpool(options, lockFile);
        try
        {
            spool.Recover();
            return spool;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            spool.Dispose();
            throw new ExportException($"Cannot read the export spool in {options.Directory}: {e.Message}", e);
        }
        catch
        {
            spool.Dispose();
            throw;
        }
    }

    private void Recover()
    {
        File.Delete(_cursorPath + ".tmp");
        long? cursor = ReadCursor();
        foreach (string path in System.IO.Directory.EnumerateFiles(_options.Directory, "*.seg").Order(StringComparer.Ordinal))
        {
            if (!long.TryParse(Path.GetFileNameWithoutExtension(path), NumberStyles.None, CultureInfo.InvariantCulture, out long first))
                continue;
            if (_segments.Count > 0 && first < _segments[^1].End)
                throw new ExportException($"Spool segment {path} overlaps the one before it; the spool folder was edited by hand.");
            var segment = new Segment(first, path);
            if (!ScanAndRepair(segment))
            {
                File.Delete(path); // created, crashed before its header was complete: holds nothing
                continue;
            }
            _segments.Add(segment);
            _totalBytes += segment.Bytes;
        }
        long oldest = _segments.Count > 0 ? _segments[0].FirstSequence : 0;
        long end = _segments.Count > 0 ? _segments[^1].End : 0;
        // No cursor (first run, or lost): replay everything still spooled; ids make the replay harmless.
        _committed = Math.Max(cursor ?? oldest, oldest);
        _next = Math.Max(end, _committed);
        DeleteAcknowledgedSegments();
        if (_segments.Count == 0 || _segments[^1].End != _next)
            StartSegment();
        else
            OpenWriter(_segments[^1]);
        _readSequence = _committed;
    }

    /// <summary>Counts the good records of a segment and truncates it after the last one.</summary>
    /// <returns>False when the file has no complete header.</returns>
    private bool ScanAndRepair(Segment segment)
    {
        using var f = new FileStream(segment.Path, FileMode.Open, FileAccess.ReadWrite, FileShare.None, 1 << 16);
        Span<byte> header = stackalloc byte[HeaderBytes];
        if (f.ReadAtLeast(header, HeaderBytes, throwOnEndOfStream: false) < HeaderBytes || !header.SequenceEqual(Magic))
            return false;
        long good = HeaderBytes;
        long count = 0;
        byte[] buffer = new byte[4096];
        Span<byte> recordHeader = stackalloc byte[RecordHeaderBytes];
        while (true)
        {
            if (f.ReadAtLeast(recordHeader, RecordHeaderBytes, throwOnEndOfStream: false) < RecordHeaderBytes)
                break;
            uint length = BinaryPrimitives.ReadUInt32LittleEndian(recordHeader);
            uint crc = BinaryPrimitives.ReadUInt32LittleEndian(recordHeader[4..]);
            if (length == 0 || length > (uint)_options.MaxRecordBytes)
                break;
            if (buffer.Length < length)
                buffer = new byte[Math.Max(length, buffer.Length * 2)];
            if (f.ReadAtLeast(buffer.AsSpan(0, (int)length), (int)length, throwOnEndOfStream: false) < length)
                break;
            if (Crc32C(buffer.AsSpan(0, (int)length)) != crc)
                break;
            good += RecordHeaderBytes + length;
            count++;
        }
        if (good < f.Length)
        {
            _recoveredTailBytes += f.Length - good;
            f.SetLength(good);
            f.Flush(flushToDisk: true);
        }
        segment.Count = count;
        segment.Bytes = good;
        return true;
    }

    private long? ReadCursor()
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(_cursorPath);
        }
        catch (FileNotFoundException)
        {
            return null;
        }
        if (bytes.Length != 12 || Crc32C(bytes.AsSpan(0, 8)) != BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(8)))
            return null;
        return BinaryPrimitives.ReadInt64LittleEndian(bytes);
    }

    private void WriteCursor()
    {
        Span<byte> bytes = stackalloc byte[12];
        BinaryPrimitives.WriteInt64LittleEndian(bytes, _committed);
        BinaryPrimitives.WriteUInt32LittleEndian(bytes[8..], Crc32C(bytes[..8]));
        string tmp = _cursorPath + ".tmp";
        using (var f = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            f.Write(bytes);
            f.Flush(flushToDisk: true);
        }
        File.Move(tmp, _cursorPath, overwrite: true); // rename(2): the old or the new cursor, never half of one
    }

    private void StartSegment()
    {
        _writer?.Flush(flushToDisk: true);
        _writer?.Dispose();
        var segment = new Segment(_next, Path.Combine(_options.Directory, _next.ToString("D20", CultureInfo.InvariantCulture) + ".seg"));
        _writer = new FileStream(segment.Path, FileMode.Create, FileAccess.Write, FileShare.Read | FileShare.Delete, 1 << 16);
        _writer.Write(Magic);
        _writer.Flush(flushToDisk: true);
        segment.Bytes = HeaderBytes;
        _totalBytes += HeaderBytes;
        _segments.Add(segment);
    }

    private void OpenWriter(Segment segment)
    {
        _writer = new FileStream(segment.Path, FileMode.Append, FileAccess.Write, FileShare.Read | FileShare.Delete, 1 << 16);
    }

    /// <summary>Appends one record.</summary>
    /// <exception cref="SpoolFullException">The spool is at its disk bound and the policy is <see cref="SpoolFullPolicy.Reject"/>.</exception>
    /// <exception cref="ExportException">The record is larger than <see cref="SpoolOptions.MaxRecordBytes"/>, or the disk refused the write.</exception>
    public void Append(ExportItem item) => AppendRange([item]);

    /// <summary>
    /// Appends records in order, with one write (and one fsync under <see cref="SpoolDurability.PowerLoss"/>) for all.
    /// When the spool fills part-way, the records before the full point are kept and the exception says how many.
    /// </summary>
    /// <exception cref="SpoolFullException">The spool is at its disk bound and the policy is <see cref="SpoolFullPolicy.Reject"/>.</exception>
    /// <exception cref="ExportException">A record is larger than <see cref="SpoolOptions.MaxRecordBytes"/>, or the disk refused the write.</exception>
    public void AppendRange(IEnumerable<ExportItem> items)
    {
        ArgumentNullException.ThrowIfNull(items);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            int written = 0;
            Span<byte> header = stackalloc byte[RecordHeaderBytes];
            try
            {
                foreach (ExportItem item in items)
                {
                    ReadOnlySpan<byte> payload = Encode(item);
                    if (payload.Length > _options.MaxRecordBytes)
                        throw new ExportException($"Record {item.Id} is {payload.Length} bytes, more than the {_options.MaxRecordBytes} the spool accepts.");
                    long size = RecordHeaderBytes + payload.Length;
                    MakeRoom(size, written);
                    Segment active = _segments[^1];
                    if (active.Count > 0 && active.Bytes + size > _options.SegmentBytes)
                    {
                        StartSegment();
                        active = _segments[^1];
                    }
                    BinaryPrimitives.WriteUInt32LittleEndian(header, (uint)payload.Length);
                    BinaryPrimitives.WriteUInt32LittleEndian(header[4..], Crc32C(payload));
                    _writer!.Write(header);
                    _writer.Write(payload);
                    active.Count++;
                    active.Bytes += size;
                    _totalBytes += size;
                    _next++;
                    _appended++;
                    written++;
                }
            }
            catch (IOException e)
            {
                throw new ExportException($"Cannot write to the export spool in {_options.Directory}: {e.Message}", e);
            }
            finally
            {
                // Even when the spool filled part-way: what was accepted is made as durable as promised.
                if (written > 0)
                    FlushWriter();
            }
        }
        if (_dataAvailable.CurrentCount == 0)
        {
            try { _dataAvailable.Release(); }
            catch (SemaphoreFullException) { } // the exporter is already signalled
        }
    }

    private void FlushWriter()
    {
        // A record counts as appended only once another reader of the file (and a restart) can see it.
        _writer!.Flush(flushToDisk: _options.Durability == SpoolDurability.PowerLoss);
    }

    private void MakeRoom(long size, int writtenSoFar)
    {
        while (_totalBytes + size > _options.MaxBytes)
        {
            if (_options.FullPolicy == SpoolFullPolicy.Reject || (_segments.Count == 1 && _segments[0].Count == 0))
            {
                _rejected++;
                throw new SpoolFullException(
                    $"The export spool in {_options.Directory} is full ({_totalBytes} of {_options.MaxBytes} bytes, {_next - _committed} records waiting for the destination); "
                    + $"the record was refused{(writtenSoFar > 0 ? $" after {writtenSoFar} of this call were accepted" : "")}. Check the destination, or raise the bound.");
            }
            if (_segments.Count == 1)
                StartSegment(); // the oldest records are in the active segment: close it so it can go
            Segment oldest = _segments[0];
            long unsent = Math.Max(0, oldest.End - Math.Max(oldest.FirstSequence, _committed));
            _dropped += unsent;
            _committed = Math.Max(_committed, oldest.End);
            WriteCursor();
            RemoveSegment(oldest);
            if (_readSequence < _committed)
                _readSequence = _committed;
        }
    }

    private void RemoveSegment(Segment segment)
    {
        if (ReferenceEquals(_readSegment, segment))
            CloseReader();
        _segments.Remove(segment);
        _totalBytes -= segment.Bytes;
        File.Delete(segment.Path);
    }

    private ReadOnlySpan<byte> Encode(ExportItem item)
    {
        _payload.SetLength(0);
        using (var w = new BinaryWriter(_payload, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(PayloadVersion);
            w.Write(item.Time.UtcTicks);
            w.Write((byte)item.Stream);
            w.Write(item.Id);
            w.Write(item.Json);
        }
        return _payload.GetBuffer().AsSpan(0, (int)_payload.Length);
    }

    private static ExportItem Decode(byte[] payload, int length, string where)
    {
        try
        {
            using var r = new BinaryReader(new MemoryStream(payload, 0, length, writable: false), Encoding.UTF8);
            byte version = r.ReadByte();
            if (version != PayloadVersion)
                throw new ExportException($"{where}: record format {version} is not one this version reads.");
            var time = new DateTimeOffset(r.ReadInt64(), TimeSpan.Zero);
            var stream = (ExportStream)r.ReadByte();
            string id = r.ReadString();
            string json = r.ReadString();
            return new ExportItem(id, time, stream, json);
        }
        catch (Exception e) when (e is EndOfStreamException or ArgumentOutOfRangeException or FormatException)
        {
            throw new ExportException($"{where}: a record with a good checksum does not decode: {e.Message}", e);
        }
    }

    /// <summary>
    /// Reads the next records after the ones already handed out (at least one when any is waiting), in
    /// append order. After <see cref="Rewind"/> or a reopen, reading starts again at the cursor.
    /// </summary>
    /// <param name="maxCount">At most this many records.</param>
    /// <param name="maxBytes">Stop before the JSON documents pass this many characters (one oversized record still comes alone).</param>
    /// <exception cref="ExportException">A segment cannot be read.</exception>
    public IReadOnlyList<SpoolRecord> Read(int maxCount, long maxBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxCount);
        var records = new List<SpoolRecord>();
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            try
            {
                long bytes = 0;
                byte[] buffer = new byte[4096];
                Span<byte> header = stackalloc byte[RecordHeaderBytes];
                while (records.Count < maxCount && _readSequence < _next)
                {
                    if (!PositionReader())
                        break;
                    if (_reader!.ReadAtLeast(header, RecordHeaderBytes, throwOnEndOfStream: false) < RecordHeaderBytes)
                        throw new ExportException($"Spool segment {_readSegment!.Path} ends before record {_readSequence}.");
                    int length = (int)BinaryPrimitives.ReadUInt32LittleEndian(header);
                    if (length <= 0 || length > _options.MaxRecordBytes)
                        throw new ExportException($"Spool segment {_readSegment!.Path}: record {_readSequence} has an impossible length.");
                    if (buffer.Length < length)
                        buffer = new byte[length];
                    _reader.ReadExactly(buffer, 0, length);
                    if (Crc32C(buffer.AsSpan(0, length)) != BinaryPrimitives.ReadUInt32LittleEndian(header[4..]))
                        throw new ExportException($"Spool segment {_readSegment!.Path}: record {_readSequence} fails its checksum (the file changed under the spool).");
                    ExportItem item = Decode(buffer, length, _readSegment!.Path);
                    records.Add(new SpoolRecord(_readSequence, item));
                    _readSequence++;
                    _readSegmentSequence++;
                    bytes += item.Json.Length;
                    if (bytes >= maxBytes)
                        break;
                }
            }
            catch (IOException e)
            {
                CloseReader();
                throw new ExportException($"Cannot read the export spool in {_options.Directory}: {e.Message}", e);
            }
        }
        return records;
    }

    /// <summary>Puts the reader on the record <see cref="_readSequence"/>; false when there is none (yet).</summary>
    private bool PositionReader()
    {
        if (_readSegment is not null && _readSequence >= _readSegment.End && !ReferenceEquals(_readSegment, _segments[^1]))
            CloseReader(); // finished with this segment
        if (_readSegment is not null && _readSegmentSequence != _readSequence)
            CloseReader();
        if (_readSegment is null)
        {
            Segment? segment = null;
            foreach (Segment s in _segments)
            {
                if (s.End > _readSequence)
                {
                    segment = s;
                    break;
                }
            }
            if (segment is null)
                return false;
            if (_readSequence < segment.FirstSequence)
                _readSequence = segment.FirstSequence; // a gap (records cut off as corrupt on open)
            _reader = new FileStream(segment.Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1 << 16);
            _reader.Position = HeaderBytes;
            _readSegment = segment;
            _readSegmentSequence = segment.FirstSequence;
            Span<byte> header = stackalloc byte[RecordHeaderBytes];
            while (_readSegmentSequence < _readSequence)
            {
                _reader.ReadExactly(header);
                _reader.Seek(BinaryPrimitives.ReadUInt32LittleEndian(header), SeekOrigin.Current);
                _readSegmentSequence++;
            }
        }
        return _readSequence < _readSegment.End;
    }

    private void CloseReader()
    {
        _reader?.Dispose();
        _reader = null;
        _readSegment = null;
    }

    /// <summary>Makes the next <see cref="Read"/> start again at the cursor (the records handed out and not acknowledged come again).</summary>
    public void Rewind()
    {
        lock (_lock)
        {
            _readSequence = _committed;
            CloseReader();
        }
    }

    /// <summary>
    /// Records that everything before <paramref name="nextSequence"/> is acknowledged: the cursor is
    /// replaced atomically and fully acknowledged segments are deleted. Going backwards is ignored.
    /// </summary>
    /// <exception cref="ExportException">The cursor cannot be written.</exception>
    public void Commit(long nextSequence)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (nextSequence <= _committed)
                return;
            if (nextSequence > _next)
                throw new ArgumentOutOfRangeException(nameof(nextSequence), $"Cannot acknowledge up to {nextSequence}: only {_next} records were appended.");
            _committed = nextSequence;
            try
            {
                WriteCursor();
                DeleteAcknowledgedSegments();
            }
            catch (IOException e)
            {
                throw new ExportException($"Cannot write the export spool cursor in {_options.Directory}: {e.Message}", e);
            }
            if (_readSequence < _committed)
                _readSequence = _committed;
        }
    }

    private void DeleteAcknowledgedSegments()
    {
        // The active (last) segment stays: it is being written, and its name keeps the sequence numbers going.
        while (_segments.Count > 1 && _segments[0].End <= _committed)
            RemoveSegment(_segments[0]);
    }

    /// <summary>Waits until a record is appended or <paramref name="timeout"/> passes.</summary>
    public async Task WaitForDataAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (_readSequence < _next)
                return;
        }
        await _dataAvailable.WaitAsync(timeout, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>CRC-32C (Castagnoli), hardware-accelerated where the CPU has it.</summary>
    internal static uint Crc32C(ReadOnlySpan<byte> data)
    {
        uint crc = ~0u;
        while (data.Length >= 8)
        {
            crc = BitOperations.Crc32C(crc, BinaryPrimitives.ReadUInt64LittleEndian(data));
            data = data[8..];
        }
        foreach (byte b in data)
            crc = BitOperations.Crc32C(crc, b);
        return ~crc;
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed)
                return;
            _disposed = true;
            try
            {
                _writer?.Flush(flushToDisk: true);
            }
            catch (IOException)
            {
                // Nothing more can be done at close; every record was already handed to the OS at append.
            }
            _writer?.Dispose();
            CloseReader();
            _lockFile.Dispose();
            _payload.Dispose();
            _dataAvailable.Dispose();
        }
    }
}
