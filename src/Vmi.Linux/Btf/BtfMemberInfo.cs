namespace Vmi.Linux.Btf;

/// <summary>A member resolved through a dotted path (see <see cref="BtfTypes.ResolveMember"/>).</summary>
public sealed record BtfMemberInfo
{
    /// <summary>The type the path starts from, as given.</summary>
    public required string TypeName { get; init; }
    public required string MemberPath { get; init; }
    /// <summary>Byte offset from the start of <see cref="TypeName"/> (for a bitfield: of the byte holding its first bit).</summary>
    public required int Offset { get; init; }
    /// <summary>Bit offset from the start of <see cref="TypeName"/>.</summary>
    public required long BitOffset { get; init; }
    /// <summary>Bitfield width in bits; 0 when the member is not a bitfield.</summary>
    public required int BitfieldSize { get; init; }
    /// <summary>The member's declared type id.</summary>
    public required int TypeId { get; init; }
    /// <summary>The member's type id after typedefs and qualifiers.</summary>
    public required int ResolvedTypeId { get; init; }
    public required BtfKind ResolvedKind { get; init; }
    /// <summary>Size of the member's type in bytes (for a bitfield: of its underlying integer); 0 when unsized (void, forward declaration, function).</summary>
    public required int Size { get; init; }
    public bool IsBitfield => BitfieldSize != 0;
    public bool IsPointer => ResolvedKind == BtfKind.Ptr;
    /// <summary>Declared pointee type id when <see cref="IsPointer"/>.</summary>
    public int PointeeTypeId { get; init; }
    public bool IsArray => ResolvedKind == BtfKind.Array;
    /// <summary>Element type id when <see cref="IsArray"/>.</summary>
    public int ElementTypeId { get; init; }
    /// <summary>Element count when <see cref="IsArray"/> (0 for a flexible array member).</summary>
    public int ElementCount { get; init; }
}

/// <summary>One hop of a <see cref="MemberPath"/>: add <see cref="Offset"/> to the current address, then read a pointer there when <see cref="Dereference"/>.</summary>
public readonly record struct MemberPathStep(int Offset, bool Dereference);

/// <summary>A member path with pointer hops, e.g. <c>task_struct.real_cred-&gt;uid.val</c>.</summary>
public sealed record MemberPath
{
    public required string Path { get; init; }
    /// <summary>The struct or union the path starts from.</summary>
    public required int RootTypeId { get; init; }
    /// <summary>Steps in order; every step but the last dereferences.</summary>
    public required IReadOnlyList<MemberPathStep> Steps { get; init; }
    /// <summary>The final member (its offset is relative to the struct the last step starts in).</summary>
    public required BtfMemberInfo Final { get; init; }
    /// <summary>Size in bytes of the final member.</summary>
    public int Size => Final.Size;
}
