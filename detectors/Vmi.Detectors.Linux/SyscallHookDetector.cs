using System.Globalization;
using System.Text;
using Vmi.Events;
using Vmi.Linux.Model;
using Vmi.Pipeline;

namespace Vmi.Detectors.Linux;

/// <summary>Options of <see cref="SyscallHookDetector"/>.</summary>
public sealed record SyscallHookOptions
{
    /// <summary>
    /// Also flag entries that changed since the first sweep, even when they still point into kernel
    /// text (a rootkit redirecting <c>kill</c> to another kernel function). Default true.
    /// </summary>
    public bool CompareWithBaseline { get; init; } = true;

    /// <summary>Name of the write hook on the table's page that triggers an immediate check. Default <c>syscall-table</c>.</summary>
    public string Hook { get; init; } = "syscall-table";

    /// <summary>Severity of the alerts. Default <see cref="Severity.Critical"/>.</summary>
    public Severity Severity { get; init; } = Severity.Critical;
}

/// <summary>
/// Every <c>sys_call_table</c> entry must point into kernel text, and stay what it was at the first
/// sweep (the baseline). Runs on every sweep and at once on a write to the table's page.
/// </summary>
public sealed class SyscallHookDetector : IDetector
{
    public const string Id = "syscall-hook";

    private readonly SyscallHookOptions _options;
    private readonly RaisedKeys _raised = new();
    /// <summary>Handler per number as first seen; 0 where unknown (the entry already pointed outside text).</summary>
    private ulong[]? _baseline;

    public SyscallHookDetector(SyscallHookOptions? options = null)
    {
        _options = options ?? new SyscallHookOptions();
    }

    public DetectorInfo Info { get; } = new(
        Id, "System call table hook",
        "Checks that every sys_call_table entry points into kernel text and has not changed since the first sweep; "
        + "a rootkit (Diamorphine, Reptile …) replaces entries to hide files, processes and itself.",
        GuestOs.Linux, [AttackTechnique.Rootkit, AttackTechnique.HideArtifacts]);

    public bool Accepts(VmiEvent e) =>
        e is SweepTick || (e is MemoryAccess { Access: MemoryAccessKind.Write } m && string.Equals(m.Hook, _options.Hook, StringComparison.Ordinal));

    public ValueTask AnalyzeAsync(VmiEvent e, DetectorContext context)
    {
        ArgumentNullException.ThrowIfNull(e);
        ArgumentNullException.ThrowIfNull(context);
        // A replay without a live guest has nothing to check.
        if (context.Guest.Linux is LinuxKernel kernel)
            Check(kernel, e, context);
        return ValueTask.CompletedTask;
    }

