namespace Vmi.Linux.Model;

/// <summary>A task found on a CPU's run queue.</summary>
/// <param name="Cpu">CPU number.</param>
/// <param name="TaskAddress">task_struct address.</param>
/// <param name="Pid">task->pid (the thread id; 0 for a CPU's idle task).</param>
/// <param name="Tgid">task->tgid.</param>
/// <param name="IsCurrent">The task is rq->curr (running on that CPU at the time of the snapshot).</param>
public sealed record RunQueueTask(int Cpu, ulong TaskAddress, int Pid, int Tgid, bool IsCurrent);

public sealed partial class LinuxKernel
{
    /// <summary>Upper bound on CPUs considered (CONFIG_NR_CPUS is at most 8192 on x86-64).</summary>
    public const int MaxCpus = 8192;

    /// <summary>Upper bound on tasks walked on one run-queue list.</summary>
    public const int MaxRunQueueTasks = 1 << 16;

    /// <summary>
    /// The tasks the scheduler knows per online CPU: rq->curr, the CFS runnable list (rq->cfs_tasks, linked
    /// through sched_entity.group_node) and the real-time priority queues (rq->rt.active.queue[], through
    /// sched_rt_entity.run_list). A view independent of the task list. Per-CPU data: the address of
    /// <c>runqueues</c> on CPU n is &amp;runqueues + __per_cpu_offset[n] (kallsyms gives per-CPU symbols as
    /// offsets on x86-64 SMP kernels, and the same sum holds either way). CPUs are bounded by nr_cpu_ids
    /// and <see cref="MaxCpus"/>, and filtered by __cpu_online_mask when readable.
    /// </summary>
    public KernelList<RunQueueTask> GetRunQueueTasks()
    {
        var issues = new List<KernelWalkIssue>();
        var result = new List<RunQueueTask>();
        ExtraOffsets x = X;
        if (!_symbols.TryGetAddress("runqueues", out ulong runqueues) || x.RqCurr < 0 || x.RqCfsTasks < 0 || x.SeGroupNode < 0 || x.TaskSe < 0)
        {
            issues.Add(new KernelWalkIssue("run queues", 0, "the kernel lacks the runqueues symbol or struct rq/sched_entity members"));
            return new KernelList<RunQueueTask>(result, issues);
        }
        foreach ((int cpu, ulong offset) in OnlineCpus(issues))
        {
            ulong rq = runqueues + offset;
            var seen = new Dictionary<ulong, int>();
            if (_kernel.TryReadUInt64(rq + (ulong)x.RqCurr, out ulong curr) && curr != 0)
                AddRunQueueTask(cpu, curr, true, seen, result, issues);
            else
                issues.Add(new KernelWalkIssue("run queues", rq, $"cpu {cpu}: rq->curr is unreadable"));
            foreach (ulong node in ListWalker.Walk(_kernel, rq + (ulong)x.RqCfsTasks, $"cpu {cpu} cfs_tasks", MaxRunQueueTasks, issues))
                AddRunQueueTask(cpu, node - (ulong)x.SeGroupNode - (ulong)x.TaskSe, false, seen, result, issues);
            if (x.RqRtQueue >= 0 && x.RtRunList >= 0 && x.TaskRt >= 0)
            {
                for (int prio = 0; prio < Math.Min(x.RtQueueCount, 1024); prio++)
                {
                    ulong head = rq + (ulong)x.RqRtQueue + ((ulong)prio * 16);
                    foreach (ulong node in ListWalker.Walk(_kernel, head, $"cpu {cpu} rt queue {prio}", MaxRunQueueTasks, issues))
                        AddRunQueueTask(cpu, node - (ulong)x.RtRunList - (ulong)x.TaskRt, false, seen, result, issues);
                }
            }
        }
        return new KernelList<RunQueueTask>(result, issues);
    }

    private void AddRunQueueTask(int cpu, ulong task, bool current, Dictionary<ulong, int> seen, List<RunQueueTask> result, List<KernelWalkIssue> issues)
    {
        if (seen.ContainsKey(task))
            return; // rq->curr stays on cfs_tasks while it runs
        if (!IsKernelPointer(task) || !TryU32(task + (ulong)_o.TaskPid, out uint pid) || !TryU32(task + (ulong)_o.TaskTgid, out uint tgid))
        {
            issues.Add(new KernelWalkIssue("run queues", task, $"cpu {cpu}: task is unreadable"));
            return;
        }
        seen[task] = result.Count;
        result.Add(new RunQueueTask(cpu, task, (int)pid, (int)tgid, current));
    }

    /// <summary>(cpu, __per_cpu_offset[cpu]) for every online CPU below nr_cpu_ids.</summary>
    private List<(int Cpu, ulong Offset)> OnlineCpus(List<KernelWalkIssue> issues)
    {
        var cpus = new List<(int, ulong)>();
        if (!_symbols.TryGetAddress("__per_cpu_offset", out ulong offsets))
        {
            // A uniprocessor kernel: per-CPU variables are ordinary variables.
            cpus.Add((0, 0));
            return cpus;
        }
        int count = MaxCpus;
        if (_symbols.TryGetAddress("nr_cpu_ids", out ulong nrAddress) && TryU32(nrAddress, out uint nr))
        {
            if (nr is 0 or > MaxCpus)
                issues.Add(new KernelWalkIssue("cpus", nrAddress, $"nr_cpu_ids {nr} is outside 1..{MaxCpus}"));
            else
                count = (int)nr;
        }
        byte[]? online = null;
        if (_symbols.TryGetAddress("__cpu_online_mask", out ulong maskAddress))
        {
            online = new byte[(count + 7) / 8];
            if (!_kernel.TryRead(maskAddress, online))
                online = null;
        }
        for (int cpu = 0; cpu < count; cpu++)
        {
            if (online is not null && (online[cpu / 8] & (1 << (cpu % 8))) == 0)
                continue;
            if (!_kernel.TryReadUInt64(offsets + ((ulong)cpu * 8), out ulong offset))
            {
                issues.Add(new KernelWalkIssue("cpus", offsets, $"__per_cpu_offset[{cpu}] is unreadable"));
                break;
            }
            // Without an online mask, trailing CPUs have no per-CPU area (offset 0 beyond the possible ones).
            if (online is null && cpu > 0 && offset == 0)
                break;
            cpus.Add((cpu, offset));
        }
        return cpus;
    }
}
