using System.Diagnostics;
using System.Text;

namespace Vmi.Integration.Tests;

internal sealed record CliResult(int ExitCode, byte[] StdoutBytes, string StandardError)
{
    public string StandardOutput => Encoding.UTF8.GetString(StdoutBytes);
}

/// <summary>Runs the real `vmi` program (vmi.dll next to the tests) as a separate process.</summary>
internal static class VmiCli
{
    public static string DllPath => Path.Combine(AppContext.BaseDirectory, "vmi.dll");

    /// <summary>The alert store every vmi this test run starts uses (a fresh directory per run).</summary>
    public static string StorePath { get; } = Path.Combine(Directory.CreateTempSubdirectory("vmi-test-store-").FullName, "vmi.db");

    public static ProcessStartInfo StartInfo(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        // The tests' alerts go to a store of their own, never the user's.
        psi.Environment["VMI_STORE"] = StorePath;
        psi.ArgumentList.Add(DllPath);
        foreach (string a in args)
            psi.ArgumentList.Add(a);
        return psi;
    }

    public static Task<CliResult> RunAsync(params string[] args) => RunAsync(null, args);

    /// <summary>Runs vmi with extra environment variables (null: none).</summary>
    public static async Task<CliResult> RunAsync(IReadOnlyDictionary<string, string>? environment, params string[] args)
    {
        ProcessStartInfo psi = StartInfo(args);
        foreach (var (k, v) in environment ?? new Dictionary<string, string>())
            psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var stdout = new MemoryStream();
        Task copy = p.StandardOutput.BaseStream.CopyToAsync(stdout);
        Task<string> stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"vmi {string.Join(' ', args)} did not finish in 3 minutes");
        }
        await copy;
        return new CliResult(p.ExitCode, stdout.ToArray(), await stderr);
    }
}
