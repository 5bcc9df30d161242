using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Vmi.Core;
using Vmi.Memory;

namespace Vmi.Qemu;

/// <summary>How to start a QEMU VM that Vmi watches.</summary>
public sealed record QemuVmOptions
{
    public required string Name { get; init; }
    public required string KernelPath { get; init; }
    public string? InitrdPath { get; init; }
    public string? CommandLine { get; init; }
    /// <summary>Guest RAM in bytes (default 512 MiB).</summary>
    public ulong MemoryBytes { get; init; } = 512UL << 20;
    public int Vcpus { get; init; } = 1;
    /// <summary>QEMU machine type: "pc" or "q35".</summary>
    public string Machine { get; init; } = "pc";
    public string Cpu { get; init; } = "max";
    /// <summary>"kvm", "tcg", or null to use KVM when /dev/kvm is usable and TCG otherwise.</summary>
    public string? Accelerator { get; init; }
    /// <summary>Open the gdb stub on 127.0.0.1 (a free port is chosen when <see cref="GdbPort"/> is 0).</summary>
    public bool EnableGdb { get; init; } = true;
    public int GdbPort { get; init; }
    /// <summary>
    /// Keep the shared RAM file in /dev/shm while the VM runs, so other processes can attach with
    /// --target qemu:…,mem=PATH. By default it is unlinked as soon as QEMU has opened it, so nothing is
    /// left in /dev/shm however Vmi ends; other processes can still attach through /proc/PID/fd.
    /// </summary>
    public bool KeepMemoryFile { get; init; }
    /// <summary>Copy of everything the guest writes on its serial console.</summary>
    public string? SerialLogPath { get; init; }
    public IReadOnlyList<string> ExtraArguments { get; init; } = [];
    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromSeconds(60);
}

/// <summary>
/// A QEMU VM started by Vmi: guest RAM in a shared file mapped zero-copy, QMP, the gdb stub, and the
/// serial console on QEMU's standard input/output. The QEMU process dies with Vmi (parent-death
/// signal) and <see cref="DisposeAsync"/> shuts it down and removes every file it made.
/// </summary>
public sealed class QemuVm : IAsyncDisposable
{
    private const string ShmDirectory = "/dev/shm";
    private const string FilePrefix = "vmi-";

    private readonly Process _process;
    private readonly FileStream _ramFile;
    private readonly string _runDirectory;
    private string? _ramPath;
    private int _disposed;

    private QemuVm(QemuVmOptions options, Process process, FileStream ramFile, string ramPath, string runDirectory,
        string accelerator, int? gdbPort, QmpClient qmp, MappedPhysicalMemory memory, SerialConsole console)
    {
        Options = options;
        _process = process;
        _ramFile = ramFile;
        _ramPath = ramPath;
        _runDirectory = runDirectory;
        Accelerator = accelerator;
        GdbPort = gdbPort;
        Qmp = qmp;
        Memory = memory;
        Console = console;
        QmpSocketPath = Path.Combine(runDirectory, "qmp.sock");
        AttachSocketPath = Path.Combine(runDirectory, "attach.sock");
    }

    public QemuVmOptions Options { get; }
    /// <summary>"kvm" or "tcg": what the VM actually runs on.</summary>
    public string Accelerator { get; }
    public int ProcessId => _process.Id;
    /// <summary>True once QEMU has exited or this VM was shut down.</summary>
    public bool HasExited => Volatile.Read(ref _disposed) != 0 || _process.HasExited;
    public int? GdbPort { get; }
    /// <summary>The QMP socket Vmi itself holds.</summary>
    public string QmpSocketPath { get; }
    /// <summary>A second QMP socket left free for other clients (e.g. `vmi mem read --target` from another shell).</summary>
    public string AttachSocketPath { get; }
    public QmpClient Qmp { get; }
    /// <summary>Guest physical memory, zero-copy over the shared RAM file.</summary>
    public MappedPhysicalMemory Memory { get; }
    public SerialConsole Console { get; }
    /// <summary>A path any local process (same user) can open to reach guest RAM while the VM runs.</summary>
    public string MemoryPath => _ramPath ?? $"/proc/{Environment.ProcessId}/fd/{_ramFile.SafeFileHandle.DangerousGetHandle()}";
    /// <summary>The --target string other Vmi commands use to attach to this VM.</summary>
    public string TargetSpec => FormattableString.Invariant($"qemu:qmp={AttachSocketPath},mem={MemoryPath}") + (GdbPort is int p ? FormattableString.Invariant($",gdb=127.0.0.1:{p}") : "");
    /// <summary>The QEMU command line, for logs.</summary>
    public string CommandLine { get; private set; } = "";

