using Vmi.Linux.Model;
using Vmi.Targets.Hooks;

namespace Vmi.Monitoring;

/// <summary>The hooks of <see cref="HookOptions"/> resolved to addresses of one kernel.</summary>
public sealed record HookPlan(IReadOnlyList<HookRequest> Requests, IReadOnlyList<string> Problems)
{
    public const string SyscallTable = "syscall-table";
    public const string Idt = "idt";
    public const string KernelText = "kernel-text";
    public const string ProcessCreate = "process-create";
    public const string Exec = "exec";
    public const string ModuleLoad = "module-load";

    // The functions the breakpoints go on, and why those: each has the object of interest in rdi.
    public const string ProcessCreateFunction = "wake_up_new_task"; // (struct task_struct *p): the child, about to run
    public const string ExecFunction = "setup_new_exec";            // (struct linux_binprm *bprm): past the point of no return
    public const string ModuleLoadFunction = "do_init_module";      // (struct module *mod): before the module's init runs

    /// <summary>Breakpoints where user memory can become executable: an mprotect changing a VMA's flags, and a new mapping.</summary>
    public const string ExecutableMemory = "exec-memory";
    public static readonly IReadOnlyList<string> ExecutableMemoryFunctions = ["mprotect_fixup", "mmap_region"];

    private const ulong PageSize = 4096;

    /// <summary>Resolves the options against the kernel's symbols; what cannot be resolved is a problem, not an error.</summary>
    public static HookPlan Resolve(LinuxKernel kernel, HookOptions options)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        ArgumentNullException.ThrowIfNull(options);
        var requests = new List<HookRequest>();
        var problems = new List<string>();
        if (options.SyscallTable)
        {
            if (kernel.Symbols.TryGetAddress("sys_call_table", out ulong table))
            {
                int entries = kernel.GetSyscallTable().Items.Count;
                if (entries > 0)
                    requests.Add(new HookRequest(SyscallTable, HookKind.Write, table, (ulong)entries * 8));
                else
                    problems.Add("sys_call_table is unreadable: no syscall-table hook");
            }
            else
            {
                problems.Add("no sys_call_table symbol: no syscall-table hook");
            }
        }
        if (options.Idt)
        {
            if (kernel.Symbols.TryGetAddress("idt_table", out ulong idt))
                requests.Add(new HookRequest(Idt, HookKind.Write, idt, 256 * 16));
            else
                problems.Add("no idt_table symbol: no idt hook");
        }
        var pages = new SortedSet<ulong>();
        foreach (string f in options.KernelTextFunctions)
        {
            if (kernel.Symbols.TryGetAddress(f, out ulong a))
                pages.Add(a & ~(PageSize - 1));
            else
                problems.Add($"no symbol {f}: its text page is not hooked");
        }
        foreach (ulong page in pages)
            requests.Add(new HookRequest(KernelText, HookKind.Write, page, PageSize));
        AddBreakpoint(options.ProcessCreate, ProcessCreate, ProcessCreateFunction);
        AddBreakpoint(options.Exec, Exec, ExecFunction);
        AddBreakpoint(options.ModuleLoad, ModuleLoad, ModuleLoadFunction);
        foreach (string f in ExecutableMemoryFunctions)
            AddBreakpoint(options.ExecutableMemory, ExecutableMemory, f);
        return new HookPlan(requests, problems);

        void AddBreakpoint(bool enabled, string name, string function)
        {
            if (!enabled)
                return;
            if (kernel.Symbols.TryGetAddress(function, out ulong a))
                requests.Add(new HookRequest(name, HookKind.Execute, a, 1));
            else
                problems.Add($"no symbol {function}: no {name} breakpoint");
        }
    }
}