    private void Check(LinuxKernel kernel, VmiEvent trigger, DetectorContext context)
    {
        var classifier = AddressClassifier.Create(kernel);
        KernelList<SyscallEntry> table = kernel.GetSyscallTable();
        foreach (KernelWalkIssue issue in table.Issues)
        {
            context.Report("sys_call_table", "table is partially unreadable: " + issue.Problem, Severity.Medium,
                address: issue.Address, evidence: new Dictionary<string, string> { ["address"] = AddressClassifier.Hex(issue.Address) });
        }
        if (_baseline is null)
        {
            _baseline = new ulong[table.Items.Count];
            foreach (SyscallEntry entry in table.Items)
                _baseline[entry.Number] = classifier.IsKernelText(entry.Handler) ? entry.Handler : 0;
        }
        kernel.Symbols.TryGetAddress("sys_call_table", out ulong tableAddress);
        SyscallNames? names = null;
        var write = trigger as MemoryAccess;
        foreach (SyscallEntry entry in table.Items)
        {
            ulong expected = entry.Number < _baseline.Length ? _baseline[entry.Number] : 0;
            bool outside = !classifier.IsKernelText(entry.Handler);
            bool changed = _options.CompareWithBaseline && expected != 0 && entry.Handler != expected;
            if (!outside && !changed)
                continue;

            // The syscall's identity: the baseline handler's symbol, else the kernel's own
            // syscalls_metadata (built at boot from the then-clean table), else unknown.
            string? syscall = expected != 0 ? kernel.ResolveAddress(expected).Name : null;
            if (syscall is null)
            {
                names ??= new SyscallNames(kernel);
                if (names.TryGet(entry.Number, out string? metaName))
                {
                    // "sys_kill" → the x86-64 wrapper __x64_sys_kill the table holds.
                    string wrapper = "__x64_" + metaName;
                    if (kernel.Symbols.TryGetAddress(wrapper, out ulong wrapperAddress))
                    {
                        syscall = wrapper;
                        if (expected == 0 && classifier.IsKernelText(wrapperAddress))
                            expected = wrapperAddress;
                    }
                    else
                    {
                        syscall = metaName;
                    }
                }
            }

            AddressClass target = classifier.Classify(entry.Handler);
            ulong slot = tableAddress + (ulong)entry.Number * 8;
            string number = entry.Number.ToString(CultureInfo.InvariantCulture);
            string problem = outside ? "points outside kernel text" : "changed since the baseline";
            var evidence = new Dictionary<string, string>
            {
                ["number"] = number,
                ["syscall"] = syscall ?? "unknown",
                ["handler"] = AddressClassifier.Hex(entry.Handler),
                ["points_to"] = target.Description,
                ["entry_address"] = AddressClassifier.Hex(slot),
                ["condition"] = problem,
            };
            if (entry.Symbol is not null && !outside)
                evidence["handler_symbol"] = AddressClassifier.FormatSymbol(entry.Symbol, entry.SymbolOffset);
            if (target.Module is not null)
                evidence["module"] = target.Module;
            if (expected != 0)
            {
                evidence["expected_handler"] = AddressClassifier.Hex(expected);
                if (classifier.SymbolOf(expected) is string es)
                    evidence["expected_symbol"] = es;
            }
            DetectorEvidence.AddWriter(evidence, write, classifier);

            string subject = $"sys_call_table[{number}]";
            string expectedText = expected != 0 ? $"{AddressClassifier.Hex(expected)} ({evidence.GetValueOrDefault("expected_symbol", "?")})" : "a handler in kernel text";
            context.Report(subject, problem, _options.Severity, expectedText, $"{AddressClassifier.Hex(entry.Handler)} ({target.Description})", slot, evidence);

            string key = $"{Id}:{number}:{AddressClassifier.Hex(entry.Handler)}";
            if (_raised.Hold(key))
            {
                string name = syscall is null ? "" : $" ({ShortName(syscall)})";
                context.Raise(key, $"sys_call_table[{number}]{name} {problem}: {target.Description}", _options.Severity, evidence,
                    relatedEvents: DetectorEvidence.Related(trigger));
            }
        }
        if (table.IsComplete)
            _raised.EndFullCheck();
        else
            _raised.EndPartialCheck();
    }

    /// <summary><c>__x64_sys_kill</c> → <c>kill</c>, for titles.</summary>
    internal static string ShortName(string symbol)
    {
        string s = symbol.StartsWith("__x64_", StringComparison.Ordinal) ? symbol[6..] : symbol;
        return s.StartsWith("sys_", StringComparison.Ordinal) ? s[4..] : s;
    }

    /// <summary>
    /// Syscall names by number from the kernel's <c>syscalls_metadata</c> array (CONFIG_FTRACE_SYSCALLS),
    /// which the kernel filled at boot from the then-unhooked table: names for entries hooked before the
    /// first sweep. Bounded reads; absent or unreadable → no name.
    /// </summary>
    private sealed class SyscallNames
    {
        private readonly Vmi.Memory.VirtualMemory _memory;
        private readonly ulong _array;
        private readonly int _nameOffset;

        public SyscallNames(LinuxKernel kernel)
        {
            _memory = AddressClassifier.KernelMemory(kernel);
            if (kernel.Symbols.TryGetAddress("syscalls_metadata", out ulong pointer) && _memory.TryReadUInt64(pointer, out ulong array))
                _array = array;
            _nameOffset = kernel.Types.TryOffsetOf("syscall_metadata", "name", out int o) ? o : 0;
        }

        public bool TryGet(int number, out string? name)
        {
            name = null;
            if (_array == 0 || number < 0 || number >= LinuxKernel.MaxSyscalls)
                return false;
            if (!_memory.TryReadUInt64(_array + (ulong)number * 8, out ulong meta) || meta == 0
                || !_memory.TryReadUInt64(meta + (ulong)_nameOffset, out ulong namePointer) || namePointer == 0)
                return false;
            Span<byte> buffer = stackalloc byte[64];
            int n = _memory.Read(namePointer, buffer).BytesRead;
            int nul = buffer[..n].IndexOf((byte)0);
            if (nul <= 0)
                return false;
            string s = Encoding.ASCII.GetString(buffer[..nul]);
            // Only a plausible identifier: the metadata is guest memory.
            foreach (char c in s)
            {
                if (!char.IsAsciiLetterOrDigit(c) && c != '_')
                    return false;
            }
            name = s;
            return true;
        }
    }
}
