using System.Globalization;
using Vmi.Linux.Model;

namespace Vmi.Detectors.Linux;

/// <summary>Where a kernel code pointer lands.</summary>
public enum AddressRegion
{
    /// <summary>The kernel image's code: <c>_stext.._etext</c>.</summary>
    KernelText = 0,
    /// <summary>The kernel image's init code: <c>_sinittext.._einittext</c> (freed after boot, but some IDT gates keep pointing there).</summary>
    InitText = 1,
    /// <summary>Inside a module listed in the kernel's module list.</summary>
    Module = 2,
    /// <summary>None of the above: heap, a hidden module, a trampoline, or garbage.</summary>
    Unknown = 3,
}

/// <summary>The classification of one address.</summary>
/// <param name="Address">The address classified.</param>
/// <param name="Region">Where it lands.</param>
/// <param name="Module">The module's name, for <see cref="AddressRegion.Module"/>.</param>
/// <param name="ModuleOffset">Offset into the module's core image, for <see cref="AddressRegion.Module"/>.</param>
/// <param name="Symbol">The kernel symbol containing it, for kernel and init text.</param>
/// <param name="SymbolOffset">Offset into <paramref name="Symbol"/>.</param>
public sealed record AddressClass(ulong Address, AddressRegion Region, string? Module, ulong ModuleOffset, string? Symbol, ulong SymbolOffset)
{
    /// <summary>In the kernel image's code (<c>.text</c> or init text).</summary>
    public bool IsKernelCode => Region is AddressRegion.KernelText or AddressRegion.InitText;

    /// <summary>
    /// For evidence: <c>kernel text (tcp4_seq_show+0x10)</c>, <c>module vmi_rootkit+0x40</c>,
    /// <c>unknown memory (not kernel text or any listed module)</c>.
    /// </summary>
    public string Description => Region switch
    {
        AddressRegion.KernelText => "kernel text" + SymbolSuffix(),
        AddressRegion.InitText => "init text" + SymbolSuffix(),
        AddressRegion.Module => string.Create(CultureInfo.InvariantCulture, $"module {Module}+0x{ModuleOffset:x}"),
        _ => "unknown memory (not kernel text or any listed module)",
    };

    private string SymbolSuffix() => Symbol is null ? "" : " (" + AddressClassifier.FormatSymbol(Symbol, SymbolOffset) + ")";

    public override string ToString() => Description;
}

/// <summary>
/// Classifies kernel addresses as kernel text, init text, the core image of a listed module, or
/// unknown memory. Built once per sweep (modules come and go); the ranges come from the kernel's own
/// kallsyms and module list, so a hostile module list can only make a module look bigger, never make an
/// address in kernel text look like anything else (kernel ranges are checked first).
/// </summary>
public sealed class AddressClassifier
{
    /// <summary>Largest module core image believed (real modules are KiB to a few MiB; a hostile size is clamped).</summary>
    public const ulong MaxModuleSize = 256UL << 20;

    private readonly LinuxKernel _kernel;
    private readonly (ulong Start, ulong End, string Name)[] _modules;

    private AddressClassifier(LinuxKernel kernel, TextRange text, TextRange? initText, (ulong, ulong, string)[] modules, IReadOnlyList<KernelWalkIssue> issues)
    {
        _kernel = kernel;
        KernelText = text;
        InitText = initText;
        _modules = modules;
        Issues = issues;
    }

    /// <summary>The kernel image's <c>.text</c>: <c>_stext.._etext</c>.</summary>
    public TextRange KernelText { get; }

    /// <summary>Init text (<c>_sinittext.._einittext</c>), when the symbols exist.</summary>
    public TextRange? InitText { get; }

    /// <summary>Listed modules' core images, as (start, end, name).</summary>
    public IReadOnlyList<(ulong Start, ulong End, string Name)> Modules => _modules;

    /// <summary>What disturbed the module walk (the classification is then partial: some module addresses may read as unknown).</summary>
    public IReadOnlyList<KernelWalkIssue> Issues { get; }

