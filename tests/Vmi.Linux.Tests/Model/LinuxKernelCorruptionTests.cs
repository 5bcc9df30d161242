using System.Diagnostics;
using Vmi.Linux.Model;
using Xunit;

namespace Vmi.Linux.Tests.Model;

/// <summary>
/// Guest memory is hostile: the model over a synthetic guest whose lists, trees and page tables are
/// corrupted must return what it found before the corruption, name the corruption in an issue, never
/// throw and never hang.
/// </summary>
public sealed class LinuxKernelCorruptionTests
{
    /// <summary>A hang check, not a performance bound.</summary>
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(5);

    private static T Timed<T>(Func<T> call)
    {
        var sw = Stopwatch.StartNew();
        T result = call();
        Assert.True(sw.Elapsed < Bound, $"call took {sw.Elapsed} (bound {Bound})");
        return result;
    }

    private static void AssertPids(KernelList<LinuxProcess> list, params int[] taskIndexes) =>
        Assert.Equal(taskIndexes.Select(SyntheticGuest.PidOf), list.Items.Select(p => p.Pid));

    private static void AssertIssue<T>(KernelList<T> list, string structure, string problem) =>
        Assert.True(list.Issues.Any(i => i.Structure == structure && i.Problem.Contains(problem, StringComparison.Ordinal)),
            $"no '{structure}' issue containing '{problem}' in: {string.Join(" | ", list.Issues)}");

    [Fact]
    public void Clean_synthetic_guest_is_read_completely()
    {
        var g = new SyntheticGuest();
        LinuxKernel k = g.CreateKernel();
        var ps = Timed(k.GetProcesses);
        Assert.True(ps.IsComplete, string.Join("\n", ps.Issues));
        AssertPids(ps, 0, 1, 2, 3, 4);
        LinuxProcess user = ps.Items[0];
        Assert.Equal(("user-proc", 0, 1000u, 1001u, 1002u), (user.Comm, user.Ppid, user.Uid, user.Gid, user.Euid));
        Assert.Equal(100, ps.Items[1].Ppid);
        var mods = Timed(k.GetModules);
        Assert.True(mods.IsComplete, string.Join("\n", mods.Issues));
        Assert.Equal(["mod0", "mod1", "mod2"], mods.Items.Select(m => m.Name));
        Assert.Equal([0x1000UL, 0x2000, 0x3000], mods.Items.Select(m => m.Size));
        Assert.All(mods.Items, m => Assert.Equal(("Live", 0), (m.State, m.RefCount)));
        var maps = Timed(() => k.GetMappings(user));
        Assert.True(maps.IsComplete, string.Join("\n", maps.Issues));
        Assert.Equal(["r-xp", "rw-p", "rw-p"], maps.Items.Select(v => v.Permissions));
        Assert.Equal([0x40_0000UL, 0x40_1000, 0x40_2000], maps.Items.Select(v => v.Start));
        var sys = Timed(k.GetSyscallTable);
        Assert.True(sys.IsComplete);
        Assert.Equal(SyntheticGuest.SyscallCount, sys.Items.Count);
        Assert.All(sys.Items, e => Assert.True(e.InKernelText));
        Assert.Equal(["do_read", "do_write"], sys.Items.Take(2).Select(e => e.Symbol));
        var idt = Timed(k.GetIdt);
        Assert.Equal(256, idt.Items.Count);
        Assert.All(idt.Items, e => Assert.True(e.Present && e.InKernelText && e.Symbol == "asm_exc"));
    }

    [Fact]
    public void Task_cycle_that_skips_the_head_stops_with_the_entries_before_it()
    {
        var g = new SyntheticGuest();
        g.WriteU64(SyntheticGuest.TaskNode(2), SyntheticGuest.TaskNode(1)); // a → b → a, never back to init_task
        var ps = Timed(g.CreateKernel().GetProcesses);
        AssertPids(ps, 0, 1, 2);
        AssertIssue(ps, "task list", "cycle");
    }

    [Fact]
    public void Task_self_cycle_stops()
    {
        var g = new SyntheticGuest();
        g.WriteU64(SyntheticGuest.TaskNode(3), SyntheticGuest.TaskNode(3));
        var ps = Timed(g.CreateKernel().GetProcesses);
        AssertPids(ps, 0, 1, 2, 3);
        AssertIssue(ps, "task list", "cycle");
    }

    [Fact]
    public void Dangling_next_pointer_stops_at_the_unmapped_entry()
    {
        var g = new SyntheticGuest();
        g.WriteU64(SyntheticGuest.TaskNode(1), SyntheticGuest.KernelBase + SyntheticGuest.MappedSize + 0x1230);
        var ps = Timed(g.CreateKernel().GetProcesses);
        AssertPids(ps, 0, 1);
        AssertIssue(ps, "task list", "dangling");
    }

