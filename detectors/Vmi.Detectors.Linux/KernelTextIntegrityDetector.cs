using System.Buffers.Binary;
using System.Globalization;
using Iced.Intel;
using Vmi.Events;
using Vmi.Linux.Model;
using Vmi.Memory;
using Vmi.Pipeline;

namespace Vmi.Detectors.Linux;

/// <summary>Options of <see cref="KernelTextIntegrityDetector"/>.</summary>
public sealed record KernelTextIntegrityOptions
{
    /// <summary>4 KiB pages of kernel text compared per sweep; the next sweep goes on where this one stopped. Default 4096 (16 MiB: all of a typical kernel).</summary>
    public int PagesPerSweep { get; init; } = 4096;

    /// <summary>Largest text baselined (the baseline is a full copy). Default 64 MiB; a larger <c>_stext.._etext</c> is checked up to this size and reported.</summary>
    public int MaxTextBytes { get; init; } = 64 << 20;

    /// <summary>Changed byte runs separated by fewer equal bytes than this are reported as one run. Default 8.</summary>
    public int MergeGap { get; init; } = 8;

    /// <summary>Changed runs reported per sweep at most (the rest are counted in one finding). Default 256.</summary>
    public int MaxRunsPerSweep { get; init; } = 256;

    /// <summary>Accept a change that is exactly a static key (jump label) site flipping between a nop and its jump. Default true.</summary>
    public bool AllowJumpLabelSites { get; init; } = true;

    /// <summary>
    /// Accept ftrace turning a function's 5-byte <c>__fentry__</c> nop into a call to ftrace's own code in
    /// kernel text (and back), and ftrace re-pointing its trampolines' dispatch calls (<c>ftrace_call</c>,
    /// <c>ftrace_regs_call</c>, <c>ftrace_graph_call</c>) within kernel text. Default true.
    /// </summary>
    public bool AllowFtraceSites { get; init; } = true;

    /// <summary>Name of the write hook on kernel text that triggers an immediate check of the written pages. Default <c>kernel-text</c>.</summary>
    public string Hook { get; init; } = "kernel-text";

    /// <summary>Severity of the alerts. Default <see cref="Severity.High"/>.</summary>
    public Severity Severity { get; init; } = Severity.High;
}

/// <summary>
/// Keeps a copy of kernel text (<c>_stext.._etext</c>) from the first sweep and, on later sweeps and on
/// writes to kernel text, reports every changed byte run with its symbol, old and new bytes. Changes
/// the kernel makes itself at run time are accepted: static key (jump label) sites flipping between a
/// nop and their jump, and ftrace's <c>__fentry__</c> sites.
/// </summary>
/// <remarks>
/// The baseline is a full copy of the text (10–16 MiB for a distribution kernel), not hashes: a diff
/// needs the old bytes, and comparing a page with its copy (vectorised <c>SequenceEqual</c>) costs no
/// more than hashing it. Work per sweep is bounded by <see cref="KernelTextIntegrityOptions.PagesPerSweep"/>.
/// </remarks>
public sealed class KernelTextIntegrityDetector : IDetector
{
    public const string Id = "kernel-text-integrity";
    private const int PageSize = 4096;
    /// <summary>Upper bound of jump_table entries read (a distribution kernel has ~30–60k).</summary>
    private const int MaxJumpEntries = 1 << 20;

    private readonly KernelTextIntegrityOptions _options;
    private TextRange _text;
    private byte[]? _baseline;
    private bool[] _baselineReadable = [];
    private int _cursor;
    /// <summary>Static key sites: code address → jump target, sorted by code address.</summary>
    private ulong[] _jumpCodes = [];
    private ulong[] _jumpTargets = [];
    /// <summary>Alert keys per page for the changes last seen there, so a persisting change alerts once.</summary>
    private readonly Dictionary<int, HashSet<string>> _raisedByPage = [];

