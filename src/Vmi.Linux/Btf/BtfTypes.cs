using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;

namespace Vmi.Linux.Btf;

/// <summary>
/// A parsed BTF type set (Documentation/bpf/btf.rst). The blob is treated as hostile: every offset, length
/// and type id is checked during <see cref="Parse"/>, chains of typedefs/qualifiers/pointers/arrays are
/// proven acyclic, and every later walk is bounded, so lookups never hang and fail only with
/// <see cref="BtfFormatException"/>.
/// </summary>
public sealed class BtfTypes
{
    private const ushort Magic = 0xEB9F;
    private const int MinHeaderLength = 24;
    /// <summary>Nesting bound for anonymous-member searches and type descriptions (libbpf uses 32 for resolution).</summary>
    private const int MaxDepth = 32;
    private const int MaxDescribeLength = 1024;

    // The type section as 32-bit words (every BTF record is a multiple of 4 bytes), plus where each type starts.
    private readonly uint[] _words;
    private readonly int[] _start;
    private readonly byte[] _strings;
    private readonly int _count;
    private int[]? _nameIndex;
    private int _pointerSize;

    private BtfTypes(uint[] words, int[] start, int count, byte[] strings)
    {
        _words = words;
        _start = start;
        _count = count;
        _strings = strings;
    }

    /// <summary>Number of type ids, void (id 0) included: valid ids are 0 … TypeCount-1.</summary>
    public int TypeCount => _count;

    /// <summary>The type with id <paramref name="id"/>; id 0 is void.</summary>
    /// <exception cref="BtfFormatException">The id is out of range.</exception>
    public BtfType this[int id]
    {
        get
        {
            CheckId(id);
            return new BtfType(this, id);
        }
    }

    /// <summary>Reads and parses a raw BTF file (e.g. /sys/kernel/btf/vmlinux).</summary>
    /// <exception cref="BtfFormatException">The blob is malformed.</exception>
    public static BtfTypes ParseFile(string path) => Parse(File.ReadAllBytes(path));

    /// <summary>Parses a raw BTF blob, copying what it needs.</summary>
    /// <exception cref="BtfFormatException">The blob is malformed.</exception>
    public static BtfTypes Parse(ReadOnlySpan<byte> blob)
    {
        if (blob.Length < MinHeaderLength)
            throw Error($"the blob is {blob.Length} bytes, shorter than a BTF header ({MinHeaderLength} bytes)");
        ushort magic = BinaryPrimitives.ReadUInt16LittleEndian(blob);
        if (magic != Magic)
        {
            throw Error(magic == BinaryPrimitives.ReverseEndianness(Magic)
                ? "the blob is big-endian BTF, which is not supported"
                : $"bad magic 0x{magic:x4} (expected 0x{Magic:x4})");
        }
        if (blob[2] != 1)
            throw Error($"unsupported BTF version {blob[2]} (expected 1)");
        uint hdrLen = BinaryPrimitives.ReadUInt32LittleEndian(blob[4..]);
        uint typeOff = BinaryPrimitives.ReadUInt32LittleEndian(blob[8..]);
        uint typeLen = BinaryPrimitives.ReadUInt32LittleEndian(blob[12..]);
        uint strOff = BinaryPrimitives.ReadUInt32LittleEndian(blob[16..]);
        uint strLen = BinaryPrimitives.ReadUInt32LittleEndian(blob[20..]);
        if (hdrLen < MinHeaderLength)
            throw Error($"hdr_len {hdrLen} is smaller than the {MinHeaderLength}-byte header");
        if (hdrLen > (uint)blob.Length)
            throw Error($"hdr_len {hdrLen} exceeds the blob ({blob.Length} bytes)");
        // Section offsets are relative to the end of the header; long arithmetic cannot overflow here.
        long dataLen = blob.Length - (long)hdrLen;
        if ((long)typeOff + typeLen > dataLen)
            throw Error($"type section [{typeOff}, +{typeLen}) lies outside the {dataLen} data bytes");
        if ((long)strOff + strLen > dataLen)
            throw Error($"string section [{strOff}, +{strLen}) lies outside the {dataLen} data bytes");
        if (typeOff % 4 != 0 || typeLen % 4 != 0)
            throw Error($"type section offset {typeOff} / length {typeLen} is not 4-byte aligned");
        if (typeLen != 0 && strLen != 0 && typeOff < (long)strOff + strLen && strOff < (long)typeOff + typeLen)
            throw Error("the type and string sections overlap");
        ReadOnlySpan<byte> data = blob[(int)hdrLen..];
        ReadOnlySpan<byte> strSpan = data.Slice((int)strOff, (int)strLen);
        if (strLen > 0 && (strSpan[0] != 0 || strSpan[^1] != 0))
            throw Error("the string section must start and end with a NUL byte");

        uint[] words = MemoryMarshal.Cast<byte, uint>(data.Slice((int)typeOff, (int)typeLen)).ToArray();
        if (!BitConverter.IsLittleEndian)
            BinaryPrimitives.ReverseEndianness(words, words);
        // Every type record is at least 3 words, which bounds the id table by the blob size.
        int[] start = new int[words.Length / 3 + 1];
        int count = 1;
        int pos = 0;
        while (pos < words.Length)
        {
            if (words.Length - pos < 3)
                throw Error($"type [{count}] at byte {pos * 4} of the type section is truncated");
            uint info = words[pos + 1];
            var kind = (BtfKind)((info >> 24) & 0x1f);
            int vlen = (int)(info & 0xffff);
            CheckName(words[pos], strLen, count);
            long extra = kind switch
            {
                BtfKind.Int or BtfKind.Var or BtfKind.DeclTag => 1,
                BtfKind.Ptr or BtfKind.Fwd or BtfKind.Typedef or BtfKind.Volatile or BtfKind.Const or BtfKind.Restrict
                    or BtfKind.Func or BtfKind.Float or BtfKind.TypeTag => 0,
                BtfKind.Array => 3,
                BtfKind.Struct or BtfKind.Union or BtfKind.Datasec or BtfKind.Enum64 => 3L * vlen,
                BtfKind.Enum or BtfKind.FuncProto => 2L * vlen,
                _ => throw Error($"type [{count}] has unknown kind {(int)kind}"),
            };
            if (extra > words.Length - pos - 3)
                throw Error($"type [{count}] ({kind}, vlen {vlen}) runs past the end of the type section");
            start[count++] = pos;
            pos += 3 + (int)extra;
        }
        var btf = new BtfTypes(words, start, count, strSpan.ToArray());
        btf.Validate();
        return btf;
    }

