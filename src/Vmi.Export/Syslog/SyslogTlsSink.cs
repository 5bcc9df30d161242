using System.Buffers.Binary;
using System.Globalization;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;

namespace Vmi.Export.Syslog;

/// <summary>Settings of a <see cref="SyslogTlsSink"/> (one server).</summary>
public sealed record SyslogTlsOptions
{
    /// <summary>Server host name or address to connect to.</summary>
    public required string Host { get; init; }

    /// <summary>TCP port (6514 is the RFC 5425 port).</summary>
    public int Port { get; init; } = 6514;

    /// <summary>Name the server certificate must carry; defaults to <see cref="Host"/>.</summary>
    public string? ServerName { get; init; }

    /// <summary>PEM file of the CA(s) that sign the server certificate; null to use the system trust store.</summary>
    public string? CaCertificatePemFile { get; init; }

    /// <summary>Client certificate (with private key) for servers that require mutual TLS; null for none.</summary>
    public X509Certificate2? ClientCertificate { get; init; }

    /// <summary>Limit on connecting plus the TLS handshake.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How long a written chunk may stay un-acknowledged by the server's TCP stack before the connection is given up.</summary>
    public TimeSpan AckTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// After the server's kernel acknowledged a chunk, the connection must still be sound this much later for the
    /// chunk to count as delivered: a server that closes its socket with unread bytes resets the connection, and a
    /// reset seen within this time sends the chunk again (a possible duplicate instead of a loss). Zero disables it.
    /// </summary>
    public TimeSpan SettleTime { get; init; } = TimeSpan.FromMilliseconds(2);

    /// <summary>Plaintext bytes written before waiting for the server's TCP acknowledgement; on a broken connection only the unconfirmed chunk is resent.</summary>
    public int ChunkBytes { get; init; } = 64 * 1024;

    /// <summary>Message format.</summary>
    public Rfc5424Options Format { get; init; } = new();
}

/// <summary>
/// Sends records as RFC 5424 messages over RFC 5425 TLS (TLS 1.2/1.3, octet-counting framing
/// <c>LEN SP MSG</c>) to one syslog server. The server certificate is verified (system store or a custom
/// CA, host name included). For several servers, give each its own sink, <see cref="Spool.DurableSpool"/> and
/// <see cref="Exporter"/>: an outage of one then does not hold up the others, and the exporter supplies
/// reconnection with exponential backoff (a lost connection is a <see cref="ItemOutcome.Retryable"/> outcome).
/// </summary>
/// <remarks>
/// Syslog over TLS has no application acknowledgement. A record is reported delivered only once the
/// server's kernel has acknowledged every byte of its chunk (Linux <c>TCP_INFO</c>: nothing unsent, nothing
/// unacknowledged, connection still established); a chunk not confirmed is resent on a new connection.
/// What remains open: bytes the server's kernel acknowledged but the server process never read (it is
/// killed, or closes without draining its socket) are lost, and a chunk the server processed but whose
/// acknowledgement was not seen is sent twice. Each message carries a unique <c>id</c> and <c>seq</c> in its
/// structured data so the receiver can remove such duplicates.
/// </remarks>
public sealed class SyslogTlsSink : IExportSink, IDisposable
{
    private readonly SyslogTlsOptions _options;
    private readonly Rfc5424Formatter _formatter;
    private readonly X509Certificate2Collection? _roots;
    private TcpClient? _tcp;
    private SslStream? _tls;

    /// <param name="options">Server, trust and format.</param>
    public SyslogTlsSink(SyslogTlsOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options;
        _formatter = new Rfc5424Formatter(options.Format);
        if (options.CaCertificatePemFile is string pem)
        {
            _roots = [];
            _roots.ImportFromPemFile(pem);
        }
    }

    /// <inheritdoc />
    public string Name => "syslog";

    /// <summary>Connections opened so far (the first and every reconnection).</summary>
    public int Connections { get; private set; }

