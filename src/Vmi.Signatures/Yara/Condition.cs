using System.Buffers.Binary;
using Vmi.Signatures.Patterns;

namespace Vmi.Signatures.Yara;

internal enum ValueKind : byte { Undefined, Int, Float, String }

/// <summary>A condition value. Booleans are integers 0/1, as in YARA; undefined propagates like YARA's UNDEFINED.</summary>
internal readonly struct Value
{
    public readonly ValueKind Kind;
    public readonly long I;
    public readonly double F;
    public readonly byte[]? S;

    private Value(ValueKind kind, long i, double f, byte[]? s)
    {
        Kind = kind;
        I = i;
        F = f;
        S = s;
    }

    public static readonly Value Undefined = default;
    public static readonly Value True = Int(1);
    public static readonly Value False = Int(0);
    public static Value Int(long i) => new(ValueKind.Int, i, 0, null);
    public static Value Float(double f) => new(ValueKind.Float, 0, f, null);
    public static Value Str(byte[] s) => new(ValueKind.String, 0, 0, s);
    public static Value Bool(bool b) => b ? True : False;

    public bool IsUndefined => Kind == ValueKind.Undefined;

    public bool Truth => Kind switch
    {
        ValueKind.Int => I != 0,
        ValueKind.Float => F != 0,
        ValueKind.String => S!.Length > 0,
        _ => false,
    };

    public double AsDouble => Kind == ValueKind.Float ? F : I;
}

/// <summary>What a condition sees while it is evaluated for one scanned block.</summary>
internal sealed unsafe class EvalContext
{
    public byte* Data;
    public long Length;
    public long BaseOffset;
    public MatchList[] Matches = [];
    public bool[] RuleResults = [];
    public Value[] Variables = [];
    public Value[] Externals = [];
    public int CurrentString = -1;
    public ScanBudget Budget = ScanBudget.Unlimited;
    public long? EntryPoint;
    /// <summary>For multi-block scans (a process's regions): reads by absolute address; filesize is undefined.</summary>
    public BlockReader? Reader;

    public ReadOnlySpan<byte> Span => new(Data, checked((int)Math.Min(Length, int.MaxValue)));
}

internal abstract class Node
{
    public abstract Value Eval(EvalContext c);

    /// <summary>The constant value of this node if it has no run-time inputs.</summary>
    public virtual Value? Constant => null;
}

internal sealed class ConstNode(Value value) : Node
{
    public override Value Eval(EvalContext c) => value;
    public override Value? Constant => value;
}

internal sealed class FilesizeNode : Node
{
    public override Value Eval(EvalContext c) => c.Reader is null ? Value.Int(c.Length) : Value.Undefined;
}

/// <summary>Reads <paramref name="destination"/>.Length bytes at an absolute address of a multi-block scan.</summary>
public delegate bool BlockReader(long address, Span<byte> destination);

internal sealed class EntrypointNode : Node
{
    public override Value Eval(EvalContext c) => c.EntryPoint is long ep ? Value.Int(ep) : Value.Undefined;
}

internal sealed class AndNode(Node left, Node right) : Node
{
    public override Value Eval(EvalContext c)
    {
        var l = left.Eval(c);
        if (!l.Truth)
            return Value.False;
        var r = right.Eval(c);
        return Value.Bool(r.Truth);
    }
}

internal sealed class OrNode(Node left, Node right) : Node
{
    public override Value Eval(EvalContext c)
    {
        var l = left.Eval(c);
        if (l.Truth)
            return Value.True;
        var r = right.Eval(c);
        if (r.Truth)
            return Value.True;
        return l.IsUndefined && r.IsUndefined ? Value.Undefined : Value.False;
    }
}

internal sealed class NotNode(Node operand) : Node
{
    public override Value Eval(EvalContext c)
    {
        var v = operand.Eval(c);
        return v.IsUndefined ? v : Value.Bool(!v.Truth);
    }
}

internal sealed class DefinedNode(Node operand) : Node
{
    public override Value Eval(EvalContext c) => Value.Bool(!operand.Eval(c).IsUndefined);
}

internal sealed class NegNode(Node operand) : Node
{
    public override Value Eval(EvalContext c)
    {
        var v = operand.Eval(c);
        return v.Kind switch
        {
            ValueKind.Int => Value.Int(unchecked(-v.I)),
            ValueKind.Float => Value.Float(-v.F),
            _ => Value.Undefined,
        };
    }
}

internal sealed class BitNotNode(Node operand) : Node
{
    public override Value Eval(EvalContext c)
    {
        var v = operand.Eval(c);
        return v.Kind == ValueKind.Int ? Value.Int(~v.I) : Value.Undefined;
    }
}

