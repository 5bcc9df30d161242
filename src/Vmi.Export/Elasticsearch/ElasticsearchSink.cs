using System.Buffers;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;

namespace Vmi.Export.Elasticsearch;

/// <summary>
/// Sends records to Elasticsearch through its documented REST API (no client library): the
/// <c>_bulk</c> endpoint with one <c>create</c> action per record, into a data stream per
/// <see cref="ExportStream"/>. <c>create</c> with the record's id makes a replay harmless: a document
/// that is already there answers 409, counted as <see cref="ItemOutcome.Duplicate"/>.
/// </summary>
/// <remarks>
/// Outcomes: item 2xx delivered; 409 duplicate; 429 and 5xx retryable; other 4xx (mapping or parsing
/// errors) rejected. Whole request: 429, 502, 503, 504 and lost connections retryable (Retry-After
/// passed on); 413 splits the batch in halves; other 4xx reject the records; 401/403 and an untrusted
/// certificate throw <see cref="ExportException"/>. On first use
/// the index template (<c>dashboards/index-template.json</c>) is put with <c>PUT _index_template/logs-vmi</c>
/// (idempotent); the data streams then come into being with their first document.
/// </remarks>
public sealed class ElasticsearchSink : IExportSink, IDisposable
{
    private static readonly MediaTypeHeaderValue NdJson = new("application/x-ndjson");
    private static readonly MediaTypeHeaderValue Json = new("application/json");

    private readonly ElasticsearchOptions _options;
    private readonly HttpClient _http;
    private readonly X509Certificate2Collection? _roots;
    private readonly AuthenticationHeaderValue? _authorization;
    private readonly SemaphoreSlim _setupLock = new(1, 1);
    private int _node;
    private volatile bool _setUp;

