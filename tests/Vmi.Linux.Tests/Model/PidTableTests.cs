using Vmi.Linux.Model;
using Xunit;

namespace Vmi.Linux.Tests.Model;

/// <summary>The pid-table (xarray) walk on a synthetic guest: the clean tree, then hostile ones.</summary>
public sealed class PidTableTests
{
    [Fact]
    public void Walks_a_two_level_xarray_to_every_pid_and_task()
    {
        var table = new SyntheticPidTable(new SyntheticGuest(tasks: 5));
        KernelList<PidEntry> pids = table.CreateKernel().GetPidTable();
        Assert.True(pids.IsComplete, string.Join("; ", pids.Issues));
        Assert.Equal(5, pids.Items.Count);
        for (int i = 0; i < 5; i++)
        {
            PidEntry e = Assert.Single(pids.Items, p => p.Pid == SyntheticGuest.PidOf(i));
            Assert.Equal(SyntheticPidTable.Pid(i), e.PidAddress);
            Assert.Equal(SyntheticGuest.Task(i), e.TaskAddress);
            Assert.Equal(SyntheticGuest.PidOf(i), e.Tgid);
        }
    }

    [Fact]
    public void A_task_unlinked_from_the_task_list_stays_in_the_pid_table()
    {
        var table = new SyntheticPidTable(new SyntheticGuest(tasks: 5));
        SyntheticGuest g = table.Guest;
        // Unlink task 2 from the task list: task 1 <-> task 3.
        g.WriteU64(SyntheticGuest.TaskNode(1), SyntheticGuest.TaskNode(3));
        g.WriteU64(SyntheticGuest.TaskNode(3) + 8, SyntheticGuest.TaskNode(1));
        LinuxKernel k = table.CreateKernel();
        Assert.DoesNotContain(k.GetProcesses().Items, p => p.Pid == SyntheticGuest.PidOf(2));
        Assert.Contains(k.GetPidTable().Items, p => p.Pid == SyntheticGuest.PidOf(2) && p.TaskAddress == SyntheticGuest.Task(2));
        Assert.Equal(SyntheticGuest.PidOf(2), k.ReadTask(SyntheticGuest.Task(2))?.Pid);
    }

    [Fact]
    public void A_node_pointing_at_itself_is_rejected_by_its_shift()
    {
        var table = new SyntheticPidTable(new SyntheticGuest(tasks: 3));
        table.Guest.WriteU64(SyntheticPidTable.Slot(SyntheticPidTable.Root, 2), SyntheticPidTable.Node(SyntheticPidTable.Root));
        KernelList<PidEntry> pids = table.CreateKernel().GetPidTable();
        Assert.Equal(3, pids.Items.Count);
        Assert.Contains(pids.Issues, i => i.Problem.Contains("cycle", StringComparison.Ordinal) || i.Problem.Contains("shift", StringComparison.Ordinal));
    }

    [Fact]
    public void A_node_reached_twice_is_walked_once()
    {
        var table = new SyntheticPidTable(new SyntheticGuest(tasks: 3));
        table.Guest.WriteU64(SyntheticPidTable.Slot(SyntheticPidTable.Root, 5), SyntheticPidTable.Node(SyntheticPidTable.Leaf));
        KernelList<PidEntry> pids = table.CreateKernel().GetPidTable();
        Assert.Equal(3, pids.Items.Count);
        Assert.Contains(pids.Issues, i => i.Problem.Contains("cycle", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData(0xFF)]
    [InlineData(36)]
    [InlineData(7)]
    public void An_impossible_shift_stops_that_node(byte shift)
    {
        var table = new SyntheticPidTable(new SyntheticGuest(tasks: 3));
        table.Guest.WriteBytes(SyntheticPidTable.Root + SyntheticPidTable.XaShift, [shift]);
        KernelList<PidEntry> pids = table.CreateKernel().GetPidTable();
        Assert.Empty(pids.Items);
        Assert.Contains(pids.Issues, i => i.Problem.Contains("shift", StringComparison.Ordinal));
    }

    [Fact]
    public void Dangling_node_and_pid_pointers_give_partial_results()
    {
        var table = new SyntheticPidTable(new SyntheticGuest(tasks: 4));
        SyntheticGuest g = table.Guest;
        ulong unmapped = SyntheticGuest.KernelBase + SyntheticGuest.MappedSize + 0x1000;
        g.WriteU64(SyntheticPidTable.Slot(SyntheticPidTable.Root, 3), SyntheticPidTable.Node(unmapped));          // dangling node
        g.WriteU64(SyntheticPidTable.Slot(SyntheticPidTable.Leaf, SyntheticGuest.PidOf(1) - 64), unmapped);       // dangling pid
        g.WriteU64(SyntheticPidTable.Pid(2) + SyntheticPidTable.PidTasks, unmapped + SyntheticPidTable.TaskPidLinks); // dangling task link
        g.WriteU64(SyntheticPidTable.Slot(SyntheticPidTable.Leaf, 1), SyntheticPidTable.Node(SyntheticPidTable.Root)); // node in a leaf
        KernelList<PidEntry> pids = table.CreateKernel().GetPidTable();
        Assert.Equal(3, pids.Items.Count);
        Assert.Equal(0UL, Assert.Single(pids.Items, p => p.Pid == SyntheticGuest.PidOf(2)).TaskAddress);
        Assert.Equal(4, pids.Issues.Count);
    }

    [Fact]
    public void Garbage_slots_never_hang_or_throw()
    {
        var random = new Random(1234);
        for (int round = 0; round < 200; round++)
        {
            var table = new SyntheticPidTable(new SyntheticGuest(tasks: 3));
            var junk = new byte[64 * 8];
            random.NextBytes(junk);
            // Sprinkle valid-looking node pointers among the junk.
            for (int s = 0; s < 64; s += 7)
                BitConverter.TryWriteBytes(junk.AsSpan(s * 8), SyntheticPidTable.Node(random.Next(2) == 0 ? SyntheticPidTable.Root : SyntheticPidTable.Leaf));
            table.Guest.WriteBytes(random.Next(2) == 0 ? SyntheticPidTable.Root + SyntheticPidTable.XaSlots : SyntheticPidTable.Leaf + SyntheticPidTable.XaSlots, junk);
            KernelList<PidEntry> pids = table.CreateKernel().GetPidTable();
            Assert.True(pids.Items.Count <= 64 * 2);
        }
    }
}
