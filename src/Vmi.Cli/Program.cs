using System.CommandLine;
using Vmi.Cli;

var root = new RootCommand("Vmi: agentless introspection and security monitoring of virtual machines.");
root.Subcommands.Add(LabCommands.Create());
root.Subcommands.Add(MemoryCommands.Create());
foreach (var c in MonitorCommands.Create())
    root.Subcommands.Add(c);
foreach (var c in LinuxCommands.Create())
    root.Subcommands.Add(c);
return await CommandRunner.InvokeAsync(root, args).ConfigureAwait(false);
