using System.CommandLine;
using System.Runtime.InteropServices;
using Vmi.Lab;
using Vmi.Qemu;

namespace Vmi.Cli;

/// <summary>`vmi lab build` and `vmi lab run`.</summary>
internal static class LabCommands
{
    public static Command Create()
    {
        var lab = new Command("lab", "Build and boot the lab guest (Debian kernel + busybox initramfs with test scenarios).");
        lab.Subcommands.Add(Build());
        lab.Subcommands.Add(Run());
        return lab;
    }

    private static Option<string> DirOption() => new("--dir")
    {
        Description = "Lab folder (default: $VMI_LAB_DIR, else build/lab in the repository, else ~/.cache/vmi/lab).",
    };

    private static Option<string> FlavourOption() => new("--flavour")
    {
        Description = "Debian kernel flavour: amd64, cloud-amd64, rt-amd64.",
        DefaultValueFactory = _ => "amd64",
    };

    private static Command Build()
    {
        var dir = DirOption();
        var flavour = FlavourOption();
        var modules = new Option<string[]>("--module") { Description = "Kernel module to put in the initramfs (repeatable; dependencies follow)." };
        var force = new Option<bool>("--force") { Description = "Rebuild even if up to date." };
        var cmd = new Command("build", "Download the Debian kernel and busybox-static (nothing is installed on the host) and assemble the lab initramfs.")
        {
            dir, flavour, modules, force,
        };
        cmd.SetAction(async (parse, ct) =>
        {
            var builder = new LabBuilder(Console.Out);
            await builder.BuildAsync(new LabBuildOptions
            {
                LabDirectory = parse.GetValue(dir) ?? LabBuilder.DefaultLabDirectory(),
                Flavour = parse.GetValue(flavour)!,
                Modules = parse.GetValue(modules) is { Length: > 0 } m ? m : LabBuildOptions.DefaultModules,
                Force = parse.GetValue(force),
            }, ct).ConfigureAwait(false);
            return CommandRunner.ExitOk;
        });
        return cmd;
    }

    private static Command Run()
    {
        var dir = DirOption();
        var flavour = FlavourOption();
        var scenario = new Option<string>("--scenario") { Description = "Scenario scripts to start at boot (comma-separated).", DefaultValueFactory = _ => "benign" };
        var memory = new Option<int>("--memory") { Description = "Guest RAM in MiB.", DefaultValueFactory = _ => 512 };
        var cpus = new Option<int>("--cpus") { Description = "vCPUs.", DefaultValueFactory = _ => 1 };
        var gdbPort = new Option<int>("--gdb-port") { Description = "Port of the gdb stub on 127.0.0.1 (0: any free port)." };
        var keep = new Option<bool>("--keep-memory-file") { Description = "Leave the RAM file visible in /dev/shm while running (removed on exit)." };
        var accel = new Option<string>("--accel") { Description = "kvm or tcg (default: kvm when /dev/kvm is usable)." };
        var log = new Option<string>("--console-log") { Description = "Also write the guest console to this file." };
        var exitAfterReady = new Option<bool>("--exit-when-ready") { Description = "Power off as soon as the guest is ready (smoke test)." };
        var noMonitor = new Option<bool>("--no-monitor") { Description = "Only run the guest: no hooks, no detectors." };
        var store = new Option<string>("--store") { Description = "SQLite file for alerts and events (default $VMI_STORE or ~/.local/share/vmi/vmi.db)." };
        var cmd = new Command("run", "Boot the lab guest and stream its serial console; Ctrl-C powers it off cleanly. " +
            "Lines typed on standard input go to the guest's console protocol, e.g. '1 truth' or '2 sh ps'.")
        {
            dir, flavour, scenario, memory, cpus, gdbPort, keep, accel, log, exitAfterReady, noMonitor, store,
        };
        cmd.SetAction(async (parse, ct) =>
        {
            string labDir = parse.GetValue(dir) ?? LabBuilder.DefaultLabDirectory();
            LabArtifacts artifacts = LabArtifacts.Load(labDir, parse.GetValue(flavour)!);
            string? accelerator = parse.GetValue(accel);
            if (accelerator is not (null or "kvm" or "tcg"))
                throw new UsageException($"--accel must be kvm or tcg, not '{accelerator}'.");
            int mib = parse.GetValue(memory);
            if (mib < 64)
                throw new UsageException("--memory must be at least 64 (MiB).");

            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });

            Console.Error.WriteLine($"vmi: booting {artifacts.KernelPackage} ({(accelerator ?? (QemuVm.KvmUsable() ? "kvm" : "tcg"))})…");
            var started = DateTimeOffset.UtcNow;
            QemuVm? vmRef = null;
            await using var guest = await LabGuest.StartAsync(artifacts, "lab", parse.GetValue(scenario)!, (ulong)mib << 20, parse.GetValue(cpus),
                customize: o =>
                {
                    var opts = o with
                    {
                        Accelerator = accelerator,
                        GdbPort = parse.GetValue(gdbPort),
                        KeepMemoryFile = parse.GetValue(keep),
                        SerialLogPath = parse.GetValue(log),
                    };
                    return opts;
                },
                cancellationToken: stop.Token).ConfigureAwait(false);
            vmRef = guest.Vm;
            // Stream the console from here on (the boot lines are already in the transcript).
            foreach (string line in guest.Vm.Console.Transcript)
                Console.Out.WriteLine(line);
            guest.Vm.Console.LineReceived += line => Console.Out.WriteLine(line);
            Console.Error.WriteLine($"vmi: guest ready in {(DateTimeOffset.UtcNow - started).TotalSeconds:0.0} s on {guest.Vm.Accelerator}, QEMU pid {guest.Vm.ProcessId}");
            Console.Error.WriteLine($"vmi: attach with --target {guest.Vm.TargetSpec}");
            await using IAsyncDisposable? monitor = parse.GetValue(noMonitor)
                ? null
                : await MonitorCommands.WatchAsync(guest.Vm, "lab", parse.GetValue(store) ?? MonitorCommands.DefaultStorePath(), new Monitoring.MonitorOptions(), stop.Token).ConfigureAwait(false);
            if (parse.GetValue(exitAfterReady))
                return CommandRunner.ExitOk;

            _ = Task.Run(async () =>
            {
                while (!stop.IsCancellationRequested)
                {
                    string? line = await Console.In.ReadLineAsync(stop.Token).ConfigureAwait(false);
                    if (line is null)
                        return; // stdin closed: keep running until a signal or the guest powers off
                    await guest.Vm.Console.WriteLineAsync(line, stop.Token).ConfigureAwait(false);
                }
            }, stop.Token);
            try
            {
                await guest.Vm.WaitForExitAsync(stop.Token).ConfigureAwait(false);
                Console.Error.WriteLine("vmi: the guest powered off.");
            }
            catch (OperationCanceledException)
            {
                Console.Error.WriteLine("vmi: stopping the guest…");
            }
            return CommandRunner.ExitOk;
        });
        return cmd;
    }
}
