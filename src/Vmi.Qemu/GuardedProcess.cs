using System.Collections.Concurrent;
using System.Diagnostics;
using Vmi.Core;

namespace Vmi.Qemu;

/// <summary>
/// Starts child processes that the kernel kills when Vmi dies, however it dies (SIGKILL included):
/// the child is exec'd through util-linux 'setpriv --pdeathsig KILL'. The parent-death signal fires
/// when the <em>thread</em> that forked the child exits, so every child is forked from one dedicated
/// thread that lives as long as the process — never from a thread-pool thread that may retire.
/// </summary>
public static class GuardedProcess
{
    private static readonly BlockingCollection<(ProcessStartInfo Info, TaskCompletionSource<Process> Done)> Requests = new();
    private static readonly Lazy<Thread> Launcher = new(() =>
    {
        var t = new Thread(Run) { IsBackground = true, Name = "vmi-child-launcher" };
        t.Start();
        return t;
    });

    /// <summary>Whether children are protected by a parent-death signal (setpriv present).</summary>
    public static bool IsGuarded => ExternalTool.Find("setpriv") is not null;

    /// <summary>Starts <paramref name="info"/> guarded by a parent-death signal.</summary>
    /// <exception cref="VmiException">The program could not be started.</exception>
    public static Task<Process> StartAsync(ProcessStartInfo info)
    {
        ArgumentNullException.ThrowIfNull(info);
        string? setpriv = ExternalTool.Find("setpriv");
        if (setpriv is not null)
        {
            var wrapped = new ProcessStartInfo(setpriv)
            {
                RedirectStandardInput = info.RedirectStandardInput,
                RedirectStandardOutput = info.RedirectStandardOutput,
                RedirectStandardError = info.RedirectStandardError,
                UseShellExecute = false,
                WorkingDirectory = info.WorkingDirectory,
            };
            wrapped.ArgumentList.Add("--pdeathsig");
            wrapped.ArgumentList.Add("KILL");
            wrapped.ArgumentList.Add("--");
            wrapped.ArgumentList.Add(info.FileName);
            foreach (string a in info.ArgumentList)
                wrapped.ArgumentList.Add(a);
            foreach (var kv in info.Environment)
                wrapped.Environment[kv.Key] = kv.Value;
            info = wrapped;
        }
        var done = new TaskCompletionSource<Process>(TaskCreationOptions.RunContinuationsAsynchronously);
        _ = Launcher.Value;
        Requests.Add((info, done));
        return done.Task;
    }

    private static void Run()
    {
        foreach (var (info, done) in Requests.GetConsumingEnumerable())
        {
            try
            {
                done.SetResult(Process.Start(info) ?? throw new VmiException($"could not start {info.FileName}"));
            }
            catch (System.ComponentModel.Win32Exception e)
            {
                done.SetException(new VmiException($"could not start {info.FileName}: {e.Message}", e));
            }
            catch (VmiException e)
            {
                done.SetException(e);
            }
        }
    }
}
