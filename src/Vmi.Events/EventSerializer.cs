using MessagePack;

namespace Vmi.Events;

/// <summary>The MessagePack form of events, for the wire and the journal.</summary>
public static class EventSerializer
{
    /// <summary>
    /// Standard resolver, untrusted-data mode (a journal or a peer can be hostile), LZ4 off so a
    /// journal is readable by any MessagePack tool.
    /// </summary>
    public static MessagePackSerializerOptions Options { get; } = MessagePackSerializerOptions.Standard
        .WithSecurity(MessagePackSecurity.UntrustedData);

    public static byte[] Serialize(VmiEvent e) => MessagePackSerializer.Serialize(e, Options);

    /// <exception cref="MessagePackSerializationException">The bytes are not an event.</exception>
    public static VmiEvent Deserialize(ReadOnlyMemory<byte> bytes) => MessagePackSerializer.Deserialize<VmiEvent>(bytes, Options);
}
