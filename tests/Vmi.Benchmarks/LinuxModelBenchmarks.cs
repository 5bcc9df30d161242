using BenchmarkDotNet.Attributes;
using Vmi.Lab;
using Vmi.Linux;
using Vmi.Linux.Model;
using Vmi.Targets;

namespace Vmi.Benchmarks;

/// <summary>
/// The Linux model over an ELF dump of the live lab guest (a few hundred processes): profile bootstrap
/// (KernelLocator + kallsyms + BTF parse), the full process list and the marker process's maps.
/// The dump is $VMI_BENCH_DUMP when set; otherwise build/bench/lab.elf, made on first use by booting the
/// lab ("benign,marker,crowd"), waiting for the crowd and asking QEMU for dump-guest-memory.
/// </summary>
[MemoryDiagnoser]
public class LinuxModelBenchmarks : IDisposable
{
    private DumpTarget? _dump;
    private VcpuRegisters? _registers;
    private LinuxKernel? _kernel;
    private LinuxProcess? _marker;

    [GlobalSetup]
    public void Setup()
    {
        string path = Environment.GetEnvironmentVariable("VMI_BENCH_DUMP") is { Length: > 0 } env ? env : DefaultDumpPath();
        if (!File.Exists(path))
            CreateDumpAsync(path).GetAwaiter().GetResult();
        _dump = DumpTarget.Open(path);
        _registers = _dump.GetRegistersAsync(0).GetAwaiter().GetResult();
        LinuxProfile profile = LinuxProfile.Bootstrap(_dump.Memory, _registers.Paging);
        _kernel = profile.CreateKernel(_dump.Memory, _registers.Paging);
        var processes = _kernel.GetProcesses();
        _marker = processes.Items.FirstOrDefault(p => p.Comm == "vmi-marker")
            ?? throw new InvalidOperationException($"{path} has no vmi-marker process ({processes.Items.Count} processes)");
        Console.WriteLine($"// dump {path}: {processes.Items.Count} processes, marker pid {_marker.Pid} with {_kernel.GetMappings(_marker).Items.Count} VMAs");
    }

    [Benchmark(Description = "profile bootstrap (locate + kallsyms + BTF)")]
    public LinuxProfile ProfileBootstrap() => LinuxProfile.Bootstrap(_dump!.Memory, _registers!.Paging);

    [Benchmark(Description = "process list")]
    public int ProcessList() => _kernel!.GetProcesses().Items.Count;

    [Benchmark(Description = "maps of the marker process")]
    public int MarkerMaps() => _kernel!.GetMappings(_marker!).Items.Count;

    [GlobalCleanup]
    public void Dispose()
    {
        _dump?.DisposeAsync().AsTask().GetAwaiter().GetResult();
        _dump = null;
        GC.SuppressFinalize(this);
    }

    private static string DefaultDumpPath()
    {
        // build/lab → build/bench/lab.elf in the same checkout.
        string lab = LabBuilder.DefaultLabDirectory();
        return Path.Combine(Path.GetDirectoryName(lab)!, "bench", "lab.elf");
    }

    private static async Task CreateDumpAsync(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        LabArtifacts artifacts = await new LabBuilder(TextWriter.Null).BuildAsync(new LabBuildOptions { LabDirectory = LabBuilder.DefaultLabDirectory() });
        await using LabGuest guest = await LabGuest.StartAsync(artifacts, "bench", "benign,marker,crowd");
        await guest.Vm.Console.WaitForLineAsync(l => l.StartsWith("@@VMI-CROWD-READY", StringComparison.Ordinal), TimeSpan.FromMinutes(3));
        string partial = path + ".partial";
        File.Delete(partial);
        await guest.Vm.Qmp.ExecuteAsync("dump-guest-memory", new Dictionary<string, object> { ["paging"] = false, ["protocol"] = "file:" + Path.GetFullPath(partial) });
        File.Move(partial, path, overwrite: true);
        // Disposing the guest powers it off (calling PowerOffAsync first as well would run it twice).
    }
}
