using Vmi.Memory;

namespace Vmi.Targets;

/// <summary>Registers of one vCPU that introspection needs.</summary>
public sealed record VcpuRegisters(int Vcpu, ulong Rip, ulong Rsp, ulong Cs, ulong Cr0, ulong Cr3, ulong Cr4, ulong? Efer,
    IReadOnlyDictionary<string, ulong> All)
{
    /// <summary>CR4.LA57 (bit 12): 5-level paging.</summary>
    public bool La57 => (Cr4 & (1UL << 12)) != 0;

    /// <summary>Current privilege level from the CS selector's low bits.</summary>
    public int Cpl => (int)(Cs & 3);

    /// <summary>The address space the vCPU is in. EFER.NXE (bit 11) is assumed set when EFER is unknown (dumps), as Linux sets it.</summary>
    public PagingContext Paging => PagingContext.FromRegisters(Cr3, Cr4, Efer ?? (1UL << 11));
}

/// <summary>Something Vmi introspects: a running VM or a memory image.</summary>
public interface ITarget : IAsyncDisposable
{
    /// <summary>One line for humans: what this is.</summary>
    string Description { get; }

    /// <summary>Guest physical memory.</summary>
    IPhysicalMemory Memory { get; }

    /// <summary>Number of vCPUs whose state is known.</summary>
    int VcpuCount { get; }

    /// <summary>Registers of a vCPU now (a live VM keeps running unless it was paused).</summary>
    /// <exception cref="Vmi.Core.TargetException">The state cannot be had (e.g. a raw image has none).</exception>
    Task<VcpuRegisters> GetRegistersAsync(int vcpu = 0, CancellationToken cancellationToken = default);
}