    /// <exception cref="ArgumentOutOfRangeException">An option is out of its range.</exception>
    public KernelTextIntegrityDetector(KernelTextIntegrityOptions? options = null)
    {
        _options = options ?? new KernelTextIntegrityOptions();
        if (_options.PagesPerSweep < 1)
            throw new ArgumentOutOfRangeException(nameof(options), _options.PagesPerSweep, "PagesPerSweep must be at least 1");
        if (_options.MaxTextBytes < PageSize)
            throw new ArgumentOutOfRangeException(nameof(options), _options.MaxTextBytes, "MaxTextBytes must be at least one page");
        if (_options.MergeGap < 0 || _options.MaxRunsPerSweep < 1)
            throw new ArgumentOutOfRangeException(nameof(options), "MergeGap must be >= 0 and MaxRunsPerSweep >= 1");
    }

    public DetectorInfo Info { get; } = new(
        Id, "Kernel text integrity",
        "Compares kernel text (_stext.._etext) with its copy from the first sweep and reports every changed byte run "
        + "(inline hooks, patched checks) with its symbol and old and new bytes; static key and ftrace sites are accepted.",
        GuestOs.Linux, [AttackTechnique.Rootkit, AttackTechnique.ImpairDefenses])
    {
        TimeBudget = TimeSpan.FromSeconds(20),
    };

    public bool Accepts(VmiEvent e) =>
        e is SweepTick || (e is MemoryAccess { Access: MemoryAccessKind.Write } m && string.Equals(m.Hook, _options.Hook, StringComparison.Ordinal));

    /// <summary>Pages in the baseline (0 before the first sweep).</summary>
    public int BaselinePages => _baselineReadable.Length;

    /// <summary>Static key sites known (0 before the first sweep or without a jump table).</summary>
    public int JumpLabelSites => _jumpCodes.Length;

    public ValueTask AnalyzeAsync(VmiEvent e, DetectorContext context)
    {
        ArgumentNullException.ThrowIfNull(e);
        ArgumentNullException.ThrowIfNull(context);
        if (context.Guest.Linux is not LinuxKernel kernel)
            return ValueTask.CompletedTask;
        VirtualMemory memory = AddressClassifier.KernelMemory(kernel);
        if (_baseline is null)
        {
            TakeBaseline(kernel, memory, context);
            return ValueTask.CompletedTask;
        }
        int pages = _baselineReadable.Length;
        var write = e as MemoryAccess;
        var runs = new CheckBudget();
        if (write is { Gva: ulong gva })
        {
            // Only the pages the write touched, at once.
            ulong end = gva + (ulong)Math.Max(write.Size, 1);
            if (end > _text.Start && gva < _text.Start + (ulong)_baseline.Length)
            {
                int first = (int)((Math.Max(gva, _text.Start) - _text.Start) / PageSize);
                int last = (int)((Math.Min(end, _text.Start + (ulong)_baseline.Length) - 1 - _text.Start) / PageSize);
                for (int p = first; p <= last; p++)
                    CheckPage(kernel, memory, p, e, write, context, runs);
            }
        }
        else
        {
            int count = Math.Min(_options.PagesPerSweep, pages);
            for (int i = 0; i < count; i++)
            {
                context.Cancellation.ThrowIfCancellationRequested();
                CheckPage(kernel, memory, _cursor, e, write, context, runs);
                _cursor = (_cursor + 1) % pages;
            }
        }
        return ValueTask.CompletedTask;
    }

    private void TakeBaseline(LinuxKernel kernel, VirtualMemory memory, DetectorContext context)
    {
        _text = AddressClassifier.GetKernelText(kernel);
        ulong length = _text.Length;
        if (length > (ulong)_options.MaxTextBytes)
        {
            context.Report("kernel text", $"text is {length} bytes; only the first {_options.MaxTextBytes} are checked (MaxTextBytes)", Severity.Low,
                address: _text.Start);
            length = (ulong)_options.MaxTextBytes;
        }
        var baseline = new byte[length];
        int pages = (int)((length + PageSize - 1) / PageSize);
        var readable = new bool[pages];
        int unreadable = 0;
        for (int p = 0; p < pages; p++)
        {
            Span<byte> page = PageSpan(baseline, p);
            readable[p] = memory.TryRead(_text.Start + (ulong)p * PageSize, page);
            if (!readable[p])
                unreadable++;
        }
        if (unreadable > 0)
        {
            context.Report("kernel text", $"{unreadable} of {pages} text pages are unreadable and are not checked", Severity.Medium,
                address: _text.Start, evidence: new Dictionary<string, string> { ["unreadable_pages"] = unreadable.ToString(CultureInfo.InvariantCulture) });
        }
        _baseline = baseline;
        _baselineReadable = readable;
        _cursor = 0;
        if (_options.AllowJumpLabelSites)
            ReadJumpTable(kernel, memory, context);
    }

