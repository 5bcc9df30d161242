using System.Runtime.CompilerServices;

namespace Vmi.Memory;

/// <summary>
/// Software x86-64 page walker (Intel SDM vol. 3 §4.5, AMD APM vol. 2 §5.3) for 4- and 5-level paging with
/// 2 MiB and 1 GiB pages. It reads paging structures from guest physical memory exactly as the MMU would,
/// checks present and reserved bits at each level, and never throws on hostile tables: a walk reads at most
/// one entry per level, so self-referencing tables resolve as on hardware and cannot loop.
/// </summary>
/// <remarks>
/// Reserved bits follow Intel's definition (as KVM's software walker does for Intel guests): address bits
/// MAXPHYADDR..51 everywhere, bit 63 without EFER.NXE, PS in PML4E/PML5E, bits 13..20 / 13..29 of 2 MiB /
/// 1 GiB pages; 1 GiB pages are assumed supported. AMD additionally reserves bit 8 of PML4E/PML5E, which is not
/// checked. Accessed/dirty bits are never written back. Thread-safe when the memory is.
/// </remarks>
[SkipLocalsInit]
public sealed class PageWalker
{
    // Entry bits (SDM tables 4-15..4-20).
    internal const ulong EntryPresent = 1UL << 0;
    internal const ulong EntryWritable = 1UL << 1;
    internal const ulong EntryUser = 1UL << 2;
    internal const ulong EntryAccessed = 1UL << 5;
    internal const ulong EntryDirty = 1UL << 6;
    internal const ulong EntryPageSize = 1UL << 7;   // PS in PDPTE/PDE; PAT in a PTE
    internal const ulong EntryGlobal = 1UL << 8;
    internal const ulong EntryNoExecute = 1UL << 63;

    // Large-page entries keep PAT in bit 12; the bits between it and the page's frame must be zero:
    // 2 MiB: bits 13..20 (frame starts at bit 21), 1 GiB: bits 13..29 (frame starts at bit 30).
    internal const ulong Reserved2M = 0x1F_E000;      // bits 13..20
    internal const ulong Reserved1G = 0x3FFF_E000;    // bits 13..29

    private readonly IPhysicalMemory _memory;
    // Non-null when the memory is a mapped file: entries are then read through a direct, inlinable call
    // instead of an interface call per level.
    private readonly MappedPhysicalMemory? _mapped;

    /// <summary>Creates a walker reading paging structures from <paramref name="memory"/>.</summary>
    public PageWalker(IPhysicalMemory memory)
    {
        ArgumentNullException.ThrowIfNull(memory);
        _memory = memory;
        _mapped = memory switch
        {
            MappedPhysicalMemory m => m,
            GuestDump d => d.Mapped,
            _ => null,
        };
    }

    /// <summary>The physical memory the tables are read from.</summary>
    public IPhysicalMemory Memory => _memory;

    /// <summary>Translates one address without allocating. On failure <paramref name="translation"/> is default.</summary>
    public bool TryTranslate(in PagingContext context, ulong virtualAddress, out Translation translation, out WalkStatus status)
    {
        var recorder = new NoRecorder();
        status = _mapped is not null
            ? WalkCore(new MappedReader(_mapped), context, virtualAddress, ref recorder, out translation, out _)
            : WalkCore(new InterfaceReader(_memory), context, virtualAddress, ref recorder, out translation, out _);
        return status == WalkStatus.Ok;
    }

    /// <summary>Walks and records every entry read, for diagnostics (<c>vmi mem translate</c>).</summary>
    public WalkResult Walk(in PagingContext context, ulong virtualAddress)
    {
        var recorder = new StepRecorder(new WalkStep[5]);
        WalkStatus status = WalkCore(new InterfaceReader(_memory), context, virtualAddress, ref recorder, out Translation translation, out Fault fault);
        WalkStep[] steps = recorder.Steps.AsSpan(0, recorder.Count).ToArray();
        return new WalkResult(context, virtualAddress, status, steps, fault.Level, fault.EntryAddress, fault.ReservedBits,
            status == WalkStatus.Ok ? translation : null);
    }

