using System.Text;
using Vmi.Memory;

namespace Vmi.Linux.Model;

/// <summary>A memory mapping of a process (what /proc/PID/maps shows).</summary>
public sealed record LinuxVma(ulong Address, ulong Start, ulong End, ulong Flags, ulong PageOffset, ulong File, string? Path)
{
    // VM_READ 0x1, VM_WRITE 0x2, VM_EXEC 0x4, VM_MAYSHARE 0x80 (include/linux/mm.h)
    public string Permissions =>
        string.Concat((Flags & 1) != 0 ? "r" : "-", (Flags & 2) != 0 ? "w" : "-", (Flags & 4) != 0 ? "x" : "-", (Flags & 0x80) != 0 ? "s" : "p");
}

public sealed partial class LinuxKernel
{
    /// <summary>Bounds for the maple-tree walk: nodes visited and VMAs returned (sysctl max_map_count defaults to 65530).</summary>
    public const int MaxMapleNodes = 1 << 16;
    public const int MaxVmas = 1 << 17;

    // lib/maple_tree.c: a node pointer is tagged 0b10 in its low bits, the node type sits in bits 3..6,
    // and nodes are 256-byte aligned.
    private const ulong MapleNodeMask = 0xff;
    private const int MapleTypeShift = 3;
    private const int MapleLeaf64 = 1;
    private const int MapleRange64 = 2;
    private const int MapleArange64 = 3;

