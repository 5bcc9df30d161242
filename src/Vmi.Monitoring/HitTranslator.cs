using System.Text;
using Vmi.Events;
using Vmi.Linux.Model;
using Vmi.Targets.Hooks;

namespace Vmi.Monitoring;

/// <summary>
/// Turns backend hook hits into events: writes and reads into <see cref="MemoryAccess"/>, and the
/// known breakpoints into what they mean (process started, exec, module loaded) by reading the object
/// the function got in rdi. Reading is bounded and tolerant: an unreadable object still yields the
/// plain <see cref="BreakpointHit"/>.
/// </summary>
public sealed class HitTranslator
{
    private readonly LinuxKernel _kernel;
    private readonly string _vmId;
    private readonly int _bprmFilename = -1;
    private readonly int _moduleName = -1;
    private readonly int _moduleState = -1;
    private readonly ulong _currentTask;

    public HitTranslator(string vmId, LinuxKernel kernel)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        _vmId = vmId;
        _kernel = kernel;
        if (kernel.Types.TryOffsetOf("linux_binprm", "filename", out int f))
            _bprmFilename = f;
        if (kernel.Types.TryOffsetOf("module", "name", out int n))
            _moduleName = n;
        if (kernel.Types.TryOffsetOf("module", "state", out int s))
            _moduleState = s;
        // Per-cpu variable: on this kernel family an offset from the cpu's GS base (6.2+ moved it into pcpu_hot).
        if (!kernel.Symbols.TryGetAddress("current_task", out _currentTask) && kernel.Symbols.TryGetAddress("pcpu_hot", out ulong hot))
            _currentTask = hot;
    }

    /// <summary>The events a hit stands for (the raw access or breakpoint first, then what it means).</summary>
    public IReadOnlyList<VmiEvent> Translate(HookHit hit)
    {
        ArgumentNullException.ThrowIfNull(hit);
        HookRequest r = hit.Hook.Request;
        var (symbol, offset) = _kernel.ResolveAddress(hit.Rip);
        string? ripSymbol = symbol is null ? null : FormattableString.Invariant($"{symbol}+0x{offset:x}");
        if (r.Kind != HookKind.Execute)
        {
            return
            [
                new MemoryAccess
                {
                    VmId = _vmId, Time = hit.Time, Access = r.Kind == HookKind.Write ? MemoryAccessKind.Write : MemoryAccessKind.Read,
                    Hook = r.Name, Vcpu = hit.Vcpu, Rip = hit.Rip, RipSymbol = ripSymbol, Gpa = hit.Gpa, Gva = hit.Gva,
                    Size = hit.Size, OldValue = hit.OldValue, NewValue = hit.NewValue,
                },
            ];
        }
        var bp = new BreakpointHit
        {
            VmId = _vmId, Time = hit.Time, Hook = r.Name, Vcpu = hit.Vcpu, Rip = hit.Rip, Symbol = ripSymbol, Cr3 = hit.Cr3,
            Registers = Pick(hit.Registers, "rdi", "rsi", "rdx", "rcx", "r8", "r9", "rsp", "gs_base"),
        };
        var events = new List<VmiEvent> { bp };
        ulong rdi = hit.Registers.TryGetValue("rdi", out ulong v) ? v : 0;
        switch (r.Name)
        {
            case HookPlan.ProcessCreate when _kernel.ReadTask(rdi) is LinuxProcess p:
                events.Add(new ProcessStarted
                {
                    VmId = _vmId, Time = hit.Time, Pid = p.Pid, Ppid = p.Ppid, Name = p.Name, Uid = p.Uid, Euid = p.Euid,
                    Cmdline = p.Cmdline, ExePath = p.ExePath, TaskAddress = p.TaskAddress, Cause = bp.Id,
                });
                break;
            case HookPlan.Exec:
                if (ReadExec(hit, rdi) is ProcessExec e)
                    events.Add(e with { Cause = bp.Id });
                break;
            case HookPlan.ModuleLoad when _moduleName >= 0:
                string name = ReadString(rdi + (ulong)_moduleName, 56);
                if (name.Length > 0)
                    events.Add(new ModuleLoaded { VmId = _vmId, Time = hit.Time, Name = name, Address = rdi, Cause = bp.Id });
                break;
        }
        return events;
    }

    private ProcessExec? ReadExec(HookHit hit, ulong bprm)
    {
        string? path = null;
        if (_bprmFilename >= 0 && _kernel.KernelMemory.TryReadUInt64(bprm + (ulong)_bprmFilename, out ulong fn) && fn != 0)
            path = ReadString(fn, 4096);
        LinuxProcess? task = null;
        if (_currentTask != 0 && hit.Registers.TryGetValue("gs_base", out ulong gs) && gs != 0
            && _kernel.KernelMemory.TryReadUInt64(gs + _currentTask, out ulong current))
            task = _kernel.ReadTask(current);
        if (task is null && path is null)
            return null;
        return new ProcessExec
        {
            VmId = _vmId, Time = hit.Time, Pid = task?.Pid ?? 0, Name = task?.Name ?? Path.GetFileName(path ?? ""), Path = path,
            Uid = task?.Uid ?? 0, Euid = task?.Euid ?? 0, TaskAddress = task?.TaskAddress ?? 0,
        };
    }

    private string ReadString(ulong va, int max)
    {
        Span<byte> buf = stackalloc byte[Math.Min(max, 4096)];
        int n = _kernel.KernelMemory.Read(va, buf).BytesRead;
        int end = buf[..n].IndexOf((byte)0);
        return Encoding.UTF8.GetString(buf[..(end < 0 ? n : end)]);
    }

    private static Dictionary<string, ulong> Pick(IReadOnlyDictionary<string, ulong> regs, params string[] names)
    {
        var d = new Dictionary<string, ulong>(StringComparer.Ordinal);
        foreach (string n in names)
        {
            if (regs.TryGetValue(n, out ulong v))
                d[n] = v;
        }
        return d;
    }
}