internal sealed class ArithNode(string op, Node left, Node right) : Node
{
    public string Op => op;

    public override Value Eval(EvalContext c) => Apply(op, left.Eval(c), right.Eval(c));

    public static Value Apply(string op, Value l, Value r)
    {
        if (l.IsUndefined || r.IsUndefined)
            return Value.Undefined;
        if (l.Kind == ValueKind.String || r.Kind == ValueKind.String)
            return Value.Undefined;
        if (l.Kind == ValueKind.Float || r.Kind == ValueKind.Float)
        {
            double a = l.AsDouble, b = r.AsDouble;
            return op switch
            {
                "+" => Value.Float(a + b),
                "-" => Value.Float(a - b),
                "*" => Value.Float(a * b),
                "\\" => Value.Float(a / b),
                _ => Value.Undefined,
            };
        }
        long x = l.I, y = r.I;
        return op switch
        {
            "+" => Value.Int(unchecked(x + y)),
            "-" => Value.Int(unchecked(x - y)),
            "*" => Value.Int(unchecked(x * y)),
            "\\" => y == 0 || (x == long.MinValue && y == -1) ? Value.Undefined : Value.Int(x / y),
            "%" => y == 0 || (x == long.MinValue && y == -1) ? Value.Undefined : Value.Int(x % y),
            "&" => Value.Int(x & y),
            "|" => Value.Int(x | y),
            "^" => Value.Int(x ^ y),
            "<<" => Value.Int(y is >= 0 and < 64 ? x << (int)y : 0),
            ">>" => Value.Int(y is >= 0 and < 64 ? x >> (int)y : 0),
            _ => Value.Undefined,
        };
    }
}

internal sealed class CompareNode(string op, Node left, Node right) : Node
{
    public override Value Eval(EvalContext c)
    {
        var l = left.Eval(c);
        var r = right.Eval(c);
        if (l.IsUndefined || r.IsUndefined)
            return Value.Undefined;
        int cmp;
        if (l.Kind == ValueKind.String && r.Kind == ValueKind.String)
        {
            cmp = l.S.AsSpan().SequenceCompareTo(r.S);
        }
        else if (l.Kind == ValueKind.String || r.Kind == ValueKind.String)
        {
            return Value.Undefined;
        }
        else if (l.Kind == ValueKind.Float || r.Kind == ValueKind.Float)
        {
            cmp = l.AsDouble.CompareTo(r.AsDouble);
        }
        else
        {
            cmp = l.I.CompareTo(r.I);
        }
        return Value.Bool(op switch
        {
            "==" => cmp == 0,
            "!=" => cmp != 0,
            "<" => cmp < 0,
            "<=" => cmp <= 0,
            ">" => cmp > 0,
            _ => cmp >= 0,
        });
    }
}

internal sealed class StringOpNode(string op, Node left, Node right) : Node
{
    public override Value Eval(EvalContext c)
    {
        var l = left.Eval(c);
        var r = right.Eval(c);
        if (l.Kind != ValueKind.String || r.Kind != ValueKind.String)
            return Value.Undefined;
        ReadOnlySpan<byte> a = l.S, b = r.S;
        return Value.Bool(op switch
        {
            "contains" => a.IndexOf(b) >= 0,
            "icontains" => IndexOfIgnoreCase(a, b) >= 0,
            "startswith" => a.StartsWith(b),
            "istartswith" => a.Length >= b.Length && EqualsIgnoreCase(a[..b.Length], b),
            "endswith" => a.EndsWith(b),
            "iendswith" => a.Length >= b.Length && EqualsIgnoreCase(a[^b.Length..], b),
            _ => a.Length == b.Length && EqualsIgnoreCase(a, b), // iequals
        });
    }

    private static byte Lower(byte b) => b is >= (byte)'A' and <= (byte)'Z' ? (byte)(b | 0x20) : b;

    private static bool EqualsIgnoreCase(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        for (int i = 0; i < a.Length; i++)
        {
            if (Lower(a[i]) != Lower(b[i]))
                return false;
        }
        return true;
    }

    private static int IndexOfIgnoreCase(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        for (int i = 0; i + b.Length <= a.Length; i++)
        {
            if (EqualsIgnoreCase(a.Slice(i, b.Length), b))
                return i;
        }
        return -1;
    }
}

/// <summary>x matches /re/: a search anywhere in the string.</summary>
internal sealed class MatchesNode(Node left, CompiledString regex) : Node
{
    public override Value Eval(EvalContext c)
    {
        var l = left.Eval(c);
        if (l.Kind != ValueKind.String)
            return Value.Undefined;
        return Value.Bool(regex.IsMatch(l.S, c.Budget));
    }
}

