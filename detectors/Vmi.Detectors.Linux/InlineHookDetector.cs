using System.Globalization;
using Iced.Intel;
using Vmi.Events;
using Vmi.Linux.Model;
using Vmi.Pipeline;

namespace Vmi.Detectors.Linux;

/// <summary>Options of <see cref="InlineHookDetector"/>.</summary>
public sealed record InlineHookOptions
{
    /// <summary>Functions rootkits commonly hook (network and directory listings, file I/O, process listing).</summary>
    public static readonly IReadOnlyList<string> DefaultFunctions =
    [
        "tcp4_seq_show", "tcp6_seq_show", "udp4_seq_show", "udp6_seq_show", "packet_rcv", "tpacket_rcv",
        "filldir", "filldir64", "compat_filldir", "iterate_dir", "vfs_read", "vfs_write", "vfs_readdir",
        "do_sys_open", "do_sys_openat2", "proc_pid_readdir", "proc_root_readdir", "proc_pid_lookup",
        "__x64_sys_getdents", "__x64_sys_getdents64", "__x64_sys_kill", "__x64_sys_openat", "__x64_sys_read",
        "find_task_by_vpid", "m_show", "load_msg", "inet_ioctl", "commit_creds", "prepare_creds",
        "security_file_permission", "kallsyms_lookup_name", "audit_log_start",
    ];

    /// <summary>Bytes read and disassembled at each function's entry. Default 32.</summary>
    public int MaxBytes { get; init; } = 32;

    /// <summary>Instructions decoded at most (decoding also stops at ret and unconditional jumps). Default 8.</summary>
    public int MaxInstructions { get; init; } = 8;

    /// <summary>Functions checked by name (missing from the kernel's symbols: skipped). Default <see cref="DefaultFunctions"/>.</summary>
    public IReadOnlyList<string> Functions { get; init; } = DefaultFunctions;

    /// <summary>Also check every handler the system call table holds (those in kernel text). Default true.</summary>
    public bool IncludeSyscallHandlers { get; init; } = true;

    /// <summary>Upper bound on functions checked per sweep. Default 4096.</summary>
    public int MaxFunctions { get; init; } = 4096;

    /// <summary>Name of the write hook on kernel text that triggers an immediate check of the written functions. Default <c>kernel-text</c>.</summary>
    public string Hook { get; init; } = "kernel-text";

    /// <summary>Severity of the alerts. Default <see cref="Severity.Critical"/>.</summary>
    public Severity Severity { get; init; } = Severity.Critical;
}

/// <summary>One decoded instruction of a function's entry.</summary>
public sealed record PrologueInstruction(ulong Address, string Text, byte[] Bytes);

/// <summary>A control transfer found in a function's entry, with the target it computes to.</summary>
/// <param name="Address">Address of the instruction that transfers control.</param>
/// <param name="Target">Where it goes.</param>
/// <param name="Kind">The pattern: <c>jmp rel</c>, <c>call rel</c>, <c>jcc rel</c>, <c>mov imm; jmp reg</c>, <c>push imm; ret</c>, <c>jmp [rip+disp]</c> …</param>
public sealed record ControlTransfer(ulong Address, ulong Target, string Kind);

/// <summary>What <see cref="InlineHookDetector.Disassemble"/> found.</summary>
/// <param name="Instructions">Decoded instructions, in order.</param>
/// <param name="Transfers">Control transfers with a known target.</param>
/// <param name="BytesDecoded">Bytes the instructions cover.</param>
/// <param name="Problem">Why decoding stopped early (invalid instruction), or null.</param>
public sealed record PrologueAnalysis(IReadOnlyList<PrologueInstruction> Instructions, IReadOnlyList<ControlTransfer> Transfers, int BytesDecoded, string? Problem)
{
    /// <summary>The instructions as one line each (<c>0xffff…: jmp 0xffffffffc0001000</c>).</summary>
    public string Text => string.Join('\n', Instructions.Select(i => AddressClassifier.Hex(i.Address) + ": " + i.Text));
}

/// <summary>
/// Disassembles the first bytes of functions rootkits hook (and every syscall handler) and flags
/// control transfers that leave kernel text: <c>jmp/call rel32</c>, <c>mov reg, imm; jmp/call reg</c>,
/// <c>push imm32; ret</c>, <c>jmp [rip+disp]</c> through a pointer. Targets in kernel text are fine
/// (ftrace's <c>__fentry__</c> site, return thunks, static calls).
/// </summary>
public sealed class InlineHookDetector : IDetector
{
    public const string Id = "inline-hook";

    private readonly InlineHookOptions _options;
    private readonly RaisedKeys _raised = new();
    /// <summary>Functions of the last sweep (address → name), for write-hook checks.</summary>
    private Dictionary<ulong, string>? _functions;

