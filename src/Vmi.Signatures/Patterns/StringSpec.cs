namespace Vmi.Signatures.Patterns;

/// <summary>The three kinds of YARA string.</summary>
public enum StringKind
{
    /// <summary>"text" — the bytes are given, already unescaped.</summary>
    Text,
    /// <summary>{ hex } — the source is the text between the braces.</summary>
    Hex,
    /// <summary>/regex/ — the source is the text between the slashes.</summary>
    Regex,
}

/// <summary>String modifiers as written in the rule (ascii is implied when wide is absent).</summary>
[Flags]
public enum StringModifiers
{
    None = 0,
    Ascii = 1,
    Wide = 2,
    Nocase = 4,
    Fullword = 8,
    Private = 16,
    Xor = 32,
    Base64 = 64,
    Base64Wide = 128,
}

/// <summary>
/// One string declaration of a rule, as the parser hands it to the pattern compiler. The parser has
/// checked which modifiers may be combined (YARA's rules); the pattern compiler checks the pattern itself.
/// </summary>
/// <param name="Id">"$a" (anonymous strings get "$").</param>
/// <param name="Kind">Text, hex or regex.</param>
/// <param name="Text">For <see cref="StringKind.Text"/>: the unescaped bytes. Empty otherwise.</param>
/// <param name="Source">For hex and regex: the text between the delimiters. Empty for text strings.</param>
/// <param name="Modifiers">Modifiers as written.</param>
/// <param name="XorMin">xor(min-max) range; 0-255 when xor is written without a range.</param>
/// <param name="XorMax">Upper end of the xor range.</param>
/// <param name="Base64Alphabet">Custom 64-character alphabet of base64("...") / base64wide("..."), or null.</param>
/// <param name="RegexNocase">The regex's trailing "i".</param>
/// <param name="RegexDotAll">The regex's trailing "s".</param>
public sealed record StringSpec(
    string Id,
    StringKind Kind,
    byte[] Text,
    string Source,
    StringModifiers Modifiers,
    int XorMin = 0,
    int XorMax = 255,
    byte[]? Base64Alphabet = null,
    bool RegexNocase = false,
    bool RegexDotAll = false);

/// <summary>A pattern that cannot be compiled. <see cref="Position"/> is the character index in <see cref="StringSpec.Source"/> (0 for text strings).</summary>
public sealed class PatternException : Exception
{
    public PatternException() { }
    public PatternException(string message) : base(message) { }
    public PatternException(string message, Exception inner) : base(message, inner) { }
    public PatternException(string message, int position) : base(message) => Position = position;
    public int Position { get; }
}

/// <summary>
/// An exact byte sequence (1–4 bytes usually) that every match of a string contains. The scanner finds
/// atoms with one multi-pattern automaton and asks the string to verify each hit.
/// </summary>
/// <param name="Bytes">The atom's bytes.</param>
/// <param name="Id">The string's own number for this atom, passed back to Verify.</param>
public sealed record Atom(byte[] Bytes, int Id);

/// <summary>Where a string's verified matches go. Offsets are relative to the scanned span.</summary>
public interface IMatchSink
{
    /// <summary>One match. The sink keeps YARA's rule for duplicates (one match per offset).</summary>
    void Add(int offset, int length);
}

/// <summary>Limits that keep hostile rules and hostile data from exhausting the scanner.</summary>
public sealed record PatternLimits
{
    /// <summary>The longest match a regex or hex string may report (YARA: 4096 bytes for regex-like strings).</summary>
    public int MaxMatchLength { get; init; } = 4096;
    /// <summary>Most alternatives/variants one string may expand into before compiling fails.</summary>
    public int MaxVariants { get; init; } = 4096;
    /// <summary>Most instructions/states the compiled pattern may have.</summary>
    public int MaxProgramSize { get; init; } = 1 << 16;
    public static PatternLimits Default { get; } = new();
}

/// <summary>Counts matcher steps so that one scan cannot run forever on a catastrophic pattern.</summary>
public sealed class ScanBudget
{
    private long remaining;
    public ScanBudget(long steps) => remaining = steps;
    public static ScanBudget Unlimited => new(long.MaxValue);
    /// <summary>Charges <paramref name="steps"/>; throws <see cref="ScanBudgetExceededException"/> when the budget is gone.</summary>
    public void Charge(long steps)
    {
        remaining -= steps;
        if (remaining < 0)
            throw new ScanBudgetExceededException();
    }
}

/// <summary>The scan used up its step budget.</summary>
public sealed class ScanBudgetExceededException : Exception
{
    public ScanBudgetExceededException() : base("the scan exceeded its matching budget") { }
    public ScanBudgetExceededException(string message) : base(message) { }
    public ScanBudgetExceededException(string message, Exception inner) : base(message, inner) { }
}
