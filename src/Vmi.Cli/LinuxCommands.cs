using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Vmi.Linux;
using Vmi.Linux.Model;
using Vmi.Targets;

namespace Vmi.Cli;

/// <summary>`vmi ps`, `vmi pstree`, `vmi lsmod`, `vmi profile`: the Linux guest model on any --target.</summary>
internal static class LinuxCommands
{
    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase, WriteIndented = false };

    public static IEnumerable<Command> Create() => [Ps(), PsTree(), Lsmod(), Maps(), Syscalls(), Idt(), Profile(), Netstat(), Files()];

    private sealed record Common(Option<string> Target, Option<int> Vcpu, Option<string> SystemMap, Option<string> Btf, Option<bool> JsonOut);

    private static Common AddCommon(Command cmd)
    {
        var c = new Common(
            new Option<string>("--target") { Description = "What to introspect: " + TargetSpec.Syntax, Required = true },
            new Option<int>("--vcpu") { Description = "vCPU whose paging context is used to reach the kernel." },
            new Option<string>("--system-map") { Description = "Use this System.map instead of kallsyms from guest memory (the KASLR slide is applied)." },
            new Option<string>("--btf") { Description = "Take struct layouts from this file (raw BTF or a vmlinux with .BTF) instead of guest memory." },
            new Option<bool>("--json") { Description = "Print JSON." });
        cmd.Options.Add(c.Target);
        cmd.Options.Add(c.Vcpu);
        cmd.Options.Add(c.SystemMap);
        cmd.Options.Add(c.Btf);
        cmd.Options.Add(c.JsonOut);
        return c;
    }

    private static async Task<(ITarget Target, LinuxProfile Profile, LinuxKernel Kernel)> OpenAsync(ParseResult parse, Common c, CancellationToken ct)
    {
        ITarget target = await TargetFactory.OpenAsync(parse.GetValue(c.Target)!, ct).ConfigureAwait(false);
        try
        {
            VcpuRegisters regs = await target.GetRegistersAsync(parse.GetValue(c.Vcpu), ct).ConfigureAwait(false);
            LinuxProfile profile = LinuxProfile.Bootstrap(target.Memory, regs.Paging, parse.GetValue(c.SystemMap), parse.GetValue(c.Btf));
            return (target, profile, profile.CreateKernel(target.Memory, regs.Paging));
        }
        catch
        {
            await target.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private static int ReportIssues(IReadOnlyList<KernelWalkIssue> issues)
    {
        foreach (var i in issues)
            Console.Error.WriteLine("vmi: warning: " + i);
        return issues.Count == 0 ? CommandRunner.ExitOk : CommandRunner.ExitPartial;
    }


    /// <summary>
    /// A command that prints one kernel list: a table, or JSON with --json; warnings and exit code 3
    /// when the walk met corrupt memory.
    /// </summary>
    private static Command ListCommand<T>(string name, string description, Func<ParseResult, LinuxKernel, KernelList<T>> get,
        Func<T, object> toJson, string? header, Func<T, string?> toLine, params Option[] extra)
    {
        var cmd = new Command(name, description);
        var c = AddCommon(cmd);
        foreach (var o in extra)
            cmd.Options.Add(o);
        cmd.SetAction(async (parse, ct) =>
        {
            var (target, _, kernel) = await OpenAsync(parse, c, ct).ConfigureAwait(false);
            await using (target.ConfigureAwait(false))
            {
                var list = get(parse, kernel);
                if (parse.GetValue(c.JsonOut))
                {
                    Console.Out.WriteLine(JsonSerializer.Serialize(list.Items.Select(toJson), Json));
                }
                else
                {
                    var sb = new StringBuilder();
                    if (header is not null)
                        sb.Append(header).Append('\n');
                    foreach (T item in list.Items)
                    {
                        if (toLine(item) is string line)
                            sb.Append(line).Append('\n');
                    }
                    Console.Out.Write(sb.ToString());
                }
                return ReportIssues(list.Issues);
            }
        });
        return cmd;
    }

    private static LinuxProcess FindProcess(LinuxKernel kernel, int pid)
    {
        var procs = kernel.GetProcesses();
        return procs.Items.FirstOrDefault(x => x.Pid == pid)
            ?? throw new Vmi.Core.GuestMemoryException($"no process {pid} in the guest's task list ({procs.Items.Count} processes).");
    }

    private static Option<int> PidOption() => new("--pid") { Description = "Process id.", Required = true };

    private static Command Ps() => ListCommand("ps", "List the guest's processes from its kernel's task list.",
        (_, k) => k.GetProcesses() is var l ? l with { Items = l.Items.OrderBy(p => p.Pid).ToList() } : l,
        ToJson,
        FormattableString.Invariant($"{"PID",7} {"PPID",7} {"UID",6} {"STATE",6} {"COMM",-16} CMDLINE"),
        p => FormattableString.Invariant($"{p.Pid,7} {p.Ppid,7} {p.Uid,6} {p.State,6} {p.Comm,-16} {(p.IsKernelThread ? $"[{p.Name}]" : string.Join(' ', p.Cmdline))}"));

    private static Command Lsmod() => ListCommand("lsmod", "List the guest's loaded kernel modules from its module list.",
        (_, k) => k.GetModules(),
        m => new { name = m.Name, size = m.Size, refCount = m.RefCount, state = m.State, address = Hex(m.CoreBase), module = Hex(m.ModuleAddress) },
        FormattableString.Invariant($"{"Module",-24} {"Size",8} {"Used",5} {"State",-10} Address"),
        m => FormattableString.Invariant($"{m.Name,-24} {m.Size,8} {m.RefCount,5} {m.State,-10} 0x{m.CoreBase:x16}"));

    private static Command Maps()
    {
        var pid = PidOption();
        return ListCommand("maps", "Print a process's memory mappings from its kernel maple tree (like /proc/PID/maps).",
            (parse, k) => k.GetMappings(FindProcess(k, parse.GetValue(pid))),
            v => new
            {
                start = Hex(v.Start), end = Hex(v.End), perms = v.Permissions, offset = Hex(v.File == 0 ? 0 : v.PageOffset << 12),
                flags = Hex(v.Flags), path = v.Path, vma = Hex(v.Address),
            },
            null,
            v => FormattableString.Invariant($"{v.Start:x8}-{v.End:x8} {v.Permissions} {(v.File == 0 ? 0 : v.PageOffset << 12):x8} {v.Path}"),
            pid);
    }

    private static Command Files()
    {
        var pid = PidOption();
        return ListCommand("files", "List a process's open file descriptors from its kernel fd table (like ls -l /proc/PID/fd).",
            (parse, k) => k.GetOpenFiles(FindProcess(k, parse.GetValue(pid))),
            f => new { fd = f.Fd, path = f.Path, socket = f.IsSocket, inode = f.Inode, file = Hex(f.File) },
            null,
            f => FormattableString.Invariant($"{f.Fd,5} -> {f.Path ?? "?"}"),
            pid);
    }

    private static Command Syscalls() => ListCommand("syscalls", "Print the guest's system call table with the symbol each entry points into.",
        (_, k) => k.GetSyscallTable(),
        e => new { nr = e.Number, handler = Hex(e.Handler), symbol = e.Symbol, offset = e.SymbolOffset, inKernelText = e.InKernelText },
        null,
        e => FormattableString.Invariant($"{e.Number,4}  {Hex(e.Handler),-18}  {Where(e.Symbol, e.SymbolOffset, e.InKernelText)}"));

    private static Command Idt() => ListCommand("idt", "Print the guest's interrupt descriptor table (idt_table) with handler symbols.",
        (_, k) => k.GetIdt(),
        e => new
        {
            vector = e.Vector, present = e.Present, handler = Hex(e.Handler), selector = e.Selector, type = e.GateType, dpl = e.Dpl, ist = e.Ist,
            symbol = e.Symbol, offset = e.SymbolOffset, inKernelText = e.InKernelText,
        },
        null,
        e => e.Present
            ? FormattableString.Invariant($"{e.Vector,3}  {Hex(e.Handler),-18}  sel {e.Selector:x2} type {e.GateType:x} dpl {e.Dpl} ist {e.Ist}  {Where(e.Symbol, e.SymbolOffset, e.InKernelText)}")
            : null);

    private static Command Netstat() => ListCommand("netstat",
        "List the guest's TCP and UDP sockets with their owning processes, from the processes' open socket files (like netstat -tunap).",
        (_, k) => k.GetSockets() is var l
            ? l with { Items = l.Items.OrderBy(s => s.Protocol, StringComparer.Ordinal).ThenBy(s => s.LocalPort).ThenBy(s => s.Pid).ToList() }
            : l,
        s => new
        {
            proto = s.Protocol, localAddress = s.LocalAddress, localPort = s.LocalPort, remoteAddress = s.RemoteAddress, remotePort = s.RemotePort,
            state = s.State, inode = s.Inode, pid = s.Pid, comm = s.Comm, sock = Hex(s.SockAddress),
        },
        FormattableString.Invariant($"{"Proto",-6} {"Local Address",-28} {"Foreign Address",-28} {"State",-12} {"Inode",8} PID/Program name"),
        s =>
        {
            bool v6 = s.Protocol.EndsWith('6');
            string state = s.Protocol.StartsWith("udp", StringComparison.Ordinal) && s.State == "CLOSE" ? "" : s.State;
            return FormattableString.Invariant($"{s.Protocol,-6} {Endpoint(s.LocalAddress, s.LocalPort, v6),-28} {Endpoint(s.RemoteAddress, s.RemotePort, v6),-28} {state,-12} {s.Inode,8} {s.Pid}/{s.Comm}");
        });

    private static string Endpoint(string address, int port, bool v6) =>
        (v6 ? "[" + address + "]" : address) + ":" + (port == 0 ? "*" : port.ToString(CultureInfo.InvariantCulture));

    private static object ToJson(LinuxProcess p) => new
    {
        pid = p.Pid, ppid = p.Ppid, uid = p.Uid, gid = p.Gid, euid = p.Euid, comm = p.Comm, name = p.Name, state = p.State,
        startTimeNs = p.StartTimeNs, kernelThread = p.IsKernelThread, exe = p.ExePath, threads = p.Threads, cmdline = p.Cmdline, cmdlineError = p.CmdlineError,
        task = "0x" + p.TaskAddress.ToString("x", CultureInfo.InvariantCulture), pageTable = Hex(p.PageTablePhysical),
    };

    private static Command PsTree()
    {
        var cmd = new Command("pstree", "Show the guest's processes as a tree.");
        var c = AddCommon(cmd);
        cmd.SetAction(async (parse, ct) =>
        {
            var (target, _, kernel) = await OpenAsync(parse, c, ct).ConfigureAwait(false);
            await using (target.ConfigureAwait(false))
            {
                var list = kernel.GetProcesses();
                var byParent = list.Items.GroupBy(p => p.Ppid).ToDictionary(g => g.Key, g => g.OrderBy(p => p.Pid).ToList());
                var pids = list.Items.Select(p => p.Pid).ToHashSet();
                var sb = new StringBuilder();
                var printed = new HashSet<int>();
                void Print(LinuxProcess p, string indent)
                {
                    if (!printed.Add(p.Pid))
                        return; // a parent loop in corrupt memory: print each process once
                    sb.Append(indent).Append(CultureInfo.InvariantCulture, $"{p.Comm}({p.Pid})").Append('\n');
                    foreach (var child in byParent.GetValueOrDefault(p.Pid, []))
                        Print(child, indent + "  ");
                }
                if (parse.GetValue(c.JsonOut))
                {
                    object Node(LinuxProcess p) => printed.Add(p.Pid)
                        ? new { pid = p.Pid, comm = p.Comm, children = byParent.GetValueOrDefault(p.Pid, []).Select(Node).ToArray() }
                        : new { pid = p.Pid, comm = p.Comm, children = Array.Empty<object>() };
                    var roots = list.Items.Where(p => !pids.Contains(p.Ppid) || p.Ppid == p.Pid).OrderBy(p => p.Pid).Select(Node).ToArray();
                    Console.Out.WriteLine(JsonSerializer.Serialize(roots, Json));
                }
                else
                {
                    foreach (var root in list.Items.Where(p => !pids.Contains(p.Ppid) || p.Ppid == p.Pid).OrderBy(p => p.Pid))
                        Print(root, "");
                    Console.Out.Write(sb.ToString());
                }
                return ReportIssues(list.Issues);
            }
        });
        return cmd;
    }


    private static string Hex(ulong v) => "0x" + v.ToString("x", CultureInfo.InvariantCulture);

    private static string Where(string? symbol, ulong offset, bool inText) =>
        (symbol is null ? "?" : offset == 0 ? symbol : FormattableString.Invariant($"{symbol}+0x{offset:x}")) + (inText ? "" : "  [outside kernel text]");




    private static Command Profile()
    {
        var cmd = new Command("profile", "Derive and print the guest kernel's profile: location, KASLR slide, symbols, BTF.");
        var c = AddCommon(cmd);
        cmd.SetAction(async (parse, ct) =>
        {
            var (target, p, _) = await OpenAsync(parse, c, ct).ConfigureAwait(false);
            await using (target.ConfigureAwait(false))
            {
                var doc = new Dictionary<string, object>
                {
                    ["banner"] = p.Banner,
                    ["kernelVirtualBase"] = "0x" + p.Location.VirtualBase.ToString("x", CultureInfo.InvariantCulture),
                    ["kernelPhysicalBase"] = "0x" + p.Location.PhysicalBase.ToString("x", CultureInfo.InvariantCulture),
                    ["kaslrSlide"] = "0x" + p.Location.Slide.ToString("x", CultureInfo.InvariantCulture),
                    ["symbolSource"] = p.SymbolSource,
                    ["symbols"] = p.Symbols.Count,
                    ["btfAddress"] = "0x" + p.BtfAddress.ToString("x", CultureInfo.InvariantCulture),
                    ["btfBytes"] = p.BtfSize,
                    ["btfTypes"] = p.Types.TypeCount,
                    ["bootstrapMs"] = Math.Round(p.BootstrapTime.TotalMilliseconds, 1),
                    ["offsets"] = new Dictionary<string, int>
                    {
                        ["task_struct.tasks"] = p.Types.OffsetOf("task_struct", "tasks"),
                        ["task_struct.pid"] = p.Types.OffsetOf("task_struct", "pid"),
                        ["task_struct.comm"] = p.Types.OffsetOf("task_struct", "comm"),
                        ["task_struct.real_cred"] = p.Types.OffsetOf("task_struct", "real_cred"),
                        ["task_struct.mm"] = p.Types.OffsetOf("task_struct", "mm"),
                        ["mm_struct.pgd"] = p.Types.OffsetOf("mm_struct", "pgd"),
                        ["cred.uid"] = p.Types.OffsetOf("cred", "uid"),
                        ["module.list"] = p.Types.OffsetOf("module", "list"),
                        ["sizeof(task_struct)"] = p.Types.SizeOf("task_struct"),
                    },
                };
                if (parse.GetValue(c.JsonOut))
                {
                    Console.Out.WriteLine(JsonSerializer.Serialize(doc, Json));
                }
                else
                {
                    foreach (var (k, v) in doc)
                    {
                        if (v is Dictionary<string, int> d)
                        {
                            Console.Out.WriteLine($"{k}:");
                            foreach (var (n, o) in d)
                                Console.Out.WriteLine($"  {n,-24} {o}");
                        }
                        else
                        {
                            Console.Out.WriteLine($"{k,-20} {v}");
                        }
                    }
                }
                return CommandRunner.ExitOk;
            }
        });
        return cmd;
    }


}
