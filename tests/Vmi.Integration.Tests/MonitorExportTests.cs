using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Integration.Tests;

/// <summary>
/// <c>vmi monitor --es</c> against a small stand-in that answers like Elasticsearch's documented <c>_bulk</c>
/// API (no Elasticsearch server runs on these machines): the lab's alerts arrive as ECS documents in the
/// alerts data stream, and a second run replays nothing twice.
/// </summary>
[Collection("malware lab")]
public sealed class MonitorExportTests(MalwareLabFixture lab, ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vmi-monitor-export-").FullName;

    [Fact]
    public async Task Monitor_exports_alerts_and_events_to_elasticsearch_bulk_with_ids_that_replay_without_duplicates()
    {
        using var es = new BulkStandIn();
        string[] args = ["monitor", "--target", lab.Guest.Vm.TargetSpec, "--no-hooks", "--sweep-interval", "1", "--duration", "12",
            "--es", es.Url, "--spool", Path.Combine(_dir, "spool"), "--store", Path.Combine(_dir, "vmi.db")];
        CliResult first = await VmiCli.RunAsync(args);
        output.WriteLine(first.StandardError);
        Assert.Equal(0, first.ExitCode);
        Assert.Contains("exporting to Elasticsearch", first.StandardError, StringComparison.Ordinal);
        Assert.True(Directory.Exists(Path.Combine(_dir, "spool", "elasticsearch")));

        var alerts = es.Documents.Where(d => d.Index == "logs-vmi.alerts-default").Select(d => JsonDocument.Parse(d.Json).RootElement).ToList();
        Assert.Contains(alerts, a => a.GetProperty("event").GetProperty("kind").GetString() == "alert"
            && a.GetProperty("vmi").GetProperty("evidence").GetProperty("rule").GetString() == "Vmi_Test_Malware_Plain");
        Assert.Contains(es.Documents, d => d.Index == "logs-vmi.events-default");
        Assert.True(es.TemplatesPut >= 1, "the index templates were not set up on first use");
        // Document ids are the events' ids: every id once.
        // its ids and nothing is stored twice; the exporter counts those as already there, not as failures.
        Assert.Equal(es.Documents.Count, es.Documents.Select(d => d.Id).Distinct().Count());
        int afterFirst = es.Documents.Count;

        // A second run on the same spool sends only new events (nothing of the first run is sent again as new).
        CliResult second = await VmiCli.RunAsync(args);
        output.WriteLine(second.StandardError);
        Assert.Equal(0, second.ExitCode);
        // A batch stored just before the first run stopped may be sent again: Elasticsearch answers 409 for
        // its ids and nothing is stored twice; the exporter counts those as already there, not as failures.
        Assert.Contains($"({es.Conflicts} already there, 0 refused", second.StandardError, StringComparison.Ordinal);
        Assert.True(es.Documents.Count > afterFirst);
        ResultsFile.Append("export.txt", [$"vmi monitor --es: {afterFirst} documents in the first 12 s run, {es.Documents.Count - afterFirst} in the second, {es.Conflicts} replayed ids refused with 409, 0 duplicates stored"]);
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
            // Temporary folder.
        }
    }

    /// <summary>Answers <c>GET /</c>, <c>PUT _index_template/*</c> and <c>POST _bulk</c> (create ops, 409 on a known id) like Elasticsearch 8.</summary>
    private sealed class BulkStandIn : IDisposable
    {
        private readonly HttpListener _listener = new();
        private readonly ConcurrentDictionary<string, (string Index, string Json)> _docs = new();
        private readonly Task _loop;
        private int _templates, _conflicts;

        public BulkStandIn()
        {
            var probe = new TcpListener(IPAddress.Loopback, 0);
            probe.Start();
            int port = ((IPEndPoint)probe.LocalEndpoint).Port;
            probe.Stop();
            Url = $"http://127.0.0.1:{port}/";
            _listener.Prefixes.Add(Url);
            _listener.Start();
            _loop = Task.Run(LoopAsync);
        }

        public string Url { get; }
        public int TemplatesPut => Volatile.Read(ref _templates);
        public int Conflicts => Volatile.Read(ref _conflicts);
        public IReadOnlyList<(string Id, string Index, string Json)> Documents => [.. _docs.Select(kv => (kv.Key, kv.Value.Index, kv.Value.Json))];

        private async Task LoopAsync()
        {
            while (_listener.IsListening)
            {
                HttpListenerContext ctx;
                try
                {
                    ctx = await _listener.GetContextAsync();
                }
                catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException)
                {
                    return;
                }
                string body;
                using (var reader = new StreamReader(ctx.Request.InputStream, Encoding.UTF8))
                    body = await reader.ReadToEndAsync();
                string path = ctx.Request.Url!.AbsolutePath;
                string reply;
                if (ctx.Request.HttpMethod == "PUT" && path.StartsWith("/_index_template/", StringComparison.Ordinal))
                {
                    Interlocked.Increment(ref _templates);
                    reply = "{\"acknowledged\":true}";
                }
                else if (ctx.Request.HttpMethod == "POST" && path == "/_bulk")
                {
                    reply = Bulk(body);
                }
                else
                {
                    reply = "{\"name\":\"stand-in\",\"cluster_name\":\"vmi-test\",\"version\":{\"number\":\"8.15.3\"},\"tagline\":\"You Know, for Search\"}";
                }
                byte[] bytes = Encoding.UTF8.GetBytes(reply);
                ctx.Response.ContentType = "application/json";
                ctx.Response.ContentLength64 = bytes.Length;
                await ctx.Response.OutputStream.WriteAsync(bytes);
                ctx.Response.Close();
            }
        }

        private string Bulk(string ndjson)
        {
            var items = new List<string>();
            string[] lines = ndjson.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            bool errors = false;
            for (int i = 0; i + 1 < lines.Length; i += 2)
            {
                using var action = JsonDocument.Parse(lines[i]);
                JsonElement create = action.RootElement.GetProperty("create");
                string id = create.GetProperty("_id").GetString()!;
                string index = create.GetProperty("_index").GetString()!;
                if (_docs.TryAdd(id, (index, lines[i + 1])))
                {
                    items.Add($"{{\"create\":{{\"_index\":\"{index}\",\"_id\":\"{id}\",\"status\":201,\"result\":\"created\"}}}}");
                }
                else
                {
                    Interlocked.Increment(ref _conflicts);
                    errors = true;
                    items.Add($"{{\"create\":{{\"_index\":\"{index}\",\"_id\":\"{id}\",\"status\":409,\"error\":{{\"type\":\"version_conflict_engine_exception\",\"reason\":\"document already exists\"}}}}}}");
                }
            }
            return $"{{\"took\":1,\"errors\":{(errors ? "true" : "false")},\"items\":[{string.Join(',', items)}]}}";
        }

        public void Dispose()
        {
            _listener.Stop();
            _listener.Close();
            try
            {
                _loop.Wait(TimeSpan.FromSeconds(5));
            }
            catch (AggregateException)
            {
                // Stopped.
            }
        }
    }
}