    /// <summary>Whether /dev/kvm exists and can be opened for reading and writing.</summary>
    public static bool KvmUsable()
    {
        try
        {
            using var f = new FileStream("/dev/kvm", FileMode.Open, FileAccess.ReadWrite);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>Starts the VM and returns once QMP answers and guest RAM is mapped.</summary>
    /// <exception cref="TargetException">QEMU is missing, failed to start, or did not answer in time.</exception>
    public static async Task<QemuVm> StartAsync(QemuVmOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        string qemu = ExternalTool.Find("qemu-system-x86_64")
            ?? throw new TargetException("'qemu-system-x86_64' was not found: install it with 'apt-get install -y qemu-system-x86'.");
        foreach (string? f in new[] { options.KernelPath, options.InitrdPath })
        {
            if (f is not null && !File.Exists(f))
                throw new TargetException($"{f} does not exist: run 'vmi lab build' or give the right path.");
        }
        if (options.Vcpus < 1 || options.Vcpus > 64)
            throw new TargetException($"vCPU count {options.Vcpus} is out of range (1–64).");
        if (options.MemoryBytes < (16UL << 20) || options.MemoryBytes % (1UL << 20) != 0)
            throw new TargetException("guest memory must be at least 16 MiB and a whole number of MiB.");

        SweepStale();
        string accel = options.Accelerator ?? (KvmUsable() ? "kvm" : "tcg");
        string tag = FormattableString.Invariant($"{Environment.ProcessId}-{Sanitize(options.Name)}-{Guid.NewGuid().ToString("N")[..8]}");
        string runDir = Path.Combine(Path.GetTempPath(), "vmi-run", tag);
        Directory.CreateDirectory(runDir);
        string ramPath = Path.Combine(ShmDirectory, FilePrefix + tag + ".ram");
        var ramFile = new FileStream(ramPath, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.ReadWrite);
        Process? process = null;
        QmpClient? qmp = null;
        try
        {
            ramFile.SetLength((long)options.MemoryBytes);
            int? gdbPort = options.EnableGdb ? (options.GdbPort != 0 ? options.GdbPort : FreeTcpPort()) : null;
            var psi = new ProcessStartInfo(qemu)
            {
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            ulong mib = options.MemoryBytes >> 20;
            string chardev = "stdio,id=ser0,signal=off" + (options.SerialLogPath is null ? "" : ",logfile=" + options.SerialLogPath);
            var args = new List<string>
            {
                "-name", options.Name,
                "-machine", $"{options.Machine},memory-backend=ram0",
                "-accel", accel,
                "-cpu", options.Cpu,
                "-smp", options.Vcpus.ToString(CultureInfo.InvariantCulture),
                "-m", FormattableString.Invariant($"{mib}M"),
                "-object", FormattableString.Invariant($"memory-backend-file,id=ram0,size={mib}M,mem-path={ramPath},share=on"),
                "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                "-chardev", chardev, "-serial", "chardev:ser0",
                "-qmp", $"unix:{Path.Combine(runDir, "qmp.sock")},server=on,wait=off",
                // A second monitor for other tools (vmi commands in another shell): QMP takes one client per socket.
                "-qmp", $"unix:{Path.Combine(runDir, "attach.sock")},server=on,wait=off",
                "-kernel", options.KernelPath,
            };
            if (options.InitrdPath is not null)
                args.AddRange(["-initrd", options.InitrdPath]);
            if (options.CommandLine is not null)
                args.AddRange(["-append", options.CommandLine]);
            if (gdbPort is int port)
                args.AddRange(["-gdb", FormattableString.Invariant($"tcp:127.0.0.1:{port}")]);
            args.AddRange(options.ExtraArguments);
            foreach (string a in args)
                psi.ArgumentList.Add(a);

            process = await GuardedProcess.StartAsync(psi).ConfigureAwait(false);
            var stderr = new System.Text.StringBuilder();
            process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) { if (stderr.Length < 16384) stderr.AppendLine(e.Data); } };
            process.BeginErrorReadLine();
            var console = new SerialConsole(process.StandardOutput.BaseStream, process.StandardInput.BaseStream);

            using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            cts.CancelAfter(options.StartTimeout);
            Task<QmpClient> connect = QmpClient.ConnectAsync(Path.Combine(runDir, "qmp.sock"), options.StartTimeout, cts.Token);
            Task exited = process.WaitForExitAsync(cts.Token);
            if (await Task.WhenAny(connect, exited).ConfigureAwait(false) != connect)
            {
                await Task.Delay(200, CancellationToken.None).ConfigureAwait(false);
                string err;
                lock (stderr) err = stderr.ToString().Trim();
                throw new TargetException($"QEMU exited during start-up (exit {(process.HasExited ? process.ExitCode : -1)}): {err}");
            }
            try
            {
                qmp = await connect.ConfigureAwait(false);
            }
            catch (Exception e) when (e is ProtocolException or TimeoutException or OperationCanceledException or SocketException)
            {
                string err;
                lock (stderr) err = stderr.ToString().Trim();
                throw new TargetException($"QEMU did not answer on QMP within {options.StartTimeout.TotalSeconds:0} s: {e.Message} {err}", e);
            }

            // QEMU has opened and mapped the RAM file by the time QMP answers: unlink it now, so no
            // file outlives the VM whatever happens to either process.
            string? keptPath = ramPath;
            if (!options.KeepMemoryFile)
            {
                File.Delete(ramPath);
                keptPath = null;
            }
            var memory = MappedPhysicalMemory.Open(ramFile, QemuRamLayout.ForMachine(options.Machine, options.MemoryBytes), leaveOpen: true);
            var vm = new QemuVm(options, process, ramFile, ramPath, runDir, accel, gdbPort, qmp, memory, console)
            {
                CommandLine = qemu + " " + string.Join(' ', args.Select(a => a.Contains(' ', StringComparison.Ordinal) ? $"'{a}'" : a)),
            };
            vm._ramPath = keptPath;
            return vm;
        }
        catch
        {
            if (qmp is not null)
                await qmp.DisposeAsync().ConfigureAwait(false);
            if (process is not null)
            {
                try { if (!process.HasExited) process.Kill(); } catch (InvalidOperationException) { }
                process.Dispose();
            }
            await ramFile.DisposeAsync().ConfigureAwait(false);
            TryDelete(ramPath);
            TryDeleteDirectory(runDir);
            throw;
        }
    }

    /// <summary>Opens the gdb stub. Attaching stops the guest; detach with <see cref="GdbRemoteClient.DetachAsync"/> and <see cref="ResumeAsync"/>.</summary>
    /// <exception cref="TargetException">The VM was started without a gdb stub.</exception>
    public Task<GdbRemoteClient> AttachGdbAsync(CancellationToken cancellationToken = default) =>
        GdbPort is int port
            ? GdbRemoteClient.ConnectAsync("127.0.0.1", port, TimeSpan.FromSeconds(10), cancellationToken)
            : throw new TargetException("this VM was started without a gdb stub (EnableGdb = false).");

    /// <summary>Resumes the guest whatever stopped it (QMP stop, gdb attach/detach leaves status "debug").</summary>
    public async Task ResumeAsync(CancellationToken cancellationToken = default)
    {
        string status = await Qmp.QueryStatusAsync(cancellationToken).ConfigureAwait(false);
        if (status != "running")
            await Qmp.ContinueAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Waits for QEMU to exit on its own (guest powered off).</summary>
    public Task WaitForExitAsync(CancellationToken cancellationToken = default) => _process.WaitForExitAsync(cancellationToken);

    /// <summary>
    /// Stops the VM: QMP quit, then SIGKILL after <paramref name="grace"/>. Removes the RAM file and the
    /// runtime folder. Safe to call more than once.
    /// </summary>
    public async Task ShutdownAsync(TimeSpan grace)
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        try
        {
            if (!_process.HasExited && Qmp.IsConnected)
            {
                try
                {
                    using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(2));
                    await Qmp.QuitAsync(cts.Token).ConfigureAwait(false);
                }
                catch (Exception e) when (e is ProtocolException or OperationCanceledException or IOException or SocketException or ObjectDisposedException)
                {
                    // Falls through to the kill below.
                }
            }
            using (var wait = new CancellationTokenSource(grace))
            {
                try { await _process.WaitForExitAsync(wait.Token).ConfigureAwait(false); }
                catch (OperationCanceledException) { }
            }
            if (!_process.HasExited)
            {
                try { _process.Kill(); } catch (InvalidOperationException) { }
                await _process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
            }
        }
        finally
        {
            await Qmp.DisposeAsync().ConfigureAwait(false);
            Memory.Dispose();
            await _ramFile.DisposeAsync().ConfigureAwait(false);
            if (_ramPath is not null)
                TryDelete(_ramPath);
            TryDeleteDirectory(_runDirectory);
            Console.Dispose();
            _process.Dispose();
        }
    }

