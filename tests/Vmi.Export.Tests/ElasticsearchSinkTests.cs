using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Vmi.Export.Elasticsearch;
using Vmi.Export.Spool;
using Xunit;

namespace Vmi.Export.Tests;

public sealed class ElasticsearchSinkTests : IAsyncLifetime
{
    private readonly string _dir = TestData.TempDir();
    private FakeElasticsearch _es = null!;

    public async Task InitializeAsync() => _es = await FakeElasticsearch.StartAsync();

    public async Task DisposeAsync()
    {
        await _es.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    private ElasticsearchSink Sink(Uri? url = null, string? apiKey = null, string? user = null, string? password = null, string? ca = null) =>
        new(new ElasticsearchOptions { Nodes = [url ?? _es.Url], ApiKey = apiKey, Username = user, Password = password, CaFile = ca, RequestTimeout = TimeSpan.FromSeconds(10) });

    private async Task<Exporter> ExportAsync(IExportSink sink, int count, int batch = 100)
    {
        DurableSpool spool = DurableSpool.Open(TestData.Spool(_dir));
        try
        {
            spool.AppendRange(TestData.Items(count));
            var exporter = new Exporter(spool, sink, TestData.FastRetries(batch));
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await exporter.DrainAsync(cts.Token);
            Assert.Equal(0, spool.Counters.Pending);
            return exporter;
        }
        finally
        {
            spool.Dispose();
        }
    }

    private void AssertHoldsExactly(int count)
    {
        var docs = _es.Documents;
        Assert.Equal(count, docs.Count);
        Assert.Equal(count, _es.Created); // stored once each, never overwritten
        var expected = TestData.Items(count).Select(i => i.Id).Order().ToList();
        Assert.Equal(expected, docs.Keys.Select(k => k.Id).Order().ToList());
    }

    [Fact]
    public async Task Full_success_stores_ECS_documents_in_the_alert_and_event_data_streams()
    {
        using ElasticsearchSink sink = Sink();
        Exporter exporter = await ExportAsync(sink, 250);
        AssertHoldsExactly(250);
        Assert.Equal(new ExportCounters(250, 0, 0, 0, exporter.Counters.Bytes, 3), exporter.Counters);
        Assert.Equal(3, _es.BulkRequests);
        var docs = _es.Documents;
        Assert.Equal(25, docs.Keys.Count(k => k.Index == "logs-vmi.alerts-default"));
        Assert.Equal(225, docs.Keys.Count(k => k.Index == "logs-vmi.events-default"));

        string alertId = TestData.Event(10).Id.ToString();
        using JsonDocument alert = JsonDocument.Parse(docs[("logs-vmi.alerts-default", alertId)]);
        JsonElement a = alert.RootElement;
        Assert.Equal("alert", a.GetProperty("event").GetProperty("kind").GetString());
        Assert.Equal(alertId, a.GetProperty("event").GetProperty("id").GetString());
        Assert.Equal("2026-11-01T12:00:10.0000000Z", a.GetProperty("@timestamp").GetString());
        Assert.Equal("vm-1", a.GetProperty("host").GetProperty("name").GetString());
        Assert.Equal(4242, a.GetProperty("process").GetProperty("pid").GetInt32());
        Assert.Equal("syscall-table-hook", a.GetProperty("rule").GetProperty("name").GetString());
        Assert.Equal(["T1014", "T1547.006"], a.GetProperty("threat").GetProperty("technique").GetProperty("id").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal("MITRE ATT&CK", a.GetProperty("threat").GetProperty("framework").GetString());

        using JsonDocument process = JsonDocument.Parse(docs[("logs-vmi.events-default", TestData.Event(11).Id.ToString())]);
        Assert.Equal("event", process.RootElement.GetProperty("event").GetProperty("kind").GetString());
        Assert.Equal(1011, process.RootElement.GetProperty("process").GetProperty("pid").GetInt32());
    }

    [Fact]
    public async Task Index_templates_are_put_once_on_first_use_with_data_streams_and_ECS_mappings()
    {
        using ElasticsearchSink sink = Sink();
        await ExportAsync(sink, 300, batch: 50);
        Assert.Equal(6, _es.BulkRequests);
        Assert.Equal(1, _es.TemplatePuts);
        Assert.Equal(1, sink.TemplatePuts);
        // The one template the dashboards load too, covering both data streams.
        using JsonDocument t = JsonDocument.Parse(_es.Templates[ElasticsearchSink.TemplateName]);
        JsonElement root = t.RootElement;
        Assert.Equal(["logs-vmi.alerts-*", "logs-vmi.events-*"], root.GetProperty("index_patterns").EnumerateArray().Select(p => p.GetString()));
        Assert.Equal(JsonValueKind.Object, root.GetProperty("data_stream").ValueKind);
        JsonElement props = root.GetProperty("template").GetProperty("mappings").GetProperty("properties");
        Assert.Equal("date", props.GetProperty("@timestamp").GetProperty("type").GetString());
        Assert.Equal("keyword", props.GetProperty("event").GetProperty("properties").GetProperty("kind").GetProperty("type").GetString());
        Assert.Equal("long", props.GetProperty("process").GetProperty("properties").GetProperty("pid").GetProperty("type").GetString());
        Assert.Equal("keyword", props.GetProperty("threat").GetProperty("properties").GetProperty("technique").GetProperty("properties").GetProperty("id").GetProperty("type").GetString());
    }

    [Fact]
    public async Task Item_level_failures_dead_letter_the_refused_and_retry_the_overloaded()
    {
        List<ExportItem> items = TestData.Items(100);
        _es.ItemFailures[items[7].Id] = (400, "mapper_parsing_exception", "failed to parse field [process.pid] of type [long]", -1);
        _es.ItemFailures[items[8].Id] = (429, "es_rejected_execution_exception", "rejected execution of primary operation", 2);
        _es.ItemFailures[items[9].Id] = (503, "unavailable_shards_exception", "primary shard is not active", 1);
        using ElasticsearchSink sink = Sink();
        Exporter exporter = await ExportAsync(sink, 100);

        Assert.Equal(99, _es.Documents.Count);
        Assert.DoesNotContain(_es.Documents.Keys, k => k.Id == items[7].Id);
        ExportCounters c = exporter.Counters;
        Assert.Equal(99, c.Sent);
        Assert.Equal(1, c.DeadLettered);
        Assert.Equal(3, c.Retries); // 8 twice, 9 once: only the failed items are resent
        Assert.Equal(3, _es.BulkRequests);
        JsonElement dead = Assert.Single(exporter.DeadLetters.ReadAll());
        Assert.Equal(items[7].Id, dead.GetProperty("id").GetString());
        Assert.Equal(400, dead.GetProperty("status").GetInt32());
        Assert.Equal("mapper_parsing_exception", dead.GetProperty("error_type").GetString());
        Assert.Contains("process.pid", dead.GetProperty("reason").GetString(), StringComparison.Ordinal);
        Assert.Equal(items[7].Id, dead.GetProperty("document").GetProperty("event").GetProperty("id").GetString());
    }

    [Fact]
    public async Task A_whole_request_429_waits_for_Retry_After_then_succeeds()
    {
        _es.RetryAfterSeconds = 1;
        _es.Enqueue(BulkFault.TooManyRequests);
        using ElasticsearchSink sink = Sink();
        var watch = Stopwatch.StartNew();
        Exporter exporter = await ExportAsync(sink, 50);
        Assert.True(watch.Elapsed >= TimeSpan.FromMilliseconds(950), $"{watch.Elapsed}");
        AssertHoldsExactly(50);
        Assert.Equal(50, exporter.Counters.Retries);
        Assert.Equal(2, _es.BulkRequests);
    }

    [Fact]
    public async Task Repeated_503_backs_off_then_succeeds()
    {
        _es.Enqueue(BulkFault.Unavailable, BulkFault.Unavailable, BulkFault.Unavailable);
        using ElasticsearchSink sink = Sink();
        Exporter exporter = await ExportAsync(sink, 40);
        AssertHoldsExactly(40);
        Assert.Equal(120, exporter.Counters.Retries);
        Assert.Equal(4, _es.BulkRequests);
    }

    [Fact]
    public async Task A_connection_dropped_after_storing_is_resent_without_duplicates()
    {
        _es.Enqueue(BulkFault.DropAfterStoring);
        using ElasticsearchSink sink = Sink();
        Exporter exporter = await ExportAsync(sink, 80);
        AssertHoldsExactly(80);
        Assert.Equal(80, exporter.Counters.Duplicates); // the resend found every document already there
        Assert.Equal(0, exporter.Counters.Sent);
        Assert.Equal(80, _es.Conflicts);
    }

    [Fact]
    public async Task A_connection_dropped_before_storing_is_resent()
    {
        _es.Enqueue(BulkFault.DropBeforeStoring);
        using ElasticsearchSink sink = Sink();
        Exporter exporter = await ExportAsync(sink, 30);
        AssertHoldsExactly(30);
        Assert.Equal(30, exporter.Counters.Sent);
        Assert.Equal(30, exporter.Counters.Retries);
    }

    [Fact]
    public async Task A_request_over_the_size_limit_is_split_until_it_fits()
    {
        _es.MaxBulkBytes = 16 << 10; // about 25 records of ~600 bytes with their action lines
        using ElasticsearchSink sink = Sink();
        Exporter exporter = await ExportAsync(sink, 100);
        AssertHoldsExactly(100);
        Assert.Equal(0, exporter.Counters.DeadLettered);
        Assert.Equal(0, exporter.Counters.Retries);
    }

    [Fact]
    public async Task An_unreachable_node_hands_over_to_the_next()
    {
        // A port nothing listens on (taken and released), then the fake.
        var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        int deadPort = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        using var sink = new ElasticsearchSink(new ElasticsearchOptions { Nodes = [new Uri($"http://127.0.0.1:{deadPort}/"), _es.Url] });
        Exporter exporter = await ExportAsync(sink, 20);
        AssertHoldsExactly(20);
        Assert.Equal(20, exporter.Counters.Retries);
    }

    [Fact]
    public async Task Api_key_is_sent_as_ApiKey_authorization()
    {
        string encoded = Convert.ToBase64String(Encoding.UTF8.GetBytes("VuaCfGcBCdbkQm-e5aOx:ui2lp2axTNmsyakw9tvNnw"));
        _es.RequiredAuthorization = "ApiKey " + encoded;
        using ElasticsearchSink sink = Sink(apiKey: encoded);
        Assert.Equal("8.15.0", await sink.PingAsync(CancellationToken.None));
        await ExportAsync(sink, 10);
        AssertHoldsExactly(10);
        Assert.Equal(0, _es.Unauthorized);
    }

    [Fact]
    public async Task Basic_auth_is_sent_as_Basic_authorization()
    {
        _es.RequiredAuthorization = "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes("vmi_writer:s3cret:with:colons"));
        using ElasticsearchSink sink = Sink(user: "vmi_writer", password: "s3cret:with:colons");
        await ExportAsync(sink, 10);
        AssertHoldsExactly(10);
    }

    [Fact]
    public async Task Wrong_credentials_fail_with_a_clear_error_and_keep_the_records()
    {
        _es.RequiredAuthorization = "ApiKey right";
        using ElasticsearchSink sink = Sink(apiKey: "wrong");
        using DurableSpool spool = DurableSpool.Open(TestData.Spool(_dir));
        spool.AppendRange(TestData.Items(10));
        var exporter = new Exporter(spool, sink, TestData.FastRetries());
        ExportException e = await Assert.ThrowsAsync<ExportException>(() => exporter.DrainAsync(CancellationToken.None));
        Assert.Contains("401", e.Message, StringComparison.Ordinal);
        Assert.Contains("unable to authenticate user", e.Message, StringComparison.Ordinal);
        Assert.Contains("API key", e.Message, StringComparison.Ordinal);
        Assert.Equal(10, spool.Counters.Pending);
        Assert.Empty(_es.Documents);
    }

    [Fact]
    public async Task The_run_loop_survives_a_credentials_error_and_reports_it()
    {
        _es.RequiredAuthorization = "ApiKey right";
        using ElasticsearchSink sink = Sink(apiKey: "wrong");
        using DurableSpool spool = DurableSpool.Open(TestData.Spool(_dir));
        spool.AppendRange(TestData.Items(5));
        var exporter = new Exporter(spool, sink, TestData.FastRetries() with { MaxRetryDelay = TimeSpan.FromMilliseconds(50) });
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(400));
        await exporter.RunAsync(cts.Token);
        Assert.Contains("401", exporter.LastError, StringComparison.Ordinal);
        Assert.Equal(5, spool.Counters.Pending);
    }

    [Fact]
    public async Task Run_loop_exports_records_as_they_arrive()
    {
        using ElasticsearchSink sink = Sink();
        using DurableSpool spool = DurableSpool.Open(TestData.Spool(_dir));
        var exporter = new Exporter(spool, sink, TestData.FastRetries() with { IdlePoll = TimeSpan.FromSeconds(5) });
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        Task run = exporter.RunAsync(cts.Token);
        foreach (ExportItem item in TestData.Items(30))
            spool.Append(item);
        while (_es.Documents.Count < 30 && !cts.IsCancellationRequested)
            await Task.Delay(10);
        await cts.CancelAsync();
        await run;
        AssertHoldsExactly(30);
    }

    [Fact]
    public void Bulk_body_is_NDJSON_create_actions_with_the_record_ids()
    {
        using ElasticsearchSink sink = Sink();
        List<ExportItem> items = TestData.Items(11);
        string[] lines = Encoding.UTF8.GetString(sink.BuildBulkBody(items)).Split('\n');
        Assert.Equal(23, lines.Length); // 11 pairs and the final newline
        Assert.Equal("", lines[^1]);
        Assert.Equal($$$"""{"create":{"_index":"logs-vmi.alerts-default","_id":"{{{items[0].Id}}}"}}""", lines[0]);
        Assert.Equal(items[0].Json, lines[1]);
        Assert.Equal($$$"""{"create":{"_index":"logs-vmi.events-default","_id":"{{{items[1].Id}}}"}}""", lines[2]);
    }

    [Fact]
    public void Bulk_answer_items_map_to_outcomes_in_order()
    {
        // Shape as documented for POST _bulk: top-level "errors", one object per action in "items".
        string answer = """
            {"took":30,"errors":true,"items":[
              {"create":{"_index":"d","_id":"1","_version":1,"result":"created","status":201}},
              {"create":{"_index":"d","_id":"2","status":409,"error":{"type":"version_conflict_engine_exception","reason":"[2]: version conflict, document already exists (current version [1])"}}},
              {"create":{"_index":"d","_id":"3","status":400,"error":{"type":"document_parsing_exception","reason":"[1:15] failed to parse field [process.pid]","caused_by":{"type":"illegal_argument_exception","reason":"For input string: \"x\""}}}},
              {"create":{"_index":"d","_id":"4","status":429,"error":{"type":"es_rejected_execution_exception","reason":"rejected"}}},
              {"create":{"_index":"d","_id":"5","status":500,"error":{"type":"exception","reason":"boom"}}}
            ]}
            """;
        ItemResult[] r = ElasticsearchSink.ParseBulkResponse(Encoding.UTF8.GetBytes(answer), 5);
        Assert.Equal([ItemOutcome.Delivered, ItemOutcome.Duplicate, ItemOutcome.Rejected, ItemOutcome.Retryable, ItemOutcome.Retryable], r.Select(x => x.Outcome));
        Assert.Equal("document_parsing_exception", r[2].ErrorType);
        Assert.Contains("For input string", r[2].Reason, StringComparison.Ordinal);
        // An answer that does not match the request is not trusted: everything is sent again.
        Assert.All(ElasticsearchSink.ParseBulkResponse(Encoding.UTF8.GetBytes(answer), 6), x => Assert.Equal(ItemOutcome.Retryable, x.Outcome));
        Assert.All(ElasticsearchSink.ParseBulkResponse("<html>"u8, 2), x => Assert.Equal(ItemOutcome.Retryable, x.Outcome));
    }

    [Fact]
    public void Backoff_grows_with_jitter_and_honours_Retry_After()
    {
        using DurableSpool spool = DurableSpool.Open(TestData.Spool(_dir));
        using ElasticsearchSink sink = Sink();
        var exporter = new Exporter(spool, sink, new ExporterOptions { InitialRetryDelay = TimeSpan.FromMilliseconds(100), MaxRetryDelay = TimeSpan.FromSeconds(10), JitterSeed = 7 });
        for (int attempt = 0; attempt < 10; attempt++)
        {
            double full = Math.Min(10_000, 100 * Math.Pow(2, attempt));
            double ms = exporter.Backoff(attempt, null).TotalMilliseconds;
            Assert.InRange(ms, full / 2, full);
        }
        Assert.Equal(5000, exporter.Backoff(0, TimeSpan.FromSeconds(5)).TotalMilliseconds, 0.001);
        Assert.Equal(10_000, exporter.Backoff(0, TimeSpan.FromHours(1)).TotalMilliseconds, 0.001); // capped
    }
}

public sealed class ElasticsearchTlsTests : IAsyncLifetime
{
    private readonly string _dir = TestData.TempDir();
    private TestCa _ca = null!;
    private FakeElasticsearch _es = null!;