    private static Span<byte> PageSpan(byte[] text, int page)
    {
        int start = page * PageSize;
        return text.AsSpan(start, Math.Min(PageSize, text.Length - start));
    }

    private void CheckPage(LinuxKernel kernel, VirtualMemory memory, int page, VmiEvent trigger, MemoryAccess? write, DetectorContext context, CheckBudget runs)
    {
        if (!_baselineReadable[page])
            return;
        ReadOnlySpan<byte> old = PageSpan(_baseline!, page);
        Span<byte> now = stackalloc byte[old.Length];
        ulong pageAddress = _text.Start + (ulong)page * PageSize;
        VirtualReadResult r = memory.Read(pageAddress, now);
        var keys = new HashSet<string>(StringComparer.Ordinal);
        if (!r.IsComplete)
        {
            // Text that was readable at the baseline went away: unusual (remapped or unmapped), reported once per page.
            string key = $"{Id}:unreadable:{AddressClassifier.Hex(pageAddress)}";
            context.Report("kernel text " + AddressClassifier.Hex(pageAddress), "text page no longer readable", Severity.Medium, address: pageAddress);
            keys.Add(key);
            _raisedByPage[page] = keys;
            return;
        }
        if (old.SequenceEqual(now))
        {
            _raisedByPage.Remove(page);
            return;
        }
        _raisedByPage.TryGetValue(page, out HashSet<string>? before);
        int i = 0;
        while (i < old.Length)
        {
            if (old[i] == now[i])
            {
                i++;
                continue;
            }
            int start = i, end = i + 1;
            for (int j = i + 1; j < old.Length && j - end <= _options.MergeGap; j++)
            {
                if (old[j] != now[j])
                    end = j + 1;
            }
            i = end;
            ulong address = pageAddress + (ulong)start;
            int length = end - start;
            if (IsLegitimate(kernel, memory, address, length))
                continue;
            if (runs.Runs++ >= _options.MaxRunsPerSweep)
            {
                if (!runs.OverflowReported)
                {
                    context.Report("kernel text", $"more than {_options.MaxRunsPerSweep} changed runs in one check; the rest are not listed (MaxRunsPerSweep)",
                        _options.Severity, address: address);
                    runs.OverflowReported = true;
                }
                // Keep the keys already raised on this page: unlisted is not gone.
                if (before is not null)
                    keys.UnionWith(before);
                continue;
            }
            string? key = Report(kernel, address, old[start..end], now[start..end], trigger, write, context, before);
            if (key is not null)
                keys.Add(key);
        }
        _raisedByPage[page] = keys;
    }