    /// <summary>
    /// The memory mappings of a process, from the maple tree of its mm_struct (Linux 6.1+) with every
    /// VMA checked to belong to that mm. Corrupt trees yield the VMAs found and issues.
    /// </summary>
    public KernelList<LinuxVma> GetMappings(LinuxProcess process)
    {
        ArgumentNullException.ThrowIfNull(process);
        var issues = new List<KernelWalkIssue>();
        var vmas = new List<LinuxVma>();
        if (process.MmAddress == 0)
            return new KernelList<LinuxVma>(vmas, issues);
        int mmMt = Types.OffsetOf("mm_struct", "mm_mt");
        int maRoot = Types.OffsetOf("maple_tree", "ma_root");
        int vmStart = Types.OffsetOf("vm_area_struct", "vm_start");
        int vmEnd = Types.OffsetOf("vm_area_struct", "vm_end");
        int vmFlags = Types.OffsetOf("vm_area_struct", "vm_flags");
        int vmPgoff = Types.OffsetOf("vm_area_struct", "vm_pgoff");
        int vmFile = Types.OffsetOf("vm_area_struct", "vm_file");
        int vmMm = Types.OffsetOf("vm_area_struct", "vm_mm");

        if (!_kernel.TryReadUInt64(process.MmAddress + (ulong)(mmMt + maRoot), out ulong root))
        {
            issues.Add(new KernelWalkIssue("maple tree", process.MmAddress, "mm_struct is unreadable"));
            return new KernelList<LinuxVma>(vmas, issues);
        }
        var entries = new List<ulong>();
        var seen = new HashSet<ulong>();
        var stack = new Stack<(ulong Entry, ulong Max, int Depth)>();
        // The root is tagged MAPLE_ROOT_NODE (0b10) when it is a node; otherwise it is a lone value.
        if (IsMapleNode(root))
            stack.Push((root & ~2UL, ulong.MaxValue, 0));
        else if (root != 0 && (root & 7) == 0)
            entries.Add(root);
        Span<byte> raw = stackalloc byte[256];
        while (stack.Count > 0)
        {
            // An encoded node: address | type << 3 | MAPLE_ENODE_NULL (0b100).
            var (entry, max, depth) = stack.Pop();
            ulong node = entry & ~MapleNodeMask;
            int type = (int)((entry >> MapleTypeShift) & 0xf);
            if (depth > 31 || !seen.Add(node) || seen.Count > MaxMapleNodes)
            {
                issues.Add(new KernelWalkIssue("maple tree", node, depth > 31 ? "deeper than the maple tree's maximum height" : seen.Count > MaxMapleNodes ? $"more than {MaxMapleNodes} nodes" : "node reached twice (cycle)"));
                break;
            }
            // maple_range_64 / leaf_64: parent | pivot[15] | slot[16] (slot[15] doubles as metadata {end, gap});
            // maple_arange_64: parent | pivot[9] | slot[10] | gap[10] | metadata.
            (int pivots, int slots, int metaOffset) = type switch
            {
                MapleLeaf64 or MapleRange64 => (15, 16, 8 + 15 * 8 + 15 * 8),
                MapleArange64 => (9, 10, 8 + 9 * 8 + 10 * 8 + 10 * 8),
                _ => (-1, -1, -1),
            };
            if (pivots < 0)
            {
                issues.Add(new KernelWalkIssue("maple tree", node, $"unexpected node type {type}"));
                continue;
            }
            if (!_kernel.TryRead(node, raw))
            {
                issues.Add(new KernelWalkIssue("maple tree", node, "node is unreadable"));
                continue;
            }
            // The data end, as lib/maple_tree.c's ma_data_end() finds it.
            int end;
            if (type == MapleArange64 || PivotAt(raw, pivots - 1) == 0)
                end = raw[metaOffset];
            else
                end = PivotAt(raw, pivots - 1) == max ? pivots - 1 : pivots;
            if (end >= slots)
            {
                issues.Add(new KernelWalkIssue("maple tree", node, $"data end {end} beyond the node's {slots} slots"));
                continue;
            }
            int slotBase = 8 + pivots * 8;
            for (int i = end; i >= 0; i--)
            {
                ulong slot = BitConverter.ToUInt64(raw.Slice(slotBase + i * 8, 8));
                if (slot == 0)
                    continue;
                ulong childMax = i < pivots && PivotAt(raw, i) != 0 ? PivotAt(raw, i) : max;
                if (type == MapleLeaf64)
                {
                    // Values: VMA pointers; internal entries (low bits 0b10, e.g. XA_ZERO_ENTRY) are skipped.
                    if ((slot & 7) == 0)
                        entries.Add(slot);
                }
                else
                {
                    stack.Push((slot, childMax, depth + 1));
                }
            }
        }

        var unique = new HashSet<ulong>();
        foreach (ulong vma in entries)
        {
            if (!unique.Add(vma))
                continue;
            if (vmas.Count >= MaxVmas)
            {
                issues.Add(new KernelWalkIssue("maple tree", vma, $"more than {MaxVmas} mappings"));
                break;
            }
            if (!_kernel.TryReadUInt64(vma + (ulong)vmStart, out ulong start) || !_kernel.TryReadUInt64(vma + (ulong)vmEnd, out ulong end)
                || !_kernel.TryReadUInt64(vma + (ulong)vmFlags, out ulong flags) || !_kernel.TryReadUInt64(vma + (ulong)vmPgoff, out ulong pgoff)
                || !_kernel.TryReadUInt64(vma + (ulong)vmFile, out ulong file) || !_kernel.TryReadUInt64(vma + (ulong)vmMm, out ulong owner))
            {
                issues.Add(new KernelWalkIssue("vm_area_struct", vma, "unreadable"));
                continue;
            }
            if (owner != process.MmAddress || end <= start)
            {
                issues.Add(new KernelWalkIssue("vm_area_struct", vma, FormattableString.Invariant($"does not belong to mm 0x{process.MmAddress:x} or has an empty range (0x{start:x}-0x{end:x})")));
                continue;
            }
            vmas.Add(new LinuxVma(vma, start, end, flags, pgoff, file, file == 0 ? null : FilePath(file)));
        }
        vmas.Sort((a, b) => a.Start.CompareTo(b.Start));
        return new KernelList<LinuxVma>(vmas, issues);
    }

    private static ulong PivotAt(ReadOnlySpan<byte> node, int i) => BitConverter.ToUInt64(node.Slice(8 + i * 8, 8));

    private static bool IsMapleNode(ulong entry) => (entry & 3) == 2 && entry > 4096;

}