    [Theory]
    [InlineData(0UL)]
    [InlineData(3UL)]
    [InlineData(0xffff_ffff_ffff_ffffUL)]
    public void Null_or_misaligned_next_pointer_stops(ulong bad)
    {
        var g = new SyntheticGuest();
        g.WriteU64(SyntheticGuest.TaskNode(2), bad == 3 ? SyntheticGuest.TaskNode(3) + 3 : bad);
        var ps = Timed(g.CreateKernel().GetProcesses);
        AssertPids(ps, 0, 1, 2);
        AssertIssue(ps, "task list", "null or misaligned");
    }

    [Fact]
    public void Non_canonical_next_pointer_stops()
    {
        var g = new SyntheticGuest();
        g.WriteU64(SyntheticGuest.TaskNode(2), 0x0000_8000_0000_0000);
        var ps = Timed(g.CreateKernel().GetProcesses);
        AssertPids(ps, 0, 1, 2);
        AssertIssue(ps, "task list", "dangling");
    }

    [Fact]
    public void Corrupt_prev_pointer_is_reported_and_the_walk_goes_on()
    {
        var g = new SyntheticGuest();
        g.WriteU64(SyntheticGuest.TaskNode(2) + 8, 0xdead_beef_0000);
        var ps = Timed(g.CreateKernel().GetProcesses);
        AssertPids(ps, 0, 1, 2, 3, 4);
        AssertIssue(ps, "task list", "prev pointer 0xdeadbeef0000");
    }

    [Fact]
    public void Long_chain_of_ten_thousand_tasks_is_walked_and_a_cycle_at_its_end_is_caught()
    {
        var g = new SyntheticGuest(tasks: 10_000, modules: 0);
        var ps = Timed(g.CreateKernel().GetProcesses);
        Assert.True(ps.IsComplete, string.Join("\n", ps.Issues.Take(5)));
        Assert.Equal(10_000, ps.Items.Count);

        g.WriteU64(SyntheticGuest.TaskNode(9_999), SyntheticGuest.TaskNode(5_000));
        ps = Timed(g.CreateKernel().GetProcesses);
        Assert.Equal(10_000, ps.Items.Count);
        Assert.Equal(SyntheticGuest.PidOf(9_999), ps.Items[^1].Pid);
        AssertIssue(ps, "task list", "cycle");
    }

    [Fact]
    public void Task_struct_straddling_the_end_of_mapped_memory_is_reported()
    {
        var g = new SyntheticGuest();
        // A list_head readable in the last 16 bytes of the mapping: its task_struct's pid lies beyond.
        ulong node = SyntheticGuest.KernelBase + SyntheticGuest.MappedSize - 16;
        g.WriteU64(SyntheticGuest.TaskNode(1), node);
        g.WriteU64(node, SyntheticGuest.InitTaskNode);
        g.WriteU64(node + 8, SyntheticGuest.TaskNode(1));
        var ps = Timed(g.CreateKernel().GetProcesses);
        AssertPids(ps, 0, 1);
        AssertIssue(ps, "task", "task_struct is unreadable");
    }

    [Fact]
    public void Unreadable_cred_is_reported_per_task()
    {
        var g = new SyntheticGuest();
        g.WriteU64(SyntheticGuest.Task(2) + SyntheticGuest.TaskRealCred, SyntheticGuest.KernelBase + SyntheticGuest.MappedSize);
        var ps = Timed(g.CreateKernel().GetProcesses);
        AssertPids(ps, 0, 1, 2, 3, 4);
        AssertIssue(ps, "task", $"cred 0x{SyntheticGuest.KernelBase + SyntheticGuest.MappedSize:x} of pid 102 is unreadable");
    }

    [Fact]
    public void Module_list_cycle_stops_with_the_modules_before_it()
    {
        var g = new SyntheticGuest();
        g.WriteU64(SyntheticGuest.ModuleNode(1), SyntheticGuest.ModuleNode(0));
        var mods = Timed(g.CreateKernel().GetModules);
        Assert.Equal(["mod0", "mod1"], mods.Items.Select(m => m.Name));
        AssertIssue(mods, "module list", "cycle");
    }

    [Fact]
    public void Module_list_dangling_and_misaligned_pointers_stop()
    {
        var g = new SyntheticGuest();
        g.WriteU64(SyntheticGuest.ModuleNode(0), SyntheticGuest.KernelBase + SyntheticGuest.MappedSize + 0x4000);
        var mods = Timed(g.CreateKernel().GetModules);
        Assert.Equal(["mod0"], mods.Items.Select(m => m.Name));
        AssertIssue(mods, "module list", "dangling");

        g = new SyntheticGuest();
        g.WriteU64(SyntheticGuest.ModulesHead, SyntheticGuest.ModuleNode(0) + 4);
        mods = Timed(g.CreateKernel().GetModules);
        Assert.Empty(mods.Items);
        AssertIssue(mods, "module list", "null or misaligned");
    }

