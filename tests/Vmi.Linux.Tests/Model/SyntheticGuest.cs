using System.Buffers.Binary;
using System.Text;
using Vmi.Linux.Btf;
using Vmi.Linux.Model;
using Vmi.Linux.Symbols;
using Vmi.Linux.Tests.Btf;
using Vmi.Memory;

namespace Vmi.Linux.Tests.Model;

/// <summary>
/// A tiny synthetic Linux guest in sparse physical memory: 4-level page tables mapping a 4 MiB kernel
/// region at <see cref="KernelBase"/>, a BTF with just the members the model reads, a symbol table,
/// a task list (init_task + N tasks), a module list, a syscall table, an IDT and one user process
/// with a maple tree of VMAs. Tests corrupt it through <see cref="WriteU64"/> and friends.
/// </summary>
internal sealed class SyntheticGuest
{
    public const ulong KernelBase = 0xffff_ffff_8100_0000;
    /// <summary>Size of the mapped kernel region; everything from KernelBase + MappedSize on is unmapped.</summary>
    public const ulong MappedSize = 0x40_0000;
    public const ulong KernelPhysical = 0x100_0000;
    public const ulong Pml4 = 0x1000, Pdpt = 0x2000, Pd = 0x3000, Pt0 = 0x4000;

    // Layout (offsets from KernelBase).
    public const ulong TextOffset = 0x0, SyscallTableOffset = 0x1000, IdtOffset = 0x2000, ModulesHeadOffset = 0x3000;
    public const ulong ModuleArea = 0x4000, CredArea = 0x5000, MmArea = 0x6000, MapleArea = 0x7000, VmaArea = 0x8000, FileArea = 0x9000;
    public const ulong InitTaskOffset = 0x1_0000;
    public const ulong TaskSize = 0x100;
    public const int SyscallCount = 8;

    // Struct layouts of the synthetic BTF (bytes).
    public const int TaskState = 0x0, TaskFlags = 0x4, TaskTasks = 0x10, TaskPid = 0x40, TaskTgid = 0x44, TaskStartTime = 0x48,
        TaskRealParent = 0x50, TaskRealCred = 0x58, TaskMm = 0x60, TaskComm = 0x80;
    public const int ModuleState = 0x0, ModuleList = 0x8, ModuleName = 0x18, ModuleRefcnt = 0x50, ModuleMem = 0x60;
    public const int MmMt = 0x0, MaRoot = 0x8, MmPgd = 0x40, MmArgStart = 0x48, MmArgEnd = 0x50;
    public const int VmStart = 0x0, VmEnd = 0x8, VmMm = 0x10, VmFlags = 0x20, VmPgoff = 0x28, VmFile = 0x30;

    private static readonly Lazy<BtfTypes> SharedTypes = new(BuildTypes);

    public SparsePhysicalMemory Memory { get; } = new();
    public PagingContext Paging { get; } = new(Pml4, La57: false);
    public SymbolTable Symbols { get; }
    public BtfTypes Types => SharedTypes.Value;
    public int TaskCount { get; }
    public int ModuleCount { get; }
    /// <summary>The user process (pid 100 + <see cref="UserTaskIndex"/>) that owns an mm and VMAs.</summary>
    public int UserTaskIndex => 0;
    public const int VmaCount = 3;

    public SyntheticGuest(int tasks = 5, int modules = 3)
    {
        if ((ulong)(tasks + 1) * TaskSize + InitTaskOffset > MappedSize)
            throw new ArgumentOutOfRangeException(nameof(tasks));
        TaskCount = tasks;
        ModuleCount = modules;
        BuildPageTables();
        Symbols = new SymbolTable(
        [
            new KernelSymbol("_stext", Va(TextOffset), 'T'),
            new KernelSymbol("do_read", Va(TextOffset + 0x100), 'T'),
            new KernelSymbol("do_write", Va(TextOffset + 0x200), 'T'),
            new KernelSymbol("asm_exc", Va(TextOffset + 0x300), 'T'),
            new KernelSymbol("_etext", Va(TextOffset + 0x1000), 'T'),
            new KernelSymbol("sys_call_table", Va(SyscallTableOffset), 'R'),
            new KernelSymbol("after_sys_call_table", Va(SyscallTableOffset + SyscallCount * 8), 'R'),
            new KernelSymbol("idt_table", Va(IdtOffset), 'D'),
            new KernelSymbol("modules", Va(ModulesHeadOffset), 'd'),
            new KernelSymbol("init_task", Va(InitTaskOffset), 'D'),
        ]);
        for (int i = 0; i < SyscallCount; i++)
            WriteU64(Va(SyscallTableOffset) + (ulong)i * 8, Va(TextOffset + 0x100 + (ulong)(i % 2) * 0x100));
        for (int v = 0; v < 256; v++)
            WriteGate(v, Va(TextOffset + 0x300 + (ulong)v));
        BuildTasks();
        BuildModules();
        BuildUserProcess();
    }

