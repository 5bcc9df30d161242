using Vmi.Core;
using Vmi.Memory;

namespace Vmi.Targets;

/// <summary>A memory image: raw (offset = guest physical address) or the ELF core QMP dump-guest-memory writes.</summary>
public sealed class DumpTarget : ITarget
{
    private readonly GuestDump _dump;

    private DumpTarget(string path, GuestDump dump)
    {
        _dump = dump;
        Description = $"{dump.Format} memory image {path} ({dump.CpuStates.Count} vCPU states)";
    }

    public string Description { get; }
    public IPhysicalMemory Memory => _dump;
    public int VcpuCount => _dump.CpuStates.Count;

    /// <exception cref="TargetException">The file is missing or unreadable.</exception>
    public static DumpTarget Open(string path)
    {
        if (!File.Exists(path))
            throw new TargetException($"memory image {path} does not exist.");
        try
        {
            return new DumpTarget(path, DumpFile.Open(path));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new TargetException($"cannot read memory image {path}: {e.Message}", e);
        }
    }

    public Task<VcpuRegisters> GetRegistersAsync(int vcpu = 0, CancellationToken cancellationToken = default)
    {
        if (_dump.CpuStates.Count == 0)
            throw new TargetException($"this {_dump.Format} image carries no CPU state: give --cr3 (and --paging 5 for a 5-level guest).");
        if (vcpu < 0 || vcpu >= _dump.CpuStates.Count)
            throw new TargetException($"vCPU {vcpu} is not in the image (it has {_dump.CpuStates.Count}).");
        DumpCpuState s = _dump.CpuStates[vcpu];
        var all = new Dictionary<string, ulong>(StringComparer.Ordinal)
        {
            ["rip"] = s.Rip, ["rsp"] = s.Rsp, ["cr0"] = s.Cr0, ["cr3"] = s.Cr3, ["cr4"] = s.Cr4, ["cs"] = s.Cs.Selector,
        };
        return Task.FromResult(new VcpuRegisters(vcpu, s.Rip, s.Rsp, s.Cs.Selector, s.Cr0, s.Cr3, s.Cr4, null, all));
    }

    public ValueTask DisposeAsync()
    {
        _dump.Dispose();
        return ValueTask.CompletedTask;
    }
}

/// <summary>Opens any --target.</summary>
public static class TargetFactory
{
    /// <exception cref="TargetException">The target cannot be opened; the message says why and what to do.</exception>
    public static async Task<ITarget> OpenAsync(string spec, CancellationToken cancellationToken = default)
    {
        TargetSpec parsed = TargetSpec.Parse(spec);
        return parsed.Kind switch
        {
            TargetKind.Dump => DumpTarget.Open(parsed.DumpPath!),
            _ => await QemuTarget.AttachAsync(parsed, cancellationToken).ConfigureAwait(false),
        };
    }
}
