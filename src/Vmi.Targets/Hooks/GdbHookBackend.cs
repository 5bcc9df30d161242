using System.Threading.Channels;
using Vmi.Core;
using Vmi.Memory;
using Vmi.Qemu;

namespace Vmi.Targets.Hooks;

/// <summary>
/// Hooks on a QEMU VM through its gdb stub: write / read hooks are watchpoints (Z2 / Z3) on kernel
/// virtual ranges, execute hooks are breakpoints (Z0). QEMU's stop reply names the watchpoint's start,
/// not the byte written, so each write hook keeps a shadow copy of its range and a hit reports exactly
/// the bytes that changed (old and new, rounded out to aligned 8-byte words) — x86 data breakpoints trap after the write, so the new bytes
/// are in memory when the stop arrives (if not, one single step completes the instruction).
/// </summary>
/// <remarks>
/// Watchpoints are on virtual addresses: a write to the same physical page through another mapping
/// (e.g. the direct map) is not caught — the periodic sweep is the fallback for that. Each hit stops
/// the VM for a few stub round trips.
/// </remarks>
public sealed class GdbHookBackend : IHookBackend
{
    /// <summary>Largest range one watchpoint covers (the shadow copy is this big).</summary>
    public const ulong MaxWatchBytes = 16 << 20;

    private readonly GdbRemoteClient _gdb;
    private readonly VirtualMemory _kernel;
    private readonly TimeProvider _time;
    private readonly bool _ownsClient;
    private readonly Lock _lock = new();
    private readonly List<Placed> _placed = [];
    private readonly Channel<PendingOp> _ops = Channel.CreateUnbounded<PendingOp>();
    private long _nextId;
    private int _running;

    /// <param name="gdb">A connected stub (attaching stopped the guest).</param>
    /// <param name="kernel">The kernel address space, to read hooked ranges for the shadow copies and translate them.</param>
    /// <param name="ownsClient">Detach and dispose the client on dispose (the VM then runs on).</param>
    /// <param name="timeProvider">Clock for hit times.</param>
    public GdbHookBackend(GdbRemoteClient gdb, VirtualMemory kernel, bool ownsClient = true, TimeProvider? timeProvider = null)
    {
        ArgumentNullException.ThrowIfNull(gdb);
        ArgumentNullException.ThrowIfNull(kernel);
        _gdb = gdb;
        _kernel = kernel;
        _ownsClient = ownsClient;
        _time = timeProvider ?? TimeProvider.System;
    }

    public string Name => "qemu gdb stub";

    /// <summary>Hits delivered so far.</summary>
    public long HitCount { get; private set; }

    /// <summary>Wall time the guest spent stopped for hooks: from the stop reply to the resume (the hook round trip).</summary>
    public TimeSpan StoppedTime => TimeSpan.FromTicks(System.Diagnostics.Stopwatch.GetElapsedTime(0, _stoppedTicks).Ticks);

    /// <summary>Why the last clean-up (removing hooks, detaching) was incomplete, or null; the VM may then be left stopped.</summary>
    public string? CleanupProblem { get; private set; }

    /// <summary>Stops handled (hits, and stops to apply hook changes).</summary>
    public long Stops { get; private set; }

    private long _stoppedTicks;
    private string _phase = "not started";
    private long _phaseTicks = System.Diagnostics.Stopwatch.GetTimestamp();
    private string? _lastStop;
    private long _unmatchedStops;

    /// <summary>Stops that matched no placed hook (a stale breakpoint, an interrupt, a stop the stub attributed elsewhere).</summary>
    public long UnmatchedStops => Interlocked.Read(ref _unmatchedStops);

    public string State => FormattableString.Invariant(
        $"{Volatile.Read(ref _phase)} for {System.Diagnostics.Stopwatch.GetElapsedTime(Interlocked.Read(ref _phaseTicks)).TotalSeconds:0.0} s; stops {Stops}, hits {HitCount}, unmatched stops {UnmatchedStops}, polled writes {MissedWatchHits}, last stop '{_lastStop}'");

    private void Phase(string phase)
    {
        Volatile.Write(ref _phase, phase);
        Interlocked.Exchange(ref _phaseTicks, System.Diagnostics.Stopwatch.GetTimestamp());
    }

    public IReadOnlyList<HookHandle> Hooks
    {
        get
        {
            lock (_lock)
                return _placed.Select(p => p.Handle).ToArray();
        }
    }