    public static ulong Va(ulong offset) => KernelBase + offset;

    /// <summary>Address of task <paramref name="index"/> (0-based, after init_task).</summary>
    public static ulong Task(int index) => Va(InitTaskOffset + (ulong)(index + 1) * TaskSize);
    public static ulong TaskNode(int index) => Task(index) + TaskTasks;
    public static ulong InitTaskNode => Va(InitTaskOffset) + TaskTasks;
    public static ulong Module(int index) => Va(ModuleArea + (ulong)index * 0x100);
    public static ulong ModuleNode(int index) => Module(index) + ModuleList;
    public static ulong ModulesHead => Va(ModulesHeadOffset);
    public static ulong Mm => Va(MmArea);
    public static ulong MapleNode(int index) => Va(MapleArea + (ulong)index * 0x100);
    public static ulong Vma(int index) => Va(VmaArea + (ulong)index * 0x80);
    public static int PidOf(int index) => 100 + index;

    public LinuxKernel CreateKernel() => new(Memory, Paging, Symbols, Types);

    /// <summary>Physical address behind a mapped kernel virtual address.</summary>
    public static ulong Phys(ulong va)
    {
        if (va < KernelBase || va - KernelBase >= MappedSize)
            throw new ArgumentOutOfRangeException(nameof(va), "outside the synthetic kernel mapping");
        return KernelPhysical + (va - KernelBase);
    }

