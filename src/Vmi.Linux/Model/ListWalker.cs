using Vmi.Memory;

namespace Vmi.Linux.Model;

/// <summary>
/// Walks a kernel circular doubly linked list (struct list_head) through guest virtual memory,
/// bounded in length and cycle-checked: a corrupt list yields the nodes found so far and an issue.
/// </summary>
internal static class ListWalker
{
    /// <summary>Node addresses (the list_head inside each element) after <paramref name="head"/>, in order.</summary>
    public static List<ulong> Walk(VirtualMemory memory, ulong head, string structure, int maxNodes, List<KernelWalkIssue> issues)
    {
        var nodes = new List<ulong>();
        var seen = new HashSet<ulong> { head };
        ulong previous = head;
        if (!memory.TryReadUInt64(head, out ulong current))
        {
            issues.Add(new KernelWalkIssue(structure, head, "list head is unreadable"));
            return nodes;
        }
        while (current != head)
        {
            if (nodes.Count >= maxNodes)
            {
                issues.Add(new KernelWalkIssue(structure, current, $"more than {maxNodes} entries: stopped (a loop that does not return to the head?)"));
                break;
            }
            if (current == 0 || (current & 7) != 0)
            {
                issues.Add(new KernelWalkIssue(structure, previous, $"next pointer 0x{current:x} is null or misaligned"));
                break;
            }
            if (!seen.Add(current))
            {
                issues.Add(new KernelWalkIssue(structure, current, "cycle: an entry points back into the list without reaching the head"));
                break;
            }
            if (!memory.TryReadUInt64(current, out ulong next) || !memory.TryReadUInt64(current + 8, out ulong prev))
            {
                issues.Add(new KernelWalkIssue(structure, current, "entry is unreadable (dangling pointer)"));
                break;
            }
            if (prev != previous)
                issues.Add(new KernelWalkIssue(structure, current, $"prev pointer 0x{prev:x} does not point back to 0x{previous:x} (list tampered with?)"));
            nodes.Add(current);
            previous = current;
            current = next;
        }
        return nodes;
    }
}
