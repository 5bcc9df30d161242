using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using Vmi.Memory;

namespace Vmi.Benchmarks;

/// <summary>
/// Guest physical read throughput of <see cref="MappedPhysicalMemory"/> over a 256 MiB file, against a plain
/// memcpy from the same mapping (the limit). Each operation reads the whole 256 MiB in <see cref="ChunkSize"/> pieces:
/// GB/s = 0.268 / mean seconds.
/// </summary>
[MemoryDiagnoser]
public unsafe class PhysicalReadBenchmarks : IDisposable
{
    private const int FileSize = 256 << 20;

    private string _path = "";
    private MappedPhysicalMemory? _memory;
    private byte* _mapping;
    private byte[] _destination = [];

    [Params(4096, 1 << 20)]
    public int ChunkSize { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _path = Path.Combine(Path.GetTempPath(), $"vmi-bench-{Environment.ProcessId}.ram");
        using (var fs = new FileStream(_path, FileMode.Create, FileAccess.Write))
        {
            var block = new byte[1 << 20];
            new Random(42).NextBytes(block);
            for (int i = 0; i < FileSize / block.Length; i++)
                fs.Write(block);
        }
        _memory = MappedPhysicalMemory.Open(_path, QemuRamLayout.Linear(FileSize));
        // The baseline copies straight from the same mapping through a raw pointer.
        if (!_memory.TryGetSpan(0, FileSize, out ReadOnlySpan<byte> all))
            throw new InvalidOperationException("mapping is not contiguous");
        _mapping = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(all));
        _destination = GC.AllocateUninitializedArray<byte>(1 << 20, pinned: true);
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _memory?.Dispose();
        _memory = null;
        if (_path.Length != 0)
            File.Delete(_path);
        GC.SuppressFinalize(this);
    }

    [Benchmark(Baseline = true, Description = "memcpy (Buffer.MemoryCopy)")]
    public void MemoryCopy()
    {
        fixed (byte* dst = _destination)
        {
            for (long offset = 0; offset < FileSize; offset += ChunkSize)
                Buffer.MemoryCopy(_mapping + offset, dst, ChunkSize, ChunkSize);
        }
    }

    [Benchmark(Description = "Span.CopyTo")]
    public void SpanCopyTo()
    {
        Span<byte> dst = _destination.AsSpan(0, ChunkSize);
        for (long offset = 0; offset < FileSize; offset += ChunkSize)
            new ReadOnlySpan<byte>(_mapping + offset, ChunkSize).CopyTo(dst);
    }

    [Benchmark(Description = "MappedPhysicalMemory.TryRead")]
    public bool TryRead()
    {
        MappedPhysicalMemory memory = _memory!;
        Span<byte> dst = _destination.AsSpan(0, ChunkSize);
        bool ok = true;
        for (ulong offset = 0; offset < FileSize; offset += (ulong)ChunkSize)
            ok &= memory.TryRead(offset, dst);
        return ok;
    }

    [Benchmark(Description = "IPhysicalMemory.TryRead (interface)")]
    public bool TryReadInterface()
    {
        IPhysicalMemory memory = _memory!;
        Span<byte> dst = _destination.AsSpan(0, ChunkSize);
        bool ok = true;
        for (ulong offset = 0; offset < FileSize; offset += (ulong)ChunkSize)
            ok &= memory.TryRead(offset, dst);
        return ok;
    }
}