    // ---- validation -------------------------------------------------------------------------------------

    private static void CheckName(uint nameOff, uint strLen, int id)
    {
        if (nameOff != 0 && nameOff >= strLen)
            throw Error($"type [{id}] has name offset {nameOff} outside the {strLen}-byte string section");
    }

    private void CheckRef(uint typeId, int from, string what)
    {
        if (typeId >= (uint)_count)
            throw Error($"type [{from}] refers to {what} type id {typeId}, beyond the last type id {_count - 1}");
    }

    private void Validate()
    {
        uint strLen = (uint)_strings.Length;
        for (int id = 1; id < _count; id++)
        {
            int p = _start[id];
            BtfKind kind = KindOf(id);
            int vlen = VlenOf(id);
            uint st = _words[p + 2];
            switch (kind)
            {
                case BtfKind.Ptr or BtfKind.Typedef or BtfKind.Volatile or BtfKind.Const or BtfKind.Restrict
                    or BtfKind.Func or BtfKind.TypeTag or BtfKind.Var or BtfKind.DeclTag or BtfKind.FuncProto:
                    CheckRef(st, id, "a");
                    break;
                case BtfKind.Int:
                    uint enc = _words[p + 3];
                    // BTF_INT_OFFSET (bits 16-23) + BTF_INT_BITS (bits 0-7) must fit in the type's size.
                    if ((enc & 0xff) + ((enc >> 16) & 0xff) > 128 || st > 16)
                        throw Error($"type [{id}] INT has an invalid encoding 0x{enc:x8} for size {st}");
                    break;
                case BtfKind.Array:
                    CheckRef(_words[p + 3], id, "an element");
                    CheckRef(_words[p + 4], id, "an index");
                    break;
            }
            switch (kind)
            {
                case BtfKind.Struct or BtfKind.Union or BtfKind.Datasec:
                    for (int i = 0; i < vlen; i++)
                    {
                        int m = p + 3 + (3 * i);
                        if (kind != BtfKind.Datasec)
                            CheckName(_words[m], strLen, id);
                        CheckRef(_words[m + (kind == BtfKind.Datasec ? 0 : 1)], id, "a member");
                    }
                    break;
                case BtfKind.Enum or BtfKind.Enum64:
                    int stride = kind == BtfKind.Enum ? 2 : 3;
                    for (int i = 0; i < vlen; i++)
                        CheckName(_words[p + 3 + (stride * i)], strLen, id);
                    break;
                case BtfKind.FuncProto:
                    for (int i = 0; i < vlen; i++)
                    {
                        CheckName(_words[p + 3 + (2 * i)], strLen, id);
                        CheckRef(_words[p + 4 + (2 * i)], id, "a parameter");
                    }
                    break;
            }
        }
        CheckChainsAcyclic();
    }

