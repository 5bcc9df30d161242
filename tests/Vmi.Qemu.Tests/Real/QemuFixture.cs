using Xunit;

namespace Vmi.Qemu.Tests.Real;

/// <summary>One bare QEMU (2 vCPUs, -S, at the reset vector) with a QMP and a gdb connection, shared by the real-QEMU tests.</summary>
public sealed class QemuFixture : IAsyncLifetime
{
    public static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(10);

    private QemuProcess? _qemu;
    private QmpClient? _qmp;
    private GdbRemoteClient? _gdb;

    internal QemuProcess Qemu => _qemu ?? throw new InvalidOperationException("QEMU is not running.");

    public QmpClient Qmp => _qmp ?? throw new InvalidOperationException("QMP is not connected.");

    /// <summary>Status right after QMP connected, before the gdb stub was attached.</summary>
    public string InitialStatus { get; private set; } = "";

    public async Task InitializeAsync()
    {
        _qemu = await QemuProcess.StartAsync(vcpus: 2);
        _qmp = await QmpClient.ConnectAsync(_qemu.QmpSocketPath, ConnectTimeout);
        InitialStatus = await _qmp.QueryStatusAsync();
    }

    /// <summary>The gdb connection, re-attached if a test detached it.</summary>
    public async Task<GdbRemoteClient> GdbAsync()
    {
        if (_gdb is { IsConnected: true })
        {
            return _gdb;
        }

        if (_gdb is not null)
        {
            await _gdb.DisposeAsync();
        }

        _gdb = await GdbRemoteClient.ConnectAsync("127.0.0.1", Qemu.GdbPort, ConnectTimeout);
        return _gdb;
    }

    /// <summary>Attached, stopped, and every vCPU back at the reset vector (QMP system_reset keeps a stopped VM stopped).</summary>
    public async Task<GdbRemoteClient> ResetAsync()
    {
        GdbRemoteClient gdb = await GdbAsync();
        if (gdb.IsRunning)
        {
            await gdb.InterruptAsync();
        }

        if (await Qmp.QueryStatusAsync() == "running")
        {
            // Resumed over QMP by an earlier test.
            await Qmp.StopAsync();
        }

        await Qmp.ExecuteAsync("system_reset");
        return gdb;
    }

    public async Task DisposeAsync()
    {
        if (_gdb is not null)
        {
            await _gdb.DisposeAsync();
        }

        if (_qmp is not null)
        {
            await _qmp.DisposeAsync();
        }

        if (_qemu is not null)
        {
            await _qemu.DisposeAsync();
        }
    }
}

[CollectionDefinition(Name)]
public sealed class QemuCollection : ICollectionFixture<QemuFixture>
{
    public const string Name = "qemu";
}