    /// <exception cref="ArgumentOutOfRangeException">MaxBytes is not 1..4096 or MaxInstructions not 1..256.</exception>
    public InlineHookDetector(InlineHookOptions? options = null)
    {
        _options = options ?? new InlineHookOptions();
        if (_options.MaxBytes is < 1 or > 4096)
            throw new ArgumentOutOfRangeException(nameof(options), _options.MaxBytes, "MaxBytes must be between 1 and 4096");
        if (_options.MaxInstructions is < 1 or > 256)
            throw new ArgumentOutOfRangeException(nameof(options), _options.MaxInstructions, "MaxInstructions must be between 1 and 256");
        if (_options.MaxFunctions < 1)
            throw new ArgumentOutOfRangeException(nameof(options), _options.MaxFunctions, "MaxFunctions must be at least 1");
    }

    public DetectorInfo Info { get; } = new(
        Id, "Inline function hook",
        "Disassembles the entry of commonly hooked kernel functions and of every system call handler and flags jumps, calls "
        + "and push/ret sequences that leave kernel text (a patched prologue redirecting to rootkit code).",
        GuestOs.Linux, [AttackTechnique.Rootkit, AttackTechnique.HideArtifacts])
    {
        TimeBudget = TimeSpan.FromSeconds(10),
    };

    public bool Accepts(VmiEvent e) =>
        e is SweepTick || (e is MemoryAccess { Access: MemoryAccessKind.Write } m && string.Equals(m.Hook, _options.Hook, StringComparison.Ordinal));

    public ValueTask AnalyzeAsync(VmiEvent e, DetectorContext context)
    {
        ArgumentNullException.ThrowIfNull(e);
        ArgumentNullException.ThrowIfNull(context);
        if (context.Guest.Linux is not LinuxKernel kernel)
            return ValueTask.CompletedTask;
        var classifier = AddressClassifier.Create(kernel);
        Vmi.Memory.VirtualMemory memory = AddressClassifier.KernelMemory(kernel);
        var write = e as MemoryAccess;
        if (write is { Gva: ulong gva } && _functions is not null)
        {
            // Only the functions the write overlaps: [gva, gva+size) against [f, f+MaxBytes).
            ulong end = gva + (ulong)Math.Max(write.Size, 1);
            var hit = _functions.Where(f => f.Key < end && gva < f.Key + (ulong)_options.MaxBytes).ToList();
            foreach (var (address, name) in hit)
                CheckFunction(memory, classifier, address, name, e, write, context);
            _raised.EndPartialCheck();
        }
        else
        {
            _functions = CollectFunctions(kernel, classifier, context);
            foreach (var (address, name) in _functions)
            {
                context.Cancellation.ThrowIfCancellationRequested();
                CheckFunction(memory, classifier, address, name, e, write, context);
            }
            _raised.EndFullCheck();
        }
        return ValueTask.CompletedTask;
    }

    private Dictionary<ulong, string> CollectFunctions(LinuxKernel kernel, AddressClassifier classifier, DetectorContext context)
    {
        var functions = new Dictionary<ulong, string>();
        foreach (string name in _options.Functions)
        {
            if (functions.Count >= _options.MaxFunctions)
                break;
            if (kernel.Symbols.TryGetAddress(name, out ulong a) && classifier.IsKernelText(a))
                functions.TryAdd(a, name);
        }
        if (_options.IncludeSyscallHandlers && kernel.Symbols.TryGetAddress("sys_call_table", out _))
        {
            KernelList<SyscallEntry> table = kernel.GetSyscallTable();
            foreach (SyscallEntry entry in table.Items)
            {
                if (functions.Count >= _options.MaxFunctions)
                    break;
                // Entries outside text are the syscall-hook detector's finding; here only real functions' code is read.
                if (classifier.IsKernelText(entry.Handler))
                    functions.TryAdd(entry.Handler, entry.Symbol is null ? AddressClassifier.Hex(entry.Handler) : AddressClassifier.FormatSymbol(entry.Symbol, entry.SymbolOffset));
            }
        }
        if (functions.Count >= _options.MaxFunctions)
        {
            context.Report("inline-hook functions", $"only the first {_options.MaxFunctions} functions are checked (MaxFunctions)", Severity.Info);
        }
        return functions;
    }

