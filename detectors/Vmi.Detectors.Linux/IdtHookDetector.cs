using System.Globalization;
using Vmi.Events;
using Vmi.Linux.Model;
using Vmi.Pipeline;

namespace Vmi.Detectors.Linux;

/// <summary>Options of <see cref="IdtHookDetector"/>.</summary>
public sealed record IdtHookOptions
{
    /// <summary>
    /// Also flag present gates whose handler, selector, gate type, DPL or IST changed since the first
    /// sweep, even when the handler stays in kernel text. Default true.
    /// </summary>
    public bool CompareWithBaseline { get; init; } = true;

    /// <summary>
    /// Accept handlers in init text (<c>_sinittext.._einittext</c>). Default true: Debian's 6.1 kernel
    /// leaves the reserved vectors 20–31 on their early handlers there.
    /// </summary>
    public bool AllowInitText { get; init; } = true;

    /// <summary>Name of the write hook on the IDT's page that triggers an immediate check. Default <c>idt</c>.</summary>
    public string Hook { get; init; } = "idt";

    /// <summary>Severity of the alerts. Default <see cref="Severity.Critical"/>.</summary>
    public Severity Severity { get; init; } = Severity.Critical;
}

/// <summary>
/// Every present gate of <c>idt_table</c> must have its handler in kernel code, and keep the handler
/// and attributes it had at the first sweep. Runs on every sweep and at once on a write to the IDT.
/// </summary>
public sealed class IdtHookDetector : IDetector
{
    public const string Id = "idt-hook";

    // Intel SDM vol. 3 table 6-1: exception mnemonics of vectors 0..31 ("" = reserved).
    private static readonly string[] ExceptionNames =
    [
        "#DE divide error", "#DB debug", "NMI", "#BP breakpoint", "#OF overflow", "#BR bound range", "#UD invalid opcode", "#NM device not available",
        "#DF double fault", "coprocessor segment overrun", "#TS invalid TSS", "#NP segment not present", "#SS stack fault", "#GP general protection", "#PF page fault", "",
        "#MF x87 error", "#AC alignment check", "#MC machine check", "#XM SIMD exception", "#VE virtualization exception", "#CP control protection", "", "",
        "", "", "", "", "#HV hypervisor injection", "#VC VMM communication", "#SX security exception", "",
    ];

    private readonly IdtHookOptions _options;
    private readonly RaisedKeys _raised = new();
    private IdtEntry?[]? _baseline;

    public IdtHookDetector(IdtHookOptions? options = null)
    {
        _options = options ?? new IdtHookOptions();
    }

    public DetectorInfo Info { get; } = new(
        Id, "Interrupt descriptor table hook",
        "Checks that every present IDT gate's handler is in kernel code and that no gate changed since the first sweep; "
        + "a rootkit redirects the page fault, breakpoint or int 0x80 gate to run its own code.",
        GuestOs.Linux, [AttackTechnique.Rootkit]);

    public bool Accepts(VmiEvent e) =>
        e is SweepTick || (e is MemoryAccess { Access: MemoryAccessKind.Write } m && string.Equals(m.Hook, _options.Hook, StringComparison.Ordinal));

    public ValueTask AnalyzeAsync(VmiEvent e, DetectorContext context)
    {
        ArgumentNullException.ThrowIfNull(e);
        ArgumentNullException.ThrowIfNull(context);
        if (context.Guest.Linux is LinuxKernel kernel)
            Check(kernel, e, context);
        return ValueTask.CompletedTask;
    }

    /// <summary>What vector <paramref name="vector"/> is for, for titles and evidence.</summary>
    public static string VectorName(int vector) => vector switch
    {
        >= 0 and < 32 when ExceptionNames[vector].Length > 0 => ExceptionNames[vector],
        >= 0 and < 32 => "reserved exception",
        0x80 => "int 0x80 (ia32 system call)",
        _ => "external interrupt / IPI",
    };

