using System.Text;
using Vmi.Linux.Btf;
using Vmi.Memory;

namespace Vmi.Linux.Model;

/// <summary>
/// The guest Linux kernel seen from outside: every structure offset comes from the kernel's own BTF
/// and every address from its own kallsyms, so nothing here is specific to one kernel build.
/// </summary>
public sealed partial class LinuxKernel
{
    /// <summary>Upper bound of tasks walked (pid_max's default ceiling is 4M; real systems stay far below).</summary>
    public const int MaxTasks = 1 << 20;
    public const int MaxModules = 1 << 14;
    /// <summary>Largest command line read (the kernel's own ARG_MAX-like bound is far larger, /proc reads it all; we cap).</summary>
    public const int MaxCmdline = 128 * 1024;

    // include/linux/sched.h
    private const uint PfKthread = 0x00200000;
    private const uint PfWqWorker = 0x00000020;

    private readonly VirtualMemory _kernel;
    private readonly ISymbolTable _symbols;
    private readonly Offsets _o;

    public LinuxKernel(IPhysicalMemory memory, PagingContext kernelPaging, ISymbolTable symbols, BtfTypes types)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(symbols);
        ArgumentNullException.ThrowIfNull(types);
        Memory = memory;
        KernelPaging = kernelPaging;
        _kernel = new VirtualMemory(memory, kernelPaging, new TranslationCache());
        _symbols = symbols;
        Types = types;
        _o = new Offsets(types);
    }

    public IPhysicalMemory Memory { get; }
    public PagingContext KernelPaging { get; }
    public BtfTypes Types { get; }
    public ISymbolTable Symbols => _symbols;

    private ulong Symbol(string name) =>
        _symbols.TryGetAddress(name, out ulong a) ? a : throw new Vmi.Core.GuestMemoryException($"kernel symbol {name} is not in the symbol table");

    /// <summary>Processes from init_task's task list (what /proc lists), with partial results on corruption.</summary>
    public KernelList<LinuxProcess> GetProcesses()
    {
        var issues = new List<KernelWalkIssue>();
        ulong initTask = Symbol("init_task");
        var nodes = ListWalker.Walk(_kernel, initTask + (ulong)_o.TaskTasks, "task list", MaxTasks, issues);
        var result = new List<LinuxProcess>(nodes.Count);
        foreach (ulong node in nodes)
        {
            ulong task = node - (ulong)_o.TaskTasks;
            LinuxProcess? p = ReadProcess(task, issues);
            if (p is not null)
                result.Add(p);
        }
        return new KernelList<LinuxProcess>(result, issues);
    }

    private LinuxProcess? ReadProcess(ulong task, List<KernelWalkIssue> issues)
    {
        if (!TryU32(task + (ulong)_o.TaskPid, out uint pid) || !TryU32(task + (ulong)_o.TaskTgid, out uint tgid))
        {
            issues.Add(new KernelWalkIssue("task", task, "task_struct is unreadable"));
            return null;
        }
        string comm = ReadCString(task + (ulong)_o.TaskComm, 16);
        TryU32(task + (ulong)_o.TaskFlags, out uint flags);
        string name = comm;
        // /proc/PID/comm shows a kernel thread's full name (struct kthread.full_name, since 6.0) when
        // it did not fit in comm[16].
        if ((flags & PfKthread) != 0 && (flags & PfWqWorker) == 0 && _o.TaskWorkerPrivate >= 0 && _o.KthreadFullName >= 0
            && _kernel.TryReadUInt64(task + (ulong)_o.TaskWorkerPrivate, out ulong kthread) && kthread != 0
            && _kernel.TryReadUInt64(kthread + (ulong)_o.KthreadFullName, out ulong fullName) && fullName != 0)
        {
            name = ReadCString(fullName, 64);
        }
        TryU32(task + (ulong)_o.TaskState, out uint state);
        _kernel.TryReadUInt64(task + (ulong)_o.TaskStartTime, out ulong start);
        int ppid = 0;
        if (_kernel.TryReadUInt64(task + (ulong)_o.TaskRealParent, out ulong parent) && parent != 0 && TryU32(parent + (ulong)_o.TaskTgid, out uint ptgid))
            ppid = (int)ptgid;
        uint uid = 0, gid = 0, euid = 0, suid = 0, fsuid = 0;
        if (_kernel.TryReadUInt64(task + (ulong)_o.TaskRealCred, out ulong cred) && cred != 0)
        {
            if (!TryU32(cred + (ulong)_o.CredUid, out uid) || !TryU32(cred + (ulong)_o.CredGid, out gid) || !TryU32(cred + (ulong)_o.CredEuid, out euid))
                issues.Add(new KernelWalkIssue("task", task, $"cred 0x{cred:x} of pid {pid} is unreadable"));
            if (_o.CredSuid >= 0)
                TryU32(cred + (ulong)_o.CredSuid, out suid);
            if (_o.CredFsuid >= 0)
                TryU32(cred + (ulong)_o.CredFsuid, out fsuid);
        }
        ulong effectiveCred = 0;
        if (_o.TaskCred >= 0)
            _kernel.TryReadUInt64(task + (ulong)_o.TaskCred, out effectiveCred);
        _kernel.TryReadUInt64(task + (ulong)_o.TaskMm, out ulong mm);
        ulong pgdPhys = 0;
        IReadOnlyList<string> cmdline = [];
        string? cmdError = null;
        string? exePath = null;
        uint? exeMode = null;
        if (mm != 0)
        {
            if (_kernel.TryReadUInt64(mm + (ulong)_o.MmPgd, out ulong pgd) && _kernel.TryTranslate(pgd, out Translation t))
            {
                pgdPhys = t.PhysicalAddress;
                (cmdline, cmdError) = ReadCmdline(mm, pgdPhys);
                if (_o.MmExeFile >= 0 && _kernel.TryReadUInt64(mm + (ulong)_o.MmExeFile, out ulong exe) && exe != 0)
                {
                    exePath = FilePath(exe);
                    exeMode = ReadFileMode(exe);
                }
            }
            else
            {
                cmdError = "page table of the process is unreadable";
            }
        }
        return new LinuxProcess
        {
            TaskAddress = task, Pid = (int)tgid, Tgid = (int)tgid, Ppid = ppid, Comm = comm, Name = name, Flags = flags, State = state, Uid = uid, Gid = gid, Euid = euid,
            StartTimeNs = start, MmAddress = mm, PageTablePhysical = pgdPhys, Cmdline = cmdline, CmdlineError = cmdError,
            ExePath = exePath, Threads = ReadThreads(task, (int)tgid, issues),
            RealCredAddress = cred, CredAddress = effectiveCred, Suid = suid, Fsuid = fsuid, ExeMode = exeMode,
        };
    }

    /// <summary>Thread ids of a thread group, from signal_struct.thread_head (bounded, cycle-checked).</summary>
    private IReadOnlyList<int> ReadThreads(ulong task, int tgid, List<KernelWalkIssue> issues)
    {
        if (_o.TaskSignal < 0 || _o.SignalThreadHead < 0 || _o.TaskThreadNode < 0
            || !_kernel.TryReadUInt64(task + (ulong)_o.TaskSignal, out ulong signal) || signal == 0)
            return [tgid];
        var local = new List<KernelWalkIssue>();
        var nodes = ListWalker.Walk(_kernel, signal + (ulong)_o.SignalThreadHead, "thread list", 1 << 16, local);
        foreach (var i in local)
            issues.Add(i with { Problem = $"pid {tgid}: {i.Problem}" });
        var tids = new List<int>(nodes.Count);
        foreach (ulong n in nodes)
        {
            if (TryU32(n - (ulong)_o.TaskThreadNode + (ulong)_o.TaskPid, out uint tid))
                tids.Add((int)tid);
        }
        return tids.Count == 0 ? [tgid] : tids;
    }

    /// <summary>The environment of a process (mm_struct env_start..env_end through its own page tables).</summary>
    public KernelList<string> GetEnvironment(LinuxProcess process)
    {
        ArgumentNullException.ThrowIfNull(process);
        var issues = new List<KernelWalkIssue>();
        if (process.MmAddress == 0 || _o.MmEnvStart < 0)
            return new KernelList<string>([], issues);
        if (!_kernel.TryReadUInt64(process.MmAddress + (ulong)_o.MmEnvStart, out ulong start) || !_kernel.TryReadUInt64(process.MmAddress + (ulong)_o.MmEnvEnd, out ulong end) || end < start)
        {
            issues.Add(new KernelWalkIssue("environment", process.MmAddress, "env_start/env_end unreadable or inverted"));
            return new KernelList<string>([], issues);
        }
        var buffer = new byte[Math.Min(end - start, (ulong)MaxCmdline)];
        VirtualReadResult r = UserMemory(process).Read(start, buffer);
        if (!r.IsComplete)
            issues.Add(new KernelWalkIssue("environment", r.FailedAddress, $"user page not present ({r.Status})"));
        return new KernelList<string>(SplitNul(buffer.AsSpan(0, r.BytesRead)), issues);
    }

    /// <summary>The user-space view of a process: its own page tables, same paging mode as the kernel.</summary>
    public VirtualMemory UserMemory(LinuxProcess process)
    {
        ArgumentNullException.ThrowIfNull(process);
        return new VirtualMemory(Memory, KernelPaging with { Cr3 = process.PageTablePhysical });
    }

    private (IReadOnlyList<string>, string?) ReadCmdline(ulong mm, ulong pgdPhys)
    {
        if (!_kernel.TryReadUInt64(mm + (ulong)_o.MmArgStart, out ulong start) || !_kernel.TryReadUInt64(mm + (ulong)_o.MmArgEnd, out ulong end))
            return ([], "mm_struct is unreadable");
        if (end < start)
            return ([], FormattableString.Invariant($"arg_end 0x{end:x} is below arg_start 0x{start:x}"));
        ulong length = Math.Min(end - start, MaxCmdline);
        if (length == 0)
            return ([], null);
        var user = new VirtualMemory(Memory, KernelPaging with { Cr3 = pgdPhys });
        var buffer = new byte[length];
        VirtualReadResult r = user.Read(start, buffer);
        string? error = r.IsComplete ? (end - start > MaxCmdline ? $"truncated at {MaxCmdline} bytes" : null)
            : FormattableString.Invariant($"user page at 0x{r.FailedAddress:x} is not present ({r.Status})");
        return (SplitNul(buffer.AsSpan(0, r.BytesRead)), error);
    }

    internal static List<string> SplitNul(ReadOnlySpan<byte> data)
    {
        var parts = new List<string>();
        if (data.IsEmpty)
            return parts;
        // /proc/PID/cmdline: arguments separated and terminated by NUL.
        if (data[^1] == 0)
            data = data[..^1];
        while (true)
        {
            int nul = data.IndexOf((byte)0);
            if (nul < 0)
            {
                parts.Add(Encoding.UTF8.GetString(data));
                return parts;
            }
            parts.Add(Encoding.UTF8.GetString(data[..nul]));
            data = data[(nul + 1)..];
        }
    }

    /// <summary>Loaded modules from the kernel's module list (what /proc/modules shows).</summary>
    public KernelList<LinuxModule> GetModules()
    {
        var issues = new List<KernelWalkIssue>();
        var nodes = ListWalker.Walk(_kernel, Symbol("modules"), "module list", MaxModules, issues);
        var result = new List<LinuxModule>(nodes.Count);
        foreach (ulong node in nodes)
        {
            ulong module = node - (ulong)_o.ModuleList;
            string name = ReadCString(module + (ulong)_o.ModuleName, _o.ModuleNameLength);
            TryU32(module + (ulong)_o.ModuleState, out uint state);
            TryU32(module + (ulong)_o.ModuleCoreSize, out uint coreSize);
            uint initSize = 0;
            if (_o.ModuleInitSize >= 0)
                TryU32(module + (ulong)_o.ModuleInitSize, out initSize);
            TryU32(module + (ulong)_o.ModuleRefcnt, out uint refcnt);
            _kernel.TryReadUInt64(module + (ulong)_o.ModuleCoreBase, out ulong coreBase);
            string stateName = state switch { 0 => "Live", 1 => "Loading", 2 => "Unloading", 3 => "Unformed", _ => $"state {state}" };
            // /proc/modules shows refcnt minus MODULE_REF_BASE (1).
            result.Add(new LinuxModule(module, name, (ulong)coreSize + initSize, (int)refcnt - 1, stateName, coreBase));
        }
        return new KernelList<LinuxModule>(result, issues);
    }

    private bool TryU32(ulong va, out uint value)
    {
        Span<byte> b = stackalloc byte[4];
        if (_kernel.TryRead(va, b))
        {
            value = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(b);
            return true;
        }
        value = 0;
        return false;
    }

    private string ReadCString(ulong va, int max)
    {
        Span<byte> b = stackalloc byte[Math.Min(max, 256)];
        int n = _kernel.Read(va, b).BytesRead;
        int nul = b[..n].IndexOf((byte)0);
        return Encoding.UTF8.GetString(b[..(nul < 0 ? n : nul)]);
    }

    /// <summary>Every offset the model uses, resolved once from BTF; a missing member fails here with its name.</summary>
    private sealed class Offsets
    {
        public Offsets(BtfTypes t)
        {
            TaskTasks = t.OffsetOf("task_struct", "tasks");
            TaskPid = t.OffsetOf("task_struct", "pid");
            TaskTgid = t.OffsetOf("task_struct", "tgid");
            TaskComm = t.OffsetOf("task_struct", "comm");
            TaskFlags = t.OffsetOf("task_struct", "flags");
            TaskWorkerPrivate = t.TryOffsetOf("task_struct", "worker_private", out int wp) ? wp : -1;
            KthreadFullName = t.TryOffsetOf("kthread", "full_name", out int fn) ? fn : -1;
            // __state since 5.14, state before.
            TaskState = t.TryOffsetOf("task_struct", "__state", out int s) ? s : t.OffsetOf("task_struct", "state");
            TaskStartTime = t.OffsetOf("task_struct", "start_time");
            TaskRealParent = t.OffsetOf("task_struct", "real_parent");
            TaskRealCred = t.OffsetOf("task_struct", "real_cred");
            TaskMm = t.OffsetOf("task_struct", "mm");
            CredUid = t.OffsetOf("cred", "uid.val");
            CredGid = t.OffsetOf("cred", "gid.val");
            CredEuid = t.OffsetOf("cred", "euid.val");
            TaskCred = t.TryOffsetOf("task_struct", "cred", out int tc) ? tc : -1;
            CredSuid = t.TryOffsetOf("cred", "suid.val", out int su) ? su : -1;
            CredFsuid = t.TryOffsetOf("cred", "fsuid.val", out int fsu) ? fsu : -1;
            FileInode = t.TryOffsetOf("file", "f_inode", out int fi) ? fi : -1;
            InodeMode = t.TryOffsetOf("inode", "i_mode", out int im) ? im : -1;
            MmPgd = t.OffsetOf("mm_struct", "pgd");
            MmArgStart = t.OffsetOf("mm_struct", "arg_start");
            MmArgEnd = t.OffsetOf("mm_struct", "arg_end");
            // Optional members: the model degrades (no exe path, environment, threads) without them.
            MmEnvStart = t.TryOffsetOf("mm_struct", "env_start", out int es) ? es : -1;
            MmEnvEnd = t.TryOffsetOf("mm_struct", "env_end", out int ee) ? ee : -1;
            MmExeFile = t.TryOffsetOf("mm_struct", "exe_file", out int ef) ? ef : -1;
            TaskSignal = t.TryOffsetOf("task_struct", "signal", out int sg) ? sg : -1;
            TaskThreadNode = t.TryOffsetOf("task_struct", "thread_node", out int tn) ? tn : -1;
            SignalThreadHead = t.TryOffsetOf("signal_struct", "thread_head", out int th) ? th : -1;
            ModuleList = t.OffsetOf("module", "list");
            ModuleName = t.OffsetOf("module", "name");
            ModuleNameLength = 56;
            ModuleState = t.OffsetOf("module", "state");
            ModuleRefcnt = t.OffsetOf("module", "refcnt");
            // 6.1: core_layout/init_layout; 6.4+: mem[MOD_TEXT] etc.
            if (t.TryOffsetOf("module", "core_layout.size", out int cs))
            {
                ModuleCoreSize = cs;
                ModuleCoreBase = t.OffsetOf("module", "core_layout.base");
                ModuleInitSize = t.OffsetOf("module", "init_layout.size");
            }
            else
            {
                ModuleCoreSize = t.OffsetOf("module", "mem[0].size");
                ModuleCoreBase = t.OffsetOf("module", "mem[0].base");
                ModuleInitSize = -1;
            }
        }

        public int TaskTasks { get; }
        public int TaskPid { get; }
        public int TaskTgid { get; }
        public int TaskComm { get; }
        public int TaskFlags { get; }
        public int TaskWorkerPrivate { get; }
        public int KthreadFullName { get; }
        public int TaskState { get; }
        public int TaskStartTime { get; }
        public int TaskRealParent { get; }
        public int TaskRealCred { get; }
        public int TaskMm { get; }
        public int CredUid { get; }
        public int CredGid { get; }
        public int CredEuid { get; }
        public int TaskCred { get; }
        public int CredSuid { get; }
        public int CredFsuid { get; }
        public int FileInode { get; }
        public int InodeMode { get; }
        public int MmPgd { get; }
        public int MmArgStart { get; }
        public int MmArgEnd { get; }
        public int MmEnvStart { get; }
        public int MmEnvEnd { get; }
        public int MmExeFile { get; }
        public int TaskSignal { get; }
        public int TaskThreadNode { get; }
        public int SignalThreadHead { get; }
        public int ModuleList { get; }
        public int ModuleName { get; }
        public int ModuleNameLength { get; }
        public int ModuleState { get; }
        public int ModuleRefcnt { get; }
        public int ModuleCoreSize { get; }
        public int ModuleCoreBase { get; }
        public int ModuleInitSize { get; }
    }
}
