using System.Globalization;
using Vmi.Linux.Model;
using Vmi.Memory;
using Vmi.Signatures.Yara;

namespace Vmi.Detectors.Av;

/// <summary>Bounds for scanning guest memory: guest structures are hostile, so every size is capped.</summary>
public sealed record GuestScanOptions
{
    /// <summary>Largest VMA scanned whole; larger ones are scanned up to this many bytes from their start. Default 64 MiB.</summary>
    public long MaxRegionBytes { get; init; } = 64L << 20;
    /// <summary>Most bytes read from one process (or from the kernel) in one scan. Default 512 MiB.</summary>
    public long MaxBytesPerTarget { get; init; } = 512L << 20;
    /// <summary>Most page-table pages one region's walk may read.</summary>
    public int MaxTablesPerRegion { get; init; } = 4096;
    /// <summary>Limits passed to the signature scanner (time, steps, matches).</summary>
    public YaraScanOptions Scan { get; init; } = new() { Timeout = TimeSpan.FromSeconds(30), ComputeEntryPoint = false };
}

/// <summary>One match of one string, placed in guest memory.</summary>
/// <param name="Address">Guest virtual address of the match.</param>
/// <param name="Region">The region as /proc/PID/maps would print it (<c>7f…-7f… r-xp [anon]</c>), or a kernel region's name.</param>
/// <param name="RegionStart">Start of the region.</param>
/// <param name="StringId">The rule's string ($a).</param>
/// <param name="Data">Matched bytes (at most the scanner's evidence limit).</param>
/// <param name="Length">Full length of the match.</param>
public sealed record GuestStringMatch(ulong Address, string Region, ulong RegionStart, string StringId, byte[] Data, int Length)
{
    /// <summary>Offset of the match within its region.</summary>
    public ulong Offset => Address - RegionStart;
}

/// <summary>A rule that matched a process or the kernel.</summary>
public sealed record GuestRuleMatch(YaraRule Rule, IReadOnlyList<GuestStringMatch> Strings);

/// <summary>The outcome of scanning one process (Pid set) or kernel memory (Pid null).</summary>
public sealed record GuestScanResult(int? Pid, string Name, IReadOnlyList<GuestRuleMatch> Matches, long BytesScanned, int Regions, IReadOnlyList<string> Problems, TimeSpan Elapsed);

/// <summary>
/// Scans guest memory with compiled YARA rules: a process through its own page tables, VMA by VMA, or the
/// kernel's text and module memory. A process is scanned the way yara scans a live process: all its regions
/// form one target, matches are reported at their virtual addresses, and each match names its VMA.
/// Each region is assembled page by page from guest physical memory (virtually contiguous pages are
/// scattered physically); pages that are not present read as zeros. The scanner then works on those
/// buffers without further copies.
/// </summary>
public static class GuestScanner
{
    private const ulong PageSize = 4096;

