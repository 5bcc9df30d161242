using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using Vmi.Memory;

namespace Vmi.Benchmarks;

/// <summary>
/// Virtual→physical translations per second over <see cref="Pages"/> distinct 4 KiB pages visited in random order,
/// page tables in a memory-mapped RAM file: cold (a full walk each time, 4- and 5-level), the raw limit of one
/// unchecked load per level, and the <see cref="TranslationCache"/> hit path. Each benchmark's mean is per translation.
/// </summary>
[MemoryDiagnoser]
public unsafe class TranslationBenchmarks : IDisposable
{
    private const int Pages = 1 << 16;               // 256 MiB of virtual address space
    private const ulong VirtualBase = 0xffff_8880_0000_0000; // Linux direct-map style address, PML4 index 273
    private const ulong Cr3Four = 0x1000;
    private const ulong Cr3Five = 0x2000;

    private string _path = "";
    private MappedPhysicalMemory? _memory;
    private PageWalker? _walker;
    private PageWalker? _interfaceWalker;
    private TranslationCache? _cache;
    private VirtualMemory? _cachedVm;
    private ulong[] _addresses = [];
    private byte* _mapping;
    private PagingContext _four;
    private PagingContext _five;

    [GlobalSetup]
    public void Setup()
    {
        // Tables: PML5 0x2000 -> PML4 0x1000 -> PDPT 0x3000 -> PD 0x4000 -> 128 PTs from 0x10000.
        // Leaves point at physical pages 0x1000_0000 + i * 0x1000 (never read by a walk).
        const int image = 4 << 20;
        var ram = new byte[image];
        void Put(ulong pa, ulong value) => BinaryPrimitives.WriteUInt64LittleEndian(ram.AsSpan((int)pa), value);
        int pml5 = (int)((VirtualBase >> 48) & 0x1FF), pml4 = (int)((VirtualBase >> 39) & 0x1FF);
        int pdpt = (int)((VirtualBase >> 30) & 0x1FF);
        Put(Cr3Five + (ulong)pml5 * 8, 0x1003);
        Put(Cr3Four + (ulong)pml4 * 8, 0x3003);
        Put(0x3000 + (ulong)pdpt * 8, 0x4003);
        for (int pt = 0; pt < Pages / 512; pt++)
        {
            ulong ptBase = 0x10000 + (ulong)pt * 0x1000;
            Put(0x4000 + (ulong)pt * 8, ptBase | 3);
            for (int i = 0; i < 512; i++)
                Put(ptBase + (ulong)i * 8, (0x1000_0000 + ((ulong)(pt * 512 + i) << 12)) | 0x63);
        }
        _path = Path.Combine(Path.GetTempPath(), $"vmi-bench-pt-{Environment.ProcessId}.ram");
        File.WriteAllBytes(_path, ram);
        _memory = MappedPhysicalMemory.Open(_path, QemuRamLayout.Linear(image));
        if (!_memory.TryGetSpan(0, image, out ReadOnlySpan<byte> all))
            throw new InvalidOperationException("mapping is not contiguous");
        _mapping = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(all));

        _walker = new PageWalker(_memory);
        _interfaceWalker = new PageWalker(new ForwardingMemory(_memory));
        _four = new PagingContext(Cr3Four, La57: false);
        // Under LA57 the same VAs are canonical too (bits 63..56 all set) with PML5 index = bits 56..48 = 0x1ff.
        _five = new PagingContext(Cr3Five, La57: true);

        var rng = new Random(7);
        _addresses = [.. Enumerable.Range(0, Pages).Select(i => VirtualBase + ((ulong)i << 12) + (ulong)rng.Next(0x1000)).OrderBy(_ => rng.Next())];
        foreach (ulong va in _addresses)
        {
            if (!_walker.TryTranslate(_four, va, out _, out _) || !_walker.TryTranslate(_five, va, out _, out _))
                throw new InvalidOperationException($"bad benchmark tables at 0x{va:x}");
        }

