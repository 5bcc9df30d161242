using Vmi.Signatures.Patterns;

namespace Vmi.Signatures.Yara;

/// <summary>A rule's metadata value: string, integer or boolean.</summary>
public sealed record MetaEntry(string Key, object Value);

/// <summary>A string declaration as parsed, before its pattern is compiled.</summary>
internal sealed record StringDecl(StringSpec Spec, SourcePos Pos);

/// <summary>A parsed rule.</summary>
internal sealed record RuleDecl(
    string Name,
    bool IsPrivate,
    bool IsGlobal,
    IReadOnlyList<string> Tags,
    IReadOnlyList<MetaEntry> Meta,
    IReadOnlyList<StringDecl> Strings,
    Expr Condition,
    SourcePos Pos);

internal abstract record Expr(SourcePos Pos);

internal sealed record BoolLit(bool Value, SourcePos Pos) : Expr(Pos);
internal sealed record IntLit(long Value, SourcePos Pos) : Expr(Pos);
internal sealed record FloatLit(double Value, SourcePos Pos) : Expr(Pos);
internal sealed record TextLit(byte[] Value, SourcePos Pos) : Expr(Pos);
internal sealed record RegexLit(string Body, string Flags, SourcePos Pos) : Expr(Pos);
internal sealed record FilesizeExpr(SourcePos Pos) : Expr(Pos);
internal sealed record EntrypointExpr(SourcePos Pos) : Expr(Pos);

/// <summary>$a (or $ inside a for-of loop) as a boolean: matched anywhere.</summary>
internal sealed record StringMatchExpr(string Id, SourcePos Pos) : Expr(Pos);
internal sealed record StringAtExpr(string Id, Expr Offset, SourcePos Pos) : Expr(Pos);
internal sealed record StringInExpr(string Id, Expr Lo, Expr Hi, SourcePos Pos) : Expr(Pos);
/// <summary>#a, optionally #a in (lo..hi).</summary>
internal sealed record StringCountExpr(string Id, Expr? Lo, Expr? Hi, SourcePos Pos) : Expr(Pos);
/// <summary>@a[i] (index 1-based; null means 1).</summary>
internal sealed record StringOffsetExpr(string Id, Expr? Index, SourcePos Pos) : Expr(Pos);
/// <summary>!a[i].</summary>
internal sealed record StringLengthExpr(string Id, Expr? Index, SourcePos Pos) : Expr(Pos);

/// <summary>uint8(x), uint32be(x), int16(x)…</summary>
internal sealed record ReadIntExpr(int Size, bool Signed, bool BigEndian, Expr Offset, SourcePos Pos) : Expr(Pos);

internal sealed record IdentExpr(string Name, SourcePos Pos) : Expr(Pos);
internal sealed record UnaryExpr(string Op, Expr Operand, SourcePos Pos) : Expr(Pos);
internal sealed record BinaryExpr(string Op, Expr Left, Expr Right, SourcePos Pos) : Expr(Pos);

internal enum QuantKind { All, Any, None, Count, Percent }

internal sealed record Quantifier(QuantKind Kind, Expr? Value);

/// <summary>A set of strings: "them" (null patterns) or ($a, $b*, …). Resolved to string indexes by the compiler.</summary>
internal sealed record StringSet(IReadOnlyList<string>? Patterns, SourcePos Pos);

/// <summary>any of them, 2 of ($a*), all of them in (0..100), any of them at 0.</summary>
internal sealed record OfExpr(Quantifier Quant, StringSet Set, Expr? InLo, Expr? InHi, Expr? At, SourcePos Pos) : Expr(Pos);

/// <summary>for any of ($a*) : ( $ at 0 ).</summary>
internal sealed record ForOfExpr(Quantifier Quant, StringSet Set, Expr Body, SourcePos Pos) : Expr(Pos);

/// <summary>for all i in (1..#a) : (...), for any x in (1, 2, 3) : (...).</summary>
internal sealed record ForInExpr(Quantifier Quant, string Var, Expr? RangeLo, Expr? RangeHi, IReadOnlyList<Expr>? Items, Expr Body, SourcePos Pos) : Expr(Pos);

internal sealed record DefinedExpr(Expr Operand, SourcePos Pos) : Expr(Pos);
