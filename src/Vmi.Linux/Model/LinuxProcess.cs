namespace Vmi.Linux.Model;

/// <summary>A process (thread-group leader) as read from the guest kernel's task list.</summary>
public sealed record LinuxProcess
{
    public required ulong TaskAddress { get; init; }
    public required int Pid { get; init; }
    public required int Tgid { get; init; }
    public required int Ppid { get; init; }
    /// <summary>task_struct.comm (at most 15 bytes).</summary>
    public required string Comm { get; init; }
    /// <summary>The name /proc/PID/comm shows: comm, or a kernel thread's full name.</summary>
    public required string Name { get; init; }
    /// <summary>task_struct.flags (PF_*).</summary>
    public required uint Flags { get; init; }
    public required uint State { get; init; }
    public required uint Uid { get; init; }
    public required uint Gid { get; init; }
    public required uint Euid { get; init; }
    /// <summary>Saved set-user-id (real_cred->suid); 0 when the BTF has no such member.</summary>
    public uint Suid { get; init; }
    /// <summary>Filesystem user id (real_cred->fsuid); 0 when the BTF has no such member.</summary>
    public uint Fsuid { get; init; }
    /// <summary>task_struct.real_cred: the objective credentials Uid/Gid/Euid/Suid/Fsuid come from.</summary>
    public ulong RealCredAddress { get; init; }
    /// <summary>task_struct.cred: the subjective (effective) credentials; equal to <see cref="RealCredAddress"/> unless overridden.</summary>
    public ulong CredAddress { get; init; }
    /// <summary>i_mode of the executable's inode (mm->exe_file->f_inode), e.g. 0x81ed; null when unknown. S_ISUID is 0x800 (04000).</summary>
    public uint? ExeMode { get; init; }
    /// <summary>Monotonic start time in ns since boot (task_struct.start_time).</summary>
    public required ulong StartTimeNs { get; init; }
    /// <summary>mm_struct address; 0 for kernel threads.</summary>
    public required ulong MmAddress { get; init; }
    /// <summary>Physical address of the process's top-level page table; 0 for kernel threads.</summary>
    public required ulong PageTablePhysical { get; init; }
    public required IReadOnlyList<string> Cmdline { get; init; }
    /// <summary>Why the command line could not be read completely, when it could not.</summary>
    public string? CmdlineError { get; init; }
    /// <summary>Path of the executable (mm_struct.exe_file), null for kernel threads or when unreadable.</summary>
    public string? ExePath { get; init; }
    /// <summary>Thread ids of the group (the leader's pid first).</summary>
    public IReadOnlyList<int> Threads { get; init; } = [];
    public bool IsKernelThread => MmAddress == 0;
}

/// <summary>A loaded kernel module as read from the guest kernel's module list.</summary>
public sealed record LinuxModule(ulong ModuleAddress, string Name, ulong Size, int RefCount, string State, ulong CoreBase);
