using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Vmi.Detectors.Linux;
using Vmi.Events;
using Vmi.Lab;
using Vmi.Memory;
using Vmi.Monitoring;
using Vmi.Targets;
using Xunit;

namespace Vmi.Integration.Tests;

/// <summary>
/// A lab guest booted with a scenario and then watched by a full monitoring session: hooks through the
/// gdb stub, periodic sweeps, every built-in detector. Alerts and events are collected with the time
/// they arrived. Subclasses name the scenario and read its ready line.
/// </summary>
public abstract class MonitoredLabFixture(string name, string scenario) : IAsyncLifetime
{
    private readonly ConcurrentQueue<(Alert Alert, TimeSpan At)> _alerts = new();
    private readonly ConcurrentQueue<VmiEvent> _events = new();
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private IDisposable? _subscription;

    public LabGuest Guest { get; private set; } = null!;
    public QemuTarget Target { get; private set; } = null!;
    public MonitorSession Session { get; private set; } = null!;
    public StringWriter Log { get; } = new();

    public TimeSpan Now => _clock.Elapsed;
    public IReadOnlyList<(Alert Alert, TimeSpan At)> Alerts => [.. _alerts];
    public IReadOnlyList<VmiEvent> Events => [.. _events];

    /// <summary>Time between sweeps.</summary>
    protected virtual TimeSpan SweepInterval => TimeSpan.FromSeconds(1);

    /// <summary>The detectors' configuration (null: all defaults).</summary>
    protected virtual JsonElement? DetectorConfig => null;

    /// <summary>Waits for the scenario's ready line and reads what the tests need from it.</summary>
    protected abstract Task OnBootedAsync(LabGuest guest);

    public async Task InitializeAsync()
    {
        LabArtifacts artifacts = await LabArtifactsForTests.GetAsync("amd64");
        Guest = await LabGuest.StartAsync(artifacts, name, scenario);
        await OnBootedAsync(Guest);
        var gdb = await Guest.Vm.AttachGdbAsync();
        Target = await QemuTarget.FromVmAsync(Guest.Vm, gdb);
        var options = new MonitorOptions { SweepInterval = SweepInterval };
        var pipeline = new Vmi.Pipeline.EventPipeline(System.Reactive.Concurrency.TaskPoolScheduler.Default);
        _subscription = pipeline.Output.Subscribe(e =>
        {
            _events.Enqueue(e);
            if (e is Alert a)
                _alerts.Enqueue((a, _clock.Elapsed));
        });
        var config = DetectorConfig;
        Session = await MonitorSession.StartAsync(name, Target, gdb, options, g => BuiltInDetectors.Create(g, config), pipeline, Log);
    }

    /// <summary>Waits for the first alert of a detector that arrived after <paramref name="since"/> and matches.</summary>
    public async Task<(Alert Alert, TimeSpan Latency)> WaitForAlertAsync(string detector, TimeSpan since, Func<Alert, bool>? match = null, TimeSpan? timeout = null)
    {
        var deadline = Now + (timeout ?? TimeSpan.FromSeconds(30));
        while (Now < deadline)
        {
            foreach (var (a, at) in _alerts)
            {
                if (at >= since && a.Detector == detector && (match is null || match(a)))
                    return (a, at - since);
            }
            if (Session.Completion.IsFaulted)
                await Session.Completion;
            await Task.Delay(100);
        }
        string seen = string.Join("\n  ", _alerts.Select(x => $"{x.At.TotalSeconds:0.0}s {x.Alert.Detector}: {x.Alert.Title}"));
        throw new Xunit.Sdk.XunitException($"no {detector} alert within the time limit after {since.TotalSeconds:0.0}s; alerts so far:\n  {seen}\n{Diagnostics()}\nlog:\n{Log}");
    }

    /// <summary>The session's state and every detector fault so far, for a failure message.</summary>
    public string Diagnostics()
    {
        var faults = _events.OfType<DetectorFault>().Select(f => $"  fault {f.Detector}: {f.Fault} {f.Message}");
        return $"{Session.Diagnostics}{string.Join("\n", faults)}";
    }

    /// <summary>Waits up to 20 s for an event of type <typeparamref name="T"/> that matches.</summary>
    public async Task<T> WaitForEventAsync<T>(Func<T, bool> match) where T : VmiEvent
    {
        var deadline = Now + TimeSpan.FromSeconds(20);
        while (Now < deadline)
        {
            if (_events.OfType<T>().FirstOrDefault(match) is T found)
                return found;
            await Task.Delay(100);
        }
        throw new Xunit.Sdk.XunitException($"no matching {typeof(T).Name} within 20 s;\n{Diagnostics()}\nlog:\n{Log}");
    }

