using System.CommandLine;
using Vmi.Events;
using Vmi.Export;
using Vmi.Export.Elasticsearch;
using Vmi.Export.Spool;
using Vmi.Export.Syslog;

namespace Vmi.Cli;

/// <summary>
/// Elasticsearch export for <c>vmi monitor</c>: every event the pipeline delivers is appended to a durable
/// spool, and an exporter sends the spool to Elasticsearch's <c>_bulk</c> API in order, so an outage or a
/// restart loses nothing and a replay makes no duplicates (document id = event id).
/// </summary>
internal sealed class ExportWiring : IAsyncDisposable
{
    /// <summary>One destination: its own spool and exporter, so one destination's outage never holds up another.</summary>
    private sealed record Lane(string Name, DurableSpool Spool, IExportSink Sink, Exporter Exporter, Task Run);

    private readonly List<Lane> _lanes = [];
    private readonly CancellationTokenSource _stop = new();
    private readonly TextWriter _log;

    private ExportWiring(TextWriter log) => _log = log;

    public static Option<string[]> Nodes() => new("--es") { Description = "Export every event and alert to Elasticsearch at these node URLs (default $VMI_ES_URL when set).", AllowMultipleArgumentsPerToken = true };
    public static Option<string> ApiKeyFile() => new("--es-api-key-file") { Description = "File holding the Elasticsearch API key (base64 id:key), default $VMI_ES_API_KEY." };
    public static Option<string> User() => new("--es-user") { Description = "Elasticsearch user for basic auth (default $VMI_ES_USERNAME); the password from --es-password-file or $VMI_ES_PASSWORD." };
    public static Option<string> PasswordFile() => new("--es-password-file") { Description = "File holding the Elasticsearch password." };
    public static Option<string> Ca() => new("--es-ca") { Description = "PEM certificate authority of the Elasticsearch nodes." };
    public static Option<string[]> Syslog() => new("--syslog") { Description = "Send every event and alert as RFC 5424 syslog over TLS (RFC 5425) to these servers, HOST[:PORT] (port 6514 by default); each has its own spool.", AllowMultipleArgumentsPerToken = true };
    public static Option<string> SyslogCa() => new("--syslog-ca") { Description = "PEM certificate authority of the syslog servers (default: the system's)." };
    public static Option<string> Spool() => new("--spool") { Description = "Folder of the export spools, one subfolder per destination (default ~/.local/share/vmi/spool)." };