    public ValueTask DisposeAsync() => new(ShutdownAsync(TimeSpan.FromSeconds(5)));

    /// <summary>Removes RAM files and runtime folders left by Vmi processes that no longer exist.</summary>
    public static void SweepStale()
    {
        try
        {
            foreach (string f in Directory.EnumerateFiles(ShmDirectory, FilePrefix + "*.ram"))
            {
                if (OwnerIsDead(Path.GetFileName(f)[FilePrefix.Length..]))
                    TryDelete(f);
            }
            string runRoot = Path.Combine(Path.GetTempPath(), "vmi-run");
            if (Directory.Exists(runRoot))
            {
                foreach (string d in Directory.EnumerateDirectories(runRoot))
                {
                    if (OwnerIsDead(Path.GetFileName(d)))
                        TryDeleteDirectory(d);
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Sweeping is best effort; a leftover never blocks a new VM (names are unique).
        }
    }

    private static bool OwnerIsDead(string tag)
    {
        int dash = tag.IndexOf('-', StringComparison.Ordinal);
        return dash > 0 && int.TryParse(tag.AsSpan(0, dash), NumberStyles.None, CultureInfo.InvariantCulture, out int pid)
            && !Directory.Exists($"/proc/{pid}");
    }

    private static int FreeTcpPort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    private static string Sanitize(string name) =>
        new(name.Select(c => char.IsAsciiLetterOrDigit(c) || c == '_' ? c : '_').Take(32).ToArray());

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    private static void TryDeleteDirectory(string path)
    {
        try { if (Directory.Exists(path)) Directory.Delete(path, recursive: true); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }
}
