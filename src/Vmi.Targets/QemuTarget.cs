using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Vmi.Core;
using Vmi.Memory;
using Vmi.Qemu;

namespace Vmi.Targets;

/// <summary>
/// A running QEMU: RAM from its shared memory file (zero-copy), vCPU state from the gdb stub when one
/// is given (complete: EFER, FS/GS bases) or else from QMP's "info registers".
/// </summary>
public sealed partial class QemuTarget : ITarget
{
    private readonly QmpClient _qmp;
    private readonly GdbRemoteClient? _gdb;
    private readonly (string Host, int Port)? _gdbEndpoint;
    private readonly bool _ownsConnections;

    private QemuTarget(string description, QmpClient qmp, IPhysicalMemory memory, int vcpus, GdbRemoteClient? gdb,
        (string, int)? gdbEndpoint, bool owns)
    {
        Description = description;
        _qmp = qmp;
        Memory = memory;
        VcpuCount = vcpus;
        _gdb = gdb;
        _gdbEndpoint = gdbEndpoint;
        _ownsConnections = owns;
    }

    public string Description { get; }
    public IPhysicalMemory Memory { get; }
    public int VcpuCount { get; }

    /// <summary>The gdb stub of an attached VM (from <c>gdb=HOST:PORT</c>), for hooks; null when none was given.</summary>
    public (string Host, int Port)? GdbEndpoint => _gdbEndpoint;

    /// <summary>Wraps a VM Vmi started itself; the VM keeps ownership of its connections.</summary>
    public static async Task<QemuTarget> FromVmAsync(QemuVm vm, GdbRemoteClient? gdb = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(vm);
        int vcpus = await CountVcpusAsync(vm.Qmp, cancellationToken).ConfigureAwait(false);
        return new QemuTarget($"QEMU '{vm.Options.Name}' (pid {vm.ProcessId}, {vm.Accelerator})", vm.Qmp, vm.Memory, vcpus, gdb, null, owns: false);
    }