    /// <summary>Like <see cref="WaitForEventAsync{T}"/>, but null after 20 s.</summary>
    public async Task<T?> TryWaitForEventAsync<T>(Func<T, bool> match) where T : VmiEvent
    {
        var deadline = Now + TimeSpan.FromSeconds(20);
        while (Now < deadline)
        {
            if (_events.OfType<T>().FirstOrDefault(match) is T found)
                return found;
            await Task.Delay(100);
        }
        return null;
    }

    public async Task WaitForSweepsAsync(int count)
    {
        long target = Session.Monitor.Sweeps + count;
        var deadline = Now + TimeSpan.FromSeconds(60);
        while (Session.Monitor.Sweeps < target && Now < deadline)
            await Task.Delay(100);
        // Let the detectors finish the last sweep.
        await Task.Delay(500);
    }

    public async Task DisposeAsync()
    {
        if (Session is not null)
            await Session.DisposeAsync();
        _subscription?.Dispose();
        if (Target is not null)
            await Target.DisposeAsync();
        if (Guest is not null)
            await Guest.DisposeAsync();
    }
}

/// <summary>
/// The rootkit scenario (a non-root victim, a process to hide, a TCP listener, the rootkit module on
/// disk but not loaded) under full monitoring.
/// </summary>
public abstract class MonitoredRootkitLabFixture(string name) : MonitoredLabFixture(name, "benign,rootkit")
{
    public int HidePid { get; private set; }
    public int UserPid { get; private set; }

    protected override async Task OnBootedAsync(LabGuest guest)
    {
        string ready = await guest.Vm.Console.WaitForLineAsync(l => l.StartsWith("@@VMI-ROOTKIT-READY", StringComparison.Ordinal), TimeSpan.FromMinutes(2));
        foreach (string part in ready.Split(' '))
        {
            if (part.StartsWith("hide=", StringComparison.Ordinal))
                HidePid = int.Parse(part[5..], CultureInfo.InvariantCulture);
            if (part.StartsWith("user=", StringComparison.Ordinal))
                UserPid = int.Parse(part[5..], CultureInfo.InvariantCulture);
        }
    }
}

public sealed class RootkitModuleLabFixture() : MonitoredRootkitLabFixture("rootkit-module");

public sealed class HostAttackLabFixture() : MonitoredRootkitLabFixture("rootkit-host");

[CollectionDefinition("rootkit module lab")]
public sealed class RootkitModuleLabCollection : ICollectionFixture<RootkitModuleLabFixture>;

[CollectionDefinition("host attack lab")]
public sealed class HostAttackLabCollection : ICollectionFixture<HostAttackLabFixture>;

/// <summary>
/// Writes guest physical memory from the host, through the VM's shared RAM file (as an attacker
/// with access to the host could): the guest's kernel sees the bytes at once.
/// </summary>
public sealed class HostMemoryWriter : IDisposable
{
    private readonly FileStream _ram;
    private readonly VirtualMemory _kernel;

    public HostMemoryWriter(LabGuest guest, VirtualMemory kernel)
    {
        _ram = new FileStream(guest.Vm.MemoryPath, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        _kernel = kernel;
    }

    /// <summary>Writes at a kernel virtual address (may cross pages); returns the bytes it replaced.</summary>
    public byte[] Write(ulong va, ReadOnlySpan<byte> data)
    {
        byte[] old = new byte[data.Length];
        if (!_kernel.TryRead(va, old))
            throw new InvalidOperationException($"0x{va:x} is not readable");
        int done = 0;
        while (done < data.Length)
        {
            ulong at = va + (ulong)done;
            if (!_kernel.TryTranslate(at, out Translation t))
                throw new InvalidOperationException($"0x{at:x} does not translate");
            int inPage = (int)Math.Min((ulong)(data.Length - done), 0x1000 - (at & 0xfff));
            // The lab's RAM is below the PCI hole: file offset == guest physical address.
            RandomAccess.Write(_ram.SafeFileHandle, data.Slice(done, inPage), (long)t.PhysicalAddress);
            done += inPage;
        }
        return old;
    }

    public byte[] WriteUInt64(ulong va, ulong value) => Write(va, BitConverter.GetBytes(value));

    public void Dispose() => _ram.Dispose();
}