internal sealed class ReadIntNode(int size, bool signed, bool bigEndian, Node offset) : Node
{
    public override unsafe Value Eval(EvalContext c)
    {
        var o = offset.Eval(c);
        if (o.Kind != ValueKind.Int)
            return Value.Undefined;
        Span<byte> buffer = stackalloc byte[4];
        scoped ReadOnlySpan<byte> span;
        if (c.Reader is not null)
        {
            if (!c.Reader(o.I, buffer[..size]))
                return Value.Undefined;
            span = buffer[..size];
        }
        else
        {
            if (o.I < 0 || o.I > c.Length - size)
                return Value.Undefined;
            span = new ReadOnlySpan<byte>(c.Data + o.I, size);
        }
        long v = (size, signed, bigEndian) switch
        {
            (1, false, _) => span[0],
            (1, true, _) => (sbyte)span[0],
            (2, false, false) => BinaryPrimitives.ReadUInt16LittleEndian(span),
            (2, false, true) => BinaryPrimitives.ReadUInt16BigEndian(span),
            (2, true, false) => BinaryPrimitives.ReadInt16LittleEndian(span),
            (2, true, true) => BinaryPrimitives.ReadInt16BigEndian(span),
            (4, false, false) => BinaryPrimitives.ReadUInt32LittleEndian(span),
            (4, false, true) => BinaryPrimitives.ReadUInt32BigEndian(span),
            (4, true, false) => BinaryPrimitives.ReadInt32LittleEndian(span),
            _ => BinaryPrimitives.ReadInt32BigEndian(span),
        };
        return Value.Int(v);
    }
}

/// <summary>A string reference: a fixed string index, or -1 for the loop's current string ($ inside for … of).</summary>
internal abstract class StringNode(int index) : Node
{
    protected MatchList List(EvalContext c) => c.Matches[index >= 0 ? index : c.CurrentString];
}

internal sealed class StringMatchNode(int index) : StringNode(index)
{
    public override Value Eval(EvalContext c) => Value.Bool(List(c).Count > 0);
}

internal sealed class StringAtNode(int index, Node offset) : StringNode(index)
{
    public override Value Eval(EvalContext c)
    {
        var o = offset.Eval(c);
        if (o.Kind != ValueKind.Int)
            return Value.Undefined;
        return Value.Bool(List(c).AnyAt(o.I - c.BaseOffset));
    }
}

internal sealed class StringInNode(int index, Node lo, Node hi) : StringNode(index)
{
    public override Value Eval(EvalContext c)
    {
        var l = lo.Eval(c);
        var h = hi.Eval(c);
        if (l.Kind != ValueKind.Int || h.Kind != ValueKind.Int)
            return Value.Undefined;
        return Value.Bool(List(c).CountIn(l.I - c.BaseOffset, h.I - c.BaseOffset) > 0);
    }
}

internal sealed class StringCountNode(int index, Node? lo, Node? hi) : StringNode(index)
{
    public override Value Eval(EvalContext c)
    {
        var list = List(c);
        if (lo is null || hi is null)
            return Value.Int(list.Count);
        var l = lo.Eval(c);
        var h = hi.Eval(c);
        if (l.Kind != ValueKind.Int || h.Kind != ValueKind.Int)
            return Value.Undefined;
        return Value.Int(list.CountIn(l.I - c.BaseOffset, h.I - c.BaseOffset));
    }
}

internal sealed class StringOffsetNode(int index, Node? i, bool length) : StringNode(index)
{
    public override Value Eval(EvalContext c)
    {
        long n = 1;
        if (i is not null)
        {
            var v = i.Eval(c);
            if (v.Kind != ValueKind.Int)
                return Value.Undefined;
            n = v.I;
        }
        var list = List(c);
        if (n < 1 || n > list.Count)
            return Value.Undefined;
        var m = list[(int)(n - 1)];
        return Value.Int(length ? m.Length : m.Offset + c.BaseOffset);
    }
}

internal sealed class RuleRefNode(int rule) : Node
{
    public override Value Eval(EvalContext c) => Value.Bool(c.RuleResults[rule]);
}

internal sealed class ExternalNode(int slot) : Node
{
    public override Value Eval(EvalContext c) => c.Externals[slot];
}

internal sealed class VariableNode(int slot) : Node
{
    public override Value Eval(EvalContext c) => c.Variables[slot];
}

