using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Vmi.Export.Tests;

/// <summary>A whole-request fault the fake plays once.</summary>
public enum BulkFault
{
    /// <summary>429 with Retry-After and es_rejected_execution_exception.</summary>
    TooManyRequests,
    /// <summary>503 unavailable_shards_exception / master not discovered.</summary>
    Unavailable,
    /// <summary>Stores the documents, then aborts the connection before answering (the ack is lost).</summary>
    DropAfterStoring,
    /// <summary>Aborts the connection before storing anything.</summary>
    DropBeforeStoring,
}

/// <summary>
/// Kestrel on 127.0.0.1 answering like Elasticsearch's documented REST API: <c>GET /</c>,
/// <c>PUT _index_template/NAME</c>, and <c>POST _bulk</c> (NDJSON; <c>create</c> answers 201, or 409
/// version_conflict_engine_exception when the id exists), with injectable faults.
/// </summary>
public sealed class FakeElasticsearch : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ConcurrentQueue<BulkFault> _faults = new();
    private readonly Lock _lock = new();
    private readonly Dictionary<(string Index, string Id), string> _docs = [];

    public Uri Url { get; }
    public ConcurrentDictionary<string, string> Templates { get; } = new();
    /// <summary>Ids to fail per item: (status, error type, reason, remaining times; -1 = always).</summary>
    public ConcurrentDictionary<string, (int Status, string Type, string Reason, int Times)> ItemFailures { get; } = new();
    public string? RequiredAuthorization { get; set; }
    public TimeSpan BulkDelay { get; set; }
    public int RetryAfterSeconds { get; set; } = 1;
    /// <summary>Like http.max_content_length: larger _bulk bodies get 413.</summary>
    public int MaxBulkBytes { get; set; } = int.MaxValue;
    private int _bulkRequests, _templatePuts, _created, _conflicts, _unauthorized;
    public int BulkRequests => _bulkRequests;
    public int TemplatePuts => _templatePuts;
    /// <summary>Documents stored (201 answers).</summary>
    public int Created => _created;
    public int Conflicts => _conflicts;
    public int Unauthorized => _unauthorized;

    private FakeElasticsearch(WebApplication app, Uri url)
    {
        _app = app;
        Url = url;
    }

    public void Enqueue(params BulkFault[] faults)
    {
        foreach (BulkFault f in faults)
            _faults.Enqueue(f);
    }

    public IReadOnlyDictionary<(string Index, string Id), string> Documents
    {
        get { lock (_lock) return new Dictionary<(string, string), string>(_docs); }
    }

    public static async Task<FakeElasticsearch> StartAsync(X509Certificate2? serverCertificate = null)
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = 200 << 20;
            k.Listen(IPAddress.Loopback, 0, listen =>
            {
                if (serverCertificate is not null)
                    listen.UseHttps(serverCertificate);
            });
        });
        WebApplication app = builder.Build();
        FakeElasticsearch? self = null;
        app.Use(async (context, next) =>
        {
            if (self!.RequiredAuthorization is string required && context.Request.Headers.Authorization.ToString() != required)
            {
                Interlocked.Increment(ref self._unauthorized);
                context.Response.StatusCode = 401;
                context.Response.Headers.WWWAuthenticate = "Basic realm=\"security\", ApiKey";
                await context.Response.WriteAsync("""{"error":{"root_cause":[{"type":"security_exception","reason":"unable to authenticate user"}],"type":"security_exception","reason":"unable to authenticate user"},"status":401}""");
                return;
            }
            await next(context);
        });
        app.MapGet("/", () => Results.Text("""{"name":"fake","cluster_name":"vmi-test","version":{"number":"8.15.0","build_flavor":"default"},"tagline":"You Know, for Search"}""", "application/json"));
        app.MapPut("/_index_template/{name}", async (string name, HttpContext context) =>
        {
            using var reader = new StreamReader(context.Request.Body);
            string body = await reader.ReadToEndAsync();
            using JsonDocument doc = JsonDocument.Parse(body); // a malformed template would be a 400 in Elasticsearch
            Interlocked.Increment(ref self!._templatePuts);
            self.Templates[name] = body;
            return Results.Text("""{"acknowledged":true}""", "application/json");
        });
        app.MapPost("/_bulk", (HttpContext context) => self!.BulkAsync(context));
        await app.StartAsync();
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        self = new FakeElasticsearch(app, new Uri(address.Replace("[::]", "127.0.0.1", StringComparison.Ordinal) + "/"));
        return self;
    }

    private async Task BulkAsync(HttpContext context)
    {
        Interlocked.Increment(ref _bulkRequests);
        if (context.Request.ContentType != "application/x-ndjson")
        {
            context.Response.StatusCode = 406;
            return;
        }
        using var reader = new StreamReader(context.Request.Body, Encoding.UTF8);
        string body = await reader.ReadToEndAsync();
        if (BulkDelay > TimeSpan.Zero)
            await Task.Delay(BulkDelay);
        if (Encoding.UTF8.GetByteCount(body) > MaxBulkBytes)
        {
            context.Response.StatusCode = 413;
            return;
        }
        bool hasFault = _faults.TryDequeue(out BulkFault fault);
        if (hasFault && fault == BulkFault.TooManyRequests)
        {
            context.Response.StatusCode = 429;
            context.Response.Headers.RetryAfter = RetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
            await context.Response.WriteAsync("""{"error":{"type":"es_rejected_execution_exception","reason":"rejected execution of coordinating operation"},"status":429}""");
            return;
        }
        if (hasFault && fault == BulkFault.Unavailable)
        {
            context.Response.StatusCode = 503;
            await context.Response.WriteAsync("""{"error":{"type":"cluster_block_exception","reason":"blocked by: [SERVICE_UNAVAILABLE/2/no master];"},"status":503}""");
            return;
        }
        if (hasFault && fault == BulkFault.DropBeforeStoring)
        {
            context.Abort();
            return;
        }
        string[] lines = body.Split('\n');
        if (lines.Length == 0 || lines[^1].Length != 0)
        {
            context.Response.StatusCode = 400;
            await context.Response.WriteAsync("""{"error":{"type":"illegal_argument_exception","reason":"The bulk request must be terminated by a newline [\\n]"},"status":400}""");
            return;
        }
        var items = new List<string>();
        bool errors = false;
        for (int i = 0; i + 1 < lines.Length; i += 2)
        {
            using JsonDocument action = JsonDocument.Parse(lines[i]);
            JsonProperty op = action.RootElement.EnumerateObject().First();
            string index = op.Value.GetProperty("_index").GetString()!;
            string id = op.Value.GetProperty("_id").GetString()!;
            string source = lines[i + 1];
            string head = $"\"_index\":{JsonSerializer.Serialize(index)},\"_id\":{JsonSerializer.Serialize(id)}";
            if (op.Name != "create")
            {
                errors = true;
                items.Add($"{{\"{op.Name}\":{{{head},\"status\":400,\"error\":{{\"type\":\"illegal_argument_exception\",\"reason\":\"only write ops with an op_type of create are allowed in data streams\"}}}}}}");
                continue;
            }
            if (ItemFailures.TryGetValue(id, out var failure) && failure.Times != 0)
            {
                if (failure.Times > 0)
                    ItemFailures[id] = failure with { Times = failure.Times - 1 };
                errors = true;
                items.Add($"{{\"create\":{{{head},\"status\":{failure.Status},\"error\":{{\"type\":{JsonSerializer.Serialize(failure.Type)},\"reason\":{JsonSerializer.Serialize(failure.Reason)}}}}}}}");
                continue;
            }
            using (JsonDocument.Parse(source)) { } // a document that is not JSON fails the test loudly
            bool created;
            lock (_lock)
                created = _docs.TryAdd((index, id), source);
            if (created)
            {
                Interlocked.Increment(ref _created);
                items.Add($"{{\"create\":{{{head},\"_version\":1,\"result\":\"created\",\"_shards\":{{\"total\":1,\"successful\":1,\"failed\":0}},\"_seq_no\":0,\"_primary_term\":1,\"status\":201}}}}");
            }
            else
            {
                Interlocked.Increment(ref _conflicts);
                errors = true;
                items.Add($"{{\"create\":{{{head},\"status\":409,\"error\":{{\"type\":\"version_conflict_engine_exception\",\"reason\":{JsonSerializer.Serialize($"[{id}]: version conflict, document already exists (current version [1])")},\"index\":{JsonSerializer.Serialize(index)}}}}}}}");
            }
        }
        if (hasFault && fault == BulkFault.DropAfterStoring)
        {
            context.Abort(); // stored, but the client never learns it
            return;
        }
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync($"{{\"took\":3,\"errors\":{(errors ? "true" : "false")},\"items\":[{string.Join(',', items)}]}}");
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
