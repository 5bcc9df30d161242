using System.Buffers.Binary;
using System.Text;
using Vmi.Linux.Btf;

namespace Vmi.Linux.Tests.Btf;

/// <summary>Builds small BTF blobs word by word, the way pahole/libbpf lay them out.</summary>
internal sealed class BtfBuilder
{
    private readonly List<uint> _types = [];
    private readonly MemoryStream _strings = new();
    private readonly Dictionary<string, uint> _stringOffsets = [];
    private int _nextId = 1;

    public BtfBuilder() => _strings.WriteByte(0);

    public uint Str(string s)
    {
        if (s.Length == 0)
            return 0;
        if (_stringOffsets.TryGetValue(s, out uint off))
            return off;
        off = (uint)_strings.Length;
        _strings.Write(Encoding.UTF8.GetBytes(s));
        _strings.WriteByte(0);
        _stringOffsets[s] = off;
        return off;
    }

    private static uint Info(BtfKind kind, int vlen, bool kindFlag = false) =>
        ((uint)kind << 24) | (uint)vlen | (kindFlag ? 0x8000_0000u : 0);

    private int Add(string name, uint info, uint sizeOrType, params uint[] extra)
    {
        _types.Add(Str(name));
        _types.Add(info);
        _types.Add(sizeOrType);
        _types.AddRange(extra);
        return _nextId++;
    }

    /// <summary>Appends raw words (for malformed blobs).</summary>
    public void Raw(params uint[] words) => _types.AddRange(words);

    public int Int(string name, int size, BtfIntEncoding encoding = BtfIntEncoding.None, int bits = -1, int bitOffset = 0) =>
        Add(name, Info(BtfKind.Int, 0), (uint)size, ((uint)encoding << 24) | ((uint)bitOffset << 16) | (uint)(bits < 0 ? size * 8 : bits));

    public int Ptr(int type) => Add("", Info(BtfKind.Ptr, 0), (uint)type);
    public int Array(int element, int index, int count) => Add("", Info(BtfKind.Array, 0), 0, (uint)element, (uint)index, (uint)count);
    public int Typedef(string name, int type) => Add(name, Info(BtfKind.Typedef, 0), (uint)type);
    public int Volatile(int type) => Add("", Info(BtfKind.Volatile, 0), (uint)type);
    public int Const(int type) => Add("", Info(BtfKind.Const, 0), (uint)type);
    public int Restrict(int type) => Add("", Info(BtfKind.Restrict, 0), (uint)type);
    public int TypeTag(string name, int type) => Add(name, Info(BtfKind.TypeTag, 0), (uint)type);
    public int Fwd(string name, bool union = false) => Add(name, Info(BtfKind.Fwd, 0, union), 0);
    public int Float(string name, int size) => Add(name, Info(BtfKind.Float, 0), (uint)size);
    public int Func(string name, int proto, int linkage = 1) => Add(name, Info(BtfKind.Func, linkage), (uint)proto);
    public int Var(string name, int type, int linkage = 1) => Add(name, Info(BtfKind.Var, 0), (uint)type, (uint)linkage);
    public int DeclTag(string name, int type, int componentIndex = -1) => Add(name, Info(BtfKind.DeclTag, 0), (uint)type, unchecked((uint)componentIndex));

    /// <summary>A struct or union; with <paramref name="kindFlag"/>, members carry (bitfield size &lt;&lt; 24 | bit offset).</summary>
    public int Composite(BtfKind kind, string name, int size, bool kindFlag, params (string Name, int Type, uint BitOffset, int BitfieldSize)[] members)
    {
        var extra = new List<uint>();
        foreach (var m in members)
        {
            extra.Add(Str(m.Name));
            extra.Add((uint)m.Type);
            extra.Add(kindFlag ? ((uint)m.BitfieldSize << 24) | m.BitOffset : m.BitOffset);
        }
        return Add(name, Info(kind, members.Length, kindFlag), (uint)size, [.. extra]);
    }

    public int Struct(string name, int size, params (string Name, int Type, uint BitOffset)[] members) =>
        Composite(BtfKind.Struct, name, size, false, [.. members.Select(m => (m.Name, m.Type, m.BitOffset, 0))]);

    public int Union(string name, int size, params (string Name, int Type, uint BitOffset)[] members) =>
        Composite(BtfKind.Union, name, size, false, [.. members.Select(m => (m.Name, m.Type, m.BitOffset, 0))]);

    public int Enum(string name, int size, bool signed, params (string Name, int Value)[] values) =>
        Add(name, Info(BtfKind.Enum, values.Length, signed), (uint)size, [.. values.SelectMany(v => new[] { Str(v.Name), unchecked((uint)v.Value) })]);

    public int Enum64(string name, bool signed, params (string Name, long Value)[] values) =>
        Add(name, Info(BtfKind.Enum64, values.Length, signed), 8,
            [.. values.SelectMany(v => new[] { Str(v.Name), (uint)(ulong)v.Value, (uint)((ulong)v.Value >> 32) })]);

    public int FuncProto(int returnType, params (string Name, int Type)[] parameters) =>
        Add("", Info(BtfKind.FuncProto, parameters.Length), (uint)returnType, [.. parameters.SelectMany(p => new[] { Str(p.Name), (uint)p.Type })]);

    public int Datasec(string name, int size, params (int Type, uint Offset, uint Size)[] vars) =>
        Add(name, Info(BtfKind.Datasec, vars.Length), (uint)size, [.. vars.SelectMany(v => new[] { (uint)v.Type, v.Offset, v.Size })]);

