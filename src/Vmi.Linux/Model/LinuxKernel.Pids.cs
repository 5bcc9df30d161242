using Vmi.Linux.Btf;

namespace Vmi.Linux.Model;

/// <summary>An entry of the init pid namespace's pid table (init_pid_ns.idr): one struct pid and the task using it as PIDTYPE_PID.</summary>
/// <param name="Pid">pid->numbers[0].nr (the id in the initial namespace).</param>
/// <param name="PidAddress">Address of the struct pid.</param>
/// <param name="TaskAddress">The task attached as PIDTYPE_PID, 0 when none (a pid kept only as a process-group or session id, or being freed).</param>
/// <param name="Tgid">That task's tgid (0 when there is no task): Pid == Tgid for a thread-group leader.</param>
public sealed record PidEntry(int Pid, ulong PidAddress, ulong TaskAddress, int Tgid);

/// <summary>Credentials (struct cred) of a task.</summary>
public sealed record LinuxCred(ulong Address, uint Uid, uint Gid, uint Suid, uint Sgid, uint Euid, uint Egid, uint Fsuid, uint Fsgid);

public sealed partial class LinuxKernel
{
    /// <summary>Most xarray nodes visited in one pid-table walk (64 slots each: 4M ids, pid_max's ceiling).</summary>
    public const int MaxPidNodes = 1 << 16;

    // XArray internals (include/linux/xarray.h): an entry with low bits 0b10 is internal; internal
    // entries above 4096 are node pointers (tagged | 2), the small ones sibling/retry/zero markers.
    // Value entries have bit 0 set. A node has XA_CHUNK_SIZE = 64 slots; shift steps by XA_CHUNK_SHIFT = 6.
    private const int XaChunkSize = 64;
    private const int XaChunkShift = 6;
    // pid ids are ints: the deepest node of a 31-bit id space has shift 30 (6 * 5).
    private const int XaMaxShift = 30;

    private ExtraOffsets? _extra;

    /// <summary>Offsets only the newer model parts need, resolved on first use (all optional: -1 when absent).</summary>
    private ExtraOffsets X => _extra ??= new ExtraOffsets(Types);

    /// <summary>Reads one task_struct (e.g. one found in the pid table or a run queue) like <see cref="GetProcesses"/> does; null when unreadable.</summary>
    public LinuxProcess? ReadTask(ulong taskAddress) => ReadTask(taskAddress, out _);

    /// <summary>Reads one task_struct and says what was wrong with it.</summary>
    public LinuxProcess? ReadTask(ulong taskAddress, out IReadOnlyList<KernelWalkIssue> issues)
    {
        var list = new List<KernelWalkIssue>();
        issues = list;
        if (!IsKernelPointer(taskAddress))
        {
            list.Add(new KernelWalkIssue("task", taskAddress, "not a kernel address"));
            return null;
        }
        return ReadProcess(taskAddress, list);
    }

    /// <summary>Reads a struct cred; null when unreadable or the address is not a kernel pointer.</summary>
    public LinuxCred? ReadCred(ulong credAddress)
    {
        if (!IsKernelPointer(credAddress))
            return null;
        ExtraOffsets x = X;
        if (!TryU32(credAddress + (ulong)_o.CredUid, out uint uid) || !TryU32(credAddress + (ulong)_o.CredGid, out uint gid)
            || !TryU32(credAddress + (ulong)_o.CredEuid, out uint euid))
            return null;
        uint suid = 0, sgid = 0, egid = 0, fsuid = 0, fsgid = 0;
        if (_o.CredSuid >= 0)
            TryU32(credAddress + (ulong)_o.CredSuid, out suid);
        if (x.CredSgid >= 0)
            TryU32(credAddress + (ulong)x.CredSgid, out sgid);
        if (x.CredEgid >= 0)
            TryU32(credAddress + (ulong)x.CredEgid, out egid);
        if (_o.CredFsuid >= 0)
            TryU32(credAddress + (ulong)_o.CredFsuid, out fsuid);
        if (x.CredFsgid >= 0)
            TryU32(credAddress + (ulong)x.CredFsgid, out fsgid);
        return new LinuxCred(credAddress, uid, gid, suid, sgid, euid, egid, fsuid, fsgid);
    }