    /// <summary>Reads the text ranges from kallsyms and the module list from the guest.</summary>
    /// <exception cref="InvalidOperationException">The kernel has no <c>_stext</c>/<c>_etext</c> symbols (no text range to check against).</exception>
    public static AddressClassifier Create(LinuxKernel kernel)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        TextRange text = GetKernelText(kernel);
        TextRange? init = kernel.Symbols.TryGetAddress("_sinittext", out ulong si) && kernel.Symbols.TryGetAddress("_einittext", out ulong ei) && ei > si
            ? new TextRange(si, ei) : null;
        var modules = new List<(ulong, ulong, string)>();
        IReadOnlyList<KernelWalkIssue> issues;
        try
        {
            KernelList<LinuxModule> list = kernel.GetModules();
            issues = list.Issues;
            foreach (LinuxModule m in list.Items)
            {
                if (m.CoreBase == 0 || m.Size == 0)
                    continue;
                ulong size = Math.Min(m.Size, MaxModuleSize);
                ulong end = m.CoreBase + size;
                if (end < m.CoreBase)
                    end = ulong.MaxValue;
                modules.Add((m.CoreBase, end, m.Name));
            }
        }
        catch (Vmi.Core.VmiException ex)
        {
            // No module list (symbol missing): classification degrades to kernel text / unknown.
            issues = [new KernelWalkIssue("module list", 0, ex.Message)];
        }
        modules.Sort((a, b) => a.Item1.CompareTo(b.Item1));
        return new AddressClassifier(kernel, text, init, [.. modules], issues);
    }

    /// <summary>The kernel image's <c>.text</c> range from kallsyms.</summary>
    /// <exception cref="InvalidOperationException">The symbols are missing or inverted.</exception>
    public static TextRange GetKernelText(LinuxKernel kernel)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        if (!kernel.Symbols.TryGetAddress("_stext", out ulong s) || !kernel.Symbols.TryGetAddress("_etext", out ulong e) || e <= s)
            throw new InvalidOperationException("the kernel's symbol table has no usable _stext/_etext: kernel text range unknown");
        return new TextRange(s, e);
    }

    /// <summary>Whether <paramref name="address"/> is in <c>.text</c> (init text excluded).</summary>
    public bool IsKernelText(ulong address) => KernelText.Contains(address);

    /// <summary>Whether <paramref name="address"/> is in <c>.text</c> or init text.</summary>
    public bool IsKernelCode(ulong address) => KernelText.Contains(address) || (InitText?.Contains(address) ?? false);

    /// <summary>Classifies one address.</summary>
    public AddressClass Classify(ulong address)
    {
        if (KernelText.Contains(address))
            return WithSymbol(address, AddressRegion.KernelText);
        if (InitText is TextRange init && init.Contains(address))
            return WithSymbol(address, AddressRegion.InitText);
        // Modules are few (tens): a linear scan is simpler than a search and overlaps (hostile) resolve to the first.
        foreach (var (start, end, name) in _modules)
        {
            if (address >= start && address < end)
                return new AddressClass(address, AddressRegion.Module, name, address - start, null, 0);
        }
        return new AddressClass(address, AddressRegion.Unknown, null, 0, null, 0);
    }

    /// <summary><c>name+0x10</c>, or <c>name</c> at offset 0.</summary>
    public static string FormatSymbol(string name, ulong offset) =>
        offset == 0 ? name : string.Create(CultureInfo.InvariantCulture, $"{name}+0x{offset:x}");

    /// <summary>The symbol containing <paramref name="address"/> as <c>name+0x10</c>, or null.</summary>
    public string? SymbolOf(ulong address)
    {
        var (name, off) = _kernel.ResolveAddress(address);
        return name is null ? null : FormatSymbol(name, off);
    }

    /// <summary>
    /// A view of kernel virtual memory through the kernel's own page tables, with a fresh translation
    /// cache (one per sweep: never trust a translation cached across a guest's page-table changes).
    /// </summary>
    internal static Vmi.Memory.VirtualMemory KernelMemory(LinuxKernel kernel) =>
        new(kernel.Memory, kernel.KernelPaging, new Vmi.Memory.TranslationCache());

    /// <summary>Lower-case hex with 0x, the way evidence prints addresses.</summary>
    public static string Hex(ulong value) => "0x" + value.ToString("x", CultureInfo.InvariantCulture);

    private AddressClass WithSymbol(ulong address, AddressRegion region)
    {
        var (name, off) = _kernel.ResolveAddress(address);
        return new AddressClass(address, region, null, 0, name, off);
    }
}

/// <summary>A half-open virtual address range <c>[Start, End)</c>.</summary>
public readonly record struct TextRange(ulong Start, ulong End)
{
    public ulong Length => End - Start;

    public bool Contains(ulong address) => address >= Start && address < End;
}

/// <summary>
/// The alert keys a detector raised for conditions that still hold, so a repeated sweep does not
/// re-raise them (the pipeline dedups on the key too) and a condition that ends and comes back alerts again.
/// </summary>
internal sealed class RaisedKeys
{
    private HashSet<string> _raised = new(StringComparer.Ordinal);
    private HashSet<string> _seen = new(StringComparer.Ordinal);

    /// <summary>Marks <paramref name="key"/> as holding now; true when it is new (raise the alert).</summary>
    public bool Hold(string key)
    {
        _seen.Add(key);
        return !_raised.Contains(key);
    }

    /// <summary>Ends a full check: keys not held in it are cleared.</summary>
    public void EndFullCheck()
    {
        (_raised, _seen) = (_seen, _raised);
        _seen.Clear();
    }

    /// <summary>Ends a partial check (only some subjects looked at): nothing is cleared.</summary>
    public void EndPartialCheck()
    {
        _raised.UnionWith(_seen);
        _seen.Clear();
    }
}

/// <summary>Small helpers the Linux detectors share.</summary>
internal static class DetectorEvidence
{
    /// <summary>The events an alert is concluded from: the event handled and, for a hook-caused sweep, its cause.</summary>
    public static IReadOnlyList<Guid> Related(Vmi.Events.VmiEvent e) => e switch
    {
        Vmi.Events.SweepTick { Cause: Guid cause } => [e.Id, cause],
        _ => [e.Id],
    };

    /// <summary>Adds the writer of a hooked write (RIP, its symbol or region, address written) to the evidence.</summary>
    public static void AddWriter(Dictionary<string, string> evidence, Vmi.Events.MemoryAccess? write, AddressClassifier classifier)
    {
        if (write is null)
            return;
        evidence["writer_rip"] = AddressClassifier.Hex(write.Rip);
        // The backend's symbol when it has one; kallsyms only names kernel code (a module address would
        // otherwise resolve to the last kernel symbol below it).
        AddressClass where = classifier.Classify(write.Rip);
        string? symbol = write.RipSymbol ?? (where.IsKernelCode && where.Symbol is not null ? AddressClassifier.FormatSymbol(where.Symbol, where.SymbolOffset) : null);
        if (symbol is not null)
            evidence["writer_symbol"] = symbol;
        evidence["writer_location"] = where.Description;
        if (write.Gva is ulong gva)
            evidence["write_address"] = AddressClassifier.Hex(gva);
        if (write.NewValue is { Length: > 0 } nv)
            evidence["write_value"] = Convert.ToHexStringLower(nv);
        evidence["write_vcpu"] = write.Vcpu.ToString(CultureInfo.InvariantCulture);
    }
}
