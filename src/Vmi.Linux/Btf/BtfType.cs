namespace Vmi.Linux.Btf;

/// <summary>A view of one type in a <see cref="BtfTypes"/> set. Cheap to copy; decodes on access.</summary>
public readonly struct BtfType : IEquatable<BtfType>
{
    private readonly BtfTypes _owner;

    internal BtfType(BtfTypes owner, int id)
    {
        _owner = owner;
        Id = id;
    }

    /// <summary>Type id (0 = void).</summary>
    public int Id { get; }

    public BtfKind Kind => _owner.KindOf(Id);

    /// <summary>Type name; empty for anonymous types and for void.</summary>
    public string Name => _owner.NameOf(Id);

    public bool IsAnonymous => Name.Length == 0;

    /// <summary>The info word's kind_flag bit (bitfield encoding for struct/union, union for FWD, signedness for enums, …).</summary>
    public bool KindFlag => _owner.KindFlagOf(Id);

    /// <summary>Number of trailing records (members, enumerators, parameters, variables).</summary>
    public int Vlen => _owner.VlenOf(Id);

    /// <summary>Size in bytes for INT, STRUCT, UNION, ENUM, ENUM64, FLOAT and DATASEC; 0 otherwise.</summary>
    public uint Size => _owner.HasSize(Id) ? _owner.SizeTypeOf(Id) : 0;

    /// <summary>Referenced type id for PTR, TYPEDEF, qualifiers, FUNC, VAR, DECL_TAG, TYPE_TAG; return type of a FUNC_PROTO; 0 otherwise.</summary>
    public int Type => _owner.HasSize(Id) || Kind is BtfKind.Void or BtfKind.Array ? 0 : (int)_owner.SizeTypeOf(Id);

    /// <summary>Members of a STRUCT or UNION (empty for other kinds).</summary>
    public IReadOnlyList<BtfMember> Members => _owner.MembersOf(Id);

    /// <summary>Enumerators of an ENUM or ENUM64 (empty for other kinds).</summary>
    public IReadOnlyList<BtfEnumValue> EnumValues => _owner.EnumValuesOf(Id);

    /// <summary>Parameters of a FUNC_PROTO (empty for other kinds).</summary>
    public IReadOnlyList<BtfParam> Params => _owner.ParamsOf(Id);

    /// <summary>Variables of a DATASEC (empty for other kinds).</summary>
    public IReadOnlyList<BtfVarSecInfo> Variables => _owner.VarSecInfosOf(Id);

    /// <summary>Array description; only meaningful for ARRAY.</summary>
    public BtfArrayInfo Array => _owner.ArrayOf(Id);

    /// <summary>Integer encoding; only meaningful for INT.</summary>
    public BtfIntInfo Int => _owner.IntOf(Id);

    /// <summary>Linkage of a VAR (0 static, 1 global, 2 extern) or FUNC (from vlen); component index of a DECL_TAG (-1 = the whole type).</summary>
    public int Extra => _owner.ExtraOf(Id);

    public override string ToString() => $"[{Id}] {Kind} '{Name}'";

    public bool Equals(BtfType other) => ReferenceEquals(_owner, other._owner) && Id == other.Id;
    public override bool Equals(object? obj) => obj is BtfType other && Equals(other);
    public override int GetHashCode() => Id;
    public static bool operator ==(BtfType left, BtfType right) => left.Equals(right);
    public static bool operator !=(BtfType left, BtfType right) => !left.Equals(right);
}