    private void CheckFunction(Vmi.Memory.VirtualMemory memory, AddressClassifier classifier, ulong address, string name, VmiEvent trigger, MemoryAccess? write, DetectorContext context)
    {
        var code = new byte[_options.MaxBytes];
        int read = memory.Read(address, code).BytesRead;
        if (read == 0)
        {
            context.Report(name, "function entry is unreadable", Severity.Low, address: address,
                evidence: new Dictionary<string, string> { ["function"] = name, ["address"] = AddressClassifier.Hex(address) });
            return;
        }
        PrologueAnalysis analysis = Disassemble(code.AsSpan(0, read), address, _options.MaxInstructions,
            readPointer: p => memory.TryReadUInt64(p, out ulong v) ? v : null,
            symbol: a => classifier.IsKernelCode(a) ? classifier.SymbolOf(a) : null);
        foreach (ControlTransfer t in analysis.Transfers)
        {
            if (classifier.IsKernelText(t.Target))
                continue;
            AddressClass target = classifier.Classify(t.Target);
            var evidence = new Dictionary<string, string>
            {
                ["function"] = name,
                ["address"] = AddressClassifier.Hex(address),
                ["instruction_address"] = AddressClassifier.Hex(t.Address),
                ["pattern"] = t.Kind,
                ["target"] = AddressClassifier.Hex(t.Target),
                ["points_to"] = target.Description,
                ["instructions"] = analysis.Text,
                ["bytes"] = Convert.ToHexStringLower(code.AsSpan(0, Math.Max(analysis.BytesDecoded, 1))),
            };
            if (target.Module is not null)
                evidence["module"] = target.Module;
            DetectorEvidence.AddWriter(evidence, write, classifier);
            context.Report(name, $"entry transfers control outside kernel text ({t.Kind})", _options.Severity, "no transfer out of kernel text",
                $"{t.Kind} to {AddressClassifier.Hex(t.Target)} ({target.Description})", address, evidence);
            string key = $"{Id}:{name}:{AddressClassifier.Hex(t.Target)}";
            if (_raised.Hold(key))
            {
                context.Raise(key, $"{name} is hooked: {t.Kind} to {target.Description}", _options.Severity, evidence,
                    relatedEvents: DetectorEvidence.Related(trigger));
            }
        }
    }

