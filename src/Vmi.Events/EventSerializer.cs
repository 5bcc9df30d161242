using System.Collections;
using System.Collections.Concurrent;
using System.Reflection;
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

    /// <summary>
    /// Reads one event. Besides malformed MessagePack, this refuses a well-formed payload that breaks the
    /// model's non-null contract (a nil <c>VmId</c>, a nil list or a nil element in one), so consumers can
    /// trust the nullable annotations of what they get.
    /// </summary>
    /// <exception cref="MessagePackSerializationException">The bytes are not an event.</exception>
    public static VmiEvent Deserialize(ReadOnlyMemory<byte> bytes)
    {
        VmiEvent? e = MessagePackSerializer.Deserialize<VmiEvent?>(bytes, Options);
        if (e is null)
            throw new MessagePackSerializationException("The payload is nil, not an event.");
        if (NullChecks.FindNull(e, depth: 0) is string member)
            throw new MessagePackSerializationException($"The {e.GetType().Name} payload has no value for non-nullable member {member}.");
        return e;
    }

    /// <summary>Finds members that the nullable annotations declare non-null but that came in nil.</summary>
    private static class NullChecks
    {
        private sealed record Member(PropertyInfo Property, bool NotNull, bool ElementsNotNull);

        private static readonly ConcurrentDictionary<Type, Member[]> Members = new();

        public static string? FindNull(object value, int depth)
        {
            // The model nests at most event → technique; the bound only guards against a future cycle.
            if (depth > 4)
                return null;
            foreach (Member m in Members.GetOrAdd(value.GetType(), Describe))
            {
                object? v = m.Property.GetValue(value);
                if (v is null)
                {
                    if (m.NotNull)
                        return m.Property.Name;
                    continue;
                }
                if (v is string or byte[] || v is not IEnumerable items)
                    continue;
                IEnumerable elements = v is IDictionary dictionary ? dictionary.Values : items;
                foreach (object? element in elements)
                {
                    if (element is null)
                    {
                        if (m.ElementsNotNull)
                            return m.Property.Name + "[]";
                    }
                    else if (element.GetType().IsDefined(typeof(MessagePackObjectAttribute)) && FindNull(element, depth + 1) is string inner)
                    {
                        return m.Property.Name + "[]." + inner;
                    }
                }
            }
            return null;
        }

        private static Member[] Describe(Type type)
        {
            // NullabilityInfoContext is not thread-safe: one per description.
            var context = new NullabilityInfoContext();
            var members = new List<Member>();
            foreach (PropertyInfo p in type.GetProperties(BindingFlags.Public | BindingFlags.Instance))
            {
                if (!p.IsDefined(typeof(KeyAttribute)) || p.PropertyType.IsValueType)
                    continue;
                NullabilityInfo info = context.Create(p);
                // Lists and dictionaries: the element (or value) is the last generic argument.
                bool elementsNotNull = info.GenericTypeArguments.Length > 0
                    && info.GenericTypeArguments[^1] is { Type.IsValueType: false, ReadState: NullabilityState.NotNull };
                members.Add(new Member(p, info.ReadState == NullabilityState.NotNull, elementsNotNull));
            }
            return [.. members];
        }
    }
}
