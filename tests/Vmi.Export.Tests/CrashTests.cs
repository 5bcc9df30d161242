using System.Diagnostics;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Export.Tests;

/// <summary>
/// The exporter in a child process (tests/Vmi.Export.CrashHost), killed at random points while it
/// appends and exports, then restarted; at the end the destination must hold every record exactly once.
/// </summary>
public sealed class CrashTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly string _dir = TestData.TempDir();
    private FakeElasticsearch _es = null!;

    public async Task InitializeAsync() => _es = await FakeElasticsearch.StartAsync();

    public async Task DisposeAsync()
    {
        await _es.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    private static string HostDll()
    {
        // Built next to this project (a ProjectReference without the assembly): same configuration and framework.
        string dir = AppContext.BaseDirectory.Replace(
            $"{Path.DirectorySeparatorChar}Vmi.Export.Tests{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}",
            $"{Path.DirectorySeparatorChar}Vmi.Export.CrashHost{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}",
            StringComparison.Ordinal);
        string dll = Path.Combine(dir, "Vmi.Export.CrashHost.dll");
        Assert.True(File.Exists(dll), $"crash host not built: {dll}");
        return dll;
    }

    private static Process Start(string dll, string spool, Uri es, int total)
    {
        var info = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string a in new[] { dll, spool, es.AbsoluteUri, total.ToString(System.Globalization.CultureInfo.InvariantCulture) })
            info.ArgumentList.Add(a);
        return Process.Start(info)!;
    }

    /// <summary>Collects the host's output lines and signals the first line that starts with a prefix.</summary>
    private sealed class HostOutput
    {
        private readonly Lock _lock = new();
        private readonly List<string> _lines = [];
        public TaskCompletionSource Opened { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public async Task PumpAsync(StreamReader reader)
        {
            for (string? line; (line = await reader.ReadLineAsync()) is not null;)
            {
                lock (_lock)
                    _lines.Add(line);
                if (line.StartsWith("open", StringComparison.Ordinal))
                    Opened.TrySetResult();
            }
            Opened.TrySetResult();
        }

        public bool Has(string prefix)
        {
            lock (_lock)
                return _lines.Exists(l => l.StartsWith(prefix, StringComparison.Ordinal));
        }

        public override string ToString()
        {
            lock (_lock)
                return string.Join(" | ", _lines);
        }
    }

    [Fact]
    public async Task Killed_at_random_points_the_exporter_still_delivers_every_record_exactly_once()
    {
        const int Total = 20_000;
        const int Kills = 12;
        const int KillsWhileExporting = 5;
        string dll = HostDll();
        string spool = Path.Combine(_dir, "spool");
        _es.BulkDelay = TimeSpan.FromMilliseconds(20); // export lasts a few seconds, and kills land while requests are in flight
        var random = new Random(20261123);
        int kills = 0, exportKills = 0, runs = 0;
        var watch = Stopwatch.StartNew();
        while (true)
        {
            Assert.True(runs++ < 60, "the host never drained the spool");
            using Process p = Start(dll, spool, _es.Url, Total);
            var lines = new HostOutput();
            Task pump = lines.PumpAsync(p.StandardOutput);
            Task<string> stderr = p.StandardError.ReadToEndAsync();
            if (kills < Kills || exportKills < KillsWhileExporting)
            {
                // The first kills fall at a random time after the spool is open (recovery, appending); the
                // others after a random number of _bulk requests plus a few ms, so they hit mid-request
                // (the fake holds each for 20 ms) or between a request and the cursor commit.
                await lines.Opened.Task;
                if (kills >= 5)
                {
                    int target = _es.BulkRequests + random.Next(1, 6);
                    while (_es.BulkRequests < target && !p.HasExited)
                        await Task.Delay(1);
                }
                using var wait = new CancellationTokenSource(TimeSpan.FromMilliseconds(kills >= 5 ? random.Next(0, 30) : random.Next(0, 400)));
                try
                {
                    await p.WaitForExitAsync(wait.Token);
                }
                catch (OperationCanceledException)
                {
                    bool exporting = lines.Has("appended");
                    p.Kill(entireProcessTree: true);
                    await p.WaitForExitAsync();
                    await pump;
                    kills++;
                    exportKills += exporting ? 1 : 0;
                    output.WriteLine($"run {runs}: killed {(exporting ? "exporting" : "appending")}: {lines} docs={_es.Documents.Count}");
                    continue;
                }
            }
            else
            {
                using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(60));
                await p.WaitForExitAsync(limit.Token);
            }
            await pump;
            output.WriteLine($"run {runs}: exit {p.ExitCode}: {lines} {await stderr}");
            Assert.Equal(0, p.ExitCode);
            if (kills >= Kills && exportKills >= KillsWhileExporting)
                break;
            // Drained before the planned kills: the run is too short to test anything.
            Assert.Fail($"the host drained after only {kills} kills ({exportKills} while exporting); raise Total");
        }
        output.WriteLine($"{runs} runs, {kills} kills ({exportKills} while exporting), {watch.Elapsed.TotalSeconds:0.0} s; created={_es.Created} conflicts={_es.Conflicts} bulk={_es.BulkRequests}");

        var docs = _es.Documents;
        Assert.Equal(Total, _es.Created); // each document stored once: no id was ever stored twice
        Assert.Equal(Total, docs.Count);
        var ids = docs.Keys.Select(k => k.Id).ToHashSet();
        for (int i = 0; i < Total; i++)
            Assert.Contains(new Guid(i, 0x7e57, 0x1d, [0, 0, 0, 0, 0, 0, 0, 1]).ToString(), ids);
        Assert.Equal(Total / 10, docs.Keys.Count(k => k.Index == "logs-vmi.alerts-default"));
    }
}