    public async Task<HookHandle> AddAsync(HookRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.Length == 0 || request.Length > MaxWatchBytes)
            throw new TargetException($"hook {request}: length must be 1..{MaxWatchBytes} bytes.");
        if (request.Kind == HookKind.Execute && request.Length != 1)
            throw new TargetException($"hook {request}: an execute hook covers one instruction address (length 1).");
        if (request.Address + request.Length < request.Address)
            throw new TargetException($"hook {request}: the range wraps around the address space.");
        var handle = new HookHandle(Interlocked.Increment(ref _nextId), request);
        await ApplyOrQueueAsync(new PendingOp(handle, Add: true), cancellationToken).ConfigureAwait(false);
        return handle;
    }

    public Task RemoveAsync(HookHandle hook, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(hook);
        return ApplyOrQueueAsync(new PendingOp(hook, Add: false), cancellationToken);
    }

    private async Task ApplyOrQueueAsync(PendingOp op, CancellationToken ct)
    {
        if (Volatile.Read(ref _running) == 0)
        {
            await ApplyAsync(op, ct).ConfigureAwait(false);
            return;
        }
        // The run loop owns the stub while the guest runs: it stops the guest, applies, resumes.
        await _ops.Writer.WriteAsync(op, ct).ConfigureAwait(false);
        while (!op.Done.Task.IsCompleted)
        {
            await Task.WhenAny(op.Done.Task, Task.Delay(250, ct)).ConfigureAwait(false);
            ct.ThrowIfCancellationRequested();
            // The loop ended between our check and the enqueue: apply it ourselves.
            if (Volatile.Read(ref _running) == 0)
            {
                while (_ops.Reader.TryRead(out PendingOp? queued))
                    await ApplyAsync(queued, ct).ConfigureAwait(false);
            }
        }
        await op.Done.Task.ConfigureAwait(false);
    }

    private async Task ApplyAsync(PendingOp op, CancellationToken ct)
    {
        try
        {
            HookRequest r = op.Hook.Request;
            if (op.Add)
            {
                byte[]? shadow = null;
                if (r.Kind == HookKind.Write)
                {
                    shadow = new byte[r.Length];
                    VirtualReadResult read = _kernel.Read(r.Address, shadow);
                    if (!read.IsComplete)
                        throw new TargetException(FormattableString.Invariant($"hook {r}: the range is not readable at 0x{read.FailedAddress:x} ({read.Status}); a write hook needs mapped memory."));
                }
                try
                {
                    await _gdb.InsertBreakpointAsync(KindOf(r.Kind), r.Address, r.Kind == HookKind.Execute ? 1 : r.Length, ct).ConfigureAwait(false);
                }
                catch (Vmi.Core.ProtocolException e)
                {
                    throw new TargetException($"hook {r}: the gdb stub refused it: {e.Message}", e);
                }
                lock (_lock)
                    _placed.Add(new Placed(op.Hook, shadow));
            }
            else
            {
                Placed? placed;
                lock (_lock)
                {
                    placed = _placed.Find(p => p.Handle == op.Hook);
                    if (placed is not null)
                        _placed.Remove(placed);
                }
                if (placed is not null)
                    await _gdb.RemoveBreakpointAsync(KindOf(r.Kind), r.Address, r.Kind == HookKind.Execute ? 1 : r.Length, ct).ConfigureAwait(false);
            }
            op.Done.TrySetResult();
        }
        catch (Exception e) when (e is TargetException or Vmi.Core.ProtocolException or OperationCanceledException or IOException)
        {
            op.Done.TrySetException(e);
            if (Volatile.Read(ref _running) == 0)
                throw;
        }
    }

    private static GdbBreakpointKind KindOf(HookKind kind) => kind switch
    {
        HookKind.Write => GdbBreakpointKind.WriteWatch,
        HookKind.Read => GdbBreakpointKind.ReadWatch,
        _ => GdbBreakpointKind.Software,
    };

    public async Task RunAsync(Func<HookHit, ValueTask> onHit, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(onHit);
        if (Interlocked.Exchange(ref _running, 1) != 0)
            throw new InvalidOperationException("RunAsync is already running on this backend.");
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                Phase("applying hook changes");
                await ApplyPendingLockedAsync(CancellationToken.None).ConfigureAwait(false);
                Phase("resuming");
                if (!_gdb.IsRunning)
                    await _gdb.ResumeAsync(CancellationToken.None).ConfigureAwait(false);
                GdbStopReply? stop;
                Phase("waiting for a stop");
                try
                {
                    stop = await _gdb.TryWaitForStopAsync(TimeSpan.FromMilliseconds(200), cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
                if (stop is null)
                {
                    // No stop for a while: compare the shadows anyway. QEMU's watchpoints under TCG were
                    // seen to miss a write now and then; a change that stays put is reported (writer unknown).
                    Phase("polling shadows");
                    await PollShadowsAsync(onHit).ConfigureAwait(false);
                    Phase("interrupting to apply hook changes");
                    if (_ops.Reader.Count > 0)
                        await HandleStopAsync(await _gdb.InterruptAsync(CancellationToken.None).ConfigureAwait(false), onHit).ConfigureAwait(false);
                    continue;
                }
                if (!stop.TargetAlive)
                    throw new TargetException($"the VM ended while hooked ({stop.Raw}).");
                long stoppedAt = System.Diagnostics.Stopwatch.GetTimestamp();
                _lastStop = stop.Raw;
                Phase("handling a stop");
                await HandleStopAsync(stop, onHit).ConfigureAwait(false);
                Phase("comparing shadows after a stop");
                await DeliverUnreportedWritesAsync(VcpuOf(stop.ThreadId), onHit).ConfigureAwait(false);
                Phase("applying hook changes after a stop");
                await ApplyPendingLockedAsync(CancellationToken.None).ConfigureAwait(false);
                Phase("resuming after a stop");
                if (!_gdb.IsRunning)
                    await _gdb.ResumeAsync(CancellationToken.None).ConfigureAwait(false);
                _stoppedTicks += System.Diagnostics.Stopwatch.GetTimestamp() - stoppedAt;
                Stops++;
            }
        }
        finally
        {
            // Leave the guest running with no hook in the way; the stub stays attached for the next run.
            try
            {
                if (_gdb.IsConnected)
                {
                    if (_gdb.IsRunning)
                        await _gdb.InterruptAsync(CancellationToken.None).ConfigureAwait(false);
                    Volatile.Write(ref _running, 0);
                    await ApplyPendingLockedAsync(CancellationToken.None).ConfigureAwait(false);
                    foreach (HookHandle h in Hooks)
                        await ApplyAsync(new PendingOp(h, Add: false), CancellationToken.None).ConfigureAwait(false);
                    await _gdb.ResumeAsync(CancellationToken.None).ConfigureAwait(false);
                }
            }
            catch (Exception e) when (e is Vmi.Core.ProtocolException or IOException or TargetException)
            {
                CleanupProblem = $"hooks could not be removed cleanly: {e.Message}";
            }
            Volatile.Write(ref _running, 0);
            // Nobody applies queued changes any more: fail them rather than leave their callers waiting.
            while (_ops.Reader.TryRead(out PendingOp? orphan))
                orphan.Done.TrySetException(new TargetException($"hook change {orphan.Hook} was not applied: the hook loop ended ({CleanupProblem ?? "stopped"})."));
        }
    }

    private async Task ApplyPendingLockedAsync(CancellationToken ct)
    {
        while (_ops.Reader.TryRead(out PendingOp? op))
            await ApplyAsync(op, ct).ConfigureAwait(false);
    }

    private int VcpuOf(string? threadId)
    {
        if (threadId is null)
            return 0;
        IReadOnlyList<string> threads = _gdb.Threads;
        for (int i = 0; i < threads.Count; i++)
        {
            if (string.Equals(threads[i], threadId, StringComparison.OrdinalIgnoreCase))
                return i;
        }
        return 0;
    }

    private async Task HandleStopAsync(GdbStopReply stop, Func<HookHit, ValueTask> onHit)
    {
        int vcpu = VcpuOf(stop.ThreadId);
        if (stop.WatchAddress is ulong watch)
        {
            Placed? placed = FindWatch(watch);
            if (placed is null)
            {
                Interlocked.Increment(ref _unmatchedStops);
                return;
            }
            IReadOnlyDictionary<string, ulong> regs = await _gdb.ReadRegistersAsync(vcpu).ConfigureAwait(false);
            if (placed.Handle.Request.Kind != HookKind.Write || placed.Shadow is null)
            {
                await DeliverAsync(onHit, new HookHit(placed.Handle, _time.GetUtcNow(), vcpu, Reg(regs, "rip"), Reg(regs, "cr3"), watch, Gpa(watch), null, null, regs)).ConfigureAwait(false);
                return;
            }
            List<(int Offset, int Length)> runs = Diff(placed);
            if (runs.Count == 0)
            {
                // Stopped before the access completed: let the one instruction finish.
                await _gdb.StepAsync(vcpu).ConfigureAwait(false);
                regs = await _gdb.ReadRegistersAsync(vcpu).ConfigureAwait(false);
                runs = Diff(placed);
            }
            // A rep movs/stos (memcpy_erms, memset) stops after each element: finish the instruction so
            // one copy is one hit with the whole new value, not a torn prefix of it.
            for (int steps = 0; steps < MaxRepSteps && IsRepStringInProgress(regs); steps++)
            {
                await _gdb.StepAsync(vcpu).ConfigureAwait(false);
                regs = await _gdb.ReadRegistersAsync(vcpu).ConfigureAwait(false);
            }
            await DeliverWritesAsync(placed, Diff(placed), vcpu, regs, onHit).ConfigureAwait(false);
            return;
        }
        if (stop.Signal != 5)
        {
            Interlocked.Increment(ref _unmatchedStops);
            return;
        }
        IReadOnlyDictionary<string, ulong> r = await _gdb.ReadRegistersAsync(vcpu).ConfigureAwait(false);
        ulong rip = Reg(r, "rip");
        Placed? bp;
        lock (_lock)
            bp = _placed.Find(p => p.Handle.Request.Kind == HookKind.Execute && p.Handle.Request.Address == rip);
        if (bp is null)
        {
            Interlocked.Increment(ref _unmatchedStops);
            return;
        }
        await DeliverAsync(onHit, new HookHit(bp.Handle, _time.GetUtcNow(), vcpu, rip, Reg(r, "cr3"), rip, Gpa(rip), null, null, r)).ConfigureAwait(false);
        // Step over the breakpoint so the guest does not stop on it again at once.
        await _gdb.RemoveBreakpointAsync(GdbBreakpointKind.Software, rip, 1).ConfigureAwait(false);
        try
        {
            await _gdb.StepAsync(vcpu).ConfigureAwait(false);
        }
        finally
        {
            await _gdb.InsertBreakpointAsync(GdbBreakpointKind.Software, rip, 1).ConfigureAwait(false);
        }
    }

    private async Task DeliverWritesAsync(Placed placed, List<(int Offset, int Length)> runs, int vcpu, IReadOnlyDictionary<string, ulong> regs, Func<HookHit, ValueTask> onHit)
    {
        foreach (var (offset, length) in runs)
        {
            ulong gva = placed.Handle.Request.Address + (ulong)offset;
            byte[] old = placed.Shadow.AsSpan(offset, length).ToArray();
            byte[] now = new byte[length];
            _kernel.Read(gva, now);
            now.CopyTo(placed.Shadow.AsSpan(offset, length));
            await DeliverAsync(onHit, new HookHit(placed.Handle, _time.GetUtcNow(), vcpu, Reg(regs, "rip"), Reg(regs, "cr3"), gva, Gpa(gva), old, now, regs)).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// After any stop: a write hook whose range changed without its own stop being seen (the watchpoint
    /// fired inside a single step we made, or the stub attributed the stop elsewhere) is reported now,
    /// with no writer (RIP 0, no registers): which instruction wrote is not known. The shadows make this
    /// a cheap compare.
    /// </summary>
    private async Task DeliverUnreportedWritesAsync(int vcpu, Func<HookHit, ValueTask> onHit)
    {
        Placed[] writes;
        lock (_lock)
            writes = [.. _placed.Where(p => p.Handle.Request.Kind == HookKind.Write && p.Shadow is not null)];
        foreach (Placed p in writes)
        {
            List<(int Offset, int Length)> runs = Diff(p);
            if (runs.Count > 0)
                await DeliverWritesAsync(p, runs, vcpu, NoRegisters, onHit).ConfigureAwait(false);
        }
    }

    private async Task PollShadowsAsync(Func<HookHit, ValueTask> onHit)
    {
        Placed[] writes;
        lock (_lock)
            writes = [.. _placed.Where(p => p.Handle.Request.Kind == HookKind.Write && p.Shadow is not null)];
        foreach (Placed p in writes)
        {
            if (Diff(p).Count == 0)
                continue;
            // The guest runs: only a change that is still the same a moment later is reported, so a copy
            // in progress is not taken for its torn prefix.
            byte[] first = new byte[p.Shadow!.Length];
            _kernel.Read(p.Handle.Request.Address, first);
            await Task.Delay(20).ConfigureAwait(false);
            byte[] second = new byte[first.Length];
            _kernel.Read(p.Handle.Request.Address, second);
            if (first.AsSpan().SequenceEqual(second))
            {
                MissedWatchHits++;
                await DeliverWritesAsync(p, Diff(p), -1, NoRegisters, onHit).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Writes found by comparing shadows while no watchpoint had fired for them.</summary>
    public long MissedWatchHits { get; private set; }

    private static readonly IReadOnlyDictionary<string, ulong> NoRegisters = new Dictionary<string, ulong>();

    /// <summary>Single steps spent finishing one rep string instruction before the hit is delivered as it stands.</summary>
    public const int MaxRepSteps = 256;

    /// <summary>The vCPU is in the middle of a rep movs/stos: RIP still on it and RCX not yet zero.</summary>
    private bool IsRepStringInProgress(IReadOnlyDictionary<string, ulong> regs)
    {
        if (Reg(regs, "rcx") == 0)
            return false;
        Span<byte> code = stackalloc byte[8];
        if (!_kernel.TryRead(Reg(regs, "rip"), code))
            return false;
        bool rep = false;
        foreach (byte b in code)
        {
            switch (b)
            {
                case 0xf3 or 0xf2:
                    rep = true;
                    continue;
                case 0x66 or 0x67 or 0x2e or 0x3e or 0x26 or 0x36 or 0x64 or 0x65:
                    continue;
                case >= 0x40 and <= 0x4f: // REX
                    continue;
                case 0xa4 or 0xa5 or 0xaa or 0xab: // movs, stos
                    return rep;
                default:
                    return false;
            }
        }
        return false;
    }

    private async Task DeliverAsync(Func<HookHit, ValueTask> onHit, HookHit hit)
    {
        HitCount++;
        string phase = Volatile.Read(ref _phase);
        Phase($"delivering a hit of {hit.Hook.Request.Name}");
        await onHit(hit).ConfigureAwait(false);
        Phase(phase);
    }

    private Placed? FindWatch(ulong address)
    {
        lock (_lock)
        {
            return _placed.Find(p => p.Handle.Request.Kind != HookKind.Execute && p.Handle.Request.Address == address)
                ?? _placed.Find(p => p.Handle.Request.Kind != HookKind.Execute && address - p.Handle.Request.Address < p.Handle.Request.Length);
        }
    }

    private List<(int Offset, int Length)> Diff(Placed placed)
    {
        byte[] shadow = placed.Shadow!;
        byte[] now = new byte[shadow.Length];
        int read = _kernel.Read(placed.Handle.Request.Address, now).BytesRead;
        var runs = new List<(int, int)>();
        int i = 0;
        while (i < read)
        {
            int mismatch = shadow.AsSpan(i, read - i).CommonPrefixLength(now.AsSpan(i, read - i));
            i += mismatch;
            if (i >= read)
                break;
            int start = i;
            // A run ends after 8 equal bytes, so one pointer-sized write is one run.
            int equal = 0;
            while (i < read && equal < 8)
            {
                equal = shadow[i] == now[i] ? equal + 1 : 0;
                i++;
            }
            runs.Add((start, i - start - equal));
        }
        // Report whole aligned 8-byte words (a pointer whose high half did not change is still one
        // pointer), merging runs that meet.
        var words = new List<(int Offset, int Length)>(runs.Count);
        ulong baseVa = placed.Handle.Request.Address;
        foreach (var (off, len) in runs)
        {
            long a = (long)((baseVa + (ulong)off) & ~7UL) - (long)baseVa;
            long b = (long)(((baseVa + (ulong)(off + len) + 7) & ~7UL) - baseVa);
            int from = (int)Math.Max(0, a), to = (int)Math.Min(read, b);
            if (words.Count > 0 && words[^1].Offset + words[^1].Length >= from)
                words[^1] = (words[^1].Offset, Math.Max(words[^1].Offset + words[^1].Length, to) - words[^1].Offset);
            else
                words.Add((from, to - from));
        }
        return words;
    }

    private ulong? Gpa(ulong gva) => _kernel.TryTranslate(gva, out Translation t) ? t.PhysicalAddress : null;

    private static ulong Reg(IReadOnlyDictionary<string, ulong> regs, string name) => regs.TryGetValue(name, out ulong v) ? v : 0;

    public async ValueTask DisposeAsync()
    {
        if (!_ownsClient)
            return;
        try
        {
            if (_gdb.IsConnected)
                await _gdb.DetachAsync().ConfigureAwait(false);
        }
        catch (Exception e) when (e is Vmi.Core.ProtocolException or IOException)
        {
            CleanupProblem ??= $"detaching from the gdb stub failed: {e.Message}";
        }
        await _gdb.DisposeAsync().ConfigureAwait(false);
    }

    private sealed record Placed(HookHandle Handle, byte[]? Shadow);

    private sealed record PendingOp(HookHandle Hook, bool Add)
    {
        public TaskCompletionSource Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
