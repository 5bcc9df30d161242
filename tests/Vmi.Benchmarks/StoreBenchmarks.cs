using BenchmarkDotNet.Attributes;
using Vmi.Events;
using Vmi.Store;

namespace Vmi.Benchmarks;

/// <summary>
/// Batched append throughput of <see cref="EventStore"/> into a real SQLite file (WAL, synchronous=NORMAL):
/// each operation stores <see cref="EventsPerOperation"/> fresh events (99 % telemetry, 1 % alerts) in
/// batches of <see cref="BatchSize"/>, one transaction each. Events/s = 10 000 / mean seconds.
/// Serialization (MessagePack payload and nested ECS JSON) is part of the measured cost.
/// </summary>
[MemoryDiagnoser]
[InvocationCount(1, 1)]
public class StoreBenchmarks : IDisposable
{
    public const int EventsPerOperation = 10_000;

    private string _directory = "";
    private EventStore? _store;
    private VmiEvent[] _events = [];

    [Params(100, 1000)]
    public int BatchSize { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _directory = Directory.CreateTempSubdirectory("vmi-store-bench-").FullName;
        _store = EventStore.Open(Path.Combine(_directory, "vmi.db"));
    }

    // Fresh ids every iteration: appends are idempotent, so re-appending the same events would measure nothing.
    [IterationSetup]
    public void MakeEvents()
    {
        var time = DateTimeOffset.UtcNow;
        _events = new VmiEvent[EventsPerOperation];
        for (int i = 0; i < _events.Length; i++)
        {
            _events[i] = (i % 100) switch
            {
                0 => new Alert
                {
                    VmId = "vm-bench", Time = time.AddTicks(i), Sequence = i, Detector = "syscall-table",
                    Title = "sys_call_table[62] (kill) points outside kernel text", Severity = Severity.Critical,
                    Key = "syscall-hook:62:" + i, Techniques = [AttackTechnique.Rootkit],
                    Evidence = new Dictionary<string, string> { ["entry"] = "62", ["target"] = "0xffffffffc0a01234" },
                },
                < 50 => new ProcessStarted
                {
                    VmId = "vm-bench", Time = time.AddTicks(i), Sequence = i, Pid = 1000 + i, Ppid = 1, Name = "bash",
                    Cmdline = ["/bin/bash", "-c", "echo hello"], ExePath = "/usr/bin/bash", TaskAddress = 0xffff888003a1c000,
                },
                _ => new MemoryAccess
                {
                    VmId = "vm-bench", Time = time.AddTicks(i), Sequence = i, Access = MemoryAccessKind.Write, Hook = "syscall-table",
                    Vcpu = 1, Rip = 0xffffffff81000000, Gpa = 0x2a00000, Size = 8, OldValue = new byte[8], NewValue = new byte[8],
                },
            };
        }
    }

    [Benchmark(Description = "AppendBatch, 10 000 events")]
    public int Append()
    {
        int added = 0;
        for (int offset = 0; offset < _events.Length; offset += BatchSize)
            added += _store!.AppendBatch(new ArraySegment<VmiEvent>(_events, offset, Math.Min(BatchSize, _events.Length - offset)));
        return added;
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _store?.Dispose();
        _store = null;
        if (_directory.Length != 0)
            Directory.Delete(_directory, recursive: true);
        GC.SuppressFinalize(this);
    }
}