    /// <summary>The single-reference kinds whose chains every walk follows; a cycle among them is malformed.</summary>
    private static bool IsChainKind(BtfKind kind) => kind is BtfKind.Ptr or BtfKind.Typedef or BtfKind.Volatile
        or BtfKind.Const or BtfKind.Restrict or BtfKind.TypeTag or BtfKind.Array or BtfKind.Func or BtfKind.Var
        or BtfKind.DeclTag;

    private int ChainNext(int id) => KindOf(id) == BtfKind.Array ? (int)_words[_start[id] + 3] : (int)_words[_start[id] + 2];

    private void CheckChainsAcyclic()
    {
        // 0 = unvisited, 1 = on the current path, 2 = known to end in a non-chain type.
        byte[] state = new byte[_count];
        state[0] = 2;
        var path = new List<int>();
        for (int id = 1; id < _count; id++)
        {
            int cur = id;
            while (state[cur] == 0)
            {
                if (!IsChainKind(KindOf(cur)))
                {
                    state[cur] = 2;
                    break;
                }
                state[cur] = 1;
                path.Add(cur);
                cur = ChainNext(cur);
            }
            if (state[cur] == 1)
                throw Error($"type [{cur}] ({KindOf(cur)}) is part of a reference cycle");
            foreach (int p in path)
                state[p] = 2;
            path.Clear();
        }
    }

    // ---- raw accessors (ids validated by callers) -------------------------------------------------------

    internal BtfKind KindOf(int id) => id == 0 ? BtfKind.Void : (BtfKind)((_words[_start[id] + 1] >> 24) & 0x1f);
    internal int VlenOf(int id) => id == 0 ? 0 : (int)(_words[_start[id] + 1] & 0xffff);
    internal bool KindFlagOf(int id) => id != 0 && (_words[_start[id] + 1] & 0x8000_0000u) != 0;
    internal uint SizeTypeOf(int id) => id == 0 ? 0 : _words[_start[id] + 2];
    internal bool HasSize(int id) => KindOf(id) is BtfKind.Int or BtfKind.Struct or BtfKind.Union or BtfKind.Enum
        or BtfKind.Enum64 or BtfKind.Float or BtfKind.Datasec;
    private uint NameOffOf(int id) => id == 0 ? 0 : _words[_start[id]];
    internal string NameOf(int id) => GetString(NameOffOf(id));

    private ReadOnlySpan<byte> StringSpan(uint off)
    {
        if (off >= (uint)_strings.Length)
            return default;
        ReadOnlySpan<byte> s = _strings.AsSpan((int)off);
        // The section is NUL-terminated (checked in Parse), so IndexOf always finds one.
        return s[..s.IndexOf((byte)0)];
    }

    private string GetString(uint off) => off == 0 ? string.Empty : Encoding.UTF8.GetString(StringSpan(off));

    internal IReadOnlyList<BtfMember> MembersOf(int id)
    {
        if (KindOf(id) is not (BtfKind.Struct or BtfKind.Union))
            return [];
        bool kflag = KindFlagOf(id);
        var list = new BtfMember[VlenOf(id)];
        for (int i = 0; i < list.Length; i++)
        {
            int m = _start[id] + 3 + (3 * i);
            uint off = _words[m + 2];
            list[i] = kflag
                ? new BtfMember(GetString(_words[m]), (int)_words[m + 1], off & 0xff_ffff, (int)(off >> 24))
                : new BtfMember(GetString(_words[m]), (int)_words[m + 1], off, 0);
        }
        return list;
    }

    internal IReadOnlyList<BtfEnumValue> EnumValuesOf(int id)
    {
        BtfKind kind = KindOf(id);
        if (kind is not (BtfKind.Enum or BtfKind.Enum64))
            return [];
        bool signed = KindFlagOf(id);
        var list = new BtfEnumValue[VlenOf(id)];
        for (int i = 0; i < list.Length; i++)
        {
            if (kind == BtfKind.Enum)
            {
                int m = _start[id] + 3 + (2 * i);
                uint v = _words[m + 1];
                list[i] = new BtfEnumValue(GetString(_words[m]), signed ? (int)v : v);
            }
            else
            {
                int m = _start[id] + 3 + (3 * i);
                ulong v = _words[m + 1] | ((ulong)_words[m + 2] << 32);
                list[i] = new BtfEnumValue(GetString(_words[m]), unchecked((long)v));
            }
        }
        return list;
    }

