namespace Vmi.Linux.Btf;

/// <summary>BTF type kinds (BTF_KIND_* in include/uapi/linux/btf.h); the numeric values are the wire encoding.</summary>
public enum BtfKind : byte
{
    /// <summary>Type id 0: void.</summary>
    Void = 0,
    Int = 1,
    Ptr = 2,
    Array = 3,
    Struct = 4,
    Union = 5,
    Enum = 6,
    Fwd = 7,
    Typedef = 8,
    Volatile = 9,
    Const = 10,
    Restrict = 11,
    Func = 12,
    FuncProto = 13,
    Var = 14,
    Datasec = 15,
    Float = 16,
    DeclTag = 17,
    TypeTag = 18,
    Enum64 = 19,
}

/// <summary>BTF_INT_* encoding flags of an INT type.</summary>
[Flags]
public enum BtfIntEncoding : byte
{
    None = 0,
    Signed = 1,
    Char = 2,
    Bool = 4,
}

/// <summary>One member of a struct or union.</summary>
/// <param name="Name">Member name; empty for an anonymous member.</param>
/// <param name="Type">Declared type id.</param>
/// <param name="BitOffset">Bit offset from the start of the containing struct or union.</param>
/// <param name="BitfieldSize">Bitfield width in bits; 0 when the member is not a bitfield (or the struct does not use kind_flag encoding).</param>
public readonly record struct BtfMember(string Name, int Type, uint BitOffset, int BitfieldSize);

/// <summary>One enumerator of an ENUM or ENUM64 type.</summary>
public readonly record struct BtfEnumValue(string Name, long Value);

/// <summary>One parameter of a FUNC_PROTO; an unnamed parameter of type 0 marks varargs.</summary>
public readonly record struct BtfParam(string Name, int Type);

/// <summary>One variable of a DATASEC.</summary>
public readonly record struct BtfVarSecInfo(int Type, uint Offset, uint Size);

/// <summary>Element type, index type and element count of an ARRAY.</summary>
public readonly record struct BtfArrayInfo(int ElementType, int IndexType, uint Count);

/// <summary>Encoding, bit offset and bit width of an INT.</summary>
public readonly record struct BtfIntInfo(BtfIntEncoding Encoding, int BitOffset, int Bits);
