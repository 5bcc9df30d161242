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
    private const int MaxPathDepth = 64;

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
        var stack = new Stack<(ulong Entry, int Depth)>();
        stack.Push((root, 0));
        Span<byte> raw = stackalloc byte[256];
        while (stack.Count > 0)
        {
            var (entry, depth) = stack.Pop();
            if (!IsMapleNode(entry))
            {
                if (entry != 0 && (entry & 3) == 0)
                    entries.Add(entry);
                continue;
            }
            ulong node = entry & ~MapleNodeMask;
            int type = (int)((entry >> MapleTypeShift) & 0xf);
            if (depth > 31 || !seen.Add(node) || seen.Count > MaxMapleNodes)
            {
                issues.Add(new KernelWalkIssue("maple tree", node, depth > 31 ? "deeper than the maple tree's maximum height" : seen.Count > MaxMapleNodes ? $"more than {MaxMapleNodes} nodes" : "node reached twice (cycle)"));
                break;
            }
            (int pivots, int slots) = type switch
            {
                MapleLeaf64 or MapleRange64 => (15, 16),
                MapleArange64 => (9, 10),
                _ => (-1, -1),
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
            // Layout: parent (8) | pivot[pivots] | slot[slots] | …
            int slotBase = 8 + pivots * 8;
            var children = new List<ulong>(slots);
            for (int i = 0; i < slots; i++)
            {
                ulong pivot = i < pivots ? BitConverter.ToUInt64(raw.Slice(8 + i * 8, 8)) : ulong.MaxValue;
                ulong slot = BitConverter.ToUInt64(raw.Slice(slotBase + i * 8, 8));
                if (i > 0 && pivot == 0)
                    break; // a zero pivot after the first marks the end of the node's data
                if (slot != 0)
                    children.Add(slot);
            }
            for (int i = children.Count - 1; i >= 0; i--)
            {
                if (type == MapleLeaf64)
                {
                    if (!IsMapleNode(children[i]) && (children[i] & 3) == 0)
                        entries.Add(children[i]);
                }
                else
                {
                    stack.Push((children[i], depth + 1));
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

    private static bool IsMapleNode(ulong entry) => (entry & 3) == 2 && entry > 4096;

    /// <summary>
    /// A file's path from its dentry chain (f_path.dentry → d_parent …), bounded in depth. Mount points
    /// are not crossed: the path is relative to the file's own mount, which is the root mount in the lab.
    /// </summary>
    public string? FilePath(ulong file)
    {
        int fPath = Types.OffsetOf("file", "f_path");
        int pathDentry = Types.OffsetOf("path", "dentry");
        int dParent = Types.OffsetOf("dentry", "d_parent");
        int dName = Types.OffsetOf("dentry", "d_name");
        int qstrName = Types.OffsetOf("qstr", "name");
        if (!_kernel.TryReadUInt64(file + (ulong)(fPath + pathDentry), out ulong dentry) || dentry == 0)
            return null;
        var parts = new List<string>();
        for (int depth = 0; depth < MaxPathDepth; depth++)
        {
            if (!_kernel.TryReadUInt64(dentry + (ulong)(dName + qstrName), out ulong namePtr) || !_kernel.TryReadUInt64(dentry + (ulong)dParent, out ulong parent))
                return null;
            if (parent == dentry || parent == 0)
                break; // the root dentry is its own parent
            parts.Add(ReadCString(namePtr, 256));
            dentry = parent;
        }
        parts.Reverse();
        return "/" + string.Join('/', parts);
    }
}
