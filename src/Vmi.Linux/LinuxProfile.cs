using System.Diagnostics;
using Vmi.Core;
using Vmi.Linux.Btf;
using Vmi.Linux.Model;
using Vmi.Linux.Symbols;
using Vmi.Memory;

namespace Vmi.Linux;

/// <summary>
/// Everything Vmi needs to understand a Linux guest, derived from the guest itself: where the kernel
/// is (KASLR slide), its symbols (kallsyms in guest memory, or a System.map when given) and its struct
/// layouts (the kernel's own BTF, between __start_BTF and __stop_BTF). No debug package needed.
/// </summary>
public sealed class LinuxProfile
{
    /// <summary>Upper bound for the BTF blob read from guest memory (vmlinux BTF is ~5 MiB).</summary>
    public const int MaxBtfBytes = 64 << 20;

    private LinuxProfile(KernelLocation location, ISymbolTable symbols, BtfTypes types, ulong btfAddress, int btfSize, string banner, TimeSpan elapsed, string symbolSource)
    {
        Location = location;
        Symbols = symbols;
        Types = types;
        BtfAddress = btfAddress;
        BtfSize = btfSize;
        Banner = banner;
        BootstrapTime = elapsed;
        SymbolSource = symbolSource;
    }

    public KernelLocation Location { get; }
    public ISymbolTable Symbols { get; }
    public BtfTypes Types { get; }
    public ulong BtfAddress { get; }
    public int BtfSize { get; }
    /// <summary>linux_banner, as the guest's /proc/version prints it.</summary>
    public string Banner { get; }
    public TimeSpan BootstrapTime { get; }
    public string SymbolSource { get; }

    /// <summary>Derives the profile from a live guest or dump, given the paging context of any vCPU.</summary>
    /// <param name="memory">Guest physical memory.</param>
    /// <param name="paging">Paging context of a vCPU (any process's CR3 maps the kernel).</param>
    /// <param name="systemMap">Optional System.map (unslid); the slide found in memory is applied.</param>
    /// <exception cref="GuestMemoryException">The kernel, its symbols or its BTF cannot be found; the message says which.</exception>
    /// <param name="btfFile">Optional BTF source instead of guest memory: a raw BTF blob (/sys/kernel/btf/vmlinux) or a vmlinux ELF with a .BTF section.</param>
    public static LinuxProfile Bootstrap(IPhysicalMemory memory, PagingContext paging, string? systemMap = null, string? btfFile = null)
    {
        ArgumentNullException.ThrowIfNull(memory);
        var sw = Stopwatch.StartNew();
        KernelLocation location = KernelLocator.Locate(memory, paging);
        ISymbolTable symbols;
        string source;
        if (systemMap is not null)
        {
            symbols = SystemMap.Load(systemMap).WithSlide(location.Slide);
            source = "System.map " + systemMap;
        }
        else
        {
            symbols = KallsymsReader.Read(memory, paging, location);
            source = "kallsyms in guest memory";
        }
        var kernel = new VirtualMemory(memory, paging);
        if (btfFile is not null)
        {
            BtfTypes fromFile = LoadBtfFile(btfFile);
            return new LinuxProfile(location, symbols, fromFile, 0, (int)new FileInfo(btfFile).Length, ReadBanner(symbols, kernel), sw.Elapsed, source);
        }
        if (!symbols.TryGetAddress("__start_BTF", out ulong start) || !symbols.TryGetAddress("__stop_BTF", out ulong stop))
            throw new GuestMemoryException("the kernel has no __start_BTF/__stop_BTF symbols: it was built without CONFIG_DEBUG_INFO_BTF, which Vmi needs for struct layouts.");
        if (stop <= start || stop - start > MaxBtfBytes)
            throw new GuestMemoryException(FormattableString.Invariant($"BTF bounds 0x{start:x}..0x{stop:x} are implausible."));
        var blob = new byte[stop - start];
        VirtualReadResult r = kernel.Read(start, blob);
        if (!r.IsComplete)
            throw new GuestMemoryException(FormattableString.Invariant($"the kernel's BTF at 0x{start:x} is unreadable at 0x{r.FailedAddress:x} ({r.Status})."));
        BtfTypes types = BtfTypes.Parse(blob);
        return new LinuxProfile(location, symbols, types, start, blob.Length, ReadBanner(symbols, kernel), sw.Elapsed, source);
    }