    internal IReadOnlyList<BtfParam> ParamsOf(int id)
    {
        if (KindOf(id) != BtfKind.FuncProto)
            return [];
        var list = new BtfParam[VlenOf(id)];
        for (int i = 0; i < list.Length; i++)
        {
            int m = _start[id] + 3 + (2 * i);
            list[i] = new BtfParam(GetString(_words[m]), (int)_words[m + 1]);
        }
        return list;
    }

    internal IReadOnlyList<BtfVarSecInfo> VarSecInfosOf(int id)
    {
        if (KindOf(id) != BtfKind.Datasec)
            return [];
        var list = new BtfVarSecInfo[VlenOf(id)];
        for (int i = 0; i < list.Length; i++)
        {
            int m = _start[id] + 3 + (3 * i);
            list[i] = new BtfVarSecInfo((int)_words[m], _words[m + 1], _words[m + 2]);
        }
        return list;
    }

    internal BtfArrayInfo ArrayOf(int id)
    {
        if (KindOf(id) != BtfKind.Array)
            return default;
        int p = _start[id];
        return new BtfArrayInfo((int)_words[p + 3], (int)_words[p + 4], _words[p + 5]);
    }

    internal BtfIntInfo IntOf(int id)
    {
        if (KindOf(id) != BtfKind.Int)
            return default;
        uint enc = _words[_start[id] + 3];
        // BTF_INT_ENCODING = bits 24-27, BTF_INT_OFFSET = bits 16-23, BTF_INT_BITS = bits 0-7.
        return new BtfIntInfo((BtfIntEncoding)((enc >> 24) & 0x0f), (int)((enc >> 16) & 0xff), (int)(enc & 0xff));
    }

    internal int ExtraOf(int id) => KindOf(id) switch
    {
        BtfKind.Var or BtfKind.DeclTag => (int)_words[_start[id] + 3],
        BtfKind.Func => VlenOf(id),
        _ => 0,
    };

    private void CheckId(int id)
    {
        if ((uint)id >= (uint)_count)
            throw Error($"type id {id} is out of range (0 … {_count - 1})");
    }

    // ---- names -------------------------------------------------------------------------------------------

    /// <summary>
    /// Finds a named type. Prefers a struct/union, then a typedef, then any other kind (lowest id first within a
    /// rank). A "struct ", "union " or "enum " prefix restricts the search to that kind.
    /// </summary>
    public bool TryFindType(string name, out int id)
    {
        ArgumentNullException.ThrowIfNull(name);
        BtfKind? only = null;
        if (name.StartsWith("struct ", StringComparison.Ordinal))
            (only, name) = (BtfKind.Struct, name[7..].Trim());
        else if (name.StartsWith("union ", StringComparison.Ordinal))
            (only, name) = (BtfKind.Union, name[6..].Trim());
        else if (name.StartsWith("enum ", StringComparison.Ordinal))
            (only, name) = (BtfKind.Enum, name[5..].Trim());
        if (only is null)
            return LookupName(name, out id);
        if (LookupName(name, out id) && (KindOf(id) == only || (only == BtfKind.Enum && KindOf(id) == BtfKind.Enum64)))
            return true;
        for (id = 1; id < _count; id++)
        {
            BtfKind k = KindOf(id);
            bool kindOk = only == BtfKind.Enum ? k is BtfKind.Enum or BtfKind.Enum64 : k == only;
            if (kindOk && NameEquals(NameOffOf(id), name))
                return true;
        }
        id = 0;
        return false;
    }

    /// <summary>The id of a named type (see <see cref="TryFindType"/>).</summary>
    /// <exception cref="BtfFormatException">No type has that name.</exception>
    public int FindType(string name) =>
        TryFindType(name, out int id) ? id : throw Error($"no type named '{name}'");

    private bool NameEquals(uint off, string name)
    {
        ReadOnlySpan<byte> s = StringSpan(off);
        if (s.Length < name.Length || s.Length > name.Length * 3)
            return false;
        return Encoding.UTF8.GetString(s) == name;
    }

    private static int Rank(BtfKind kind) => kind switch
    {
        BtfKind.Struct or BtfKind.Union => 0,
        BtfKind.Typedef => 1,
        BtfKind.Fwd => 3,
        _ => 2,
    };

