using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Vmi.Detectors.Av;
using Vmi.Linux.Model;
using Vmi.Linux;
using Vmi.Signatures.Yara;
using Vmi.Targets;

namespace Vmi.Cli;

/// <summary><c>vmi yara</c> (help only: Program.cs hands its arguments to <see cref="YaraCli"/>) and <c>vmi scan</c>.</summary>
internal static class SignatureCommands
{
    /// <summary>Exit code of <c>vmi scan</c> when a rule matched.</summary>
    public const int ExitMatches = 4;

    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    public static Command YaraHelp()
    {
        var cmd = new Command("yara", "Scan files and folders with YARA rules; same arguments and output as the yara command. " + YaraCli.Usage);
        cmd.SetAction(_ =>
        {
            Console.Error.WriteLine(YaraCli.Usage);
            return 1;
        });
        return cmd;
    }

    public static Command Scan()
    {
        var cmd = new Command("scan", "Scan a VM's memory with YARA rules: each process through its own page tables (every VMA), and kernel memory. Exit 4 when a rule matched.");
        var target = new Option<string>("--target") { Description = "What to scan: " + TargetSpec.Syntax, Required = true };
        var rules = new Option<string[]>("--rules") { Description = "YARA rule files (default: Vmi's built-in rules).", AllowMultipleArgumentsPerToken = true };
        var pid = new Option<int?>("--pid") { Description = "Scan only this process." };
        var noKernel = new Option<bool>("--no-kernel") { Description = "Do not scan kernel memory (text and modules)." };
        var strings = new Option<bool>("-s") { Description = "Print each matching string (address, region, data)." };
        var define = new Option<string[]>("-d") { Description = "External variable NAME=VALUE.", AllowMultipleArgumentsPerToken = false };
        var json = new Option<bool>("--json") { Description = "Print JSON." };
        var timeout = new Option<int>("--timeout") { Description = "Seconds one process's scan may take (default 30).", DefaultValueFactory = _ => 30 };
        foreach (Option o in new Option[] { target, rules, pid, noKernel, strings, define, json, timeout })
            cmd.Options.Add(o);
        cmd.SetAction(async (parse, ct) =>
        {
            var externals = new Dictionary<string, object>(StringComparer.Ordinal);
            foreach (string d in parse.GetValue(define) ?? [])
            {
                int eq = d.IndexOf('=', StringComparison.Ordinal);
                if (eq <= 0)
                    throw new ArgumentException($"bad external variable \"{d}\": use -d NAME=VALUE");
                externals[d[..eq]] = YaraCli.ParseExternal(d[(eq + 1)..]);
            }
            string[] files = parse.GetValue(rules) ?? [];
            YaraRules compiled;
            try
            {
                compiled = files.Length == 0 ? SignatureSet.BuiltIn.Rules : YaraRules.CompileFiles(files, new YaraCompileOptions { Externals = externals });
            }
            catch (YaraCompileException e)
            {
                Console.Error.WriteLine("vmi: " + e.Message);
                return 2;
            }
            ITarget t = await TargetFactory.OpenAsync(parse.GetValue(target)!, ct).ConfigureAwait(false);
            await using (t.ConfigureAwait(false))
            {
                VcpuRegisters regs = await t.GetRegistersAsync(0, ct).ConfigureAwait(false);
                LinuxProfile profile = LinuxProfile.Bootstrap(t.Memory, regs.Paging);
                LinuxKernel kernel = profile.CreateKernel(t.Memory, regs.Paging);
                var options = new GuestScanOptions { Scan = new YaraScanOptions { Timeout = TimeSpan.FromSeconds(parse.GetValue(timeout)), ComputeEntryPoint = false, Cancellation = ct } };
                var results = new List<GuestScanResult>();
                var processes = kernel.GetProcesses();
                int? only = parse.GetValue(pid);
                var selected = processes.Items.Where(p => p.Pid == p.Tgid && p.MmAddress != 0 && (only is null || p.Pid == only)).OrderBy(p => p.Pid).ToList();
                if (only is int wanted && selected.Count == 0)
                    throw new Vmi.Core.GuestMemoryException($"no user process {wanted} in the guest's task list ({processes.Items.Count} processes).");
                foreach (var p in selected)
                {
                    ct.ThrowIfCancellationRequested();
                    results.Add(GuestScanner.ScanProcess(kernel, p, compiled, options));
                }
                if (only is null && !parse.GetValue(noKernel))
                    results.Add(GuestScanner.ScanKernel(kernel, compiled, options));
                bool printStrings = parse.GetValue(strings);
                if (parse.GetValue(json))
                {
                    Console.Out.WriteLine(JsonSerializer.Serialize(results.Select(r => new
                    {
                        pid = r.Pid,
                        name = r.Name,
                        bytes = r.BytesScanned,
                        regions = r.Regions,
                        ms = Math.Round(r.Elapsed.TotalMilliseconds, 1),
                        problems = r.Problems,
                        matches = r.Matches.Select(m => new
                        {
                            rule = m.Rule.Name,
                            tags = m.Rule.Tags,
                            meta = m.Rule.Meta.ToDictionary(x => x.Key, x => x.Value),
                            strings = m.Strings.Select(s => new { id = s.StringId, address = Hex(s.Address), region = s.Region, offset = Hex(s.Offset), length = s.Length, data = Convert.ToHexStringLower(s.Data) }),
                        }),
                    }), Json));
                }
                else
                {
                    var sb = new StringBuilder();
                    foreach (var r in results)
                    {
                        foreach (var m in r.Matches)
                        {
                            sb.Append(m.Rule.Name).Append(' ').Append(r.Pid is int p ? string.Create(CultureInfo.InvariantCulture, $"pid {p} ({r.Name})") : "kernel").Append('\n');
                            if (!printStrings)
                                continue;
                            foreach (var s in m.Strings)
                            {
                                sb.Append(Hex(s.Address)).Append(':').Append(s.StringId).Append(": ");
                                YaraCli.AppendData(sb, s.Data, m.Rule.Strings.FirstOrDefault(x => x.Id == s.StringId)?.IsHex == true);
                                sb.Append("  [").Append(s.Region).Append(" +").Append(Hex(s.Offset)).Append("]\n");
                            }
                        }
                    }
                    Console.Out.Write(sb.ToString());
                    long bytes = results.Sum(r => r.BytesScanned);
                    double seconds = results.Sum(r => r.Elapsed.TotalSeconds);
                    Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"vmi: scanned {results.Count(r => r.Pid is not null)} processes{(results.Any(r => r.Pid is null) ? " and kernel memory" : "")}: {bytes / 1048576.0:F1} MiB in {seconds:F2} s, {results.Sum(r => r.Matches.Count)} rule matches"));
                }
                foreach (var r in results)
                {
                    foreach (string problem in r.Problems)
                        Console.Error.WriteLine($"vmi: warning: {(r.Pid is int p ? $"pid {p} ({r.Name})" : "kernel")}: {problem}");
                }
                if (results.Any(r => r.Matches.Count > 0))
                    return ExitMatches;
                return CommandRunner.ExitOk;
            }
        });
        return cmd;
    }

    private static string Hex(ulong v) => "0x" + v.ToString("x", CultureInfo.InvariantCulture);
}