    /// <summary>Scans one process. <paramref name="regionFilter"/> picks VMAs (null: all).</summary>
    public static GuestScanResult ScanProcess(LinuxKernel kernel, LinuxProcess process, YaraRules rules, GuestScanOptions? options = null, Func<LinuxVma, bool>? regionFilter = null)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        ArgumentNullException.ThrowIfNull(process);
        ArgumentNullException.ThrowIfNull(rules);
        options ??= new GuestScanOptions();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var problems = new List<string>();
        if (process.MmAddress == 0 || process.PageTablePhysical == 0)
            return new GuestScanResult(process.Pid, process.Name, [], 0, 0, ["kernel thread or exiting process: no user memory"], sw.Elapsed);
        var maps = kernel.GetMappings(process);
        problems.AddRange(maps.Issues.Select(i => i.ToString()));
        var memory = kernel.UserMemory(process);
        var regions = new List<(ulong Start, ulong End, string Name)>();
        foreach (var vma in maps.Items)
        {
            if (regionFilter is not null && !regionFilter(vma))
                continue;
            string name = string.Create(CultureInfo.InvariantCulture, $"{vma.Start:x}-{vma.End:x} {vma.Permissions} {vma.Path ?? "[anon]"}");
            regions.Add((vma.Start, vma.End, name));
        }
        return ScanRegions(memory, kernel.Memory, regions, rules, options, process.Pid, process.Name, problems, sw);
    }

    /// <summary>Scans kernel memory: the kernel's text and data image and every module's core region.</summary>
    public static GuestScanResult ScanKernel(LinuxKernel kernel, YaraRules rules, GuestScanOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        ArgumentNullException.ThrowIfNull(rules);
        options ??= new GuestScanOptions();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var problems = new List<string>();
        var regions = new List<(ulong Start, ulong End, string Name)>();
        var (textStart, textEnd) = kernel.KernelText;
        if (textStart != 0 && textEnd > textStart)
            regions.Add((textStart & ~(PageSize - 1), textEnd, "kernel text"));
        else
            problems.Add("kernel text range unknown (_stext/_etext)");
        var modules = kernel.GetModules();
        problems.AddRange(modules.Issues.Select(i => i.ToString()));
        foreach (var m in modules.Items)
        {
            if (m.CoreBase != 0 && m.Size is > 0 and < 1UL << 30)
                regions.Add((m.CoreBase, m.CoreBase + m.Size, "module " + m.Name));
        }
        return ScanRegions(kernel.KernelMemory, kernel.Memory, regions, rules, options, null, "kernel", problems, sw);
    }

    private static GuestScanResult ScanRegions(VirtualMemory memory, IPhysicalMemory physical, List<(ulong Start, ulong End, string Name)> regions,
        YaraRules rules, GuestScanOptions options, int? pid, string name, List<string> problems, System.Diagnostics.Stopwatch sw)
    {
        var blocks = new List<(long Address, ReadOnlyMemory<byte> Data)>();
        var blockRegions = new List<(ulong Start, ulong End, string Name)>();
        long total = 0;
        foreach (var (start, endRaw, regionName) in regions)
        {
            options.Scan.Cancellation.ThrowIfCancellationRequested();
            if (endRaw <= start)
                continue;
            ulong end = endRaw;
            if (end - start > (ulong)options.MaxRegionBytes)
            {
                problems.Add($"{regionName}: larger than {options.MaxRegionBytes} bytes, scanned in part");
                end = start + (ulong)options.MaxRegionBytes;
            }
            if (total + (long)(end - start) > options.MaxBytesPerTarget)
            {
                problems.Add($"{regionName}: skipped, the target's scan budget of {options.MaxBytesPerTarget} bytes is used up");
                continue;
            }
            var data = ReadRegion(memory, physical, start, end, options, out int present, out string? problem);
            if (problem is not null)
                problems.Add($"{regionName}: {problem}");
            if (present == 0)
                continue;
            blocks.Add(((long)start, data));
            blockRegions.Add((start, end, regionName));
            total += data.Length;
        }
        YaraScanResult result;
        try
        {
            result = YaraScanner.ScanBlocks(rules, blocks, options.Scan);
        }
        catch (YaraScanException e)
        {
            problems.Add("scan stopped: " + e.Message);
            return new GuestScanResult(pid, name, [], total, blocks.Count, problems, sw.Elapsed);
        }
        problems.AddRange(result.Warnings);
        var matches = new List<GuestRuleMatch>();
        foreach (var m in result.Matches)
        {
            var strings = new List<GuestStringMatch>();
            foreach (var s in m.Strings)
            {
                foreach (var hit in s.Matches)
                {
                    ulong address = unchecked((ulong)hit.Offset);
                    var region = blockRegions.FirstOrDefault(r => address >= r.Start && address < r.End);
                    strings.Add(new GuestStringMatch(address, region.Name ?? "?", region.Start, s.String.Id, hit.Data, hit.Length));
                }
            }
            matches.Add(new GuestRuleMatch(m.Rule, strings));
        }
        return new GuestScanResult(pid, name, matches, total, blocks.Count, problems, sw.Elapsed);
    }

    /// <summary>A region's bytes, assembled from its present pages (absent pages read as zeros).</summary>
    private static ReadOnlyMemory<byte> ReadRegion(VirtualMemory memory, IPhysicalMemory physical, ulong start, ulong end, GuestScanOptions options, out int present, out string? problem)
    {
        problem = null;
        int maxPages = (int)((end - start + PageSize - 1) / PageSize);
        var pages = memory.EnumerateMapped(start, end, maxPages + 1, options.MaxTablesPerRegion, out bool truncated);
        if (truncated)
            problem = "page-table walk stopped at its bound";
        present = pages.Count;
        if (pages.Count == 0)
            return ReadOnlyMemory<byte>.Empty;
        var buffer = new byte[end - start];
        foreach (var page in pages)
        {
            // Clip each (possibly large) page to the region.
            ulong from = Math.Max(page.VirtualAddress, start);
            ulong to = Math.Min(page.VirtualAddress + page.Size, end);
            if (to <= from)
                continue;
            ulong pa = page.PhysicalAddress + (from - page.VirtualAddress);
            var dest = buffer.AsSpan((int)(from - start), (int)(to - from));
            if (physical.ReadPartial(pa, dest) < dest.Length)
                problem ??= $"physical memory at 0x{pa:x} is not readable";
        }
        return buffer;
    }
}