    /// <summary>Attaches to a QEMU that someone else started with a shared RAM file.</summary>
    /// <exception cref="TargetException">QMP or the memory file cannot be opened, or they disagree on size.</exception>
    public static async Task<QemuTarget> AttachAsync(TargetSpec spec, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (spec.Kind != TargetKind.Qemu)
            throw new ArgumentException("not a qemu target", nameof(spec));
        if (!File.Exists(spec.QmpPath))
            throw new TargetException($"QMP socket {spec.QmpPath} does not exist: start QEMU with '-qmp unix:{spec.QmpPath},server=on,wait=off'.");
        QmpClient qmp;
        try
        {
            qmp = await QmpClient.ConnectAsync(spec.QmpPath!, TimeSpan.FromSeconds(10), cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is ProtocolException or TimeoutException or System.Net.Sockets.SocketException or IOException)
        {
            throw new TargetException($"cannot talk QMP on {spec.QmpPath}: {e.Message} (is another client connected? QEMU's QMP socket takes one client at a time)", e);
        }
        try
        {
            string machine = spec.Machine ?? await QueryMachineAsync(qmp, cancellationToken).ConfigureAwait(false);
            JsonElement mem = await qmp.ExecuteAsync("query-memory-size-summary", null, cancellationToken).ConfigureAwait(false);
            ulong ramSize = mem.GetProperty("base-memory").GetUInt64();
            FileStream stream;
            try
            {
                stream = new FileStream(spec.MemoryPath!, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new TargetException($"cannot open the guest RAM file {spec.MemoryPath}: {e.Message}. Start QEMU with " +
                    "'-object memory-backend-file,id=ram0,size=SIZE,mem-path=FILE,share=on -machine pc,memory-backend=ram0'.", e);
            }
            if ((ulong)stream.Length != ramSize)
            {
                await stream.DisposeAsync().ConfigureAwait(false);
                throw new TargetException($"{spec.MemoryPath} is {stream.Length} bytes but the VM has {ramSize} bytes of RAM: is it this VM's memory-backend-file?");
            }
            IPhysicalMemory memory = MappedPhysicalMemory.Open(stream, QemuRamLayout.ForMachine(machine, ramSize));
            int vcpus = await CountVcpusAsync(qmp, cancellationToken).ConfigureAwait(false);
            return new QemuTarget($"QEMU via {spec.QmpPath} ({machine}, {ramSize >> 20} MiB)", qmp, memory, vcpus, null,
                spec.GdbHost is null ? null : (spec.GdbHost, spec.GdbPort!.Value), owns: true);
        }
        catch
        {
            await qmp.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    public async Task<VcpuRegisters> GetRegistersAsync(int vcpu = 0, CancellationToken cancellationToken = default)
    {
        if (vcpu < 0 || vcpu >= VcpuCount)
            throw new TargetException($"vCPU {vcpu} does not exist (the VM has {VcpuCount}).");
        if (_gdb is not null)
            return FromDictionary(vcpu, await _gdb.ReadRegistersAsync(vcpu, cancellationToken).ConfigureAwait(false));
        if (_gdbEndpoint is (string host, int port))
            return await ReadThroughGdbStubAsync(host, port, vcpu, cancellationToken).ConfigureAwait(false);
        return await ReadThroughMonitorAsync(vcpu, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Attaching the gdb stub stops the guest: restore the run state afterwards.</summary>
    private async Task<VcpuRegisters> ReadThroughGdbStubAsync(string host, int port, int vcpu, CancellationToken ct)
    {
        string before = await _qmp.QueryStatusAsync(ct).ConfigureAwait(false);
        GdbRemoteClient gdb;
        try
        {
            gdb = await GdbRemoteClient.ConnectAsync(host, port, TimeSpan.FromSeconds(10), ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is ProtocolException or TimeoutException or System.Net.Sockets.SocketException or IOException)
        {
            throw new TargetException($"cannot attach to the gdb stub at {host}:{port}: {e.Message} (QEMU takes one gdb client at a time)", e);
        }
        try
        {
            return FromDictionary(vcpu, await gdb.ReadRegistersAsync(vcpu, ct).ConfigureAwait(false));
        }
        finally
        {
            await gdb.DetachAsync(CancellationToken.None).ConfigureAwait(false);
            await gdb.DisposeAsync().ConfigureAwait(false);
            if (before == "running" && await _qmp.QueryStatusAsync(CancellationToken.None).ConfigureAwait(false) != "running")
                await _qmp.ContinueAsync(CancellationToken.None).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Resumes the VM when the gdb stub left it stopped (QMP status <c>debug</c>, as a detach can); a VM
    /// paused by someone else stays paused.
    /// </summary>
    public async Task ResumeAfterDebugAsync(CancellationToken cancellationToken = default)
    {
        if (await _qmp.QueryStatusAsync(cancellationToken).ConfigureAwait(false) == "debug")
            await _qmp.ContinueAsync(cancellationToken).ConfigureAwait(false);
    }

    private async Task<VcpuRegisters> ReadThroughMonitorAsync(int vcpu, CancellationToken ct)
    {
        string text = await _qmp.HumanMonitorCommandAsync("info registers -a", ct).ConfigureAwait(false);
        var sections = SplitCpus(text);
        if (!sections.TryGetValue(vcpu, out string? section))
            throw new TargetException($"QEMU's 'info registers -a' has no CPU#{vcpu}.");
        return FromDictionary(vcpu, ParseInfoRegisters(section));
    }

    /// <summary>Parses the register dump of one CPU from HMP "info registers" (names lower-cased).</summary>
    public static Dictionary<string, ulong> ParseInfoRegisters(string text)
    {
        var regs = new Dictionary<string, ulong>(StringComparer.Ordinal);
        foreach (Match m in RegisterPattern().Matches(text))
        {
            string name = m.Groups[1].Value.ToLowerInvariant();
            if (!regs.ContainsKey(name) && ulong.TryParse(m.Groups[2].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong v))
                regs[name] = v;
        }
        if (regs.TryGetValue("rfl", out ulong fl))
            regs["eflags"] = fl;
        return regs;
    }

    internal static Dictionary<int, string> SplitCpus(string text)
    {
        var result = new Dictionary<int, string>();
        var parts = CpuHeaderPattern().Split(text);
        // Split with a capture group yields [before, n0, body0, n1, body1, …].
        if (parts.Length == 1)
        {
            result[0] = text;
            return result;
        }
        for (int i = 1; i + 1 < parts.Length; i += 2)
            result[int.Parse(parts[i], CultureInfo.InvariantCulture)] = parts[i + 1];
        return result;
    }

    /// <summary>Registers of a vCPU from a gdb stub client that is already connected (the stub serves one client at a time).</summary>
    /// <exception cref="TargetException">The stub did not report a register introspection needs.</exception>
    public static async Task<VcpuRegisters> ReadRegistersAsync(GdbRemoteClient gdb, int vcpu = 0, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(gdb);
        return FromDictionary(vcpu, await gdb.ReadRegistersAsync(vcpu, cancellationToken).ConfigureAwait(false));
    }

    private static VcpuRegisters FromDictionary(int vcpu, IReadOnlyDictionary<string, ulong> r)
    {
        ulong Get(string n) => r.TryGetValue(n, out ulong v) ? v : throw new TargetException($"the VM did not report register {n}.");
        return new VcpuRegisters(vcpu, Get("rip"), Get("rsp"), Get("cs"), Get("cr0"), Get("cr3"), Get("cr4"),
            r.TryGetValue("efer", out ulong efer) ? efer : null, r);
    }

    private static async Task<string> QueryMachineAsync(QmpClient qmp, CancellationToken ct)
    {
        JsonElement t = await qmp.ExecuteAsync("qom-get", new { path = "/machine", property = "type" }, ct).ConfigureAwait(false);
        // "pc-i440fx-7.2-machine" / "pc-q35-7.2-machine"
        string type = t.GetString() ?? "";
        return type.Contains("q35", StringComparison.Ordinal) ? "q35" : type.StartsWith("pc", StringComparison.Ordinal) ? "pc"
            : throw new TargetException($"machine type '{type}' is neither pc nor q35: Vmi does not know its RAM layout (give machine=pc|q35 if it is one of them).");
    }

    private static async Task<int> CountVcpusAsync(QmpClient qmp, CancellationToken ct)
    {
        JsonElement cpus = await qmp.ExecuteAsync("query-cpus-fast", null, ct).ConfigureAwait(false);
        return Math.Max(1, cpus.GetArrayLength());
    }

    public async ValueTask DisposeAsync()
    {
        if (_ownsConnections)
        {
            await _qmp.DisposeAsync().ConfigureAwait(false);
            Memory.Dispose();
        }
    }

    [GeneratedRegex(@"\b([A-Z][A-Z0-9]*)\s*=([0-9a-fA-F]+)\b")]
    private static partial Regex RegisterPattern();

    [GeneratedRegex(@"^CPU#(\d+)\s*$", RegexOptions.Multiline)]
    private static partial Regex CpuHeaderPattern();
}