    /// <summary>
    /// Open-addressing table from name to type id (stored as id+1; 0 = empty), hashed over the UTF-8 bytes so no
    /// name is decoded. <see cref="HashCode"/> is seeded per process, so a crafted blob cannot force collisions.
    /// </summary>
    private int[] NameIndex()
    {
        int[]? table = Volatile.Read(ref _nameIndex);
        if (table is not null)
            return table;
        int named = 0;
        for (int id = 1; id < _count; id++)
        {
            if (NameOffOf(id) != 0)
                named++;
        }
        table = new int[Math.Max(16, (int)BitOperations.RoundUpToPowerOf2((uint)named * 2))];
        int mask = table.Length - 1;
        for (int id = 1; id < _count; id++)
        {
            uint off = NameOffOf(id);
            if (off == 0)
                continue;
            BtfKind kind = KindOf(id);
            if (kind == BtfKind.DeclTag)
                continue;
            ReadOnlySpan<byte> name = StringSpan(off);
            if (name.IsEmpty)
                continue;
            int slot = HashName(name) & mask;
            while (true)
            {
                int other = table[slot] - 1;
                if (other < 0)
                {
                    table[slot] = id + 1;
                    break;
                }
                uint otherOff = NameOffOf(other);
                if (otherOff == off || StringSpan(otherOff).SequenceEqual(name))
                {
                    // Lower rank wins; within a rank, the lowest id (the first seen) stays.
                    if (Rank(kind) < Rank(KindOf(other)))
                        table[slot] = id + 1;
                    break;
                }
                slot = (slot + 1) & mask;
            }
        }
        Interlocked.CompareExchange(ref _nameIndex, table, null);
        return _nameIndex!;
    }

    private static int HashName(ReadOnlySpan<byte> name)
    {
        var hash = new HashCode();
        hash.AddBytes(name);
        return hash.ToHashCode();
    }

    private bool LookupName(string name, out int id)
    {
        int[] table = NameIndex();
        int mask = table.Length - 1;
        byte[] utf8 = Encoding.UTF8.GetBytes(name);
        int slot = HashName(utf8) & mask;
        while (true)
        {
            int candidate = table[slot] - 1;
            if (candidate < 0)
            {
                id = 0;
                return false;
            }
            if (StringSpan(NameOffOf(candidate)).SequenceEqual(utf8))
            {
                id = candidate;
                return true;
            }
            slot = (slot + 1) & mask;
        }
    }

    // ---- resolution -------------------------------------------------------------------------------------

    /// <summary>Follows typedefs and qualifiers (const, volatile, restrict, type tags) to the underlying type.</summary>
    public int StripModifiers(int id)
    {
        CheckId(id);
        // Chains are acyclic (checked in Parse), so this ends within TypeCount hops.
        while (KindOf(id) is BtfKind.Typedef or BtfKind.Volatile or BtfKind.Const or BtfKind.Restrict or BtfKind.TypeTag)
            id = (int)_words[_start[id] + 2];
        return id;
    }

    private int PointerSize()
    {
        if (_pointerSize != 0)
            return _pointerSize;
        // BTF does not record the pointer size; like libbpf, take it from 'long'. Default: 8 (x86-64).
        int size = 8;
        for (int id = 1; id < _count; id++)
        {
            if (KindOf(id) == BtfKind.Int && SizeTypeOf(id) is 4 or 8
                && (NameEquals(NameOffOf(id), "long int") || NameEquals(NameOffOf(id), "long unsigned int")))
            {
                size = (int)SizeTypeOf(id);
                break;
            }
        }
        _pointerSize = size;
        return size;
    }

    /// <summary>Size in bytes of type <paramref name="id"/> (through typedefs, qualifiers and arrays).</summary>
    /// <exception cref="BtfFormatException">The type has no size (void, function, forward declaration) or the size overflows.</exception>
    public int SizeOf(int id) =>
        TrySizeOf(id, out long size) && size <= int.MaxValue
            ? (int)size
            : throw Error($"{Describe(id)} (type [{id}]) has no usable size");

    private bool TrySizeOf(int id, out long size)
    {
        CheckId(id);
        long multiplier = 1;
        size = 0;
        while (true)
        {
            id = StripModifiers(id);
            switch (KindOf(id))
            {
                case BtfKind.Int or BtfKind.Struct or BtfKind.Union or BtfKind.Enum or BtfKind.Enum64 or BtfKind.Float
                    or BtfKind.Datasec:
                    return TryMultiply(multiplier, SizeTypeOf(id), out size);
                case BtfKind.Ptr:
                    return TryMultiply(multiplier, (uint)PointerSize(), out size);
                case BtfKind.Var:
                    id = (int)SizeTypeOf(id);
                    break;
                case BtfKind.Array:
                    if (!TryMultiply(multiplier, _words[_start[id] + 5], out multiplier))
                        return false;
                    id = (int)_words[_start[id] + 3];
                    break;
                default:
                    return false;
            }
        }
    }

    private static bool TryMultiply(long a, uint b, out long result)
    {
        // Sizes above 2^40 are nonsense for kernel types; refusing them keeps the product far from overflow.
        const long Limit = 1L << 40;
        result = 0;
        if (b != 0 && a > Limit / b)
            return false;
        result = a * b;
        return true;
    }