    /// <summary>The blob: 24-byte header, type section, string section.</summary>
    public byte[] Build()
    {
        byte[] strings = _strings.ToArray();
        int typeLen = _types.Count * 4;
        byte[] blob = new byte[24 + typeLen + strings.Length];
        BinaryPrimitives.WriteUInt16LittleEndian(blob, 0xEB9F);
        blob[2] = 1;
        BinaryPrimitives.WriteUInt32LittleEndian(blob.AsSpan(4), 24);
        BinaryPrimitives.WriteUInt32LittleEndian(blob.AsSpan(8), 0);
        BinaryPrimitives.WriteUInt32LittleEndian(blob.AsSpan(12), (uint)typeLen);
        BinaryPrimitives.WriteUInt32LittleEndian(blob.AsSpan(16), (uint)typeLen);
        BinaryPrimitives.WriteUInt32LittleEndian(blob.AsSpan(20), (uint)strings.Length);
        for (int i = 0; i < _types.Count; i++)
            BinaryPrimitives.WriteUInt32LittleEndian(blob.AsSpan(24 + (i * 4)), _types[i]);
        strings.CopyTo(blob, 24 + typeLen);
        return blob;
    }

    /// <summary>A blob with every kind, used by several tests. Layout mirrors a few kernel shapes.</summary>
    public static byte[] Sample() => SampleBuilder().Build();

    public static BtfBuilder SampleBuilder()
    {
        var b = new BtfBuilder();
        int uint_ = b.Int("unsigned int", 4);                                   // 1
        int int_ = b.Int("int", 4, BtfIntEncoding.Signed);                       // 2
        int char_ = b.Int("char", 1, BtfIntEncoding.Char | BtfIntEncoding.Signed); // 3
        int ulong_ = b.Int("long unsigned int", 8);                              // 4
        int u32 = b.Typedef("u32", uint_);                                       // 5
        int kuid = b.Struct("kuid_t", 4, ("val", u32, 0));                      // 6  struct kuid_t { u32 val; } (anonymous-named in Linux, named here)
        int kuidT = b.Typedef("kuid_t", kuid);                                  // 7
        int cred = b.Struct("cred", 16, ("usage", int_, 0), ("uid", kuidT, 64)); // 8
        int constCred = b.Const(cred);                                            // 9
        int credPtr = b.Ptr(constCred);                                           // 10
        int lh = b.Fwd("list_head");                                              // 11
        int listHead = b.Struct("list_head", 16, ("next", 0, 0), ("prev", 0, 64)); // 12 (pointer members patched below are not needed)
        int commArr = b.Array(char_, int_, 16);                                   // 13
        // Anonymous struct holding pgd, like mm_struct in 6.1.
        int pgdPtr = b.Ptr(ulong_);                                               // 14
        int anonInner = b.Struct("", 24, ("mmap", ulong_, 0), ("pgd", pgdPtr, 64), ("flags", ulong_, 128)); // 15
        int mm = b.Struct("mm_struct", 32, ("", anonInner, 0), ("cpu_bitmap", ulong_, 192)); // 16
        // Bitfields with kind_flag set.
        int bits = b.Composite(BtfKind.Struct, "bits", 8, true,
            ("a", uint_, 0, 1), ("b", uint_, 1, 3), ("c", uint_, 32, 0));      // 17
        // Old-style bitfield: INT carrying offset/bits, kind_flag off.
        int oldBitInt = b.Int("unsigned int", 4, bits: 5, bitOffset: 2);          // 18
        int oldBits = b.Struct("oldbits", 4, ("x", oldBitInt, 8));               // 19
        int anonUnion = b.Union("", 8, ("u_a", ulong_, 0), ("u_b", int_, 0));   // 20
        int vui = b.Volatile(uint_);                                              // 21
        int cvui = b.Const(vui);                                                  // 22
        int tdChain1 = b.Typedef("td1", cvui);                                    // 23
        int tdChain2 = b.Typedef("td2", tdChain1);                                // 24
        int sched = b.Struct("sched_entity", 16, ("load", ulong_, 0), ("vruntime", ulong_, 64)); // 25
        int task = b.Struct("task_struct", 128,
            ("state", vui, 0), ("se", sched, 64), ("tasks", listHead, 192), ("pid", int_, 320),
            ("real_cred", credPtr, 384), ("comm", commArr, 448), ("mm", b.Ptr(mm), 576),   // ptr = 26
            ("", anonUnion, 640), ("flags", tdChain2, 704), ("arr2", b.Array(b.Array(int_, int_, 3), int_, 2), 768)); // 27, 28, task = 29
        _ = (lh, bits, oldBits, task);
        b.Enum("pid_type", 4, false, ("PIDTYPE_PID", 0), ("PIDTYPE_MAX", 4));   // 30
        b.Enum("neg", 4, true, ("MINUS", -1));                                  // 31
        b.Enum64("big", false, ("HUGE", unchecked((long)0xFFFF_FFFF_0000_0001UL)), ("SMALL", 2)); // 32
        int proto = b.FuncProto(int_, ("p", credPtr), ("", 0));                   // 33 (varargs)
        b.Func("do_thing", proto);                                                // 34
        b.Float("double", 8);                                                     // 35
        int v = b.Var("jiffies", ulong_);                                         // 36
        b.Datasec(".data", 8, (v, 0, 8));                                         // 37
        b.DeclTag("user", task, 3);                                               // 38
        b.TypeTag("rcu", task);                                                   // 39
        b.Restrict(b.Ptr(char_));                                                 // 40, 41
        b.Union("onion", 8, ("x", int_, 0), ("y", ulong_, 0));                   // 42
        return b;
    }
}
