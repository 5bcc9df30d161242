using System.Buffers.Binary;
using System.Collections.Concurrent;
using Vmi.Linux;
using Vmi.Linux.Model;
using Vmi.Memory;
using Vmi.Targets;
using Vmi.Targets.Hooks;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Integration.Tests;

/// <summary>The qemu backend's hooks (gdb watchpoints and breakpoints) on the live lab guest.</summary>
[Collection(LabCollection.Name)]
public sealed class HookBackendTests(LabFixture lab, ITestOutputHelper output)
{
    [Fact]
    public async Task Write_hooks_report_exact_old_and_new_values_and_breakpoints_fire_on_process_creation()
    {
        var gdb = await lab.Guest.Vm.AttachGdbAsync();
        LinuxKernel kernel;
        await using (var target = await QemuTarget.FromVmAsync(lab.Guest.Vm, gdb))
        {
            VcpuRegisters regs = await target.GetRegistersAsync(0);
            kernel = LinuxProfile.Bootstrap(target.Memory, regs.Paging).CreateKernel(target.Memory, regs.Paging);
        }
        var kmem = new VirtualMemory(kernel.Memory, kernel.KernelPaging);
        await using var backend = new GdbHookBackend(gdb, kmem);
        Assert.True(kernel.Symbols.TryGetAddress("jiffies_64", out ulong jiffies));
        Assert.True(kernel.Symbols.TryGetAddress("wake_up_new_task", out ulong wakeUpNewTask));
        // jiffies_64 is written on every timer tick: a steady source of guest writes.
        HookHandle tick = await backend.AddAsync(new HookRequest("jiffies", HookKind.Write, jiffies, 8));
        HookHandle fork = await backend.AddAsync(new HookRequest("process-create", HookKind.Execute, wakeUpNewTask, 1));
        var hits = new ConcurrentQueue<HookHit>();
        using var stop = new CancellationTokenSource();
        Task run = backend.RunAsync(h => { hits.Enqueue(h); return ValueTask.CompletedTask; }, stop.Token);

        await WaitUntil(() => hits.Count(h => h.Hook == tick) >= 20, "20 jiffies writes");
        // A new process: the guest's shell forks.
        var reply = await lab.Guest.ShellAsync("sh -c 'sleep 0.2 & wait'", TimeSpan.FromSeconds(60));
        Assert.Equal(0, reply.ExitStatus);
        await WaitUntil(() => hits.Any(h => h.Hook == fork), "a wake_up_new_task breakpoint");

        // Removal while the guest runs: no jiffies hit after it returns (one may be in flight).
        await backend.RemoveAsync(tick).WaitAsync(TimeSpan.FromSeconds(30));
        int afterRemove = hits.Count(h => h.Hook == tick);
        await Task.Delay(1000);
        Assert.InRange(hits.Count(h => h.Hook == tick), afterRemove, afterRemove + 1);
        Assert.Single(backend.Hooks);

        await stop.CancelAsync();
        await run.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Null(backend.CleanupProblem);
        Assert.Empty(backend.Hooks);

        var writes = hits.Where(h => h.Hook == tick).ToList();
        foreach (HookHit w in writes)
        {
            Assert.Equal(jiffies, w.Gva & ~7UL);
            Assert.True(kmem.TryTranslate(w.Gva, out Translation t));
            Assert.Equal(t.PhysicalAddress, w.Gpa);
            Assert.NotNull(w.OldValue);
            Assert.Equal(w.OldValue!.Length, w.NewValue!.Length);
            Assert.NotEqual(w.OldValue, w.NewValue);
            var (sym, _) = kernel.ResolveAddress(w.Rip);
            Assert.False(string.IsNullOrEmpty(sym));
        }
        // Consecutive writes chain: each hit's old value is the previous hit's new value (nothing missed in between).
        for (int i = 1; i < writes.Count; i++)
        {
            if (writes[i].Gva == writes[i - 1].Gva && writes[i].Size == 8 && writes[i - 1].Size == 8)
                Assert.Equal(writes[i - 1].NewValue, writes[i].OldValue);
        }
        ulong first = BinaryPrimitives.ReadUInt64LittleEndian(Pad(writes[0].NewValue!));
        Assert.True(first > 0);

        HookHit f = hits.First(h => h.Hook == fork);
        Assert.Equal(wakeUpNewTask, f.Rip);
        LinuxProcess? child = kernel.ReadTask(f.Registers["rdi"]);
        Assert.NotNull(child);
        Assert.True(child!.Pid > 1);

        double perHitUs = backend.StoppedTime.TotalMilliseconds * 1000 / Math.Max(1, backend.Stops);
        string figure = $"qemu gdb-stub hook round trip: {perHitUs:0} µs per stop over {backend.Stops} stops ({writes.Count} write hits, {hits.Count(h => h.Hook == fork)} breakpoint hits)";
        output.WriteLine(figure);
        ResultsFile.Append("hook-round-trip.txt", [figure]);
    }

    private static byte[] Pad(byte[] b) => b.Length >= 8 ? b : [.. b, .. new byte[8 - b.Length]];

    private static async Task WaitUntil(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
                throw new Xunit.Sdk.XunitException($"timed out waiting for {what}");
            await Task.Delay(50);
        }
    }
}
