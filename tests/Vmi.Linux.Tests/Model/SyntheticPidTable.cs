using Vmi.Linux.Btf;
using Vmi.Linux.Model;
using Vmi.Linux.Symbols;
using Vmi.Linux.Tests.Btf;

namespace Vmi.Linux.Tests.Model;

/// <summary>
/// Adds a pid table to a <see cref="SyntheticGuest"/>: init_pid_ns.idr as a two-level xarray (a root node
/// of shift 6 whose slot 1 holds a leaf of shift 0), one struct pid per task (pids 100.. sit at indexes
/// 100.. = slot 36.. of the leaf), linked to its task through task_struct.pid_links[PIDTYPE_PID]. Uses
/// its own BTF: SyntheticGuest's types plus the pid ones (same offsets for everything shared).
/// </summary>
internal sealed class SyntheticPidTable
{
    public const ulong NsOffset = 0x3_0000, RootOffset = 0x3_1000, LeafOffset = 0x3_2000, PidArea = 0x3_4000;
    public const int TaskPidLinks = 0xA0, XaShift = 0, XaSlots = 40, PidTasks = 8, PidNumbers = 0x50, PidSize = 0x80;

    private static readonly Lazy<BtfTypes> SharedTypes = new(BuildTypes);

    public SyntheticPidTable(SyntheticGuest guest)
    {
        Guest = guest;
        Symbols = new SymbolTable([.. guest.Symbols.Symbols, new KernelSymbol("init_pid_ns", SyntheticGuest.Va(NsOffset), 'D')]);
        // idr_rt.xa_head (at 8 in struct xarray) → the root node, tagged as an internal entry (| 2).
        guest.WriteU64(Ns + 8, Node(Root));
        guest.WriteBytes(Root, new byte[0x240]);
        guest.WriteBytes(Leaf, new byte[0x240]);
        guest.WriteBytes(Root + XaShift, [6]);
        guest.WriteU64(Root + XaSlots + 8, Node(Leaf)); // slot 1: indexes 64..127
        guest.WriteBytes(Leaf + XaShift, [0]);
        for (int i = 0; i < guest.TaskCount; i++)
        {
            int pid = SyntheticGuest.PidOf(i);
            guest.WriteU32(Pid(i) + PidNumbers, (uint)pid);
            guest.WriteU64(Pid(i) + PidTasks, SyntheticGuest.Task(i) + TaskPidLinks); // tasks[PIDTYPE_PID].first
            guest.WriteU64(Slot(Leaf, pid - 64), Pid(i));
        }
    }

    public SyntheticGuest Guest { get; }
    public SymbolTable Symbols { get; }
    public static BtfTypes Types => SharedTypes.Value;
    public static ulong Ns => SyntheticGuest.Va(NsOffset);
    public static ulong Root => SyntheticGuest.Va(RootOffset);
    public static ulong Leaf => SyntheticGuest.Va(LeafOffset);
    public static ulong Pid(int index) => SyntheticGuest.Va(PidArea + (ulong)index * PidSize);
    public static ulong Slot(ulong node, int slot) => node + XaSlots + (ulong)slot * 8;
    /// <summary>A node pointer as an xarray slot holds it: internal entry, tag 0b10.</summary>
    public static ulong Node(ulong node) => node | 2;

    public LinuxKernel CreateKernel() => new(Guest.Memory, Guest.Paging, Symbols, Types);