    /// <summary>Size in bytes of a named struct, union, typedef, int, enum or float.</summary>
    /// <exception cref="BtfFormatException">No type has that name, or it has no size.</exception>
    public int SizeOf(string typeName)
    {
        if (!TryFindType(typeName, out int id))
            throw Error($"no type named '{typeName}'");
        return TrySizeOf(id, out long size) && size <= int.MaxValue
            ? (int)size
            : throw Error($"type '{typeName}' ({Describe(id)}) has no usable size");
    }

    /// <summary>Byte offset of a dotted member path (anonymous members searched transparently; "a.b[2]" indexes arrays).</summary>
    /// <exception cref="BtfFormatException">The type or a member along the path does not exist.</exception>
    public int OffsetOf(string typeName, string memberPath) => ResolveMember(typeName, memberPath).Offset;

    /// <summary>Like <see cref="OffsetOf"/>, returning false when the type or member does not exist.</summary>
    public bool TryOffsetOf(string typeName, string memberPath, out int offset)
    {
        try
        {
            offset = ResolveMember(typeName, memberPath).Offset;
            return true;
        }
        catch (BtfFormatException)
        {
            offset = 0;
            return false;
        }
    }

    /// <summary>Resolves a dotted member path inside <paramref name="typeName"/>: offsets, bitfield, and the member's type.</summary>
    /// <exception cref="BtfFormatException">The type or a member along the path does not exist, or the path crosses a pointer.</exception>
    public BtfMemberInfo ResolveMember(string typeName, string memberPath)
    {
        ArgumentNullException.ThrowIfNull(typeName);
        ArgumentNullException.ThrowIfNull(memberPath);
        if (!TryFindType(typeName, out int root))
            throw Error($"no type named '{typeName}'");
        List<Segment> segments = ParseSegments(memberPath, memberPath, allowArrows: false, out _);
        return ResolveSegments(root, typeName, memberPath, segments, 0, segments.Count);
    }

    /// <summary>
    /// Resolves "type.member->member.member" into offset/dereference steps: start at the address of a
    /// <c>type</c>, add each step's offset, and read a pointer there when the step says so.
    /// </summary>
    /// <exception cref="BtfFormatException">A type or member does not exist, or "->" follows a non-pointer.</exception>
    public MemberPath ResolvePath(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        int firstSep = path.AsSpan().IndexOfAny('.', '-');
        if (firstSep <= 0 || path[firstSep] != '.')
            throw Error($"member path '{path}' must start with 'type.member'");
        string typeName = path[..firstSep].Trim();
        if (!TryFindType(typeName, out int root))
            throw Error($"no type named '{typeName}' (in member path '{path}')");
        List<Segment> segments = ParseSegments(path[(firstSep + 1)..], path, allowArrows: true, out List<int> groupStarts);
        var steps = new List<MemberPathStep>(groupStarts.Count);
        int current = root;
        string currentName = typeName;
        BtfMemberInfo? info = null;
        for (int g = 0; g < groupStarts.Count; g++)
        {
            int end = g + 1 < groupStarts.Count ? groupStarts[g + 1] : segments.Count;
            info = ResolveSegments(current, currentName, path, segments, groupStarts[g], end);
            bool last = g == groupStarts.Count - 1;
            if (!last)
            {
                if (!info.IsPointer)
                    throw Error($"'->' after '{segments[end - 1].Name}' in '{path}', but that member is {Describe(info.TypeId)}, not a pointer");
                current = info.PointeeTypeId;
                currentName = Describe(current);
            }
            steps.Add(new MemberPathStep(info.Offset, !last));
        }
        return new MemberPath { Path = path, RootTypeId = root, Steps = steps, Final = info! };
    }

    private readonly record struct Segment(string Name, byte[] Utf8, List<long>? Indices);

    private static List<Segment> ParseSegments(string text, string fullPath, bool allowArrows, out List<int> groupStarts)
    {
        var segments = new List<Segment>();
        groupStarts = [0];
        int i = 0;
        while (true)
        {
            int nameStart = i;
            while (i < text.Length && (char.IsAsciiLetterOrDigit(text[i]) || text[i] == '_'))
                i++;
            if (i == nameStart)
                throw Error($"member path '{fullPath}' has an empty or invalid member name at position {nameStart}");
            string name = text[nameStart..i];
            List<long>? indices = null;
            while (i < text.Length && text[i] == '[')
            {
                int close = text.IndexOf(']', i);
                if (close < 0 || !long.TryParse(text.AsSpan(i + 1, close - i - 1), System.Globalization.NumberStyles.None,
                        System.Globalization.CultureInfo.InvariantCulture, out long index))
                {
                    throw Error($"member path '{fullPath}' has an invalid array index after '{name}'");
                }
                (indices ??= []).Add(index);
                i = close + 1;
            }
            segments.Add(new Segment(name, Encoding.UTF8.GetBytes(name), indices));
            if (i == text.Length)
                return segments;
            if (text[i] == '.')
            {
                i++;
            }
            else if (allowArrows && text[i] == '-' && i + 1 < text.Length && text[i + 1] == '>')
            {
                i += 2;
                groupStarts.Add(segments.Count);
            }
            else
            {
                throw Error($"member path '{fullPath}' has an unexpected '{text[i]}' at position {i}"
                    + (text[i] == '-' ? " ('->' is only allowed in ResolvePath)" : ""));
            }
        }
    }