    private void Check(LinuxKernel kernel, VmiEvent trigger, DetectorContext context)
    {
        var classifier = AddressClassifier.Create(kernel);
        KernelList<IdtEntry> idt = kernel.GetIdt();
        foreach (KernelWalkIssue issue in idt.Issues)
        {
            context.Report("idt_table", "IDT is partially unreadable: " + issue.Problem, Severity.Medium,
                address: issue.Address, evidence: new Dictionary<string, string> { ["address"] = AddressClassifier.Hex(issue.Address) });
        }
        bool Allowed(ulong handler) => _options.AllowInitText ? classifier.IsKernelCode(handler) : classifier.IsKernelText(handler);
        if (_baseline is null)
        {
            _baseline = new IdtEntry?[256];
            foreach (IdtEntry g in idt.Items)
            {
                // A gate already hooked at the first sweep is no baseline: it is flagged as outside code instead.
                if (!g.Present || Allowed(g.Handler))
                    _baseline[g.Vector] = g;
            }
        }
        kernel.Symbols.TryGetAddress("idt_table", out ulong idtAddress);
        var write = trigger as MemoryAccess;
        foreach (IdtEntry gate in idt.Items)
        {
            IdtEntry? before = _baseline[gate.Vector];
            bool outside = gate.Present && !Allowed(gate.Handler);
            bool changed = _options.CompareWithBaseline && before is not null && gate.Present && !SameGate(before, gate);
            if (!outside && !changed)
                continue;

            AddressClass target = classifier.Classify(gate.Handler);
            ulong slot = idtAddress + (ulong)gate.Vector * 16;
            string vector = gate.Vector.ToString(CultureInfo.InvariantCulture);
            string problem = outside ? "handler outside kernel code" : "gate changed since the baseline";
            var evidence = new Dictionary<string, string>
            {
                ["vector"] = vector,
                ["vector_hex"] = AddressClassifier.Hex((ulong)gate.Vector),
                ["vector_name"] = VectorName(gate.Vector),
                ["handler"] = AddressClassifier.Hex(gate.Handler),
                ["points_to"] = target.Description,
                ["gate_address"] = AddressClassifier.Hex(slot),
                ["selector"] = AddressClassifier.Hex(gate.Selector),
                ["gate_type"] = gate.GateType.ToString(CultureInfo.InvariantCulture),
                ["dpl"] = gate.Dpl.ToString(CultureInfo.InvariantCulture),
                ["ist"] = gate.Ist.ToString(CultureInfo.InvariantCulture),
                ["condition"] = problem,
            };
            if (target.Module is not null)
                evidence["module"] = target.Module;
            if (before is { Present: true })
            {
                evidence["expected_handler"] = AddressClassifier.Hex(before.Handler);
                if (classifier.SymbolOf(before.Handler) is string es)
                    evidence["expected_symbol"] = es;
                if (before.Dpl != gate.Dpl)
                    evidence["expected_dpl"] = before.Dpl.ToString(CultureInfo.InvariantCulture);
                if (before.Ist != gate.Ist)
                    evidence["expected_ist"] = before.Ist.ToString(CultureInfo.InvariantCulture);
                if (before.Selector != gate.Selector)
                    evidence["expected_selector"] = AddressClassifier.Hex(before.Selector);
                if (before.GateType != gate.GateType)
                    evidence["expected_gate_type"] = before.GateType.ToString(CultureInfo.InvariantCulture);
            }
            DetectorEvidence.AddWriter(evidence, write, classifier);

            string subject = $"idt[{vector}]";
            string expectedText = before is { Present: true }
                ? $"{AddressClassifier.Hex(before.Handler)} ({evidence.GetValueOrDefault("expected_symbol", "?")}) dpl {before.Dpl} ist {before.Ist}"
                : "a handler in kernel code";
            context.Report(subject, problem, _options.Severity, expectedText,
                $"{AddressClassifier.Hex(gate.Handler)} ({target.Description}) dpl {gate.Dpl} ist {gate.Ist}", slot, evidence);

            string key = string.Create(CultureInfo.InvariantCulture, $"{Id}:{vector}:{AddressClassifier.Hex(gate.Handler)}:dpl{gate.Dpl}:ist{gate.Ist}");
            if (_raised.Hold(key))
            {
                context.Raise(key, $"IDT vector {vector} ({VectorName(gate.Vector)}) {problem}: {target.Description}", _options.Severity, evidence,
                    relatedEvents: DetectorEvidence.Related(trigger));
            }
        }
        if (idt.IsComplete)
            _raised.EndFullCheck();
        else
            _raised.EndPartialCheck();
    }

    private static bool SameGate(IdtEntry a, IdtEntry b) =>
        a.Handler == b.Handler && a.Selector == b.Selector && a.GateType == b.GateType && a.Dpl == b.Dpl && a.Ist == b.Ist && a.Present == b.Present;
}