    /// <inheritdoc />
    public async Task<BatchResult> SendAsync(IReadOnlyList<ExportItem> batch, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batch);
        var results = new ItemResult[batch.Count];
        long bytes = 0;
        int confirmed = 0; // items [0, confirmed) are acknowledged by the server's TCP stack
        try
        {
            var buffer = new MemoryStream(_options.ChunkBytes + 1024);
            int index = 0;
            while (index < batch.Count)
            {
                await EnsureConnectedAsync(cancellationToken).ConfigureAwait(false);
                buffer.SetLength(0);
                int chunkEnd = index;
                while (chunkEnd < batch.Count && (chunkEnd == index || buffer.Length < _options.ChunkBytes))
                {
                    byte[] message = _formatter.Format(batch[chunkEnd]);
                    byte[] length = System.Text.Encoding.ASCII.GetBytes(message.Length.ToString(CultureInfo.InvariantCulture) + " ");
                    buffer.Write(length);
                    buffer.Write(message);
                    chunkEnd++;
                }
                await _tls!.WriteAsync(buffer.GetBuffer().AsMemory(0, (int)buffer.Length), cancellationToken).ConfigureAwait(false);
                await _tls.FlushAsync(cancellationToken).ConfigureAwait(false);
                bytes += buffer.Length;
                await WaitAcknowledgedAsync(cancellationToken).ConfigureAwait(false);
                for (int i = index; i < chunkEnd; i++)
                    results[i] = new ItemResult(ItemOutcome.Delivered, 0);
                confirmed = chunkEnd;
                index = chunkEnd;
            }
            return new BatchResult(results, null, bytes);
        }
        catch (Exception e) when (e is IOException or SocketException or TimeoutException or ObjectDisposedException
                                  || (e is OperationCanceledException && !cancellationToken.IsCancellationRequested))
        {
            Disconnect();
            for (int i = confirmed; i < batch.Count; i++)
                results[i] = new ItemResult(ItemOutcome.Retryable, 0, e.GetType().Name, e.Message);
            return new BatchResult(results, null, bytes);
        }
    }

    private async Task EnsureConnectedAsync(CancellationToken cancellationToken)
    {
        if (_tls is not null && IsEstablished(_tcp!.Client))
            return;
        Disconnect();
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_options.ConnectTimeout);
        var tcp = new TcpClient { NoDelay = true };
        try
        {
            await tcp.ConnectAsync(_options.Host, _options.Port, timeout.Token).ConfigureAwait(false);
            var tls = new SslStream(tcp.GetStream(), leaveInnerStreamOpen: false);
            var auth = new SslClientAuthenticationOptions
            {
                TargetHost = _options.ServerName ?? _options.Host,
                EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
                ClientCertificates = _options.ClientCertificate is null ? null : [_options.ClientCertificate],
                RemoteCertificateValidationCallback = _roots is null ? null : ValidateWithRoots,
            };
            try
            {
                await tls.AuthenticateAsClientAsync(auth, timeout.Token).ConfigureAwait(false);
            }
            catch (AuthenticationException e)
            {
                await tls.DisposeAsync().ConfigureAwait(false);
                throw new ExportException($"TLS with syslog server {_options.Host}:{_options.Port} failed: {e.Message}", e);
            }
            _tcp = tcp;
            _tls = tls;
            Connections++;
        }
        catch
        {
            if (_tcp != tcp)
                tcp.Dispose();
            throw;
        }
    }

    private bool ValidateWithRoots(object sender, X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors) =>
        Vmi.Core.CertificateTrust.ValidateAgainst(_roots!, certificate, chain, errors);

    /// <summary>Waits until the server's kernel has acknowledged everything written, or throws if the connection broke or stalled.</summary>
    private async Task WaitAcknowledgedAsync(CancellationToken cancellationToken)
    {
        Socket socket = _tcp!.Client;
        long deadline = Environment.TickCount64 + (long)_options.AckTimeout.TotalMilliseconds;
        bool settle = true;
        for (int spin = 0; ; spin++)
        {
            if (!TryTcpInfo(socket, out TcpState state))
                return; // not Linux: best effort, the write itself succeeded
            // ESTABLISHED, or CLOSE_WAIT: the server closed its side in order (FIN), which it does only after
            // reading everything that had arrived; either way bytes its kernel acknowledged reached the server.
            bool open = state.State is TcpEstablished or TcpCloseWait;
            if (open && state.Unacked == 0 && state.NotSent == 0)
            {
                if (settle && _options.SettleTime > TimeSpan.Zero)
                {
                    settle = false;
                    await Task.Delay(_options.SettleTime, cancellationToken).ConfigureAwait(false);
                    continue; // look again: still open, or reset meanwhile
                }
                if (state.State == TcpCloseWait || socket.Poll(0, SelectMode.SelectRead))
                    Disconnect(); // the server is going away (FIN, close_notify): the next chunk opens a new connection
                return;
            }
            // Anything else (reset, closed): the kernel dropped its send queue, so what was acknowledged cannot be told.
            if (!open || socket.Poll(0, SelectMode.SelectError))
                throw new IOException($"Connection to syslog server {_options.Host}:{_options.Port} broke (TCP state {state.State}).");
            if (Environment.TickCount64 > deadline)
                throw new TimeoutException($"Syslog server {_options.Host}:{_options.Port} did not acknowledge within {_options.AckTimeout}.");
            if (spin < 50)
                await Task.Yield();
            else
                await Task.Delay(1, cancellationToken).ConfigureAwait(false);
        }
    }

    private const byte TcpEstablished = 1;
    private const byte TcpCloseWait = 8;

    private readonly record struct TcpState(byte State, uint Unacked, uint NotSent);

    private static bool TryTcpInfo(Socket socket, out TcpState state)
    {
        state = default;
        if (!OperatingSystem.IsLinux())
            return false;
        Span<byte> info = stackalloc byte[232];
        int n = socket.GetRawSocketOption(6 /* SOL_TCP */, 11 /* TCP_INFO */, info);
        if (n < 148)
            return false;
        state = new TcpState(info[0], BinaryPrimitives.ReadUInt32LittleEndian(info[24..]), BinaryPrimitives.ReadUInt32LittleEndian(info[144..]));
        return true;
    }

    private static bool IsEstablished(Socket socket) =>
        !TryTcpInfo(socket, out TcpState s) ? socket.Connected : s.State == TcpEstablished && !socket.Poll(0, SelectMode.SelectRead);

    private void Disconnect()
    {
        _tls?.Dispose();
        _tcp?.Dispose();
        _tls = null;
        _tcp = null;
    }

    /// <inheritdoc />
    public void Dispose() => Disconnect();
}
