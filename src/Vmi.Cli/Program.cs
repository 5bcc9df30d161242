using System.CommandLine;
using Vmi.Cli;

// `vmi yara` takes yara's own arguments (-s, -d NAME=VALUE, combined flags …), so it bypasses the option parser.
if (args.Length > 0 && args[0] == "yara")
{
    using var stdout = new StreamWriter(Console.OpenStandardOutput(), new System.Text.UTF8Encoding(false), 1 << 16) { AutoFlush = false };
    int rc = Vmi.Signatures.Yara.YaraCli.Run(args[1..], stdout, Console.Error);
    stdout.Flush();
    return rc;
}

var root = new RootCommand("Vmi: agentless introspection and security monitoring of virtual machines.");
root.Subcommands.Add(LabCommands.Create());
root.Subcommands.Add(MemoryCommands.Create());
foreach (var c in MonitorCommands.Create())
    root.Subcommands.Add(c);
root.Subcommands.Add(SignatureCommands.YaraHelp());
root.Subcommands.Add(SignatureCommands.Scan());
root.Subcommands.Add(RulesCommands.Create());
root.Subcommands.Add(AuditCommands.Create());
foreach (var c in LinuxCommands.Create())
    root.Subcommands.Add(c);
return await CommandRunner.InvokeAsync(root, args).ConfigureAwait(false);
