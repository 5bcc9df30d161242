using System.Collections.Concurrent;
using System.Net;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Vmi.Updates.Tests;

/// <summary>
/// A test certificate authority and a server certificate it signed for 127.0.0.1 and localhost (ECDSA P-256),
/// made once per test run.
/// </summary>
internal static class TestCertificates
{
    private static readonly Lazy<(X509Certificate2 Ca, X509Certificate2 Leaf)> Pair = new(Create);
    private static readonly Lazy<X509Certificate2> OtherCa = new(() => CreateCa("CN=Vmi Updates Test Other CA", out _));

    /// <summary>The server certificate, with its private key.</summary>
    public static X509Certificate2 Server => Pair.Value.Leaf;

    /// <summary>Writes the CA certificate that signed <see cref="Server"/> as PEM.</summary>
    public static string WriteCaPem(string path)
    {
        File.WriteAllText(path, Pair.Value.Ca.ExportCertificatePem());
        return path;
    }

    /// <summary>Writes an unrelated CA certificate as PEM (it did not sign the server's).</summary>
    public static string WriteOtherCaPem(string path)
    {
        File.WriteAllText(path, OtherCa.Value.ExportCertificatePem());
        return path;
    }

    private static X509Certificate2 CreateCa(string subject, out ECDsa key)
    {
        key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: true, hasPathLengthConstraint: true, pathLengthConstraint: 0, critical: true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, critical: true));
        req.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(req.PublicKey, critical: false));
        DateTimeOffset now = DateTimeOffset.UtcNow;
        return req.CreateSelfSigned(now.AddDays(-1), now.AddDays(30));
    }

    private static (X509Certificate2, X509Certificate2) Create()
    {
        X509Certificate2 ca = CreateCa("CN=Vmi Updates Test CA", out ECDsa caKey);
        using (caKey)
        using (var leafKey = ECDsa.Create(ECCurve.NamedCurves.nistP256))
        {
            var req = new CertificateRequest("CN=localhost", leafKey, HashAlgorithmName.SHA256);
            req.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
            req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, critical: true));
            req.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1", "Server Authentication")], critical: false));
            var san = new SubjectAlternativeNameBuilder();
            san.AddIpAddress(IPAddress.Loopback);
            san.AddDnsName("localhost");
            req.CertificateExtensions.Add(san.Build());
            req.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca, includeKeyIdentifier: true, includeIssuerAndSerial: false));
            byte[] serial = RandomNumberGenerator.GetBytes(16);
            serial[0] &= 0x7F;
            DateTimeOffset now = DateTimeOffset.UtcNow;
            using X509Certificate2 signedByCa = req.Create(ca, now.AddHours(-1), now.AddDays(7), serial);
            using X509Certificate2 withKey = signedByCa.CopyWithPrivateKey(leafKey);
            // Through PKCS#12 so the key is a persisted one TLS can use on every platform.
            X509Certificate2 leaf = X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), null);
            return (ca, leaf);
        }
    }
}