    private BtfMemberInfo ResolveSegments(int root, string typeName, string path, List<Segment> segments, int from, int to)
    {
        int current = root;
        long bitOffset = 0;
        int bitfieldSize = 0;
        for (int s = from; s < to; s++)
        {
            Segment seg = segments[s];
            int container = StripModifiers(current);
            if (KindOf(container) is not (BtfKind.Struct or BtfKind.Union))
            {
                throw Error(s == from
                    ? $"'{typeName}' is {Describe(container)}, not a struct or union (member path '{path}')"
                    : $"'{segments[s - 1].Name}' in '{path}' is {Describe(current)}, not a struct or union");
            }
            HashSet<int>? visited = null;
            if (!FindMember(container, seg.Utf8, 0, ref visited, out int memberType, out long memberBits, out bitfieldSize))
                throw Error($"{Describe(container)} has no member '{seg.Name}' (member path '{path}' from '{typeName}')");
            bitOffset += memberBits;
            current = memberType;
            if (seg.Indices is null)
                continue;
            if (bitfieldSize != 0)
                throw Error($"'{seg.Name}' in '{path}' is a bitfield and cannot be indexed");
            foreach (long index in seg.Indices)
            {
                int array = StripModifiers(current);
                if (KindOf(array) != BtfKind.Array)
                    throw Error($"'{seg.Name}' in '{path}' is {Describe(current)}, not an array");
                BtfArrayInfo a = ArrayOf(array);
                // A zero-length (flexible) array may be indexed freely; otherwise the index must be in bounds.
                if (a.Count != 0 && index >= a.Count)
                    throw Error($"index {index} is out of range for '{seg.Name}' ({a.Count} elements) in '{path}'");
                if (!TrySizeOf(a.ElementType, out long elementSize) || !TryMultiply(index, (uint)Math.Min(elementSize, uint.MaxValue), out long byteOff))
                    throw Error($"cannot index '{seg.Name}' in '{path}': element size unknown or offset too large");
                bitOffset += byteOff * 8;
                current = a.ElementType;
            }
        }
        int resolved = StripModifiers(current);
        BtfKind kind = KindOf(resolved);
        // Pre-kind_flag BTF encodes a bitfield in the INT type itself (BTF_INT_OFFSET / BTF_INT_BITS).
        if (bitfieldSize == 0 && kind == BtfKind.Int && segments[to - 1].Indices is null)
        {
            BtfIntInfo intInfo = IntOf(resolved);
            if (intInfo.BitOffset != 0 || (intInfo.Bits != 0 && intInfo.Bits != SizeTypeOf(resolved) * 8))
            {
                bitOffset += intInfo.BitOffset;
                bitfieldSize = intInfo.Bits;
            }
        }
        long byteOffset = bitOffset / 8;
        if (byteOffset > int.MaxValue)
            throw Error($"member path '{path}' resolves to an offset beyond 2 GiB");
        BtfArrayInfo arr = kind == BtfKind.Array ? ArrayOf(resolved) : default;
        return new BtfMemberInfo
        {
            TypeName = typeName,
            MemberPath = path,
            Offset = (int)byteOffset,
            BitOffset = bitOffset,
            BitfieldSize = bitfieldSize,
            TypeId = current,
            ResolvedTypeId = resolved,
            ResolvedKind = kind,
            Size = TrySizeOf(resolved, out long size) && size <= int.MaxValue ? (int)size : 0,
            PointeeTypeId = kind == BtfKind.Ptr ? (int)SizeTypeOf(resolved) : 0,
            ElementTypeId = arr.ElementType,
            ElementCount = (int)Math.Min(arr.Count, int.MaxValue),
        };
    }

