using System.Text.Json;
using System.Text.Json.Serialization;
using Vmi.Core;

namespace Vmi.Monitoring;

/// <summary>
/// How one VM is watched: the sweep interval, which hooks are placed, and the detectors' options.
/// Loaded from JSON (<c>vmi monitor --config FILE</c>); every field is optional.
/// </summary>
public sealed record MonitorOptions
{
    /// <summary>Time between periodic sweeps (integrity detectors run on each). Default 5 s.</summary>
    public TimeSpan SweepInterval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Shortest time between two sweeps that hooks ask for (hits in between are coalesced).</summary>
    public TimeSpan HookSweepCoalesce { get; init; } = TimeSpan.FromMilliseconds(500);

    /// <summary>Hooks to place when the backend can hook.</summary>
    public HookOptions Hooks { get; init; } = new();

    /// <summary>
    /// Per-detector options, by detector id: <c>{"syscall-hook": {"enabled": false}, "inline-hook": {"functions": [...]}}</c>.
    /// </summary>
    public JsonElement? Detectors { get; init; }

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNameCaseInsensitive = true,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    };

    /// <summary>Reads options from a JSON file.</summary>
    /// <exception cref="VmiException">The file is missing or is not valid options (the message names the line and field).</exception>
    public static MonitorOptions Load(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new VmiException($"monitor options {path}: {e.Message}", e);
        }
        return Parse(text, path);
    }

    /// <summary>Parses options JSON.</summary>
    /// <exception cref="VmiException">Not valid options.</exception>
    public static MonitorOptions Parse(string json, string source = "options")
    {
        try
        {
            MonitorOptions o = JsonSerializer.Deserialize<MonitorOptions>(json, Json) ?? new MonitorOptions();
            if (o.SweepInterval < TimeSpan.FromMilliseconds(100))
                throw new VmiException($"{source}: sweepInterval must be at least 00:00:00.1 (got {o.SweepInterval}).");
            return o;
        }
        catch (JsonException e)
        {
            string where = e.LineNumber is long l ? $" line {l + 1}" : "";
            throw new VmiException($"{source}:{where} {e.Message}", e);
        }
    }
}

/// <summary>Which hooks the monitor places (each needs a backend that can hook).</summary>
public sealed record HookOptions
{
    /// <summary>Write hook on the system call table.</summary>
    public bool SyscallTable { get; init; } = true;

    /// <summary>Write hook on the IDT.</summary>
    public bool Idt { get; init; } = true;

    /// <summary>Write hooks on the kernel text pages holding these functions' prologues.</summary>
    public IReadOnlyList<string> KernelTextFunctions { get; init; } =
        ["tcp4_seq_show", "tcp6_seq_show", "udp4_seq_show", "filldir64", "vfs_read", "do_sys_openat2", "__x64_sys_kill", "__x64_sys_getdents64"];

    /// <summary>Breakpoint on process creation (<c>wake_up_new_task</c>).</summary>
    public bool ProcessCreate { get; init; } = true;

    /// <summary>Breakpoint on exec (<c>setup_new_exec</c>).</summary>
    public bool Exec { get; init; } = true;

    /// <summary>Breakpoint on module load (<c>do_init_module</c>).</summary>
    public bool ModuleLoad { get; init; } = true;

    /// <summary>
    /// Breakpoints where user memory can become executable (<c>mprotect_fixup</c>, <c>mmap_region</c>): the AV
    /// detector scans the process shortly after. Each mapping a process makes stops the guest once.
    /// </summary>
    public bool ExecutableMemory { get; init; } = true;

    /// <summary>No hooks at all (sweeps only).</summary>
    public static HookOptions None { get; } = new()
    {
        SyscallTable = false, Idt = false, KernelTextFunctions = [], ProcessCreate = false, Exec = false, ModuleLoad = false, ExecutableMemory = false,
    };
}