    private string? Report(LinuxKernel kernel, ulong address, ReadOnlySpan<byte> oldBytes, ReadOnlySpan<byte> newBytes, VmiEvent trigger, MemoryAccess? write, DetectorContext context, HashSet<string>? before)
    {
        var (name, off) = kernel.ResolveAddress(address);
        string where = name is null ? AddressClassifier.Hex(address) : AddressClassifier.FormatSymbol(name, off);
        // Evidence shows at most 64 bytes of each side; the key hashes all of the new bytes.
        const int Shown = 64;
        string newHex = Convert.ToHexStringLower(newBytes[..Math.Min(Shown, newBytes.Length)]);
        var evidence = new Dictionary<string, string>
        {
            ["address"] = AddressClassifier.Hex(address),
            ["symbol"] = where,
            ["length"] = newBytes.Length.ToString(CultureInfo.InvariantCulture),
            ["old_bytes"] = Convert.ToHexStringLower(oldBytes[..Math.Min(Shown, oldBytes.Length)]),
            ["new_bytes"] = newHex,
        };
        if (newBytes.Length > Shown)
            evidence["truncated"] = $"bytes shown: first {Shown} of {newBytes.Length}";
        PrologueAnalysis disassembly = InlineHookDetector.Disassemble(newBytes, address, 8);
        if (disassembly.Instructions.Count > 0)
            evidence["new_instructions"] = disassembly.Text;
        if (write is not null)
            DetectorEvidence.AddWriter(evidence, write, AddressClassifier.Create(kernel));
        string subject = "kernel text " + where;
        context.Report(subject, $"{newBytes.Length} byte(s) changed since the baseline", _options.Severity,
            evidence["old_bytes"], newHex, address, evidence);

        string key = string.Create(CultureInfo.InvariantCulture, $"{Id}:{AddressClassifier.Hex(address)}:{newBytes.Length}:{Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(newBytes).AsSpan(0, 8))}");
        if (before is null || !before.Contains(key))
        {
            context.Raise(key, $"kernel text modified at {where} ({newBytes.Length} bytes)", _options.Severity, evidence,
                relatedEvents: DetectorEvidence.Related(trigger));
        }
        return key;
    }

    /// <summary>A change the kernel makes itself: a static key site or an ftrace site flipping.</summary>
    private bool IsLegitimate(LinuxKernel kernel, VirtualMemory memory, ulong address, int length)
    {
        if (_options.AllowJumpLabelSites && _jumpCodes.Length > 0)
        {
            // The site at or just before the run (x86 jump label sites are 2 or 5 bytes).
            int index = Array.BinarySearch(_jumpCodes, address);
            if (index < 0)
                index = ~index - 1;
            for (int k = index; k >= 0 && k > index - 4 && _jumpCodes[k] + 5 > address; k--)
            {
                if (IsSiteFlip(memory, _jumpCodes[k], address, length, _jumpTargets[k]))
                    return true;
            }
        }
        if (_options.AllowFtraceSites && IsFtraceFlip(kernel, memory, address, length))
            return true;
        return false;
    }

    /// <summary>Old and new bytes at <paramref name="site"/> are each one nop or one jmp to <paramref name="target"/>, of the same length, covering the run.</summary>
    private bool IsSiteFlip(VirtualMemory memory, ulong site, ulong address, int length, ulong target)
    {
        if (!TryOldAndNew(memory, site, 5, out byte[] old, out byte[] now))
            return false;
        var a = DecodeOne(old, site);
        var b = DecodeOne(now, site);
        if (a.Length != b.Length || a.Length is not (2 or 5) || address + (ulong)length > site + (ulong)a.Length)
            return false;
        bool NopOrJump(in Instruction i) => i.Mnemonic == Mnemonic.Nop
            || (i.Mnemonic == Mnemonic.Jmp && i.Op0Kind == OpKind.NearBranch64 && i.NearBranchTarget == target);
        return NopOrJump(a) && NopOrJump(b);
    }

