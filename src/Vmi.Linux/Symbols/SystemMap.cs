using System.Globalization;

namespace Vmi.Linux.Symbols;

/// <summary>
/// A System.map (<c>nm -n vmlinux</c> output: "address type name" per line). Its addresses are the link-time
/// (unslid) ones; apply the KASLR slide with <see cref="WithSlide"/>.
/// </summary>
public sealed class SystemMap : SymbolTable
{
    /// <summary>Start of the x86-64 kernel image mapping (<c>__START_KERNEL_map</c>); only symbols at or above it slide.</summary>
    public const ulong KernelImageMapStart = 0xffffffff80000000;

    /// <summary>Longest line accepted (kernel symbol names are at most 512 bytes).</summary>
    public const int MaxLineLength = 4096;

    private SystemMap(IEnumerable<KernelSymbol> symbols, long slide) : base(symbols) => Slide = slide;

    /// <summary>The slide applied so far (0 for a freshly parsed map).</summary>
    public long Slide { get; }

    /// <summary>Parses a System.map.</summary>
    /// <exception cref="SystemMapException">The text is not a System.map, or it is Debian's placeholder.</exception>
    public static SystemMap Parse(TextReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        var symbols = new List<KernelSymbol>();
        int lineNumber = 0;
        while (reader.ReadLine() is { } line)
        {
            lineNumber++;
            if (line.Length > MaxLineLength)
                throw new SystemMapException($"System.map line {lineNumber} is {line.Length} characters long; this is not a System.map");
            if (line.Contains("The real System.map is in", StringComparison.Ordinal))
                throw new SystemMapException(
                    "this System.map is Debian's placeholder (\"" + line.Trim() + "\"): it holds no symbols. " +
                    "Read the symbols from guest memory with KallsymsReader (kallsyms), or use the System.map " +
                    "shipped in the matching linux-image-<version>-dbg package.");
            ReadOnlySpan<char> s = line.AsSpan().Trim();
            if (s.IsEmpty)
                continue;
            symbols.Add(ParseLine(s, lineNumber));
        }
        if (symbols.Count == 0)
            throw new SystemMapException("the System.map is empty");
        return new SystemMap(symbols, 0);
    }

    /// <summary>Reads and parses the System.map at <paramref name="path"/>.</summary>
    /// <exception cref="SystemMapException">Not a System.map, or Debian's placeholder.</exception>
    public static SystemMap Load(string path)
    {
        using var reader = new StreamReader(path);
        try
        {
            return Parse(reader);
        }
        catch (SystemMapException e)
        {
            throw new SystemMapException($"{path}: {e.Message}", e);
        }
    }

    /// <summary>
    /// A copy whose kernel-image symbols (at or above <see cref="KernelImageMapStart"/>) are moved by
    /// <paramref name="slide"/> bytes; per-CPU offsets and absolute values below it stay, as the kernel's own
    /// KASLR relocation leaves them.
    /// </summary>
    public SystemMap WithSlide(long slide) =>
        new(Symbols.Select(s => s.Address >= KernelImageMapStart ? s with { Address = unchecked(s.Address + (ulong)slide) } : s),
            unchecked(Slide + slide));

    private static KernelSymbol ParseLine(ReadOnlySpan<char> s, int lineNumber)
    {
        int sp1 = s.IndexOf(' ');
        if (sp1 <= 0 || sp1 + 2 >= s.Length || s[sp1 + 2] != ' ')
            throw Bad(lineNumber, "expected \"address type name\"");
        if (!ulong.TryParse(s[..sp1], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong address))
            throw Bad(lineNumber, $"'{s[..sp1]}' is not a hexadecimal address");
        char type = s[sp1 + 1];
        if (!char.IsAsciiLetter(type) && type != '?' && type != '-')
            throw Bad(lineNumber, $"'{type}' is not a symbol type");
        ReadOnlySpan<char> name = s[(sp1 + 3)..];
        int tab = name.IndexOfAny(' ', '\t'); // "name\t[module]" in /proc/kallsyms-style input
        if (tab >= 0)
            name = name[..tab];
        if (name.IsEmpty)
            throw Bad(lineNumber, "the symbol has no name");
        return new KernelSymbol(name.ToString(), address, type);
    }

    private static SystemMapException Bad(int lineNumber, string what) =>
        new($"System.map line {lineNumber}: {what}");
}