internal static class Quantify
{
    /// <summary>Whether <paramref name="satisfied"/> of <paramref name="total"/> meets the quantifier. Null: undefined.</summary>
    public static bool? Check(QuantKind kind, Value n, int satisfied, int total, bool zeroMeansNone)
    {
        switch (kind)
        {
            case QuantKind.All:
                return satisfied == total;
            case QuantKind.Any:
                return satisfied > 0;
            case QuantKind.None:
                return satisfied == 0;
            case QuantKind.Percent:
                if (n.Kind != ValueKind.Int)
                    return null;
                return satisfied * 100L >= n.I * total;
            default:
                if (n.Kind != ValueKind.Int)
                    return null;
                if (n.I == 0 && zeroMeansNone)
                    return satisfied == 0;
                return satisfied >= n.I;
        }
    }
}

/// <summary>N of ($a, $b*) [in (lo..hi) | at x].</summary>
internal sealed class OfNode(QuantKind kind, Node? n, int[] strings, Node? lo, Node? hi, Node? at) : Node
{
    public override Value Eval(EvalContext c)
    {
        var nv = n?.Eval(c) ?? Value.Undefined;
        long l = 0, h = 0, a = 0;
        if (lo is not null)
        {
            var lv = lo.Eval(c);
            var hv = hi!.Eval(c);
            if (lv.Kind != ValueKind.Int || hv.Kind != ValueKind.Int)
                return Value.Undefined;
            l = lv.I - c.BaseOffset;
            h = hv.I - c.BaseOffset;
        }
        if (at is not null)
        {
            var av = at.Eval(c);
            if (av.Kind != ValueKind.Int)
                return Value.Undefined;
            a = av.I - c.BaseOffset;
        }
        int satisfied = 0;
        foreach (int s in strings)
        {
            var list = c.Matches[s];
            bool ok = lo is not null ? list.CountIn(l, h) > 0 : at is not null ? list.AnyAt(a) : list.Count > 0;
            if (ok)
                satisfied++;
        }
        var r = Quantify.Check(kind, nv, satisfied, strings.Length, zeroMeansNone: true);
        return r is bool b ? Value.Bool(b) : Value.Undefined;
    }
}

/// <summary>for N of ($a*) : ( body with $ ).</summary>
internal sealed class ForOfNode(QuantKind kind, Node? n, int[] strings, Node body) : Node
{
    public override Value Eval(EvalContext c)
    {
        var nv = n?.Eval(c) ?? Value.Undefined;
        int saved = c.CurrentString;
        int satisfied = 0;
        try
        {
            foreach (int s in strings)
            {
                c.CurrentString = s;
                c.Budget.Charge(1);
                if (body.Eval(c).Truth)
                    satisfied++;
            }
        }
        finally
        {
            c.CurrentString = saved;
        }
        var r = Quantify.Check(kind, nv, satisfied, strings.Length, zeroMeansNone: false);
        return r is bool b ? Value.Bool(b) : Value.Undefined;
    }
}

/// <summary>for N i in (lo..hi) : (…) and for N i in (a, b, c) : (…).</summary>
internal sealed class ForInNode(QuantKind kind, Node? n, int slot, Node? lo, Node? hi, Node[]? items, Node body) : Node
{
    public override Value Eval(EvalContext c)
    {
        var nv = n?.Eval(c) ?? Value.Undefined;
        var saved = c.Variables[slot];
        int satisfied = 0, total = 0;
        try
        {
            if (items is not null)
            {
                foreach (var item in items)
                {
                    c.Variables[slot] = item.Eval(c);
                    total++;
                    c.Budget.Charge(1);
                    if (body.Eval(c).Truth)
                        satisfied++;
                }
            }
            else
            {
                var l = lo!.Eval(c);
                var h = hi!.Eval(c);
                if (l.Kind != ValueKind.Int || h.Kind != ValueKind.Int || l.I > h.I)
                    return Value.False;
                for (long i = l.I; ; i++)
                {
                    c.Variables[slot] = Value.Int(i);
                    total++;
                    c.Budget.Charge(1);
                    if (body.Eval(c).Truth)
                    {
                        satisfied++;
                        if (kind == QuantKind.Any)
                            break;
                    }
                    else if (kind == QuantKind.All)
                    {
                        break;
                    }
                    if (i == h.I)
                        break;
                }
                if (kind == QuantKind.All && satisfied < total)
                    return Value.False;
                if (kind == QuantKind.All)
                    return Value.True;
                if (kind == QuantKind.Any)
                    return Value.Bool(satisfied > 0);
                total = checked((int)Math.Min(h.I - l.I + 1, int.MaxValue));
            }
        }
        finally
        {
            c.Variables[slot] = saved;
        }
        if (total == 0)
            return Value.False;
        var r = Quantify.Check(kind, nv, satisfied, total, zeroMeansNone: false);
        return r is bool b ? Value.Bool(b) : Value.Undefined;
    }
}
