using System.Globalization;
using Vmi.Core;
using Vmi.Qemu;

namespace Vmi.Lab;

/// <summary>The framed answer to one console command.</summary>
public sealed record GuestReply(int ExitStatus, IReadOnlyList<string> Lines);

/// <summary>
/// The lab guest running in a <see cref="QemuVm"/>: boots it, waits for its ready marker and speaks the
/// small console protocol of its /init (see Guest/init) to get ground truth and run scenarios.
/// </summary>
public sealed class LabGuest : IAsyncDisposable
{
    private readonly SemaphoreSlim _commandLock = new(1, 1);
    private int _nextId = 1;
    private int _poweredOff;

    private LabGuest(QemuVm vm, string readyLine)
    {
        Vm = vm;
        ReadyLine = readyLine;
    }

    public QemuVm Vm { get; }
    /// <summary>The guest's "@@VMI-READY …" line.</summary>
    public string ReadyLine { get; }

    /// <summary>Boots the lab guest and waits until its init is ready for commands.</summary>
    public static async Task<LabGuest> StartAsync(LabArtifacts artifacts, string name = "lab", string scenario = "benign",
        ulong memoryBytes = 512UL << 20, int vcpus = 1, TimeSpan? bootTimeout = null, Func<QemuVmOptions, QemuVmOptions>? customize = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(artifacts);
        var options = new QemuVmOptions
        {
            Name = name,
            KernelPath = artifacts.KernelPath,
            InitrdPath = artifacts.InitrdPath,
            CommandLine = LabArtifacts.DefaultCommandLine(scenario),
            MemoryBytes = memoryBytes,
            Vcpus = vcpus,
        };
        if (customize is not null)
            options = customize(options);
        QemuVm vm = await QemuVm.StartAsync(options, cancellationToken).ConfigureAwait(false);
        try
        {
            string ready = await vm.Console.WaitForLineAsync(l => l.StartsWith("@@VMI-READY", StringComparison.Ordinal),
                bootTimeout ?? TimeSpan.FromSeconds(120), 0, cancellationToken).ConfigureAwait(false);
            return new LabGuest(vm, ready);
        }
        catch
        {
            await vm.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Runs one console command and returns its framed output.</summary>
    /// <exception cref="TimeoutException">The guest did not answer in time.</exception>
    public async Task<GuestReply> CommandAsync(string command, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        if (command.Contains('\n', StringComparison.Ordinal))
            throw new ArgumentException("one line only", nameof(command));
        await _commandLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            int id = _nextId++;
            string begin = FormattableString.Invariant($"@@VMI-BEGIN {id} ");
            string endPrefix = FormattableString.Invariant($"@@VMI-END {id} ");
            long from = Vm.Console.Position;
            await Vm.Console.WriteLineAsync(FormattableString.Invariant($"{id} {command}"), cancellationToken).ConfigureAwait(false);
            var limit = timeout ?? TimeSpan.FromSeconds(120);
            await Vm.Console.WaitForLineAsync(l => l.StartsWith(begin, StringComparison.Ordinal), limit, from, cancellationToken).ConfigureAwait(false);
            string end = await Vm.Console.WaitForLineAsync(l => l.StartsWith(endPrefix, StringComparison.Ordinal), limit, from, cancellationToken).ConfigureAwait(false);
            long endPos = Vm.Console.Position;
            var all = Vm.Console.GetLines(from, endPos);
            int b = IndexOf(all, begin);
            int e = IndexOf(all, endPrefix);
            var lines = all.Skip(b + 1).Take(e - b - 1).ToList();
            int status = int.Parse(end[endPrefix.Length..].Trim(), CultureInfo.InvariantCulture);
            return new GuestReply(status, lines);
        }
        finally
        {
            _commandLock.Release();
        }
    }

    /// <summary>Asks the guest for its own view (processes, modules, kallsyms subset, /proc/iomem).</summary>
    public async Task<GroundTruth> GetGroundTruthAsync(CancellationToken cancellationToken = default)
    {
        GuestReply r = await CommandAsync("truth", TimeSpan.FromSeconds(180), cancellationToken).ConfigureAwait(false);
        if (r.ExitStatus != 0)
            throw new LabException($"the guest's truth command failed with status {r.ExitStatus}");
        return GroundTruth.Parse(r.Lines);
    }

    /// <summary>Runs a shell command in the guest.</summary>
    public Task<GuestReply> ShellAsync(string commandLine, TimeSpan? timeout = null, CancellationToken cancellationToken = default) =>
        CommandAsync("sh " + commandLine, timeout, cancellationToken);

    /// <summary>Asks the guest to power off and waits for QEMU to exit; falls back to QMP quit.</summary>
    public async Task PowerOffAsync(TimeSpan timeout)
    {
        if (Interlocked.Exchange(ref _poweredOff, 1) != 0)
            return;
        if (!Vm.HasExited)
        {
            try
            {
                await Vm.ResumeAsync().ConfigureAwait(false);
                await Vm.Console.WriteLineAsync("0 poweroff").ConfigureAwait(false);
                using var cts = new CancellationTokenSource(timeout);
                await Vm.WaitForExitAsync(cts.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or IOException or ProtocolException or ObjectDisposedException)
            {
                // The guest did not power off in time: ShutdownAsync below quits QEMU.
            }
        }
        await Vm.ShutdownAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        await PowerOffAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        _commandLock.Dispose();
    }

    private static int IndexOf(IReadOnlyList<string> lines, string prefix)
    {
        for (int i = 0; i < lines.Count; i++)
        {
            if (lines[i].StartsWith(prefix, StringComparison.Ordinal))
                return i;
        }
        return -1;
    }
}
