using Xunit;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.RegularExpressions;

namespace Vmi.Export.Tests;

/// <summary>PEM files of a throw-away CA and a server certificate for localhost/127.0.0.1 it signed.</summary>
internal sealed record SyslogPki(string CaPem, string CertPem, string KeyPem)
{
    public static SyslogPki Create(string dir, string name)
    {
        using var caKey = RSA.Create(2048);
        var caReq = new CertificateRequest($"CN={name} CA", caKey, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        caReq.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caReq.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        caReq.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(caReq.PublicKey, false));
        using X509Certificate2 ca = caReq.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));

        using var key = RSA.Create(2048);
        var req = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("localhost");
        san.AddIpAddress(IPAddress.Loopback);
        req.CertificateExtensions.Add(san.Build());
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyEncipherment, true));
        req.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        using X509Certificate2 cert = req.Create(ca, DateTimeOffset.UtcNow.AddHours(-1), DateTimeOffset.UtcNow.AddDays(7), RandomNumberGenerator.GetBytes(8));

        var pki = new SyslogPki(Path.Combine(dir, name + "-ca.pem"), Path.Combine(dir, name + "-cert.pem"), Path.Combine(dir, name + "-key.pem"));
        File.WriteAllText(pki.CaPem, ca.ExportCertificatePem() + "\n");
        File.WriteAllText(pki.CertPem, cert.ExportCertificatePem() + "\n");
        File.WriteAllText(pki.KeyPem, key.ExportRSAPrivateKeyPem() + "\n");
        return pki;
    }
}

/// <summary>
/// A real rsyslogd (imtcp + gtls, octet-counted framing) on 127.0.0.1, writing each message as
/// <c>MSGID SD MSG</c> on a line of <see cref="OutputFile"/>. Started and stopped by PID only.
/// </summary>
internal sealed partial class RsyslogServer : IDisposable
{
    private const string Binary = "/usr/sbin/rsyslogd";
    private readonly string _dir;
    private readonly string _conf;
    private readonly string _pidFile;
    private Process? _process;

    public int Port { get; }
    public string OutputFile { get; }

    public RsyslogServer(string dir, SyslogPki pki)
    {
        Assert.True(File.Exists(Binary), "rsyslogd not found: install rsyslog rsyslog-gnutls (apt-get install -y rsyslog rsyslog-gnutls)");
        Assert.True(File.Exists("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so") || Directory.GetFiles("/usr/lib", "lmnsd_gtls.so", SearchOption.AllDirectories).Length > 0,
            "rsyslog's gtls driver not found: install rsyslog-gnutls");
        _dir = dir;
        Port = FreePort();
        OutputFile = Path.Combine(dir, "received.log");
        _conf = Path.Combine(dir, "rsyslog.conf");
        _pidFile = Path.Combine(dir, "rsyslogd.pid");
        Directory.CreateDirectory(Path.Combine(dir, "work"));
        File.WriteAllText(_conf, $$"""
            global(workDirectory="{{Path.Combine(dir, "work")}}"
                   defaultNetstreamDriver="gtls"
                   defaultNetstreamDriverCAFile="{{pki.CaPem}}"
                   defaultNetstreamDriverCertFile="{{pki.CertPem}}"
                   defaultNetstreamDriverKeyFile="{{pki.KeyPem}}"
                   maxMessageSize="64k")
            main_queue(queue.type="Direct")
            module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
            template(name="vmiLine" type="string" string="%msgid% %structured-data% %msg%\n")
            input(type="imtcp" port="{{Port}}" address="127.0.0.1")
            action(type="omfile" file="{{OutputFile}}" template="vmiLine" flushOnTXEnd="on" asyncWriting="off")
            """);
        Run(Binary, $"-N1 -f {_conf}", out string check);
        Assert.True(check.Contains("End of config validation run", StringComparison.Ordinal), "rsyslog config invalid: " + check);
    }

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    private static int Run(string file, string args, out string output)
    {
        using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        Task<string> err = p.StandardError.ReadToEndAsync();
        output = p.StandardOutput.ReadToEnd() + err.Result;
        p.WaitForExit();
        return p.ExitCode;
    }

    public int Pid => _process?.Id ?? 0;

    public void Start()
    {
        Assert.Null(_process);
        _process = Process.Start(new ProcessStartInfo(Binary, $"-n -f {_conf} -i {_pidFile}")
        {
            RedirectStandardOutput = true, RedirectStandardError = true,
        })!;
        _process.OutputDataReceived += (_, _) => { };
        _process.ErrorDataReceived += (_, _) => { };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        var sw = Stopwatch.StartNew();
        while (true)
        {
            Assert.False(_process.HasExited, "rsyslogd exited at start");
            try
            {
                using var probe = new TcpClient();
                probe.Connect(IPAddress.Loopback, Port);
                return;
            }
            catch (SocketException) when (sw.Elapsed < TimeSpan.FromSeconds(30))
            {
                Thread.Sleep(50);
            }
        }
    }

    /// <summary>Stops the daemon with SIGTERM (SIGKILL when <paramref name="kill"/>) by its PID and waits for it.</summary>
    public void Stop(bool kill = false)
    {
        if (_process is null)
            return;
        if (!_process.HasExited)
        {
            if (kill)
                _process.Kill();
            else
                Run("/bin/kill", $"-TERM {_process.Id}", out _);
            if (!_process.WaitForExit(30_000))
                _process.Kill();
            _process.WaitForExit();
        }
        _process.Dispose();
        _process = null;
    }

    /// <summary>Lines written so far (the last one only if complete).</summary>
    public List<string> Lines()
    {
        if (!File.Exists(OutputFile))
            return [];
        using var f = new FileStream(OutputFile, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        using var r = new StreamReader(f);
        string text = r.ReadToEnd();
        int end = text.LastIndexOf('\n');
        return end < 0 ? [] : text[..end].Split('\n').ToList();
    }

    /// <summary>The <c>seq</c> structured-data param of each received line.</summary>
    public List<long> Sequences() => Lines().Select(l => SeqRegex().Match(l)).Where(m => m.Success).Select(m => long.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)).ToList();

    [GeneratedRegex(@" seq=""(\d+)""")]
    private static partial Regex SeqRegex();

    public void Dispose() => Stop();
}
