using System.Net;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;

namespace Vmi.Updates;

/// <summary>Downloads files of a feed with a hard size limit.</summary>
public interface IFeedFetcher
{
    /// <summary>The feed's location as the user gave it (for messages and the status).</summary>
    string Location { get; }

    /// <summary>
    /// Downloads <paramref name="path"/> (relative to the feed: <c>timestamp.json</c>, <c>3.root.json</c>,
    /// <c>targets/HASH.name</c>), reading at most <paramref name="maxBytes"/>.
    /// </summary>
    /// <returns>The bytes, or null when the feed has no such file.</returns>
    /// <exception cref="UpdateRejectedException">TooLarge past the limit; Unavailable when the feed cannot be read.</exception>
    Task<byte[]?> FetchAsync(string path, long maxBytes, CancellationToken cancellationToken);
}

/// <summary>Creates the fetcher for a feed location: an https:// URL or a local folder (path or file:// URL).</summary>
public static class FeedFetchers
{
    /// <param name="location">https://host/path/ , file:///path or a folder.</param>
    /// <param name="caFile">PEM file of the certificate authority that signed the feed server's certificate (instead of the system's), or null.</param>
    /// <param name="timeout">Time one download may take in all (a slow drip of endless data ends here too).</param>
    /// <exception cref="UpdateRejectedException">LocalState: an http:// or other unsupported location, or an unreadable CA file.</exception>
    public static IFeedFetcher Create(string location, string? caFile = null, TimeSpan? timeout = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(location);
        if (Uri.TryCreate(location, UriKind.Absolute, out Uri? uri) && uri.Scheme is not "file")
        {
            if (uri.Scheme != Uri.UriSchemeHttps)
                throw new UpdateRejectedException(UpdateRejection.LocalState, location,
                    $"feeds are fetched over https:// or from a local folder, not {uri.Scheme}://.");
            return new HttpsFeedFetcher(uri, caFile, timeout ?? TimeSpan.FromMinutes(2));
        }
        string dir = uri is { IsFile: true } ? uri.LocalPath : location;
        if (caFile is not null)
            throw new UpdateRejectedException(UpdateRejection.LocalState, location, "--ca applies to https:// feeds only.");
        return new FolderFeedFetcher(Path.GetFullPath(dir));
    }

    /// <summary>Checks a feed-relative path before it is used: metadata names it, so it is untrusted.</summary>
    internal static void CheckPath(string path)
    {
        string[] parts = path.Split('/');
        if (parts.Length > 2 || parts.Any(p => !MetadataFormat.IsSafeTargetName(p)) || (parts.Length == 2 && parts[0] != "targets"))
            throw new UpdateRejectedException(UpdateRejection.Malformed, path, "not a path this client fetches (plain names, or targets/NAME).");
    }
}

/// <summary>A feed in a local folder (a mounted share, a copy carried to an offline host).</summary>
public sealed class FolderFeedFetcher(string directory) : IFeedFetcher
{
    public string Location { get; } = directory;

