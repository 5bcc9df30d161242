namespace Vmi.Memory;

/// <summary>An opened memory dump: its physical memory (zero-copy, mapped read-only) and the vCPU states it records.</summary>
public sealed class GuestDump : IPhysicalMemory
{
    private readonly MappedPhysicalMemory _memory;

    internal GuestDump(string path, DumpFormat format, MappedPhysicalMemory memory, IReadOnlyList<DumpCpuState> cpuStates, string? vmcoreInfo)
    {
        Path = path;
        Format = format;
        _memory = memory;
        CpuStates = cpuStates;
        VmcoreInfo = vmcoreInfo;
    }

    /// <summary>The mapped memory behind the dump (lets the page walker take its devirtualized fast path).</summary>
    internal MappedPhysicalMemory Mapped => _memory;

    /// <summary>The dump file.</summary>
    public string Path { get; }

    /// <summary>Raw or ELF.</summary>
    public DumpFormat Format { get; }

    /// <summary>vCPU states from the ELF "QEMU" notes, in note order; empty for raw dumps.</summary>
    public IReadOnlyList<DumpCpuState> CpuStates { get; }

    /// <summary>The guest kernel's VMCOREINFO note text when the dump has one (QEMU's vmcoreinfo device); null otherwise.</summary>
    public string? VmcoreInfo { get; }

    /// <summary>Where each guest physical range lives in the file.</summary>
    public IReadOnlyList<PhysicalSegment> Segments => _memory.Segments;

    /// <summary>Length of the dump file.</summary>
    public ulong FileLength => _memory.FileLength;

    /// <inheritdoc/>
    public IReadOnlyList<PhysicalRange> Ranges => _memory.Ranges;

    /// <inheritdoc/>
    public bool TryRead(ulong address, Span<byte> destination) => _memory.TryRead(address, destination);

    /// <inheritdoc/>
    public bool TryReadUInt64(ulong address, out ulong value) => _memory.TryReadUInt64(address, out value);

    /// <inheritdoc/>
    public bool TryGetSpan(ulong address, int length, out ReadOnlySpan<byte> span) => _memory.TryGetSpan(address, length, out span);

    /// <inheritdoc/>
    public int ReadPartial(ulong address, Span<byte> destination) => _memory.ReadPartial(address, destination);

    /// <summary>Unmaps the file.</summary>
    public void Dispose() => _memory.Dispose();
}
