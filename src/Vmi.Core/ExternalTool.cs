using System.Diagnostics;

namespace Vmi.Core;

/// <summary>Result of running an external program to completion.</summary>
public sealed record ToolResult(int ExitCode, string StandardOutput, string StandardError);

/// <summary>Runs host programs (apt-get, dpkg-deb, gcc, qemu-img…) with clear errors when they are missing.</summary>
public static class ExternalTool
{
    /// <summary>Finds <paramref name="name"/> on PATH; null when absent.</summary>
    public static string? Find(string name)
    {
        if (name.Contains('/', StringComparison.Ordinal))
            return File.Exists(name) ? name : null;
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/local/bin:/usr/bin:/bin").Split(':'))
        {
            if (dir.Length == 0)
                continue;
            string candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
                return candidate;
        }
        foreach (string dir in new[] { "/usr/sbin", "/sbin" })
        {
            string candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
                return candidate;
        }
        return null;
    }

    /// <summary>Finds a required tool or throws a <see cref="LabException"/> naming the Debian package to install.</summary>
    /// <exception cref="LabException">The tool is not installed.</exception>
    public static string Require(string name, string debianPackage) =>
        Find(name) ?? throw new LabException($"'{name}' was not found on PATH: install it with 'apt-get install -y {debianPackage}'.");

    /// <summary>Runs a program and captures its output.</summary>
    public static async Task<ToolResult> RunAsync(string fileName, IEnumerable<string> arguments, string? workingDirectory = null,
        TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        var psi = new ProcessStartInfo(fileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Environment.CurrentDirectory,
        };
        foreach (string a in arguments)
            psi.ArgumentList.Add(a);
        using var process = Process.Start(psi) ?? throw new VmiException($"could not start {fileName}");
        process.StandardInput.Close();
        Task<string> stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
        Task<string> stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(timeout ?? TimeSpan.FromMinutes(10));
        try
        {
            await process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            throw new VmiException($"{Path.GetFileName(fileName)} did not finish within {(timeout ?? TimeSpan.FromMinutes(10)).TotalSeconds:0} s and was stopped.");
        }
        return new ToolResult(process.ExitCode, await stdout.ConfigureAwait(false), await stderr.ConfigureAwait(false));
    }

    /// <summary>Runs a program and throws with its error output when it fails.</summary>
    /// <exception cref="VmiException">The program exited with a non-zero status.</exception>
    public static async Task<string> RunCheckedAsync(string fileName, IEnumerable<string> arguments, string? workingDirectory = null,
        string? hint = null, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        var list = arguments.ToList();
        ToolResult r = await RunAsync(fileName, list, workingDirectory, timeout, cancellationToken).ConfigureAwait(false);
        if (r.ExitCode != 0)
        {
            string err = (r.StandardError.Length > 0 ? r.StandardError : r.StandardOutput).Trim();
            if (err.Length > 2000)
                err = err[^2000..];
            throw new LabException($"'{Path.GetFileName(fileName)} {string.Join(' ', list)}' failed (exit {r.ExitCode}): {err}" + (hint is null ? "" : $"\n{hint}"));
        }
        return r.StandardOutput;
    }
}