    public async Task<byte[]?> FetchAsync(string path, long maxBytes, CancellationToken cancellationToken)
    {
        FeedFetchers.CheckPath(path);
        string full = Path.Combine(Location, path);
        if (!Directory.Exists(Location))
            throw new UpdateRejectedException(UpdateRejection.Unavailable, Location, "the feed folder does not exist.");
        try
        {
            var info = new FileInfo(full);
            if (!info.Exists)
                return null;
            if (info.Length > maxBytes)
                throw new UpdateRejectedException(UpdateRejection.TooLarge, path, $"{info.Length} bytes, more than the {maxBytes} allowed for it.");
            await using var f = new FileStream(full, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, useAsync: true);
            return await ReadLimitedAsync(f, path, maxBytes, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UpdateRejectedException(UpdateRejection.Unavailable, path, $"cannot read it from {Location}: {e.Message}", e);
        }
    }

    /// <summary>Reads to the end but never more than <paramref name="maxBytes"/> (+1 to tell that there was more).</summary>
    internal static async Task<byte[]> ReadLimitedAsync(Stream s, string path, long maxBytes, CancellationToken ct)
    {
        using var buffer = new MemoryStream();
        byte[] chunk = new byte[1 << 16];
        while (true)
        {
            int want = (int)Math.Min(chunk.Length, maxBytes + 1 - buffer.Length);
            int n = await s.ReadAsync(chunk.AsMemory(0, Math.Max(want, 1)), ct).ConfigureAwait(false);
            if (n == 0)
                return buffer.ToArray();
            buffer.Write(chunk, 0, n);
            if (buffer.Length > maxBytes)
                throw new UpdateRejectedException(UpdateRejection.TooLarge, path, $"the download went past the {maxBytes} bytes allowed for it; stopped reading (endless data).");
        }
    }
}

/// <summary>A feed on a web server, over https only, with an optional private certificate authority.</summary>
public sealed class HttpsFeedFetcher : IFeedFetcher, IDisposable
{
    private readonly HttpClient _http;
    private readonly Uri _base;
    private readonly TimeSpan _timeout;
    private readonly X509Certificate2Collection? _roots;

    public HttpsFeedFetcher(Uri baseUri, string? caFile, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(baseUri);
        _base = baseUri.AbsoluteUri.EndsWith('/') ? baseUri : new Uri(baseUri.AbsoluteUri + "/");
        _timeout = timeout;
        var handler = new SocketsHttpHandler
        {
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
            ConnectTimeout = TimeSpan.FromSeconds(30),
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
        };
        if (caFile is not null)
        {
            try
            {
                _roots = [];
                _roots.ImportFromPemFile(caFile);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException)
            {
                throw new UpdateRejectedException(UpdateRejection.LocalState, caFile, $"cannot read the CA certificate: {e.Message}", e);
            }
            if (_roots.Count == 0)
                throw new UpdateRejectedException(UpdateRejection.LocalState, caFile, "no PEM certificate in the CA file.");
            handler.SslOptions = new SslClientAuthenticationOptions { RemoteCertificateValidationCallback = ValidateWithRoots };
        }
        _http = new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan };
    }

    public string Location => _base.AbsoluteUri;

    private bool ValidateWithRoots(object sender, X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors) =>
        Vmi.Core.CertificateTrust.ValidateAgainst(_roots!, certificate, chain, errors);

    public async Task<byte[]?> FetchAsync(string path, long maxBytes, CancellationToken cancellationToken)
    {
        FeedFetchers.CheckPath(path);
        var uri = new Uri(_base, path);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(_timeout);
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, uri);
            using HttpResponseMessage response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token).ConfigureAwait(false);
            if (response.StatusCode == HttpStatusCode.NotFound)
                return null;
            if (!response.IsSuccessStatusCode)
                throw new UpdateRejectedException(UpdateRejection.Unavailable, path, $"{uri} answered {(int)response.StatusCode} {response.ReasonPhrase}.");
            if (response.Content.Headers.ContentLength is long declared && declared > maxBytes)
                throw new UpdateRejectedException(UpdateRejection.TooLarge, path, $"the server announces {declared} bytes, more than the {maxBytes} allowed for it; not downloaded.");
            await using Stream body = await response.Content.ReadAsStreamAsync(cts.Token).ConfigureAwait(false);
            return await FolderFeedFetcher.ReadLimitedAsync(body, path, maxBytes, cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
        {
            throw new UpdateRejectedException(UpdateRejection.Unavailable, path, $"download from {uri} took longer than {_timeout.TotalSeconds:0} s; stopped.", e);
        }
        catch (HttpRequestException e)
        {
            throw new UpdateRejectedException(UpdateRejection.Unavailable, path, $"cannot download {uri}: {e.Message}{(e.InnerException is null ? "" : " (" + e.InnerException.Message + ")")}", e);
        }
        catch (IOException e)
        {
            throw new UpdateRejectedException(UpdateRejection.Unavailable, path, $"the connection to {uri} broke: {e.Message}", e);
        }
    }

    public void Dispose() => _http.Dispose();
}