    [Fact]
    public void Maple_node_pointing_to_itself_stops_after_the_good_subtree()
    {
        var g = new SyntheticGuest();
        // Root: a range_64 node whose slot 0 is the good leaf and slot 1 is the root itself.
        ulong root = SyntheticGuest.MapleNode(1);
        g.WriteBytes(root, new byte[256]);
        g.WriteU64(root + 8, 0x40_1fff);                                     // pivot[0]
        g.WriteU64(root + 8 + 8, 0x7fff_ffff_ffff);                          // pivot[1]
        g.WriteU64(root + 8 + 15 * 8, SyntheticGuest.LeafEntry(SyntheticGuest.MapleNode(0)));
        g.WriteU64(root + 8 + 16 * 8, SyntheticGuest.RangeEntry(root));
        g.WriteBytes(root + 248, [1]);                                       // data end: 2 slots
        g.WriteU64(SyntheticGuest.Mm + SyntheticGuest.MmMt + SyntheticGuest.MaRoot, SyntheticGuest.RangeEntry(root) | 2);
        LinuxKernel k = g.CreateKernel();
        LinuxProcess user = k.GetProcesses().Items[0];
        var maps = Timed(() => k.GetMappings(user));
        Assert.Equal(SyntheticGuest.VmaCount, maps.Items.Count);
        AssertIssue(maps, "maple tree", "cycle");
    }

    [Fact]
    public void Leaf_pointing_to_itself_as_a_value_is_rejected_as_a_vma()
    {
        var g = new SyntheticGuest();
        g.WriteU64(SyntheticGuest.MapleNode(0) + 8 + 15 * 8 + 8, SyntheticGuest.MapleNode(0)); // slot 1 = the node itself
        LinuxKernel k = g.CreateKernel();
        var maps = Timed(() => k.GetMappings(k.GetProcesses().Items[0]));
        Assert.Equal(2, maps.Items.Count);
        AssertIssue(maps, "vm_area_struct", "does not belong to mm");
    }

    [Fact]
    public void Maple_node_with_an_absurd_data_end_is_reported()
    {
        var g = new SyntheticGuest();
        g.WriteBytes(SyntheticGuest.MapleNode(0) + 248, [200]);
        LinuxKernel k = g.CreateKernel();
        var maps = Timed(() => k.GetMappings(k.GetProcesses().Items[0]));
        Assert.Empty(maps.Items);
        AssertIssue(maps, "maple tree", "data end 200 beyond");
    }

    [Fact]
    public void Maple_chain_deeper_than_the_tree_height_stops()
    {
        var g = new SyntheticGuest();
        // 40 range nodes each pointing to the next: deeper than any real maple tree.
        for (int i = 0; i < 40; i++)
        {
            ulong node = SyntheticGuest.Va(0x2_0000_0 + (ulong)i * 0x100); // 0x200000.. inside the mapping, past the tasks
            g.WriteBytes(node, new byte[256]);
            g.WriteU64(node + 8 + 15 * 8, SyntheticGuest.RangeEntry(node + 0x100));
            g.WriteBytes(node + 248, [0]);
        }
        g.WriteU64(SyntheticGuest.Mm + SyntheticGuest.MmMt + SyntheticGuest.MaRoot, SyntheticGuest.RangeEntry(SyntheticGuest.Va(0x20_0000)) | 2);
        LinuxKernel k = g.CreateKernel();
        var maps = Timed(() => k.GetMappings(k.GetProcesses().Items[0]));
        Assert.Empty(maps.Items);
        AssertIssue(maps, "maple tree", "deeper than");
    }

    [Fact]
    public void Self_referencing_kernel_page_tables_terminate()
    {
        var g = new SyntheticGuest();
        // Recursive PML4 slot (PML4[256] -> PML4) and a PD entry pointing back at the PD: addresses
        // through them resolve to page-table pages, or fail, within the walk's four levels.
        g.WritePhysU64(SyntheticGuest.Pml4 + 256 * 8, SyntheticGuest.Pml4 | 3);
        g.WritePhysU64(SyntheticGuest.FirstUnmappedPdEntry, SyntheticGuest.Pd | 3);
        ulong recursive = 0xffff_0000_0000_0000UL | (256UL << 39) | (256UL << 30) | (256UL << 21) | (256UL << 12);
        g.WriteU64(SyntheticGuest.TaskNode(1), recursive);        // reads PML4[0] = 0 as the next pointer
        var ps = Timed(g.CreateKernel().GetProcesses);
        Assert.Equal([100, 101], ps.Items.Take(2).Select(p => p.Pid));
        AssertIssue(ps, "task list", "null or misaligned");

        g = new SyntheticGuest();
        g.WritePhysU64(SyntheticGuest.FirstUnmappedPdEntry, SyntheticGuest.Pd | 3);
        // KernelBase + MappedSize + 8 pages maps (through the PD as a PT) onto the first PT page: its
        // entries read as data are odd (present bit), so the walk stops on a misaligned pointer.
        g.WriteU64(SyntheticGuest.TaskNode(1), SyntheticGuest.KernelBase + SyntheticGuest.MappedSize + 8 * 4096);
        ps = Timed(g.CreateKernel().GetProcesses);
        Assert.Equal([100, 101], ps.Items.Take(2).Select(p => p.Pid));
        AssertIssue(ps, "task list", "null or misaligned");
    }
}