/// <summary>
/// Kestrel on 127.0.0.1 (a free port) over https with <see cref="TestCertificates.Server"/>: serves the files of a
/// feed folder (404 for a missing file), unless a handler for the request path is set in <see cref="Handlers"/>.
/// </summary>
internal sealed class FeedServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private FeedServer(WebApplication app, string folder)
    {
        _app = app;
        Folder = folder;
    }

    public string Folder { get; }
    public int Port { get; private set; }
    public string Url => $"https://127.0.0.1:{Port}/";

    /// <summary>Feed-relative path → handler that answers it instead of the folder.</summary>
    public ConcurrentDictionary<string, RequestDelegate> Handlers { get; } = new(StringComparer.Ordinal);

    /// <summary>Every request path with the status answered, in order.</summary>
    public ConcurrentQueue<(string Path, int Status)> Requests { get; } = new();

    public static async Task<FeedServer> StartAsync(string folder)
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = folder });
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, listen => listen.UseHttps(TestCertificates.Server)));
        WebApplication app = builder.Build();
        var server = new FeedServer(app, folder);
        app.Run(server.HandleAsync);
        await app.StartAsync();
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        server.Port = new Uri(address).Port;
        return server;
    }

    private async Task HandleAsync(HttpContext context)
    {
        string path = (context.Request.Path.Value ?? "/").TrimStart('/');
        try
        {
            if (Handlers.TryGetValue(path, out RequestDelegate? handler))
            {
                await handler(context);
                return;
            }
            string full = Path.GetFullPath(Path.Combine(Folder, path));
            if (!full.StartsWith(Folder + Path.DirectorySeparatorChar, StringComparison.Ordinal) || !File.Exists(full))
            {
                context.Response.StatusCode = StatusCodes.Status404NotFound;
                return;
            }
            byte[] bytes = await File.ReadAllBytesAsync(full, context.RequestAborted);
            context.Response.ContentType = "application/octet-stream";
            context.Response.ContentLength = bytes.Length;
            await context.Response.Body.WriteAsync(bytes, context.RequestAborted);
        }
        finally
        {
            Requests.Enqueue((path, context.Response.StatusCode));
        }
    }

    /// <summary>
    /// A handler that streams zeros without a Content-Length until the client goes away (or <paramref name="cap"/>
    /// bytes were handed to Kestrel; after a client hangs up Kestrel drops writes until it notices, so what the
    /// handler wrote says nothing about what the client read: <see cref="CountingProxy"/> measures that).
    /// </summary>
    public static RequestDelegate Endless(TaskCompletionSource ended, long cap) => async context =>
    {
        byte[] chunk = new byte[16 << 10];
        context.Response.ContentType = "application/octet-stream";
        long written = 0;
        try
        {
            while (!context.RequestAborted.IsCancellationRequested && written < cap)
            {
                FlushResult r = await context.Response.BodyWriter.WriteAsync(chunk, context.RequestAborted);
                written += chunk.Length;
                if (r.IsCompleted || r.IsCanceled)
                    break;
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or ObjectDisposedException)
        {
            // The client hung up: what the test wants.
        }
        finally
        {
            ended.TrySetResult();
        }
    };

    public async ValueTask DisposeAsync()
    {
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        await _app.StopAsync(stop.Token);
        await _app.DisposeAsync();
    }
}

/// <summary>
/// A TCP relay in front of a server on 127.0.0.1 that counts the bytes it delivered to clients: a write counts once
/// the client's socket accepted it, so after a client hangs up nothing more is counted. TLS passes through untouched.
/// </summary>
internal sealed class CountingProxy : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly int _targetPort;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;
    private long _toClients;

    public CountingProxy(int targetPort)
    {
        _targetPort = targetPort;
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _accepting = AcceptAsync();
    }

    public int Port { get; }
    public string Url => $"https://127.0.0.1:{Port}/";

    /// <summary>Bytes from the server that clients' sockets accepted.</summary>
    public long BytesToClients => Interlocked.Read(ref _toClients);

    private async Task AcceptAsync()
    {
        try
        {
            while (true)
            {
                TcpClient client = await _listener.AcceptTcpClientAsync(_stop.Token);
                _ = Task.Run(() => RelayAsync(client));
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
            // Stopped.
        }
    }

    private async Task RelayAsync(TcpClient client)
    {
        using (client)
        using (var server = new TcpClient())
        {
            try
            {
                await server.ConnectAsync(IPAddress.Loopback, _targetPort, _stop.Token);
                NetworkStream toClient = client.GetStream(), toServer = server.GetStream();
                // When either direction ends, both sockets close (the using blocks), which ends the other one.
                await Task.WhenAny(PumpAsync(toClient, toServer, count: false), PumpAsync(toServer, toClient, count: true));
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or IOException)
            {
                // The server went away.
            }
        }
    }

    private async Task PumpAsync(Stream from, Stream to, bool count)
    {
        byte[] buffer = new byte[16 << 10];
        try
        {
            while (true)
            {
                int n = await from.ReadAsync(buffer, _stop.Token);
                if (n == 0)
                    return;
                await to.WriteAsync(buffer.AsMemory(0, n), _stop.Token);
                if (count)
                    Interlocked.Add(ref _toClients, n);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or IOException or ObjectDisposedException)
        {
            // One side hung up.
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        await _accepting;
        _stop.Dispose();
    }
}