    /// <summary>Finds a member by name, looking through anonymous struct/union members; each nested type is searched once.</summary>
    private bool FindMember(int container, ReadOnlySpan<byte> name, int depth, ref HashSet<int>? visited,
        out int memberType, out long bitOffset, out int bitfieldSize)
    {
        bool kflag = KindFlagOf(container);
        int vlen = VlenOf(container);
        int p = _start[container] + 3;
        for (int i = 0; i < vlen; i++, p += 3)
        {
            uint off = _words[p + 2];
            long bits = kflag ? off & 0xff_ffff : off;
            ReadOnlySpan<byte> memberName = StringSpan(_words[p]);
            if (memberName.Length != 0)
            {
                if (memberName.SequenceEqual(name))
                {
                    memberType = (int)_words[p + 1];
                    bitOffset = bits;
                    bitfieldSize = kflag ? (int)(off >> 24) : 0;
                    return true;
                }
                continue;
            }
            int nested = StripModifiers((int)_words[p + 1]);
            if (KindOf(nested) is not (BtfKind.Struct or BtfKind.Union))
                continue;
            if (depth >= MaxDepth)
                throw Error($"anonymous members of {Describe(container)} nest deeper than {MaxDepth} levels");
            visited ??= [];
            if (!visited.Add(nested))
                continue;
            if (FindMember(nested, name, depth + 1, ref visited, out memberType, out bitOffset, out bitfieldSize))
            {
                bitOffset += bits;
                return true;
            }
        }
        memberType = 0;
        bitOffset = 0;
        bitfieldSize = 0;
        return false;
    }

    // ---- description ------------------------------------------------------------------------------------

    /// <summary>A C-like description of a type: "struct task_struct", "unsigned int", "struct cred *", "char [16]".</summary>
    public string Describe(int id)
    {
        CheckId(id);
        var sb = new StringBuilder();
        Describe(id, sb, 0);
        return sb.ToString();
    }

    private void Describe(int id, StringBuilder sb, int depth)
    {
        if (depth > MaxDepth || sb.Length > MaxDescribeLength)
        {
            sb.Append('…');
            return;
        }
        string name = NameOf(id);
        string Named(string prefix) => name.Length == 0 ? prefix + " (anon)" : prefix + " " + name;
        switch (KindOf(id))
        {
            case BtfKind.Void:
                sb.Append("void");
                break;
            case BtfKind.Int or BtfKind.Float or BtfKind.Typedef:
                sb.Append(name.Length == 0 ? "(anon)" : name);
                break;
            case BtfKind.Struct:
                sb.Append(Named("struct"));
                break;
            case BtfKind.Union:
                sb.Append(Named("union"));
                break;
            case BtfKind.Enum or BtfKind.Enum64:
                sb.Append(Named("enum"));
                break;
            case BtfKind.Fwd:
                sb.Append(Named(KindFlagOf(id) ? "union" : "struct"));
                break;
            case BtfKind.Ptr:
                Describe((int)SizeTypeOf(id), sb, depth + 1);
                sb.Append(sb.Length > 0 && sb[^1] == '*' ? "*" : " *");
                break;
            case BtfKind.Const or BtfKind.Volatile or BtfKind.Restrict:
                sb.Append(KindOf(id) switch { BtfKind.Const => "const ", BtfKind.Volatile => "volatile ", _ => "restrict " });
                Describe((int)SizeTypeOf(id), sb, depth + 1);
                break;
            case BtfKind.TypeTag:
                sb.Append("__attribute__((btf_type_tag(\"")
                    .Append(name).Append("\"))) ");
                Describe((int)SizeTypeOf(id), sb, depth + 1);
                break;
            case BtfKind.Array:
                BtfArrayInfo a = ArrayOf(id);
                Describe(a.ElementType, sb, depth + 1);
                sb.Append(" [").Append(a.Count).Append(']');
                break;
            case BtfKind.FuncProto:
                Describe((int)SizeTypeOf(id), sb, depth + 1);
                sb.Append(" (*)(");
                int vlen = VlenOf(id);
                for (int i = 0; i < vlen && sb.Length <= MaxDescribeLength; i++)
                {
                    if (i > 0)
                        sb.Append(", ");
                    int paramType = (int)_words[_start[id] + 4 + (2 * i)];
                    if (paramType == 0 && i == vlen - 1)
                        sb.Append("...");
                    else
                        Describe(paramType, sb, depth + 1);
                }
                sb.Append(')');
                break;
            case BtfKind.Func:
                sb.Append(Named("func"));
                break;
            case BtfKind.Var:
                sb.Append(Named("var"));
                break;
            case BtfKind.Datasec:
                sb.Append(Named("datasec"));
                break;
            case BtfKind.DeclTag:
                sb.Append(Named("decl_tag"));
                break;
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static BtfFormatException Error(string message) => new("BTF: " + message);
}
