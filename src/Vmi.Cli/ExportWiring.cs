using System.CommandLine;
using Vmi.Events;
using Vmi.Export;
using Vmi.Export.Elasticsearch;
using Vmi.Export.Spool;

namespace Vmi.Cli;

/// <summary>
/// Elasticsearch export for <c>vmi monitor</c>: every event the pipeline delivers is appended to a durable
/// spool, and an exporter sends the spool to Elasticsearch's <c>_bulk</c> API in order, so an outage or a
/// restart loses nothing and a replay makes no duplicates (document id = event id).
/// </summary>
internal sealed class ExportWiring : IAsyncDisposable
{
    private readonly DurableSpool _spool;
    private readonly ElasticsearchSink _sink;
    private readonly Exporter _exporter;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _run;
    private readonly TextWriter _log;

    private ExportWiring(DurableSpool spool, ElasticsearchSink sink, Exporter exporter, TextWriter log)
    {
        _spool = spool;
        _sink = sink;
        _exporter = exporter;
        _log = log;
        _run = Task.Run(() => _exporter.RunAsync(_stop.Token));
    }

    public static Option<string[]> Nodes() => new("--es") { Description = "Export every event and alert to Elasticsearch at these node URLs (default $VMI_ES_URL when set).", AllowMultipleArgumentsPerToken = true };
    public static Option<string> ApiKeyFile() => new("--es-api-key-file") { Description = "File holding the Elasticsearch API key (base64 id:key), default $VMI_ES_API_KEY." };
    public static Option<string> User() => new("--es-user") { Description = "Elasticsearch user for basic auth (default $VMI_ES_USERNAME); the password from --es-password-file or $VMI_ES_PASSWORD." };
    public static Option<string> PasswordFile() => new("--es-password-file") { Description = "File holding the Elasticsearch password." };
    public static Option<string> Ca() => new("--es-ca") { Description = "PEM certificate authority of the Elasticsearch nodes." };
    public static Option<string> Spool() => new("--spool") { Description = "Folder of the export spool (default ~/.local/share/vmi/spool/elasticsearch)." };

    /// <summary>Starts exporting when Elasticsearch is configured (options or environment); null otherwise.</summary>
    public static ExportWiring? Start(ParseResult parse, Option<string[]> nodes, Option<string> apiKeyFile, Option<string> user, Option<string> passwordFile,
        Option<string> ca, Option<string> spool, TextWriter log)
    {
        string[] urls = parse.GetValue(nodes) is { Length: > 0 } given ? given
            : Environment.GetEnvironmentVariable("VMI_ES_URL") is { Length: > 0 } env ? env.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) : [];
        if (urls.Length == 0)
            return null;
        var uris = new List<Uri>();
        foreach (string u in urls)
            uris.Add(Uri.TryCreate(u, UriKind.Absolute, out Uri? uri) ? uri : throw new UsageException($"--es {u}: not a URL (https://host:9200)."));
        string? apiKey = parse.GetValue(apiKeyFile) is string kf ? ReadSecret(kf, "--es-api-key-file") : Environment.GetEnvironmentVariable("VMI_ES_API_KEY") is { Length: > 0 } k ? k : null;
        string? username = parse.GetValue(user) ?? (Environment.GetEnvironmentVariable("VMI_ES_USERNAME") is { Length: > 0 } un ? un : null);
        string? password = parse.GetValue(passwordFile) is string pf ? ReadSecret(pf, "--es-password-file") : Environment.GetEnvironmentVariable("VMI_ES_PASSWORD");
        if (username is not null && string.IsNullOrEmpty(password))
            throw new UsageException("--es-user needs a password: --es-password-file FILE or $VMI_ES_PASSWORD.");
        string folder = parse.GetValue(spool) ?? Path.Combine(Path.GetDirectoryName(MonitorCommands.DefaultStorePath())!, "spool", "elasticsearch");
        var options = new ElasticsearchOptions { Nodes = uris, ApiKey = apiKey, Username = username, Password = password, CaFile = parse.GetValue(ca) };
        DurableSpool s = DurableSpool.Open(new SpoolOptions { Directory = folder });
        try
        {
            var sink = new ElasticsearchSink(options);
            var wiring = new ExportWiring(s, sink, new Exporter(s, sink), log);
            log.WriteLine($"vmi monitor: exporting to Elasticsearch {string.Join(", ", uris)} through the spool {folder} ({s.Counters.Pending} records waiting from before)");
            return wiring;
        }
        catch
        {
            s.Dispose();
            throw;
        }
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

    /// <summary>Spools one event (never blocks on the network).</summary>
    public void Post(VmiEvent e)
    {
        try
        {
            _spool.Append(ExportItem.FromEvent(e));
        }
        catch (ExportException x)
        {
            _log.WriteLine($"vmi monitor: export spool: {x.Message}");
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        try
        {
            await _run.ConfigureAwait(false);
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
                await _exporter.DrainAsync(drain.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or ExportException)
            {
                // Kept in the spool.
            }
        }
        ExportCounters c = _exporter.Counters;
        _log.WriteLine($"vmi monitor: exported {c.Sent} documents to Elasticsearch ({c.Duplicates} already there, {c.DeadLettered} refused, {_spool.Counters.Pending} still spooled){(_exporter.LastError is string err ? "; last error: " + err : "")}");
        _sink.Dispose();
        _spool.Dispose();
        _stop.Dispose();
    }
}
