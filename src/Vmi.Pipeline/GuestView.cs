using Vmi.Events;
using Vmi.Linux.Model;
using Vmi.Memory;

namespace Vmi.Pipeline;

/// <summary>
/// The VM as detectors see it: its memory and, when the guest is Linux and its profile was
/// bootstrapped, the kernel model. Null members mean "not available for this VM" (a journal
/// replay has no live guest).
/// </summary>
public sealed class GuestView
{
    public GuestView(string vmId, GuestOs os, IPhysicalMemory? memory = null, LinuxKernel? linux = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(vmId);
        VmId = vmId;
        Os = os;
        Memory = memory ?? linux?.Memory;
        Linux = linux;
    }

    public string VmId { get; }
    public GuestOs Os { get; }
    public IPhysicalMemory? Memory { get; }
    public LinuxKernel? Linux { get; }

    /// <summary>The kernel model, or a clear error for a detector that cannot work without it.</summary>
    /// <exception cref="InvalidOperationException">No Linux model for this VM.</exception>
    public LinuxKernel RequireLinux() =>
        Linux ?? throw new InvalidOperationException($"VM {VmId} has no Linux kernel model (not Linux, or a replay without a live guest)");
}