    /// <summary>
    /// Decodes up to <paramref name="maxInstructions"/> 64-bit instructions of <paramref name="code"/>
    /// (stopping at ret, an unconditional jump, int3/ud2 or an invalid instruction) and computes the
    /// targets of its control transfers, following immediates loaded into registers and pushed on the stack.
    /// </summary>
    /// <param name="code">The bytes at <paramref name="address"/>.</param>
    /// <param name="address">Where the bytes are (RIP of the first instruction).</param>
    /// <param name="maxInstructions">Instructions decoded at most.</param>
    /// <param name="readPointer">Reads a 64-bit pointer from guest memory, for <c>jmp [rip+disp]</c>; null: not followed.</param>
    /// <param name="symbol">Names an address (<c>name+0x10</c>) for the instruction text and to see retpoline thunks; null: none.</param>
    public static PrologueAnalysis Disassemble(ReadOnlySpan<byte> code, ulong address, int maxInstructions,
        Func<ulong, ulong?>? readPointer = null, Func<ulong, string?>? symbol = null)
    {
        byte[] bytes = code.ToArray();
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(bytes), address, DecoderOptions.None);
        var formatter = new IntelFormatter(symbol is null ? null : new Resolver(symbol));
        formatter.Options.HexPrefix = "0x";
        formatter.Options.HexSuffix = null;
        formatter.Options.UppercaseHex = false;
        formatter.Options.SpaceAfterOperandSeparator = true;
        var output = new StringOutput();
        var instructions = new List<PrologueInstruction>();
        var transfers = new List<ControlTransfer>();
        // Immediates known to be in registers, and the values pushed (null: unknown) for push/ret.
        var registers = new Dictionary<Register, ulong>();
        var stack = new List<ulong?>();
        int decoded = 0;
        string? problem = null;
        while (instructions.Count < maxInstructions && decoded < bytes.Length)
        {
            decoder.Decode(out Instruction ins);
            if (ins.IsInvalid)
            {
                problem = decoder.LastError == DecoderError.NoMoreBytes ? null : $"invalid instruction at {AddressClassifier.Hex(ins.IP)}";
                break;
            }
            formatter.Format(ins, output);
            instructions.Add(new PrologueInstruction(ins.IP, output.ToStringAndReset(), bytes.AsSpan(decoded, ins.Length).ToArray()));
            decoded += ins.Length;

            bool stop = false;
            switch (ins.FlowControl)
            {
                case FlowControl.UnconditionalBranch or FlowControl.ConditionalBranch or FlowControl.Call when IsNearBranch(ins.Op0Kind):
                {
                    string kind = ins.FlowControl switch
                    {
                        FlowControl.UnconditionalBranch => "jmp rel",
                        FlowControl.Call => "call rel",
                        _ => "jcc rel",
                    };
                    ulong target = ins.NearBranchTarget;
                    // A retpoline thunk (__x86_indirect_thunk_rax) is "jmp/call rax" in disguise.
                    if (symbol?.Invoke(target) is string thunk && ThunkRegister(thunk) is Register thunkReg)
                    {
                        transfers.Add(new ControlTransfer(ins.IP, target, kind));
                        if (registers.TryGetValue(thunkReg, out ulong via))
                            transfers.Add(new ControlTransfer(ins.IP, via, ins.FlowControl == FlowControl.Call ? "mov imm; call reg (thunk)" : "mov imm; jmp reg (thunk)"));
                    }
                    else
                    {
                        transfers.Add(new ControlTransfer(ins.IP, target, kind));
                    }
                    stop = ins.FlowControl == FlowControl.UnconditionalBranch;
                    break;
                }
                case FlowControl.IndirectBranch or FlowControl.IndirectCall:
                {
                    string verb = ins.FlowControl == FlowControl.IndirectCall ? "call" : "jmp";
                    if (ins.Op0Kind == OpKind.Register && registers.TryGetValue(ins.Op0Register.GetFullRegister(), out ulong target))
                        transfers.Add(new ControlTransfer(ins.IP, target, $"mov imm; {verb} reg"));
                    else if (ins.Op0Kind == OpKind.Memory && ins.IsIPRelativeMemoryOperand && readPointer?.Invoke(ins.IPRelativeMemoryAddress) is ulong pointer)
                        transfers.Add(new ControlTransfer(ins.IP, pointer, $"{verb} [rip+disp]"));
                    stop = ins.FlowControl == FlowControl.IndirectBranch;
                    break;
                }
                case FlowControl.Return:
                    if (stack.Count > 0 && stack[^1] is ulong returnTo)
                        transfers.Add(new ControlTransfer(ins.IP, returnTo, "push imm; ret"));
                    stop = true;
                    break;
                case FlowControl.Interrupt or FlowControl.Exception:
                    stop = true;
                    break;
                default:
                    Track(ins, registers, stack);
                    break;
            }
            if (stop)
                break;
        }
        return new PrologueAnalysis(instructions, transfers, decoded, problem);
    }

    private static bool IsNearBranch(OpKind kind) => kind is OpKind.NearBranch64 or OpKind.NearBranch32 or OpKind.NearBranch16;

    /// <summary>Follows immediates through registers and pushes (anything else writing a register forgets it).</summary>
    private static void Track(in Instruction ins, Dictionary<Register, ulong> registers, List<ulong?> stack)
    {
        switch (ins.Code)
        {
            case Code.Mov_r64_imm64:
            case Code.Mov_rm64_imm32 when ins.Op0Kind == OpKind.Register:
            case Code.Mov_r32_imm32:
                // imm32 → r64 is sign-extended (GetImmediate does it); imm32 → r32 zero-extends the full register.
                registers[ins.Op0Register.GetFullRegister()] = ins.Code == Code.Mov_r32_imm32 ? (uint)ins.GetImmediate(1) : ins.GetImmediate(1);
                return;
            case Code.Pushq_imm32 or Code.Pushq_imm8:
                stack.Add(ins.GetImmediate(0));
                return;
            case Code.Push_r64:
                stack.Add(registers.TryGetValue(ins.Op0Register, out ulong v) ? v : null);
                return;
            case Code.Pop_r64:
                if (stack.Count > 0)
                    stack.RemoveAt(stack.Count - 1);
                registers.Remove(ins.Op0Register);
                return;
        }
        if (ins.Mnemonic is Mnemonic.Push)
        {
            stack.Add(null);
            return;
        }
        if (ins.OpCount > 0 && ins.Op0Kind == OpKind.Register)
            registers.Remove(ins.Op0Register.GetFullRegister());
    }

    /// <summary>The register of <c>__x86_indirect_thunk_rax</c>-style retpoline thunks, or null.</summary>
    private static Register? ThunkRegister(string symbol)
    {
        const string Prefix = "__x86_indirect_thunk_";
        if (!symbol.StartsWith(Prefix, StringComparison.Ordinal) || symbol.Contains('+', StringComparison.Ordinal))
            return null;
        return Enum.TryParse(symbol[Prefix.Length..], ignoreCase: true, out Register r) && r.IsGPR64() ? r : null;
    }

    /// <summary>Formats branch targets as kernel symbols.</summary>
    private sealed class Resolver(Func<ulong, string?> symbol) : ISymbolResolver
    {
        public bool TryGetSymbol(in Instruction instruction, int operand, int instructionOperand, ulong address, int addressSize, out SymbolResult result)
        {
            if (symbol(address) is string name)
            {
                result = new SymbolResult(address, name + " (" + AddressClassifier.Hex(address) + ")");
                return true;
            }
            result = default;
            return false;
        }
    }
}