    /// <summary>A 5-byte nop ↔ <c>call</c> into ftrace's code in kernel text at a function's entry (offset 0, or 4 after endbr64).</summary>
    private bool IsFtraceFlip(LinuxKernel kernel, VirtualMemory memory, ulong address, int length)
    {
        var (name, off) = kernel.ResolveAddress(address);
        if (name is null || off > 8)
            return false;
        // ftrace's own dispatch sites inside its trampolines: registering an ftrace user (a kprobe, a
        // tracer) points their call at the handler — kernel text to kernel text.
        if (name is "ftrace_call" or "ftrace_regs_call" or "ftrace_graph_call")
        {
            ulong site = address - off;
            if (address + (ulong)length > site + 5 || !TryOldAndNew(memory, site, 5, out byte[] o, out byte[] n))
                return false;
            bool IntoText(in Instruction i) => i.Length == 5 && i.Mnemonic is Mnemonic.Call or Mnemonic.Jmp
                && i.Op0Kind == OpKind.NearBranch64 && _text.Contains(i.NearBranchTarget);
            return IntoText(DecodeOne(o, site)) && IntoText(DecodeOne(n, site));
        }
        foreach (ulong siteOffset in (ReadOnlySpan<ulong>)[0, 4])
        {
            if (off < siteOffset)
                continue;
            ulong site = address - (off - siteOffset);
            if (address + (ulong)length > site + 5 || !TryOldAndNew(memory, site, 5, out byte[] old, out byte[] now))
                continue;
            var a = DecodeOne(old, site);
            var b = DecodeOne(now, site);
            if (a.Length != 5 || b.Length != 5)
                continue;
            bool IsFtraceCall(in Instruction i)
            {
                if (i.Mnemonic != Mnemonic.Call || i.Op0Kind != OpKind.NearBranch64 || !_text.Contains(i.NearBranchTarget))
                    return false;
                var (target, targetOffset) = kernel.ResolveAddress(i.NearBranchTarget);
                return targetOffset == 0 && target is not null && (target.StartsWith("ftrace_", StringComparison.Ordinal) || target == "__fentry__");
            }
            if ((a.Mnemonic == Mnemonic.Nop && IsFtraceCall(b)) || (IsFtraceCall(a) && b.Mnemonic == Mnemonic.Nop) || (IsFtraceCall(a) && IsFtraceCall(b)))
                return true;
        }
        return false;
    }

    private bool TryOldAndNew(VirtualMemory memory, ulong site, int length, out byte[] old, out byte[] now)
    {
        old = now = [];
        if (site < _text.Start || site + (ulong)length > _text.Start + (ulong)_baseline!.Length)
            return false;
        old = _baseline.AsSpan((int)(site - _text.Start), length).ToArray();
        now = new byte[length];
        return memory.TryRead(site, now);
    }

    private static Instruction DecodeOne(byte[] bytes, ulong ip)
    {
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(bytes), ip, DecoderOptions.None);
        decoder.Decode(out Instruction i);
        return i;
    }

    /// <summary>
    /// Static key sites from <c>__start___jump_table..__stop___jump_table</c>. x86-64 entries are relative
    /// (CONFIG_HAVE_ARCH_JUMP_LABEL_RELATIVE): s32 code, s32 target, s64 key, each offset from its own field.
    /// </summary>
    private void ReadJumpTable(LinuxKernel kernel, VirtualMemory memory, DetectorContext context)
    {
        if (!kernel.Symbols.TryGetAddress("__start___jump_table", out ulong start) || !kernel.Symbols.TryGetAddress("__stop___jump_table", out ulong stop) || stop <= start)
            return;
        const int EntrySize = 16;
        ulong count = Math.Min((stop - start) / EntrySize, MaxJumpEntries);
        var table = new byte[count * EntrySize];
        VirtualReadResult r = memory.Read(start, table);
        if (!r.IsComplete)
        {
            context.Report("__jump_table", $"static key table is unreadable from {AddressClassifier.Hex(r.FailedAddress)}: changes at later sites will be reported", Severity.Low,
                address: r.FailedAddress);
        }
        int entries = r.BytesRead / EntrySize;
        var sites = new List<(ulong Code, ulong Target)>(entries);
        for (int i = 0; i < entries; i++)
        {
            ulong entry = start + (ulong)i * EntrySize;
            int code = BinaryPrimitives.ReadInt32LittleEndian(table.AsSpan(i * EntrySize));
            int target = BinaryPrimitives.ReadInt32LittleEndian(table.AsSpan(i * EntrySize + 4));
            ulong codeAddress = entry + (ulong)(long)code;
            ulong targetAddress = entry + 4 + (ulong)(long)target;
            if (_text.Contains(codeAddress))
                sites.Add((codeAddress, targetAddress));
        }
        sites.Sort((x, y) => x.Code.CompareTo(y.Code));
        _jumpCodes = [.. sites.Select(s => s.Code)];
        _jumpTargets = [.. sites.Select(s => s.Target)];
    }

    /// <summary>Changed runs reported in one check, against <see cref="KernelTextIntegrityOptions.MaxRunsPerSweep"/>.</summary>
    private sealed class CheckBudget
    {
        public int Runs { get; set; }
        public bool OverflowReported { get; set; }
    }
}