    // Generic over struct reader and recorder so each combination is compiled separately: no interface calls and
    // no recording work on the TryTranslate path.
    private static WalkStatus WalkCore<TReader, TRecorder>(TReader memory, in PagingContext context, ulong virtualAddress,
        ref TRecorder recorder, out Translation translation, out Fault fault)
        where TReader : struct, IEntryReader
        where TRecorder : struct, IStepRecorder
    {
        translation = default;
        fault = default;
        int levels = context.La57 ? 5 : 4;
        // Each level translates 9 bits above the 12-bit page offset: 9 * 4 + 12 = 48, 9 * 5 + 12 = 57.
        int vaBits = 9 * levels + 12;
        int unusedBits = 64 - vaBits;
        if ((ulong)((long)(virtualAddress << unusedBits) >> unusedBits) != virtualAddress)
            return WalkStatus.NonCanonical;

        int maxPhysicalBits = context.MaxPhysicalAddressBits; // 12..52
        // Entry bits 12..MAXPHYADDR-1 hold a frame address.
        ulong frameMask = PagingContext.FrameMask(maxPhysicalBits);
        // Bits MAXPHYADDR..51 must be zero in every present entry; 52..62 are ignored / protection keys.
        ulong reserved = ((1UL << 52) - 1) & ~((1UL << maxPhysicalBits) - 1);
        if (!context.Nxe)
            reserved |= EntryNoExecute; // XD is reserved when EFER.NXE = 0
        ulong table = context.Cr3 & frameMask;

        bool writable = true, user = true, noExecute = false;
        for (int level = levels; level >= 1; level--)
        {
            // The index of level L is VA bits 12 + 9 * (L - 1) .. +8: PT 12, PD 21, PDPT 30, PML4 39, PML5 48.
            int shift = 12 + 9 * (level - 1);
            int index = (int)((virtualAddress >> shift) & 0x1FF);
            ulong entryAddress = table + ((ulong)index << 3); // 8-byte entries; table is 4 KiB aligned, no carry
            if (!memory.TryReadUInt64(entryAddress, out ulong entry))
            {
                fault = new Fault((PagingLevel)level, entryAddress, 0);
                return WalkStatus.TableUnreadable;
            }
            recorder.Record(new WalkStep((PagingLevel)level, index, entryAddress, entry));

            if ((entry & EntryPresent) == 0)
            {
                fault = new Fault((PagingLevel)level, entryAddress, 0);
                return WalkStatus.NotPresent;
            }

            bool pageSize = (entry & EntryPageSize) != 0;
            ulong levelReserved = reserved;
            if (level >= 4)
                levelReserved |= EntryPageSize;   // PS must be 0 in PML4E and PML5E
            else if (pageSize && level == 3)
                levelReserved |= Reserved1G;
            else if (pageSize && level == 2)
                levelReserved |= Reserved2M;
            ulong badBits = entry & levelReserved;
            if (badBits != 0)
            {
                fault = new Fault((PagingLevel)level, entryAddress, badBits);
                return WalkStatus.ReservedBitsSet;
            }

            writable &= (entry & EntryWritable) != 0;
            user &= (entry & EntryUser) != 0;
            noExecute |= context.Nxe && (entry & EntryNoExecute) != 0;

            // A PTE always maps a page (its bit 7 is PAT); a PDE / PDPTE does when PS=1.
            if (level == 1 || (pageSize && level <= 3))
            {
                // Page offset is the VA bits below this level's index: 12 (4 KiB), 21 (2 MiB) or 30 (1 GiB).
                ulong offsetMask = (1UL << shift) - 1;
                ulong physical = (entry & frameMask & ~offsetMask) | (virtualAddress & offsetMask);
                PageFlags flags = PageFlags.Present;
                if (writable)
                    flags |= PageFlags.Writable;
                if (user)
                    flags |= PageFlags.User;
                if (noExecute)
                    flags |= PageFlags.NoExecute;
                if ((entry & EntryGlobal) != 0)
                    flags |= PageFlags.Global;
                if ((entry & EntryDirty) != 0)
                    flags |= PageFlags.Dirty;
                if ((entry & EntryAccessed) != 0)
                    flags |= PageFlags.Accessed;
                translation = new Translation(virtualAddress, physical, (PageSize)(offsetMask + 1), flags);
                return WalkStatus.Ok;
            }
            table = entry & frameMask;
        }
        // Unreachable: level 1 always returns above.
        return WalkStatus.NotPresent;
    }

    private readonly record struct Fault(PagingLevel? Level, ulong? EntryAddress, ulong ReservedBits);

    private interface IEntryReader
    {
        bool TryReadUInt64(ulong address, out ulong value);
    }

    private readonly struct InterfaceReader(IPhysicalMemory memory) : IEntryReader
    {
        public bool TryReadUInt64(ulong address, out ulong value) => memory.TryReadUInt64(address, out value);
    }

    private readonly struct MappedReader(MappedPhysicalMemory memory) : IEntryReader
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public bool TryReadUInt64(ulong address, out ulong value) => memory.TryReadUInt64(address, out value);
    }

    private interface IStepRecorder
    {
        void Record(in WalkStep step);
    }

    private struct NoRecorder : IStepRecorder
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly void Record(in WalkStep step)
        {
        }
    }

    private struct StepRecorder(WalkStep[] steps) : IStepRecorder
    {
        public readonly WalkStep[] Steps = steps;
        public int Count;

        public void Record(in WalkStep step) => Steps[Count++] = step;
    }
}
