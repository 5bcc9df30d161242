using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Vmi.Qemu.Tests.Real;

/// <summary>
/// A bare QEMU for protocol tests: no disk, no kernel, started with -S so it sits at the reset vector, QMP on a unix socket
/// in a private temporary folder and the gdb stub on a free loopback port. Disposing kills it by PID.
/// </summary>
internal sealed class QemuProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly DirectoryInfo _folder;
    private readonly StringBuilder _stderr = new();

    private QemuProcess(Process process, DirectoryInfo folder, string qmpSocketPath, int gdbPort)
    {
        _process = process;
        _folder = folder;
        QmpSocketPath = qmpSocketPath;
        GdbPort = gdbPort;
    }

    public string QmpSocketPath { get; }

    public int GdbPort { get; }

    public int Pid => _process.Id;

    public bool HasExited => _process.HasExited;

    public string StandardError
    {
        get
        {
            lock (_stderr)
            {
                return _stderr.ToString();
            }
        }
    }

    public static string Executable => "qemu-system-x86_64";

    /// <summary>Starts QEMU; retries with another port if the one picked was taken in between.</summary>
    public static async Task<QemuProcess> StartAsync(int vcpus = 2)
    {
        for (int attempt = 0; ; attempt++)
        {
            QemuProcess qemu = Launch(vcpus);
            // A port clash makes QEMU exit at once; give it a moment to fail.
            await Task.Delay(150);
            if (!qemu.HasExited)
            {
                return qemu;
            }

            string error = qemu.StandardError;
            await qemu.DisposeAsync();
            if (attempt == 2)
            {
                throw new InvalidOperationException($"{Executable} exited at start: {error}");
            }
        }
    }

    private static QemuProcess Launch(int vcpus)
    {
        DirectoryInfo folder = Directory.CreateTempSubdirectory("vmi-qemu-test-");
        string qmp = Path.Combine(folder.FullName, "qmp.sock");
        int port = FreeLoopbackPort();
        var start = new ProcessStartInfo(Executable)
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (string argument in new[]
                 {
                     "-machine", "pc", "-accel", "tcg", "-cpu", "max", "-m", "64", "-smp", vcpus.ToString(System.Globalization.CultureInfo.InvariantCulture),
                     "-S", "-nodefaults", "-display", "none",
                     "-qmp", $"unix:{qmp},server=on,wait=off",
                     "-gdb", $"tcp:127.0.0.1:{port}",
                 })
        {
            start.ArgumentList.Add(argument);
        }

        Process process = Process.Start(start) ?? throw new InvalidOperationException($"Could not start {Executable}.");
        var qemu = new QemuProcess(process, folder, qmp, port);
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (qemu._stderr)
                {
                    qemu._stderr.AppendLine(e.Data);
                }
            }
        };
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        return qemu;
    }

    private static int FreeLoopbackPort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>Kills this QEMU process (by its PID, nothing else) and removes its folder.</summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: false);
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
                await _process.WaitForExitAsync(cts.Token);
            }
        }
        catch (InvalidOperationException)
        {
            // Already gone.
        }
        finally
        {
            _process.Dispose();
            try
            {
                _folder.Delete(recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }
}
