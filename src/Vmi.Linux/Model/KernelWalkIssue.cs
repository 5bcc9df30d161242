namespace Vmi.Linux.Model;

/// <summary>Something wrong found while walking guest kernel structures (guest memory is hostile input).</summary>
/// <param name="Structure">What was being walked, e.g. "task list".</param>
/// <param name="Address">Guest virtual address of the offending element.</param>
/// <param name="Problem">What was wrong, for a human.</param>
public sealed record KernelWalkIssue(string Structure, ulong Address, string Problem)
{
    public override string ToString() => FormattableString.Invariant($"{Structure}: {Problem} at 0x{Address:x}");
}

/// <summary>The entries a walk found, and what stopped or disturbed it. Issues empty = a clean, complete walk.</summary>
public sealed record KernelList<T>(IReadOnlyList<T> Items, IReadOnlyList<KernelWalkIssue> Issues)
{
    public bool IsComplete => Issues.Count == 0;
}
