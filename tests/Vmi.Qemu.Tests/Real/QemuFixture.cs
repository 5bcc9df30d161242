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

    /// <summary>
    /// Attached, stopped, every vCPU back at the reset vector (QMP system_reset keeps a stopped VM stopped, in status
    /// <c>prelaunch</c>) and the firmware as at power-on.
    /// </summary>
    /// <remarks>
    /// QEMU's system_reset does not map 0xe0000-0xfffff back to the ROM (SeaBIOS says so in its own reboot code, which copies
    /// the ROM back before resetting). A test that stopped SeaBIOS while it was copying itself into that RAM would leave
    /// the reset vector jumping into zeros. So after the reset the ROM's last 128 KiB (always readable at the top of 4 GiB)
    /// is copied over 0xe0000-0xfffff through the gdb stub, which writes RAM whatever the PAM registers say.
    /// </remarks>
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
        const int IsaBiosSize = 128 * 1024;
        byte[] rom = await gdb.ReadMemoryAsync(0x1_0000_0000 - IsaBiosSize, IsaBiosSize);
        byte[] low = await gdb.ReadMemoryAsync(0x100000 - IsaBiosSize, IsaBiosSize);
        if (!rom.AsSpan().SequenceEqual(low))
        {
            await gdb.WriteMemoryAsync(0x100000 - IsaBiosSize, rom);
        }

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
