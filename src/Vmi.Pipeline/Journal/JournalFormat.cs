using System.Buffers.Binary;

namespace Vmi.Pipeline.Journal;

/// <summary>
/// The journal file format: an 8-byte header (<c>VMIJ</c>, then the format version as a little-endian
/// uint32), then records, each a little-endian uint32 length followed by that many bytes of one
/// event in MessagePack (<see cref="Vmi.Events.EventSerializer"/>). Appending is the only write, so a
/// crash leaves at worst a truncated last record, which readers report and stop at.
/// </summary>
public static class JournalFormat
{
    public const int Version = 1;
    public const int HeaderLength = 8;
    /// <summary>Largest record a reader accepts (and a writer writes): 16 MiB.</summary>
    public const int MaxRecordLength = 16 * 1024 * 1024;

    /// <summary>The magic at the start of every journal.</summary>
    public static ReadOnlySpan<byte> Magic => "VMIJ"u8;

    internal static void WriteHeader(Span<byte> header)
    {
        Magic.CopyTo(header);
        BinaryPrimitives.WriteUInt32LittleEndian(header[4..], Version);
    }
}