    public void WriteU64(ulong va, ulong value)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, value);
        Memory.Write(Phys(va), b);
    }

    public void WriteU32(ulong va, uint value)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        Memory.Write(Phys(va), b);
    }

    public void WriteBytes(ulong va, ReadOnlySpan<byte> data) => Memory.Write(Phys(va), data);

    public void WritePhysU64(ulong pa, ulong value)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, value);
        Memory.Write(pa, b);
    }

    public byte[] ReadBytes(ulong va, int length)
    {
        var b = new byte[length];
        Memory.TryRead(Phys(va), b);
        return b;
    }

    private void WriteGate(int vector, ulong handler)
    {
        Span<byte> g = stackalloc byte[16];
        BinaryPrimitives.WriteUInt16LittleEndian(g, (ushort)handler);
        BinaryPrimitives.WriteUInt16LittleEndian(g[2..], 0x10);
        g[5] = 0x8e; // present, DPL 0, interrupt gate
        BinaryPrimitives.WriteUInt16LittleEndian(g[6..], (ushort)(handler >> 16));
        BinaryPrimitives.WriteUInt32LittleEndian(g[8..], (uint)(handler >> 32));
        WriteBytes(Va(IdtOffset) + (ulong)vector * 16, g);
    }

    private void BuildPageTables()
    {
        const ulong rw = 0x3;
        int pml4i = (int)((KernelBase >> 39) & 511), pdpti = (int)((KernelBase >> 30) & 511), pdi = (int)((KernelBase >> 21) & 511);
        WritePhysU64(Pml4 + (ulong)pml4i * 8, Pdpt | rw);
        WritePhysU64(Pdpt + (ulong)pdpti * 8, Pd | rw);
        int pages = (int)(MappedSize / 4096);
        for (int t = 0; t < pages / 512; t++)
            WritePhysU64(Pd + (ulong)(pdi + t) * 8, (Pt0 + (ulong)t * 0x1000) | rw);
        for (int p = 0; p < pages; p++)
            WritePhysU64(Pt0 + (ulong)p * 8, (KernelPhysical + (ulong)p * 4096) | rw);
    }

    /// <summary>The PD entry covering KernelBase + MappedSize (first unmapped 2 MiB), for page-table corruption.</summary>
    public static ulong FirstUnmappedPdEntry => Pd + (((KernelBase + MappedSize) >> 21) & 511) * 8;

    private void BuildTasks()
    {
        WriteTask(Va(InitTaskOffset), 0, "swapper/0", Va(InitTaskOffset), 0x0020_0000);
        for (int i = 0; i < TaskCount; i++)
            WriteTask(Task(i), PidOf(i), i == UserTaskIndex ? "user-proc" : $"task-{i}", i == 0 ? Va(InitTaskOffset) : Task(0), 0);
        // Circular list: init_task <-> task 0 <-> ... <-> task N-1 <-> init_task.
        ulong[] nodes = [InitTaskNode, .. Enumerable.Range(0, TaskCount).Select(TaskNode)];
        for (int i = 0; i < nodes.Length; i++)
        {
            WriteU64(nodes[i], nodes[(i + 1) % nodes.Length]);
            WriteU64(nodes[i] + 8, nodes[(i + nodes.Length - 1) % nodes.Length]);
        }
        // One cred shared by all: uid 1000, gid 1001, euid 1002 (struct cred: usage, uid, gid, suid, sgid, euid).
        WriteU32(Va(CredArea) + 4, 1000);
        WriteU32(Va(CredArea) + 8, 1001);
        WriteU32(Va(CredArea) + 20, 1002);
    }

    private void WriteTask(ulong task, int pid, string comm, ulong parent, uint flags)
    {
        WriteU32(task + TaskFlags, flags);
        WriteU32(task + TaskPid, (uint)pid);
        WriteU32(task + TaskTgid, (uint)pid);
        WriteU64(task + TaskStartTime, (ulong)pid * 1000);
        WriteU64(task + TaskRealParent, parent);
        WriteU64(task + TaskRealCred, Va(CredArea));
        var name = new byte[16];
        Encoding.UTF8.GetBytes(comm).AsSpan(0, Math.Min(15, comm.Length)).CopyTo(name);
        WriteBytes(task + TaskComm, name);
    }

    private void BuildModules()
    {
        ulong[] nodes = [ModulesHead, .. Enumerable.Range(0, ModuleCount).Select(ModuleNode)];
        for (int i = 0; i < nodes.Length; i++)
        {
            WriteU64(nodes[i], nodes[(i + 1) % nodes.Length]);
            WriteU64(nodes[i] + 8, nodes[(i + nodes.Length - 1) % nodes.Length]);
        }
        for (int i = 0; i < ModuleCount; i++)
        {
            var name = new byte[56];
            Encoding.ASCII.GetBytes($"mod{i}").CopyTo(name, 0);
            WriteBytes(Module(i) + ModuleName, name);
            WriteU32(Module(i) + ModuleRefcnt, 1);
            WriteU64(Module(i) + ModuleMem, 0xffff_ffff_c000_0000 + (ulong)i * 0x10000); // mem[0].base
            WriteU32(Module(i) + ModuleMem + 8, 0x1000u * (uint)(i + 1));                // mem[0].size
        }
    }

    /// <summary>The encoded maple_leaf_64 entry for a node (address | type 1 &lt;&lt; 3 | 0b100).</summary>
    public static ulong LeafEntry(ulong node) => node | (1 << 3) | 4;
    /// <summary>The encoded maple_range_64 entry for a node.</summary>
    public static ulong RangeEntry(ulong node) => node | (2 << 3) | 4;

    private void BuildUserProcess()
    {
        ulong task = Task(UserTaskIndex);
        WriteU64(task + TaskMm, Mm);
        // pgd: a kernel page (its virtual address translates; arg_start == arg_end so no user read).
        WriteU64(Mm + MmPgd, Va(FileArea + 0x800));
        // Root: a leaf node tagged as the root node (0b10).
        WriteU64(Mm + MmMt + MaRoot, LeafEntry(MapleNode(0)) | 2);
        WriteLeaf(MapleNode(0), [Vma(0), Vma(1), Vma(2)], [0x40_0fff, 0x40_1fff, 0x7fff_ffff_ffff]);
        for (int i = 0; i < VmaCount; i++)
        {
            ulong start = 0x40_0000 + (ulong)i * 0x1000;
            WriteU64(Vma(i) + VmStart, start);
            WriteU64(Vma(i) + VmEnd, start + 0x1000);
            WriteU64(Vma(i) + VmMm, Mm);
            WriteU64(Vma(i) + VmFlags, i == 0 ? 0x5UL : 0x3UL);
        }
    }

    /// <summary>Writes a maple_leaf_64 node: pivots, slots and (pivot[14] == 0) the data end in the metadata byte.</summary>
    public void WriteLeaf(ulong node, ulong[] slots, ulong[] pivots)
    {
        WriteBytes(node, new byte[256]);
        for (int i = 0; i < pivots.Length; i++)
            WriteU64(node + 8 + (ulong)i * 8, pivots[i]);
        for (int i = 0; i < slots.Length; i++)
            WriteU64(node + 8 + 15 * 8 + (ulong)i * 8, slots[i]);
        WriteBytes(node + 248, [(byte)(slots.Length - 1)]);
    }

    private static BtfTypes BuildTypes()
    {
        var b = new BtfBuilder();
        int u32 = b.Int("unsigned int", 4);
        int i32 = b.Int("int", 4, BtfIntEncoding.Signed);
        int u8 = b.Int("char", 1, BtfIntEncoding.Char);
        int u64 = b.Int("long unsigned int", 8);
        int listHead = b.Struct("list_head", 16, ("next", u64, 0), ("prev", u64, 64));
        int kuid = b.Struct("kuid_t", 4, ("val", u32, 0));
        int kgid = b.Struct("kgid_t", 4, ("val", u32, 0));
        b.Struct("cred", 32, ("usage", u32, 0), ("uid", kuid, 32), ("gid", kgid, 64), ("suid", kuid, 96), ("sgid", kgid, 128), ("euid", kuid, 160));
        int comm = b.Array(u8, i32, 16);
        b.Struct("task_struct", (int)TaskSize,
            ("__state", u32, TaskState * 8), ("flags", u32, TaskFlags * 8), ("tasks", listHead, TaskTasks * 8), ("pid", i32, TaskPid * 8),
            ("tgid", i32, TaskTgid * 8), ("start_time", u64, TaskStartTime * 8), ("real_parent", u64, TaskRealParent * 8),
            ("real_cred", u64, TaskRealCred * 8), ("mm", u64, TaskMm * 8), ("comm", comm, TaskComm * 8));
        int mapleTree = b.Struct("maple_tree", 16, ("ma_flags", u32, 0), ("ma_root", u64, MaRoot * 8));
        b.Struct("mm_struct", 0x100, ("mm_mt", mapleTree, MmMt * 8), ("pgd", u64, MmPgd * 8), ("arg_start", u64, MmArgStart * 8), ("arg_end", u64, MmArgEnd * 8));
        int moduleMemory = b.Struct("module_memory", 16, ("base", u64, 0), ("size", u32, 64));
        int name = b.Array(u8, i32, 56);
        b.Struct("module", 0x100, ("state", u32, ModuleState * 8), ("list", listHead, ModuleList * 8), ("name", name, ModuleName * 8),
            ("refcnt", u32, ModuleRefcnt * 8), ("mem", b.Array(moduleMemory, i32, 7), ModuleMem * 8));
        b.Struct("vm_area_struct", 0x80, ("vm_start", u64, VmStart * 8), ("vm_end", u64, VmEnd * 8), ("vm_mm", u64, VmMm * 8),
            ("vm_flags", u64, VmFlags * 8), ("vm_pgoff", u64, VmPgoff * 8), ("vm_file", u64, VmFile * 8));
        int path = b.Struct("path", 16, ("mnt", u64, 0), ("dentry", u64, 64));
        b.Struct("file", 0x40, ("f_u", u64, 0), ("f_path", path, 128));
        int qstr = b.Struct("qstr", 16, ("hash_len", u64, 0), ("name", u64, 64));
        b.Struct("dentry", 0x40, ("d_flags", u32, 0), ("d_parent", u64, 0x18 * 8), ("d_name", qstr, 0x20 * 8));
        return BtfTypes.Parse(b.Build());
    }
}