    private static string ReadBanner(ISymbolTable symbols, VirtualMemory kernel)
    {
        if (!symbols.TryGetAddress("linux_banner", out ulong bannerAddress))
            return "";
        var b = new byte[512];
        int n = kernel.Read(bannerAddress, b).BytesRead;
        int nul = Array.IndexOf(b, (byte)0, 0, n);
        return System.Text.Encoding.UTF8.GetString(b, 0, nul < 0 ? n : nul).TrimEnd('\n');
    }

    /// <summary>BTF from a file: raw BTF (magic 0xeB9F) or a vmlinux ELF's .BTF section.</summary>
    /// <exception cref="VmiException">The file is neither, or has no .BTF section.</exception>
    public static BtfTypes LoadBtfFile(string path)
    {
        if (!File.Exists(path))
            throw new VmiException($"BTF file {path} does not exist.");
        Span<byte> magic = stackalloc byte[4];
        using (var f = File.OpenRead(path))
            f.ReadExactly(magic);
        if (magic[0] == 0x7f && magic[1] == (byte)'E' && magic[2] == (byte)'L' && magic[3] == (byte)'F')
        {
            using var elf = Vmi.Linux.Image.ElfImage.Open(path);
            if (!elf.TryGetSection(".BTF", out ReadOnlyMemory<byte> section))
                throw new VmiException($"{path} is an ELF file without a .BTF section: the kernel was built without CONFIG_DEBUG_INFO_BTF.");
            return BtfTypes.Parse(section.Span);
        }
        return BtfTypes.ParseFile(path);
    }

    /// <summary>The kernel model over this profile.</summary>
    /// <summary>
    /// The kernel model over <paramref name="memory"/>. Kernel addresses are translated through the kernel's
    /// own top-level page table (<c>init_top_pgt</c>, alias <c>swapper_pg_dir</c>), found through
    /// <paramref name="paging"/>: the CR3 a vCPU happened to hold is some process's page table, which is
    /// freed and reused when that process exits (or, with PTI, a user copy that maps almost no kernel).
    /// </summary>
    public LinuxKernel CreateKernel(IPhysicalMemory memory, PagingContext paging) => new(memory, KernelPagingOf(memory, paging), Symbols, Types);

    /// <summary>
    /// The paging context of the kernel's own page table when <c>init_top_pgt</c> is known and maps the
    /// kernel the way <paramref name="paging"/> does (checked on the symbol's own address); else <paramref name="paging"/>.
    /// </summary>
    public PagingContext KernelPagingOf(IPhysicalMemory memory, PagingContext paging)
    {
        ArgumentNullException.ThrowIfNull(memory);
        if (!Symbols.TryGetAddress("init_top_pgt", out ulong pgd) && !Symbols.TryGetAddress("swapper_pg_dir", out pgd))
            return paging;
        var current = new VirtualMemory(memory, paging);
        if (!current.TryTranslate(pgd, out Translation t) || (t.PhysicalAddress & 0xfff) != 0)
            return paging;
        PagingContext own = paging with { Cr3 = t.PhysicalAddress };
        // The kernel's table must map its own address to the same frame, and the banner the same way.
        var check = new VirtualMemory(memory, own);
        if (!check.TryTranslate(pgd, out Translation again) || again.PhysicalAddress != t.PhysicalAddress)
            return paging;
        if (Symbols.TryGetAddress("linux_banner", out ulong banner)
            && (!check.TryTranslate(banner, out Translation b1) || !current.TryTranslate(banner, out Translation b2) || b1.PhysicalAddress != b2.PhysicalAddress))
            return paging;
        return own;
    }
}