    /// <exception cref="ExportException">No node, a node that is not http(s), or an unreadable CA file.</exception>
    public ElasticsearchSink(ElasticsearchOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Nodes.Count == 0)
            throw new ExportException("Elasticsearch export needs at least one node URL.");
        foreach (Uri node in options.Nodes)
        {
            if (!node.IsAbsoluteUri || (node.Scheme != Uri.UriSchemeHttps && node.Scheme != Uri.UriSchemeHttp))
                throw new ExportException($"Elasticsearch node '{node}' is not an http:// or https:// URL.");
        }
        _options = options;
        var handler = new SocketsHttpHandler
        {
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
            ConnectTimeout = TimeSpan.FromSeconds(10),
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
        };
        if (options.CaFile is not null)
        {
            try
            {
                _roots = [];
                _roots.ImportFromPemFile(options.CaFile);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or CryptographicException)
            {
                throw new ExportException($"Cannot read the Elasticsearch CA certificate {options.CaFile}: {e.Message}", e);
            }
            if (_roots.Count == 0)
                throw new ExportException($"No PEM certificate in the Elasticsearch CA file {options.CaFile}.");
            handler.SslOptions = new SslClientAuthenticationOptions { RemoteCertificateValidationCallback = ValidateWithRoots };
        }
        _http = new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan };
        if (!string.IsNullOrEmpty(options.ApiKey))
            _authorization = new AuthenticationHeaderValue("ApiKey", options.ApiKey);
        else if (options.Username is not null)
            _authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes(options.Username + ":" + options.Password)));
    }

    public string Name => "elasticsearch";

    /// <summary>Requests sent to set up templates (for tests and status).</summary>
    public int TemplatePuts { get; private set; }

    private Uri CurrentNode => _options.Nodes[Volatile.Read(ref _node) % _options.Nodes.Count];

    private bool ValidateWithRoots(object sender, X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors) =>
        Vmi.Core.CertificateTrust.ValidateAgainst(_roots!, certificate, chain, errors);

    /// <summary>The data stream a record goes to.</summary>
    public string TargetOf(ExportItem item)
    {
        ArgumentNullException.ThrowIfNull(item);
        return item.Stream == ExportStream.Alerts ? _options.AlertsDataStream : _options.EventsDataStream;
    }

    public async Task<BatchResult> SendAsync(IReadOnlyList<ExportItem> batch, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (batch.Count == 0)
            return new BatchResult([]);
        if (!_setUp && _options.SetUpTemplates)
        {
            ItemResult? failure = await SetUpAsync(cancellationToken).ConfigureAwait(false);
            if (failure is ItemResult f)
                return BatchResult.All(batch.Count, f);
        }
        return await SendBulkAsync(batch, cancellationToken).ConfigureAwait(false);
    }

    private async Task<BatchResult> SendBulkAsync(IReadOnlyList<ExportItem> batch, CancellationToken cancellationToken)
    {
        byte[] body = BuildBulkBody(batch);
        Uri node = CurrentNode;
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(node, "_bulk"))
        {
            Content = new ByteArrayContent(body) { Headers = { ContentType = NdJson } },
        };
        Attempt attempt = await SendRequestAsync(request, "_bulk", cancellationToken).ConfigureAwait(false);
        using HttpResponseMessage? response = attempt.Response;
        if (response is null)
            return BatchResult.All(batch.Count, attempt.Failure!.Value, requestBytes: body.Length);
        if (response.StatusCode == HttpStatusCode.RequestEntityTooLarge && batch.Count > 1)
        {
            // Past http.max_content_length: the halves go separately (a single record that is too large is rejected below).
            int half = batch.Count / 2;
            BatchResult first = await SendBulkAsync(batch.Take(half).ToArray(), cancellationToken).ConfigureAwait(false);
            BatchResult second = await SendBulkAsync(batch.Skip(half).ToArray(), cancellationToken).ConfigureAwait(false);
            TimeSpan? retryAfter = first.RetryAfter > second.RetryAfter ? first.RetryAfter : second.RetryAfter ?? first.RetryAfter;
            return new BatchResult([.. first.Items, .. second.Items], retryAfter, body.Length + first.RequestBytes + second.RequestBytes);
        }
        if (response.StatusCode != HttpStatusCode.OK)
        {
            string reason = await ReadErrorAsync(response, cancellationToken).ConfigureAwait(false);
            var outcome = IsRetryable(response.StatusCode) ? ItemOutcome.Retryable : ItemOutcome.Rejected;
            return BatchResult.All(batch.Count, new ItemResult(outcome, (int)response.StatusCode, "http_" + (int)response.StatusCode, reason),
                RetryAfterOf(response), body.Length);
        }
        try
        {
            byte[] answer = await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
            return new BatchResult(ParseBulkResponse(answer, batch.Count), RetryAfterOf(response), body.Length);
        }
        catch (Exception e) when (e is HttpRequestException or IOException)
        {
            // The answer was lost mid-way: some records may be stored. Resending is safe (create + id).
            Advance(node);
            return BatchResult.All(batch.Count, new ItemResult(ItemOutcome.Retryable, 0, "connection", $"the answer from {node} broke off: {e.Message}"), requestBytes: body.Length);
        }
    }

    private readonly record struct Attempt(HttpResponseMessage? Response, ItemResult? Failure);

    /// <summary>Sends one request; a lost connection or timeout becomes a retryable failure, credentials and TLS trust problems throw.</summary>
    private async Task<Attempt> SendRequestAsync(HttpRequestMessage request, string what, CancellationToken cancellationToken)
    {
        request.Headers.Authorization = _authorization;
        Uri node = CurrentNode;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(_options.RequestTimeout);
        HttpResponseMessage response;
        try
        {
            response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            Advance(node);
            return new Attempt(null, new ItemResult(ItemOutcome.Retryable, 0, "timeout", $"{what} on {node} took longer than {_options.RequestTimeout.TotalSeconds:0} s."));
        }
        catch (HttpRequestException e) when (e.InnerException is AuthenticationException)
        {
            throw new ExportException(
                $"The TLS certificate of Elasticsearch at {node} is not trusted{(_roots is null ? "; give the CA that signed it (CA file)" : " by the given CA file")}: {e.InnerException.Message}", e);
        }
        catch (Exception e) when (e is HttpRequestException or IOException)
        {
            Advance(node);
            return new Attempt(null, new ItemResult(ItemOutcome.Retryable, 0, "connection", $"cannot reach Elasticsearch at {node}: {e.Message}"));
        }
        if (response.StatusCode is HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden)
        {
            string reason;
            try
            {
                reason = await ReadErrorAsync(response, cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                response.Dispose();
            }
            throw new ExportException(response.StatusCode == HttpStatusCode.Unauthorized
                ? $"Elasticsearch at {node} refused the credentials for {what} (401): {reason}. Check the API key, or the user name and password."
                : $"Elasticsearch at {node} forbids {what} to this user (403): {reason}. It needs create_doc and auto_configure on the data streams and manage_index_templates on the cluster.");
        }
        return new Attempt(response, null);
    }

    private void Advance(Uri failed)
    {
        if (_options.Nodes.Count > 1 && CurrentNode == failed)
            Interlocked.Increment(ref _node);
    }

    /// <summary>Puts both index templates once; null when done, or the retryable failure that stopped it.</summary>
    private async Task<ItemResult?> SetUpAsync(CancellationToken cancellationToken)
    {
        await _setupLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_setUp)
                return null;
            const string name = TemplateName;
            {
                using var request = new HttpRequestMessage(HttpMethod.Put, new Uri(CurrentNode, "_index_template/" + name))
                {
                    Content = new ByteArrayContent(IndexTemplate()) { Headers = { ContentType = Json } },
                };
                TemplatePuts++;
                Attempt attempt = await SendRequestAsync(request, "PUT _index_template/" + name, cancellationToken).ConfigureAwait(false);
                using HttpResponseMessage? response = attempt.Response;
                if (response is null)
                    return attempt.Failure;
                if (!response.IsSuccessStatusCode)
                {
                    string reason = await ReadErrorAsync(response, cancellationToken).ConfigureAwait(false);
                    if (IsRetryable(response.StatusCode))
                        return new ItemResult(ItemOutcome.Retryable, (int)response.StatusCode, "http_" + (int)response.StatusCode, reason);
                    throw new ExportException($"Elasticsearch refused the index template {name} ({(int)response.StatusCode}): {reason}");
                }
            }
            _setUp = true;
            return null;
        }
        finally
        {
            _setupLock.Release();
        }
    }

    /// <summary>Name of the index template the sink puts (the one <c>dashboards/setup.sh</c> loads too).</summary>
    public const string TemplateName = "logs-vmi";

    /// <summary>
    /// The body of <c>PUT _index_template/logs-vmi</c>: <c>dashboards/index-template.json</c>, embedded at build
    /// time, for <c>logs-vmi.alerts-*</c> and <c>logs-vmi.events-*</c> (data streams with other names get no mappings from it).
    /// </summary>
    public static byte[] IndexTemplate()
    {
        using Stream s = typeof(ElasticsearchSink).Assembly.GetManifestResourceStream("Vmi.Export.Elasticsearch.index-template.json")
            ?? throw new InvalidOperationException("The embedded index template is missing from the assembly.");
        using var copy = new MemoryStream();
        s.CopyTo(copy);
        return copy.ToArray();
    }

    /// <summary>The NDJSON body: per record, <c>{"create":{"_index":…,"_id":…}}</c> then the document, each on its own line.</summary>
    internal byte[] BuildBulkBody(IReadOnlyList<ExportItem> batch)
    {
        var buffer = new ArrayBufferWriter<byte>(batch.Count * 512);
        using var writer = new Utf8JsonWriter(buffer);
        foreach (ExportItem item in batch)
        {
            writer.Reset();
            writer.WriteStartObject();
            writer.WriteStartObject("create");
            writer.WriteString("_index", TargetOf(item));
            writer.WriteString("_id", item.Id);
            writer.WriteEndObject();
            writer.WriteEndObject();
            writer.Flush();
            buffer.Write("\n"u8);
            int max = Encoding.UTF8.GetMaxByteCount(item.Json.Length);
            int n = Encoding.UTF8.GetBytes(item.Json, buffer.GetSpan(max));
            buffer.Advance(n);
            buffer.Write("\n"u8);
        }
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>Maps the <c>items</c> of a <c>_bulk</c> answer, in order, to outcomes.</summary>
    internal static ItemResult[] ParseBulkResponse(ReadOnlySpan<byte> json, int expected)
    {
        var results = new ItemResult[expected];
        try
        {
            var reader = new Utf8JsonReader(json);
            using var doc = JsonDocument.ParseValue(ref reader);
            if (!doc.RootElement.TryGetProperty("items", out JsonElement items) || items.ValueKind != JsonValueKind.Array || items.GetArrayLength() != expected)
                return Fill(results, new ItemResult(ItemOutcome.Retryable, 200, "bad_response", $"the _bulk answer does not list {expected} items."));
            int i = 0;
            foreach (JsonElement wrapper in items.EnumerateArray())
            {
                JsonElement item = wrapper.EnumerateObject().FirstOrDefault().Value;
                int status = item.ValueKind == JsonValueKind.Object && item.TryGetProperty("status", out JsonElement st) && st.TryGetInt32(out int s) ? s : 0;
                string? type = null, reason = null;
                if (item.ValueKind == JsonValueKind.Object && item.TryGetProperty("error", out JsonElement error))
                {
                    if (error.ValueKind == JsonValueKind.Object)
                    {
                        type = error.TryGetProperty("type", out JsonElement t) ? t.GetString() : null;
                        reason = error.TryGetProperty("reason", out JsonElement r) ? r.GetString() : null;
                        if (error.TryGetProperty("caused_by", out JsonElement cause) && cause.ValueKind == JsonValueKind.Object && cause.TryGetProperty("reason", out JsonElement cr))
                            reason += " (caused by: " + cr.GetString() + ")";
                    }
                    else
                    {
                        reason = error.ToString();
                    }
                }
                ItemOutcome outcome = status switch
                {
                    >= 200 and < 300 => ItemOutcome.Delivered,
                    409 => ItemOutcome.Duplicate,
                    0 or 429 or >= 500 => ItemOutcome.Retryable,
                    _ => ItemOutcome.Rejected,
                };
                results[i++] = new ItemResult(outcome, status, type, reason);
            }
            return results;
        }
        catch (JsonException e)
        {
            return Fill(results, new ItemResult(ItemOutcome.Retryable, 200, "bad_response", $"the _bulk answer is not JSON: {e.Message}"));
        }
    }

    private static ItemResult[] Fill(ItemResult[] results, ItemResult value)
    {
        Array.Fill(results, value);
        return results;
    }

    private static bool IsRetryable(HttpStatusCode status) =>
        status is HttpStatusCode.TooManyRequests or HttpStatusCode.RequestTimeout || (int)status >= 500;

    private static TimeSpan? RetryAfterOf(HttpResponseMessage response)
    {
        RetryConditionHeaderValue? retry = response.Headers.RetryAfter;
        if (retry?.Delta is TimeSpan delta)
            return delta;
        if (retry?.Date is DateTimeOffset date)
            return date > DateTimeOffset.UtcNow ? date - DateTimeOffset.UtcNow : TimeSpan.Zero;
        return null;
    }

    /// <summary>The <c>error.reason</c> of an Elasticsearch error answer, or the start of the body.</summary>
    private static async Task<string> ReadErrorAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        string body;
        try
        {
            body = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is HttpRequestException or IOException)
        {
            return $"{(int)response.StatusCode} {response.ReasonPhrase} (the body broke off)";
        }
        try
        {
            using var doc = JsonDocument.Parse(body);
            if (doc.RootElement.TryGetProperty("error", out JsonElement error))
            {
                if (error.ValueKind == JsonValueKind.Object && error.TryGetProperty("reason", out JsonElement reason))
                    return reason.GetString() ?? body;
                return error.ToString();
            }
        }
        catch (JsonException)
        {
            // Not JSON (a proxy's HTML page): the start of it is the best explanation there is.
        }
        return body.Length > 300 ? body[..300] + "…" : body.Length == 0 ? $"{(int)response.StatusCode} {response.ReasonPhrase}" : body;
    }

    /// <summary>Checks that the first node answers <c>GET /</c> and returns its version number.</summary>
    /// <exception cref="ExportException">No answer, credentials refused, or certificate not trusted.</exception>
    public async Task<string> PingAsync(CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, CurrentNode);
        Attempt attempt = await SendRequestAsync(request, "GET /", cancellationToken).ConfigureAwait(false);
        using HttpResponseMessage response = attempt.Response ?? throw new ExportException(attempt.Failure!.Value.Reason ?? "Elasticsearch does not answer.");
        string body = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            using var doc = JsonDocument.Parse(body);
            return doc.RootElement.GetProperty("version").GetProperty("number").GetString() ?? "?";
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new ExportException($"{CurrentNode} does not answer like Elasticsearch ({(int)response.StatusCode}): {body[..Math.Min(body.Length, 200)]}", e);
        }
    }

    public void Dispose()
    {
        _http.Dispose();
        _setupLock.Dispose();
    }
}