    public async Task InitializeAsync()
    {
        _ca = new TestCa(_dir);
        _es = await FakeElasticsearch.StartAsync(_ca.Server);
        _es.RequiredAuthorization = "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes("elastic:changeme"));
    }

    public async Task DisposeAsync()
    {
        await _es.DisposeAsync();
        _ca.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    [Fact]
    public async Task The_server_is_trusted_through_the_given_CA_file()
    {
        Assert.Equal("https", _es.Url.Scheme);
        using var sink = new ElasticsearchSink(new ElasticsearchOptions { Nodes = [_es.Url], CaFile = _ca.CaPemFile, Username = "elastic", Password = "changeme" });
        Assert.Equal("8.15.0", await sink.PingAsync(CancellationToken.None));
        BatchResult r = await sink.SendAsync(TestData.Items(5), CancellationToken.None);
        Assert.All(r.Items, i => Assert.Equal(ItemOutcome.Delivered, i.Outcome));
        Assert.Equal(5, _es.Documents.Count);
    }

    [Fact]
    public async Task Without_the_CA_the_server_is_refused_with_a_clear_error()
    {
        using var sink = new ElasticsearchSink(new ElasticsearchOptions { Nodes = [_es.Url], Username = "elastic", Password = "changeme" });
        ExportException e = await Assert.ThrowsAsync<ExportException>(() => sink.SendAsync(TestData.Items(5), CancellationToken.None));
        Assert.Contains("not trusted", e.Message, StringComparison.Ordinal);
        Assert.Empty(_es.Documents);
    }

    [Fact]
    public async Task A_different_CA_does_not_make_the_server_trusted()
    {
        string other = Path.Combine(_dir, "other");
        Directory.CreateDirectory(other);
        using var otherCa = new TestCa(other);
        using var sink = new ElasticsearchSink(new ElasticsearchOptions { Nodes = [_es.Url], CaFile = otherCa.CaPemFile });
        await Assert.ThrowsAsync<ExportException>(() => sink.SendAsync(TestData.Items(1), CancellationToken.None));
    }

    [Fact]
    public void An_unreadable_CA_file_is_a_clear_error()
    {
        ExportException e = Assert.Throws<ExportException>(() => new ElasticsearchSink(new ElasticsearchOptions { Nodes = [_es.Url], CaFile = Path.Combine(_dir, "missing.pem") }));
        Assert.Contains("CA certificate", e.Message, StringComparison.Ordinal);
    }
}