    private static BtfTypes BuildTypes()
    {
        var b = new BtfBuilder();
        int u32 = b.Int("unsigned int", 4);
        int i32 = b.Int("int", 4, BtfIntEncoding.Signed);
        int u8 = b.Int("char", 1, BtfIntEncoding.Char);
        int u64 = b.Int("long unsigned int", 8);
        int listHead = b.Struct("list_head", 16, ("next", u64, 0), ("prev", u64, 64));
        int hlistNode = b.Struct("hlist_node", 16, ("next", u64, 0), ("pprev", u64, 64));
        int hlistHead = b.Struct("hlist_head", 8, ("first", u64, 0));
        int kuid = b.Struct("kuid_t", 4, ("val", u32, 0));
        int kgid = b.Struct("kgid_t", 4, ("val", u32, 0));
        b.Struct("cred", 32, ("usage", u32, 0), ("uid", kuid, 32), ("gid", kgid, 64), ("suid", kuid, 96), ("sgid", kgid, 128), ("euid", kuid, 160));
        int comm = b.Array(u8, i32, 16);
        b.Struct("task_struct", (int)SyntheticGuest.TaskSize,
            ("__state", u32, SyntheticGuest.TaskState * 8), ("flags", u32, SyntheticGuest.TaskFlags * 8), ("tasks", listHead, SyntheticGuest.TaskTasks * 8),
            ("pid", i32, SyntheticGuest.TaskPid * 8), ("tgid", i32, SyntheticGuest.TaskTgid * 8), ("start_time", u64, SyntheticGuest.TaskStartTime * 8),
            ("real_parent", u64, SyntheticGuest.TaskRealParent * 8), ("real_cred", u64, SyntheticGuest.TaskRealCred * 8), ("mm", u64, SyntheticGuest.TaskMm * 8),
            ("comm", comm, SyntheticGuest.TaskComm * 8), ("pid_links", b.Array(hlistNode, i32, 4), TaskPidLinks * 8));
        int mapleTree = b.Struct("maple_tree", 16, ("ma_flags", u32, 0), ("ma_root", u64, SyntheticGuest.MaRoot * 8));
        b.Struct("mm_struct", 0x100, ("mm_mt", mapleTree, SyntheticGuest.MmMt * 8), ("pgd", u64, SyntheticGuest.MmPgd * 8),
            ("arg_start", u64, SyntheticGuest.MmArgStart * 8), ("arg_end", u64, SyntheticGuest.MmArgEnd * 8));
        int moduleMemory = b.Struct("module_memory", 16, ("base", u64, 0), ("size", u32, 64));
        b.Struct("module", 0x100, ("state", u32, SyntheticGuest.ModuleState * 8), ("list", listHead, SyntheticGuest.ModuleList * 8),
            ("name", b.Array(u8, i32, 56), SyntheticGuest.ModuleName * 8), ("refcnt", u32, SyntheticGuest.ModuleRefcnt * 8),
            ("mem", b.Array(moduleMemory, i32, 7), SyntheticGuest.ModuleMem * 8));
        // Pid table: struct pid_namespace { struct idr idr; }, struct idr { struct xarray idr_rt; }.
        int xarray = b.Struct("xarray", 16, ("xa_lock", u32, 0), ("xa_flags", u32, 32), ("xa_head", u64, 64));
        int idr = b.Struct("idr", 24, ("idr_rt", xarray, 0), ("idr_base", u32, 128), ("idr_next", u32, 160));
        b.Struct("pid_namespace", 0x40, ("idr", idr, 0));
        b.Struct("xa_node", 0x240, ("shift", u8, XaShift * 8), ("offset", u8, 8), ("count", u8, 16), ("nr_values", u8, 24),
            ("parent", u64, 64), ("array", u64, 128), ("private_list", listHead, 192), ("slots", b.Array(u64, i32, 64), XaSlots * 8));
        int upid = b.Struct("upid", 16, ("nr", i32, 0), ("ns", u64, 64));
        b.Struct("pid", PidSize, ("count", u32, 0), ("level", u32, 32), ("tasks", b.Array(hlistHead, i32, 4), PidTasks * 8),
            ("numbers", b.Array(upid, i32, 1), PidNumbers * 8));
        b.Enum("pid_type", 4, false, ("PIDTYPE_PID", 0), ("PIDTYPE_TGID", 1), ("PIDTYPE_PGID", 2), ("PIDTYPE_SID", 3), ("PIDTYPE_MAX", 4));
        return BtfTypes.Parse(b.Build());
    }
}