    /// <summary>
    /// Every struct pid in the initial pid namespace's id table (init_pid_ns.idr, an xarray), with the task
    /// each belongs to as PIDTYPE_PID. Independent of the task list: a task unlinked from it (DKOM) keeps
    /// its pid here as long as its pid number is in use. Bounded (<see cref="MaxPidNodes"/> nodes,
    /// <see cref="MaxTasks"/> entries), cycle-checked, shifts validated.
    /// </summary>
    public KernelList<PidEntry> GetPidTable()
    {
        var issues = new List<KernelWalkIssue>();
        var result = new List<PidEntry>();
        ExtraOffsets x = X;
        if (!_symbols.TryGetAddress("init_pid_ns", out ulong ns))
        {
            issues.Add(new KernelWalkIssue("pid table", 0, "the kernel has no init_pid_ns symbol"));
            return new KernelList<PidEntry>(result, issues);
        }
        if (x.NsIdrHead < 0 || x.XaNodeShift < 0 || x.XaNodeSlots < 0 || x.PidNr < 0 || x.PidTasks < 0 || x.TaskPidLinks < 0)
        {
            issues.Add(new KernelWalkIssue("pid table", ns, "the kernel's BTF lacks pid_namespace.idr, xa_node, pid or task_struct.pid_links"));
            return new KernelList<PidEntry>(result, issues);
        }
        ulong headAddress = ns + (ulong)x.NsIdrHead;
        if (!_kernel.TryReadUInt64(headAddress, out ulong head))
        {
            issues.Add(new KernelWalkIssue("pid table", headAddress, "init_pid_ns.idr is unreadable"));
            return new KernelList<PidEntry>(result, issues);
        }
        if (head == 0)
            return new KernelList<PidEntry>(result, issues);
        if (!IsXaNode(head))
        {
            // A lone entry at index 0 sits in xa_head itself.
            AddPid(head, 0, result, issues);
            return new KernelList<PidEntry>(result, issues);
        }
        var seen = new HashSet<ulong>();
        var pending = new Stack<(ulong Node, int ExpectedShift, ulong BaseIndex)>();
        pending.Push((head & ~3UL, -1, 0));
        Span<byte> slots = stackalloc byte[XaChunkSize * 8];
        Span<byte> shiftByte = stackalloc byte[1];
        while (pending.Count > 0)
        {
            (ulong node, int expected, ulong baseIndex) = pending.Pop();
            if (!seen.Add(node))
            {
                issues.Add(new KernelWalkIssue("pid table", node, "cycle: xa_node reached twice"));
                continue;
            }
            if (seen.Count > MaxPidNodes)
            {
                issues.Add(new KernelWalkIssue("pid table", node, $"more than {MaxPidNodes} nodes: stopped"));
                break;
            }
            if (!_kernel.TryRead(node + (ulong)x.XaNodeShift, shiftByte) || !_kernel.TryRead(node + (ulong)x.XaNodeSlots, slots))
            {
                issues.Add(new KernelWalkIssue("pid table", node, "xa_node is unreadable (dangling pointer)"));
                continue;
            }
            int shift = shiftByte[0];
            if (shift % XaChunkShift != 0 || shift > XaMaxShift || (expected >= 0 && shift != expected))
            {
                issues.Add(new KernelWalkIssue("pid table", node, expected >= 0
                    ? $"xa_node shift {shift} where the parent implies {expected}"
                    : $"xa_node shift {shift} is impossible for a pid id space"));
                continue;
            }
            for (int i = 0; i < XaChunkSize; i++)
            {
                ulong entry = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(slots[(i * 8)..]);
                if (entry == 0)
                    continue;
                ulong index = baseIndex + ((ulong)i << shift);
                if (IsXaNode(entry))
                {
                    if (shift == 0)
                        issues.Add(new KernelWalkIssue("pid table", node, $"slot {i} of a leaf node holds a node pointer 0x{entry:x}"));
                    else
                        pending.Push((entry & ~3UL, shift - XaChunkShift, index));
                    continue;
                }
                if ((entry & 3) != 0)
                    continue; // sibling/retry/zero markers and value entries: no struct pid
                if (shift != 0)
                {
                    // A multi-index entry; the idr never stores one, but the pointer is still a pid.
                    issues.Add(new KernelWalkIssue("pid table", node, $"entry 0x{entry:x} in an inner node (shift {shift})"));
                }
                if (result.Count >= MaxTasks)
                {
                    issues.Add(new KernelWalkIssue("pid table", node, $"more than {MaxTasks} pids: stopped"));
                    return new KernelList<PidEntry>(result, issues);
                }
                AddPid(entry, index, result, issues);
            }
        }
        return new KernelList<PidEntry>(result, issues);
    }

    private static bool IsXaNode(ulong entry) => (entry & 3) == 2 && entry > 4096;

    /// <summary>Canonical upper-half (kernel) address in this paging mode (0xff00… and up with LA57), 8-byte aligned.</summary>
    private bool IsKernelPointer(ulong p) => (p >> 63) != 0 && (p & 7) == 0 && KernelPaging.IsCanonical(p);