    /// <summary>Starts exporting to every configured destination (options or environment); null when there is none.</summary>
    public static ExportWiring? Start(ParseResult parse, Option<string[]> nodes, Option<string> apiKeyFile, Option<string> user, Option<string> passwordFile,
        Option<string> ca, Option<string[]> syslog, Option<string> syslogCa, Option<string> spool, TextWriter log)
    {
        string spoolBase = parse.GetValue(spool) ?? Path.Combine(Path.GetDirectoryName(MonitorCommands.DefaultStorePath())!, "spool");
        var wiring = new ExportWiring(log);
        try
        {
            string[] urls = parse.GetValue(nodes) is { Length: > 0 } given ? given
                : Environment.GetEnvironmentVariable("VMI_ES_URL") is { Length: > 0 } env ? env.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) : [];
            if (urls.Length > 0)
            {
                var uris = new List<Uri>();
                foreach (string u in urls)
                    uris.Add(Uri.TryCreate(u, UriKind.Absolute, out Uri? uri) ? uri : throw new UsageException($"--es {u}: not a URL (https://host:9200)."));
                string? apiKey = parse.GetValue(apiKeyFile) is string kf ? ReadSecret(kf, "--es-api-key-file") : Environment.GetEnvironmentVariable("VMI_ES_API_KEY") is { Length: > 0 } k ? k : null;
                string? username = parse.GetValue(user) ?? (Environment.GetEnvironmentVariable("VMI_ES_USERNAME") is { Length: > 0 } un ? un : null);
                string? password = parse.GetValue(passwordFile) is string pf ? ReadSecret(pf, "--es-password-file") : Environment.GetEnvironmentVariable("VMI_ES_PASSWORD");
                if (username is not null && string.IsNullOrEmpty(password))
                    throw new UsageException("--es-user needs a password: --es-password-file FILE or $VMI_ES_PASSWORD.");
                var options = new ElasticsearchOptions { Nodes = uris, ApiKey = apiKey, Username = username, Password = password, CaFile = parse.GetValue(ca) };
                wiring.Add($"Elasticsearch {string.Join(", ", uris)}", Path.Combine(spoolBase, "elasticsearch"), () => new ElasticsearchSink(options));
            }
            foreach (string server in parse.GetValue(syslog) ?? [])
            {
                var (host, port) = HostPort(server);
                var options = new SyslogTlsOptions { Host = host, Port = port, CaCertificatePemFile = parse.GetValue(syslogCa) };
                wiring.Add($"syslog {host}:{port}", Path.Combine(spoolBase, $"syslog-{host}-{port}"), () => new SyslogTlsSink(options));
            }
        }
        catch
        {
            wiring.DisposeAsync().AsTask().GetAwaiter().GetResult();
            throw;
        }
        return wiring._lanes.Count == 0 ? null : wiring;
    }

    private void Add(string name, string folder, Func<IExportSink> sink)
    {
        DurableSpool s = DurableSpool.Open(new SpoolOptions { Directory = folder });
        try
        {
            IExportSink k = sink();
            var exporter = new Exporter(s, k);
            _lanes.Add(new Lane(name, s, k, exporter, Task.Run(() => exporter.RunAsync(_stop.Token))));
            _log.WriteLine($"vmi monitor: exporting to {name} through the spool {folder} ({s.Counters.Pending} records waiting from before)");
        }
        catch
        {
            s.Dispose();
            throw;
        }
    }

    private static (string Host, int Port) HostPort(string server)
    {
        int colon = server.LastIndexOf(':');
        if (colon < 0)
            return (server, 6514);
        return int.TryParse(server.AsSpan(colon + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int port) && port is > 0 and < 65536 && colon > 0
            ? (server[..colon], port)
            : throw new UsageException($"--syslog {server}: use HOST or HOST:PORT.");
    }

    private static string ReadSecret(string file, string option)
    {
        try
        {
            return File.ReadAllText(file).Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"{option} {file}: {e.Message}");
        }
    }

    /// <summary>Spools one event for every destination (never blocks on the network).</summary>
    public void Post(VmiEvent e)
    {
        ExportItem item = ExportItem.FromEvent(e);
        foreach (Lane lane in _lanes)
        {
            try
            {
                lane.Spool.Append(item);
            }
            catch (ExportException x)
            {
                _log.WriteLine($"vmi monitor: export spool of {lane.Name}: {x.Message}");
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        foreach (Lane lane in _lanes)
        {
            try
            {
                await lane.Run.ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // Stopping.
            }
            // Give the exporter a moment to send what is still spooled; the rest goes with the next run.
            using (var drain = new CancellationTokenSource(TimeSpan.FromSeconds(10)))
            {
                try
                {
                    await lane.Exporter.DrainAsync(drain.Token).ConfigureAwait(false);
                }
                catch (Exception e) when (e is OperationCanceledException or ExportException)
                {
                    // Kept in the spool.
                }
            }
            ExportCounters c = lane.Exporter.Counters;
            _log.WriteLine($"vmi monitor: exported {c.Sent} records to {lane.Name} ({c.Duplicates} already there, {c.DeadLettered} refused, {lane.Spool.Counters.Pending} still spooled){(lane.Exporter.LastError is string err ? "; last error: " + err : "")}");
            (lane.Sink as IDisposable)?.Dispose();
            lane.Spool.Dispose();
        }
        _stop.Dispose();
    }
}
