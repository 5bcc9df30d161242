namespace Vmi.Linux.Symbols;

/// <summary>How kallsyms stores addresses.</summary>
public enum KallsymsAddressMode
{
    /// <summary>Decide from the table: base-relative offsets first (absolute per-CPU when any offset is negative), then absolute addresses.</summary>
    Auto,

    /// <summary>CONFIG_KALLSYMS_BASE_RELATIVE + CONFIG_KALLSYMS_ABSOLUTE_PERCPU (x86-64 SMP): offset ≥ 0 is absolute, else relative_base − 1 − offset.</summary>
    AbsolutePercpu,

    /// <summary>CONFIG_KALLSYMS_BASE_RELATIVE without absolute per-CPU: relative_base + (u32)offset.</summary>
    Relative,

    /// <summary>No base-relative: kallsyms_addresses holds full 64-bit addresses.</summary>
    Absolute,
}

/// <summary>Where the kallsyms tables were found (virtual addresses) and how they were read, for diagnostics.</summary>
/// <remarks><see cref="SeqsOfNames"/> is 0 when the kernel has no kallsyms_seqs_of_names; <see cref="RelativeBaseAddress"/> is 0 for absolute addresses.</remarks>
public sealed record KallsymsLayout(
    ulong Addresses,
    ulong RelativeBaseAddress,
    ulong RelativeBase,
    ulong NumSymsAddress,
    int NumSyms,
    ulong Names,
    ulong Markers,
    int MarkerCount,
    int MarkerWidth,
    ulong SeqsOfNames,
    ulong TokenTable,
    ulong TokenIndex,
    KallsymsAddressMode AddressMode)
{
    /// <inheritdoc/>
    public override string ToString() =>
        $"{NumSyms} symbols ({AddressMode}); kallsyms_offsets/addresses 0x{Addresses:x}, relative_base 0x{RelativeBase:x} @0x{RelativeBaseAddress:x}, " +
        $"num_syms @0x{NumSymsAddress:x}, names 0x{Names:x}, markers 0x{Markers:x} ({MarkerCount} x u{MarkerWidth * 8}), " +
        $"{(SeqsOfNames == 0 ? "" : $"seqs_of_names 0x{SeqsOfNames:x}, ")}token_table 0x{TokenTable:x}, token_index 0x{TokenIndex:x}";
}

/// <summary>The kernel's own symbol table, decoded from kallsyms in guest memory.</summary>
public sealed class KallsymsTable : SymbolTable
{
    internal KallsymsTable(IEnumerable<KernelSymbol> symbols, KallsymsLayout layout, TimeSpan decodeTime) : base(symbols)
    {
        Layout = layout;
        DecodeTime = decodeTime;
    }

    /// <summary>Where the tables were.</summary>
    public KallsymsLayout Layout { get; }

    /// <summary>Time spent locating and decoding (excluding reading guest memory when it was read by the caller).</summary>
    public TimeSpan DecodeTime { get; }
}
