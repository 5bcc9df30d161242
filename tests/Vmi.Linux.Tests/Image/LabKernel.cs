using Vmi.Linux.Image;

namespace Vmi.Linux.Tests.Image;

/// <summary>The lab's Debian kernel (built by './vmi lab build'), unpacked once per test run.</summary>
internal static class LabKernel
{
    private static readonly Lazy<Task<string>> Vmlinux = new(ExtractAsync);
    private static readonly Lazy<Task<byte[]>> Btf = new(ReadBtfAsync);

    public static string RepoRoot()
    {
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Vmi.sln")))
                return dir.FullName;
        }
        throw new InvalidOperationException($"no Vmi.sln above {AppContext.BaseDirectory}");
    }

    /// <summary>build/lab/amd64/vmlinuz; fails with instructions when the lab was not built.</summary>
    public static string BzImagePath()
    {
        string path = Path.Combine(RepoRoot(), "build", "lab", "amd64", "vmlinuz");
        if (!File.Exists(path))
            throw new InvalidOperationException($"The lab kernel {path} is missing: run './vmi lab build' in {RepoRoot()} first.");
        return path;
    }

    /// <summary>Path of the extracted ELF vmlinux (in a per-run temp directory).</summary>
    public static Task<string> VmlinuxAsync() => Vmlinux.Value;

    /// <summary>The .BTF section of the lab vmlinux.</summary>
    public static Task<byte[]> BtfAsync() => Btf.Value;

    private static async Task<string> ExtractAsync()
    {
        string bz = BzImagePath();
        string dir = Path.Combine(Path.GetTempPath(), $"vmi-linux-tests-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        string output = Path.Combine(dir, "vmlinux");
        await BzImage.ExtractVmlinuxAsync(bz, output);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        };
        return output;
    }

    private static async Task<byte[]> ReadBtfAsync()
    {
        using ElfImage elf = ElfImage.Open(await VmlinuxAsync());
        if (!elf.TryGetSection(".BTF", out ReadOnlyMemory<byte> btf))
            throw new InvalidOperationException("the lab vmlinux has no .BTF section (CONFIG_DEBUG_INFO_BTF=y expected)");
        return btf.ToArray();
    }
}
