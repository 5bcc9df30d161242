using System.Globalization;
using System.Text;

namespace Vmi.Memory;

/// <summary>Everything a page walk saw: each entry read, where and why it stopped, and the translation.</summary>
public sealed class WalkResult
{
    internal WalkResult(PagingContext context, ulong virtualAddress, WalkStatus status, IReadOnlyList<WalkStep> steps,
        PagingLevel? faultLevel, ulong? faultEntryAddress, ulong reservedBits, Translation? translation)
    {
        Context = context;
        VirtualAddress = virtualAddress;
        Status = status;
        Steps = steps;
        FaultLevel = faultLevel;
        FaultEntryAddress = faultEntryAddress;
        ReservedBits = reservedBits;
        Translation = translation;
    }

    /// <summary>The context walked.</summary>
    public PagingContext Context { get; }

    /// <summary>Ok or the reason the walk stopped.</summary>
    public WalkStatus Status { get; }

    /// <summary>The address walked.</summary>
    public ulong VirtualAddress { get; }

    /// <summary>Entries read, top level first. On <see cref="WalkStatus.TableUnreadable"/> the unreadable entry is not included.</summary>
    public IReadOnlyList<WalkStep> Steps { get; }

    /// <summary>Level of the entry that stopped the walk; null on success and for non-canonical addresses.</summary>
    public PagingLevel? FaultLevel { get; }

    /// <summary>Physical address of the entry that stopped the walk; null on success and for non-canonical addresses.</summary>
    public ulong? FaultEntryAddress { get; }

    /// <summary>For <see cref="WalkStatus.ReservedBitsSet"/>: which reserved bits the faulting entry had set.</summary>
    public ulong ReservedBits { get; }

    /// <summary>The translation when <see cref="Status"/> is <see cref="WalkStatus.Ok"/>.</summary>
    public Translation? Translation { get; }

    /// <summary>True when translated.</summary>
    public bool Succeeded => Status == WalkStatus.Ok;

    /// <summary>Name of a level as the SDM writes it ("PML4", "PD", …).</summary>
    public static string LevelName(PagingLevel level) => level switch
    {
        PagingLevel.Pml5 => "PML5",
        PagingLevel.Pml4 => "PML4",
        PagingLevel.Pdpt => "PDPT",
        PagingLevel.Pd => "PD",
        PagingLevel.Pt => "PT",
        _ => $"level {(int)level}",
    };

    /// <summary>A one-line explanation, e.g. "PD entry 0x1ff at PA 0x3ff8 not present (value 0x0)".</summary>
    public string Describe()
    {
        var c = CultureInfo.InvariantCulture;
        string va = string.Create(c, $"VA 0x{VirtualAddress:x}");
        switch (Status)
        {
            case WalkStatus.Ok:
            {
                Translation t = Translation!.Value;
                string size = t.Size switch
                {
                    PageSize.Size1G => "1 GiB",
                    PageSize.Size2M => "2 MiB",
                    _ => "4 KiB",
                };
                return string.Create(c, $"{va} -> PA 0x{t.PhysicalAddress:x} ({size} page, {FormatFlags(t.Flags)})");
            }
            case WalkStatus.NonCanonical:
                return Context.La57
                    ? $"{va} is not canonical for 5-level paging (bits 63..56 must all equal bit 56)"
                    : $"{va} is not canonical for 4-level paging (bits 63..47 must all equal bit 47)";
            case WalkStatus.TableUnreadable:
                return string.Create(c,
                    $"{va}: {LevelName(FaultLevel!.Value)} entry 0x{IndexAt(FaultLevel.Value):x} at PA 0x{FaultEntryAddress:x} is unreadable: the table lies outside backed guest memory");
            case WalkStatus.NotPresent:
            case WalkStatus.ReservedBitsSet:
            {
                WalkStep step = Steps[^1];
                string where = string.Create(c, $"{LevelName(step.Level)} entry 0x{step.Index:x} at PA 0x{step.EntryAddress:x}");
                return Status == WalkStatus.NotPresent
                    ? string.Create(c, $"{va}: {where} not present (value 0x{step.Entry:x})")
                    : string.Create(c, $"{va}: {where} has reserved bits 0x{ReservedBits:x} set (value 0x{step.Entry:x}){ReservedHint(step)}");
            }
            default:
                return $"{va}: {Status}";
        }
    }

    /// <inheritdoc/>
    public override string ToString() => Describe();

    private int IndexAt(PagingLevel level) => (int)((VirtualAddress >> (12 + 9 * ((int)level - 1))) & 0x1FF);

    private string ReservedHint(WalkStep step)
    {
        var hints = new List<string>();
        ulong bits = ReservedBits;
        if ((bits & PageWalker.EntryPageSize) != 0 && step.Level >= PagingLevel.Pml4)
            hints.Add($"PS is reserved in a {LevelName(step.Level)} entry");
        if ((bits & PageWalker.EntryNoExecute) != 0)
            hints.Add("bit 63 (XD) with EFER.NXE clear");
        if ((bits & ((1UL << 52) - 1) & ~((1UL << Context.MaxPhysicalAddressBits) - 1)) != 0)
            hints.Add(string.Create(CultureInfo.InvariantCulture, $"address bits at or above MAXPHYADDR {Context.MaxPhysicalAddressBits}"));
        bool largePage = (step.Entry & PageWalker.EntryPageSize) != 0;
        if (largePage && step.Level == PagingLevel.Pdpt && (bits & PageWalker.Reserved1G) != 0)
            hints.Add("1 GiB page base not aligned (bits 13..29)");
        if (largePage && step.Level == PagingLevel.Pd && (bits & PageWalker.Reserved2M) != 0)
            hints.Add("2 MiB page base not aligned (bits 13..20)");
        return hints.Count == 0 ? "" : ": " + string.Join("; ", hints);
    }

    private static string FormatFlags(PageFlags flags)
    {
        var sb = new StringBuilder();
        sb.Append((flags & PageFlags.Writable) != 0 ? "RW" : "RO");
        sb.Append((flags & PageFlags.User) != 0 ? " user" : " supervisor");
        sb.Append((flags & PageFlags.NoExecute) != 0 ? " NX" : " X");
        if ((flags & PageFlags.Global) != 0)
            sb.Append(" G");
        if ((flags & PageFlags.Accessed) != 0)
            sb.Append(" A");
        if ((flags & PageFlags.Dirty) != 0)
            sb.Append(" D");
        return sb.ToString();
    }
}