    private void AddPid(ulong pid, ulong index, List<PidEntry> result, List<KernelWalkIssue> issues)
    {
        ExtraOffsets x = X;
        if (!IsKernelPointer(pid) || !TryU32(pid + (ulong)x.PidNr, out uint nr))
        {
            issues.Add(new KernelWalkIssue("pid table", pid, $"struct pid for id {index} is unreadable or not a kernel pointer"));
            return;
        }
        if (nr != index)
            issues.Add(new KernelWalkIssue("pid table", pid, $"struct pid says {nr} but sits at index {index}"));
        ulong task = 0;
        int tgid = 0;
        ulong firstAddress = pid + (ulong)x.PidTasks + (ulong)(x.PidTypePid * 8);
        if (_kernel.TryReadUInt64(firstAddress, out ulong first) && first != 0)
        {
            ulong candidate = first - (ulong)(x.TaskPidLinks + (x.PidTypePid * x.HlistNodeSize));
            if (IsKernelPointer(candidate) && TryU32(candidate + (ulong)_o.TaskTgid, out uint t))
            {
                task = candidate;
                tgid = (int)t;
            }
            else
            {
                issues.Add(new KernelWalkIssue("pid table", pid, $"pid {nr}: task link 0x{first:x} is unreadable"));
            }
        }
        result.Add(new PidEntry((int)nr, pid, task, tgid));
    }

    private uint? ReadFileMode(ulong file)
    {
        if (_o.FileInode < 0 || _o.InodeMode < 0 || !_kernel.TryReadUInt64(file + (ulong)_o.FileInode, out ulong inode) || !IsKernelPointer(inode))
            return null;
        Span<byte> b = stackalloc byte[2];
        return _kernel.TryRead(inode + (ulong)_o.InodeMode, b) ? System.Buffers.Binary.BinaryPrimitives.ReadUInt16LittleEndian(b) : null;
    }

    /// <summary>Offsets for the pid table, run queues, carving and credentials; -1 when the kernel lacks a member.</summary>
    private sealed class ExtraOffsets
    {
        public ExtraOffsets(BtfTypes t)
        {
            // struct idr { struct radix_tree_root idr_rt; ... }, radix_tree_root = struct xarray (4.20+) with xa_head;
            // before 4.20 a radix_tree_root with rnode. Nodes: struct xa_node (radix_tree_node before).
            NsIdrHead = Try(t, "pid_namespace", "idr.idr_rt.xa_head");
            if (NsIdrHead < 0)
                NsIdrHead = Try(t, "pid_namespace", "idr.idr_rt.rnode");
            XaNodeShift = Try(t, "xa_node", "shift");
            XaNodeSlots = Try(t, "xa_node", "slots");
            if (XaNodeShift < 0)
            {
                XaNodeShift = Try(t, "radix_tree_node", "shift");
                XaNodeSlots = Try(t, "radix_tree_node", "slots");
            }
            PidNr = Try(t, "pid", "numbers[0].nr");
            PidTasks = Try(t, "pid", "tasks");
            TaskPidLinks = Try(t, "task_struct", "pid_links");
            HlistNodeSize = t.TryFindType("struct hlist_node", out int hn) ? t.SizeOf(hn) : 16;
            PidTypePid = EnumValue(t, "pid_type", "PIDTYPE_PID") ?? 0;
            CredSgid = Try(t, "cred", "sgid.val");
            CredEgid = Try(t, "cred", "egid.val");
            CredFsgid = Try(t, "cred", "fsgid.val");
            // Run queues.
            RqCurr = Try(t, "rq", "curr");
            RqCfsTasks = Try(t, "rq", "cfs_tasks");
            RqRtQueue = Try(t, "rq", "rt.active.queue");
            RtQueueCount = RqRtQueue >= 0 && t.ResolveMember("rq", "rt.active.queue") is { IsArray: true } q ? q.ElementCount : 0;
            SeGroupNode = Try(t, "sched_entity", "group_node");
            TaskSe = Try(t, "task_struct", "se");
            RtRunList = Try(t, "sched_rt_entity", "run_list");
            TaskRt = Try(t, "task_struct", "rt");
            // Carving.
            ModuleMkobjMod = Try(t, "module", "mkobj.mod");
        }

        public int NsIdrHead { get; }
        public int XaNodeShift { get; }
        public int XaNodeSlots { get; }
        public int PidNr { get; }
        public int PidTasks { get; }
        public int TaskPidLinks { get; }
        public int HlistNodeSize { get; }
        public int PidTypePid { get; }
        public int CredSgid { get; }
        public int CredEgid { get; }
        public int CredFsgid { get; }
        public int RqCurr { get; }
        public int RqCfsTasks { get; }
        public int RqRtQueue { get; }
        public int RtQueueCount { get; }
        public int SeGroupNode { get; }
        public int TaskSe { get; }
        public int RtRunList { get; }
        public int TaskRt { get; }
        public int ModuleMkobjMod { get; }

        private static int Try(BtfTypes t, string type, string member) => t.TryOffsetOf(type, member, out int o) ? o : -1;

        private static int? EnumValue(BtfTypes t, string type, string name)
        {
            if (!t.TryFindType("enum " + type, out int id))
                return null;
            foreach (BtfEnumValue v in t.EnumValuesOf(id))
            {
                if (v.Name == name)
                    return (int)v.Value;
            }
            return null;
        }
    }
}
