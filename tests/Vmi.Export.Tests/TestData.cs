using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Vmi.Events;
using Vmi.Export.Spool;

namespace Vmi.Export.Tests;

internal static class TestData
{
    public static readonly DateTimeOffset Start = new(2026, 11, 1, 12, 0, 0, TimeSpan.Zero);

    /// <summary>Every tenth an alert with a technique, the rest process starts; ids fixed by <paramref name="i"/>.</summary>
    public static VmiEvent Event(int i)
    {
        var id = new Guid(i, 0x1234, 0x5678, [1, 2, 3, 4, 5, 6, 7, 8]);
        if (i % 10 == 0)
        {
            return new Alert
            {
                Id = id, VmId = "vm-1", Time = Start.AddSeconds(i), Sequence = i, Detector = "syscall-table-hook",
                Title = $"sys_call_table[62] (kill) points outside kernel text #{i}", Severity = Severity.Critical,
                Key = "syscall-hook:62:" + i, Techniques = [AttackTechnique.Rootkit, AttackTechnique.KernelModules],
                Pid = 4242, ProcessName = "insmod", Evidence = new Dictionary<string, string> { ["handler"] = "0xffffffffc0a01000" },
            };
        }
        return new ProcessStarted
        {
            Id = id, VmId = "vm-1", Time = Start.AddSeconds(i), Sequence = i, Pid = 1000 + i, Ppid = 1, Name = "bash",
            Cmdline = ["/bin/bash", "-c", "echo " + i], ExePath = "/bin/bash",
        };
    }

    public static List<ExportItem> Items(int count, int from = 0) =>
        Enumerable.Range(from, count).Select(i => ExportItem.FromEvent(Event(i))).ToList();

    public static string TempDir()
    {
        string dir = Path.Combine(Path.GetTempPath(), "vmi-export-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }

    public static SpoolOptions Spool(string dir) => new() { Directory = dir, SegmentBytes = 64 << 10, MaxBytes = 64L << 20 };

    public static ExporterOptions FastRetries(int batch = 100) => new()
    {
        MaxBatchCount = batch,
        InitialRetryDelay = TimeSpan.FromMilliseconds(10),
        MaxRetryDelay = TimeSpan.FromSeconds(2),
        JitterSeed = 1,
    };
}

/// <summary>A throw-away certificate authority and a server certificate it signed for 127.0.0.1.</summary>
internal sealed class TestCa : IDisposable
{
    public X509Certificate2 Server { get; }
    public string CaPemFile { get; }

    public TestCa(string dir)
    {
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest("CN=Vmi Test CA", caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        caRequest.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(caRequest.PublicKey, false));
        using X509Certificate2 ca = caRequest.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));

        using var serverKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=127.0.0.1", serverKey, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(IPAddress.Loopback);
        san.AddDnsName("localhost");
        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        byte[] serial = RandomNumberGenerator.GetBytes(8);
        using X509Certificate2 signed = request.Create(ca, DateTimeOffset.UtcNow.AddHours(-1), DateTimeOffset.UtcNow.AddDays(7), serial);
        using X509Certificate2 withKey = signed.CopyWithPrivateKey(serverKey);
        Server = X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), null);
        CaPemFile = Path.Combine(dir, "ca.pem");
        File.WriteAllText(CaPemFile, ca.ExportCertificatePem());
    }

    public void Dispose() => Server.Dispose();
}
