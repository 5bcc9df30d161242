namespace Vmi.Targets.Hooks;

/// <summary>What a hook catches.</summary>
public enum HookKind
{
    /// <summary>Guest writes to a memory range (EPT write protection on kvm, a write watchpoint on qemu).</summary>
    Write = 0,
    /// <summary>Guest reads of a memory range.</summary>
    Read = 1,
    /// <summary>Execution of one instruction address (a breakpoint).</summary>
    Execute = 2,
}

/// <summary>A hook to place.</summary>
/// <param name="Name">What it watches (<c>syscall-table</c>, <c>idt</c>, <c>kernel-text</c>, <c>process-create</c> …), carried by every hit.</param>
/// <param name="Kind">Write, read or execute.</param>
/// <param name="Address">Guest virtual address (kernel address space).</param>
/// <param name="Length">Bytes covered; 1 for breakpoints.</param>
public sealed record HookRequest(string Name, HookKind Kind, ulong Address, ulong Length)
{
    public override string ToString() => FormattableString.Invariant($"{Name} {Kind} 0x{Address:x}+0x{Length:x}");
}

/// <summary>A placed hook; removing it takes this handle.</summary>
public sealed class HookHandle
{
    internal HookHandle(long id, HookRequest request)
    {
        Id = id;
        Request = request;
    }

    public long Id { get; }
    public HookRequest Request { get; }
    public override string ToString() => $"#{Id} {Request}";
}

/// <summary>A hook fired. The guest has already continued (or continues right after the hit is delivered).</summary>
/// <param name="Hook">The hook.</param>
/// <param name="Time">When the backend saw it.</param>
/// <param name="Vcpu">vCPU index; -1 when the write was found by comparing shadows and the writer is unknown.</param>
/// <param name="Rip">Instruction pointer: the breakpoint address, or for a write the instruction after the writing one on qemu (x86 data breakpoints are traps).</param>
/// <param name="Cr3">Address space of the vCPU at the hit.</param>
/// <param name="Gva">Virtual address of the first changed/accessed byte.</param>
/// <param name="Gpa">Its physical address, when it translates.</param>
/// <param name="OldValue">Bytes before a write (null for reads and executes).</param>
/// <param name="NewValue">Bytes after a write.</param>
/// <param name="Registers">General registers of the vCPU at the hit (rdi, rsi … for function arguments).</param>
public sealed record HookHit(HookHandle Hook, DateTimeOffset Time, int Vcpu, ulong Rip, ulong Cr3, ulong Gva, ulong? Gpa,
    byte[]? OldValue, byte[]? NewValue, IReadOnlyDictionary<string, ulong> Registers)
{
    public int Size => NewValue?.Length ?? 0;
}

/// <summary>
/// Hooks on a running VM, the same for every backend: page-granular read / write hooks and execute
/// breakpoints, addable and removable while the guest runs. Hits are delivered in the order they
/// happened, through <see cref="RunAsync"/>'s callback.
/// </summary>
public interface IHookBackend : IAsyncDisposable
{
    /// <summary>Backend name for messages (<c>qemu gdb stub</c>, <c>kvm</c>).</summary>
    string Name { get; }

    /// <summary>Places a hook (also while <see cref="RunAsync"/> runs).</summary>
    /// <exception cref="Vmi.Core.TargetException">The backend cannot place this hook (unsupported kind, address not mapped).</exception>
    Task<HookHandle> AddAsync(HookRequest request, CancellationToken cancellationToken = default);

    /// <summary>Removes a hook (also while <see cref="RunAsync"/> runs).</summary>
    Task RemoveAsync(HookHandle hook, CancellationToken cancellationToken = default);

    /// <summary>Hooks in force.</summary>
    IReadOnlyList<HookHandle> Hooks { get; }

    /// <summary>One line on what the hook loop is doing (phase, when it last moved, stops and hits), for diagnostics.</summary>
    string State { get; }

    /// <summary>
    /// Lets the guest run and delivers hits until cancelled; on return the guest is running with no
    /// hooks left in the way (the backend detaches or clears them).
    /// </summary>
    Task RunAsync(Func<HookHit, ValueTask> onHit, CancellationToken cancellationToken);
}
