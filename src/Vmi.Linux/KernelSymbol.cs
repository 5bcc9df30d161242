namespace Vmi.Linux;

/// <summary>A kernel symbol: name, (slid) virtual address and the nm-style type letter.</summary>
public sealed record KernelSymbol(string Name, ulong Address, char Type);

/// <summary>Kernel symbols, from guest memory (kallsyms) or a System.map.</summary>
public interface ISymbolTable
{
    /// <summary>Number of symbols.</summary>
    int Count { get; }

    /// <summary>All symbols, in address order.</summary>
    IReadOnlyList<KernelSymbol> Symbols { get; }

    /// <summary>The address of <paramref name="name"/> (first one when a name repeats).</summary>
    bool TryGetAddress(string name, out ulong address);
}
