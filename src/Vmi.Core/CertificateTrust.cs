using System.Net.Security;
using System.Security.Cryptography.X509Certificates;

namespace Vmi.Core;

/// <summary>TLS server certificates checked against a private certificate authority instead of the system's.</summary>
public static class CertificateTrust
{
    /// <summary>
    /// A <see cref="RemoteCertificateValidationCallback"/> body: the name must match and the chain must end in
    /// one of <paramref name="roots"/> (revocation is not checked: private CAs rarely publish it).
    /// </summary>
    public static bool ValidateAgainst(X509Certificate2Collection roots, X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors)
    {
        ArgumentNullException.ThrowIfNull(roots);
        if (certificate is null || (errors & (SslPolicyErrors.RemoteCertificateNameMismatch | SslPolicyErrors.RemoteCertificateNotAvailable)) != 0)
            return false;
        using var custom = new X509Chain();
        custom.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        custom.ChainPolicy.CustomTrustStore.AddRange(roots);
        custom.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        if (chain is not null)
            custom.ChainPolicy.ExtraStore.AddRange(chain.ChainPolicy.ExtraStore);
        using var leaf = new X509Certificate2(certificate);
        return custom.Build(leaf);
    }
}