        _cache = new TranslationCache(Pages);
        _cachedVm = new VirtualMemory(_memory, _four, _cache);
        foreach (ulong va in _addresses)
            _cachedVm.TryTranslate(va, out _);
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

    [Benchmark(Baseline = true, OperationsPerInvoke = Pages, Description = "limit: 4 raw loads per VA")]
    public ulong RawFourLoads()
    {
        ulong sum = 0;
        byte* m = _mapping;
        foreach (ulong va in _addresses)
        {
            // One dependent, unchecked load per level: the floor a 4-level walk cannot beat.
            ulong e = *(ulong*)(m + Cr3Four + (((va >> 39) & 0x1FF) << 3));
            e = *(ulong*)(m + (e & 0xF_FFFF_F000) + (((va >> 30) & 0x1FF) << 3));
            e = *(ulong*)(m + (e & 0xF_FFFF_F000) + (((va >> 21) & 0x1FF) << 3));
            e = *(ulong*)(m + (e & 0xF_FFFF_F000) + (((va >> 12) & 0x1FF) << 3));
            sum += (e & 0xF_FFFF_F000) | (va & 0xFFF);
        }
        return sum;
    }

    [Benchmark(OperationsPerInvoke = Pages, Description = "cold walk, 4-level")]
    public ulong Cold4Level()
    {
        ulong sum = 0;
        PageWalker walker = _walker!;
        foreach (ulong va in _addresses)
        {
            walker.TryTranslate(_four, va, out Translation t, out _);
            sum += t.PhysicalAddress;
        }
        return sum;
    }

    [Benchmark(OperationsPerInvoke = Pages, Description = "cold walk, 4-level, other IPhysicalMemory")]
    public ulong Cold4LevelInterface()
    {
        ulong sum = 0;
        PageWalker walker = _interfaceWalker!;
        foreach (ulong va in _addresses)
        {
            walker.TryTranslate(_four, va, out Translation t, out _);
            sum += t.PhysicalAddress;
        }
        return sum;
    }

    [Benchmark(OperationsPerInvoke = Pages, Description = "cold walk, 5-level")]
    public ulong Cold5Level()
    {
        ulong sum = 0;
        PageWalker walker = _walker!;
        foreach (ulong va in _addresses)
        {
            walker.TryTranslate(_five, va, out Translation t, out _);
            sum += t.PhysicalAddress;
        }
        return sum;
    }

    [Benchmark(OperationsPerInvoke = Pages, Description = "TranslationCache.TryGet hit")]
    public ulong CacheHit()
    {
        ulong sum = 0;
        TranslationCache cache = _cache!;
        foreach (ulong va in _addresses)
        {
            cache.TryGet(Cr3Four, va, out Translation t);
            sum += t.PhysicalAddress;
        }
        return sum;
    }

    [Benchmark(OperationsPerInvoke = Pages, Description = "VirtualMemory.TryTranslate, cached")]
    public ulong VirtualMemoryCached()
    {
        ulong sum = 0;
        VirtualMemory vm = _cachedVm!;
        foreach (ulong va in _addresses)
        {
            vm.TryTranslate(va, out Translation t);
            sum += t.PhysicalAddress;
        }
        return sum;
    }

    /// <summary>Any other IPhysicalMemory: the walker then reads entries through interface calls.</summary>
    private sealed class ForwardingMemory(IPhysicalMemory inner) : IPhysicalMemory
    {
        public IReadOnlyList<PhysicalRange> Ranges => inner.Ranges;

        public bool TryRead(ulong address, Span<byte> destination) => inner.TryRead(address, destination);

        public bool TryReadUInt64(ulong address, out ulong value) => inner.TryReadUInt64(address, out value);

        public bool TryGetSpan(ulong address, int length, out ReadOnlySpan<byte> span) => inner.TryGetSpan(address, length, out span);

        public int ReadPartial(ulong address, Span<byte> destination) => inner.ReadPartial(address, destination);

        public void Dispose()
        {
        }
    }
}
