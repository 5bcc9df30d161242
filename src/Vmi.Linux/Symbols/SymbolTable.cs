namespace Vmi.Linux.Symbols;

/// <summary>
/// An immutable symbol table: symbols sorted by address (stable, so equal addresses keep their source
/// order) and a name index that answers with the first symbol of a repeated name (in source order).
/// </summary>
public class SymbolTable : ISymbolTable
{
    private readonly KernelSymbol[] _symbols;
    private readonly Dictionary<string, ulong> _byName;

    /// <summary>Creates a table from symbols in any order.</summary>
    public SymbolTable(IEnumerable<KernelSymbol> symbols)
    {
        ArgumentNullException.ThrowIfNull(symbols);
        KernelSymbol[] source = [.. symbols];
        _byName = new Dictionary<string, ulong>(source.Length, StringComparer.Ordinal);
        foreach (KernelSymbol s in source)
            _byName.TryAdd(s.Name, s.Address);
        // Stable by address: OrderBy is stable, Array.Sort is not.
        _symbols = IsSorted(source) ? source : [.. source.OrderBy(s => s.Address)];
    }

    /// <inheritdoc/>
    public int Count => _symbols.Length;

    /// <inheritdoc/>
    public IReadOnlyList<KernelSymbol> Symbols => _symbols;

    /// <inheritdoc/>
    public bool TryGetAddress(string name, out ulong address) => _byName.TryGetValue(name, out address);

    /// <summary>The address of <paramref name="name"/>, or a <see cref="KeyNotFoundException"/>.</summary>
    public ulong GetAddress(string name) =>
        _byName.TryGetValue(name, out ulong a) ? a : throw new KeyNotFoundException($"no symbol named '{name}'");

    /// <summary>The symbol at or below <paramref name="address"/> (the one containing it, by nm convention), if any.</summary>
    public KernelSymbol? FindContaining(ulong address)
    {
        int lo = 0, hi = _symbols.Length - 1, found = -1;
        while (lo <= hi)
        {
            int mid = lo + ((hi - lo) >> 1);
            if (_symbols[mid].Address <= address)
            {
                found = mid;
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }
        return found < 0 ? null : _symbols[found];
    }

    private static bool IsSorted(KernelSymbol[] symbols)
    {
        for (int i = 1; i < symbols.Length; i++)
        {
            if (symbols[i].Address < symbols[i - 1].Address)
                return false;
        }
        return true;
    }
}
