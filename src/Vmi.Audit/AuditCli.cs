using System.Globalization;
using Vmi.Core;
using Vmi.Updates;

namespace Vmi.Audit;

/// <summary>
/// The logic of <c>vmi audit verify|show|keygen</c>, kept here so the CLI only parses arguments.
/// Exit codes: 0 success/intact, 1 tampered, 2 usage error or unreadable input.
/// </summary>
public static class AuditCli
{
    /// <summary><c>vmi audit verify LOG --key KEY.pub</c>: prints <c>intact: …</c> or <c>TAMPERED at line L (sequence S): reason</c>.</summary>
    /// <param name="log">The audit log.</param>
    /// <param name="publicKeyFile">The audit public key (<c>KEY.pub</c>; the private key file works too but is not needed).</param>
    /// <param name="stdout">Result and warnings.</param>
    /// <param name="stderr">Errors.</param>
    /// <param name="expectedLastSequence">An outside anchor: the log must reach this sequence.</param>
    /// <param name="allowUnsealedTail">Verifying a live log: an unsealed tail is a warning.</param>
    /// <returns>0 intact, 1 tampered, 2 unreadable log or key.</returns>
    public static int Verify(string log, string publicKeyFile, TextWriter stdout, TextWriter stderr, long? expectedLastSequence = null, bool allowUnsealedTail = false)
    {
        ArgumentNullException.ThrowIfNull(stdout);
        ArgumentNullException.ThrowIfNull(stderr);
        AuditVerification result;
        try
        {
            if (!File.Exists(log))
            {
                stderr.WriteLine($"error: the audit log {log} does not exist.");
                return 2;
            }
            UpdatePublicKey key = SigningKey.LoadPublic(publicKeyFile);
            result = AuditVerifier.Verify(log, key, new AuditVerifyOptions { ExpectedLastSequence = expectedLastSequence, AllowUnsealedTail = allowUnsealedTail });
        }
        catch (VmiException e)
        {
            stderr.WriteLine("error: " + e.Message);
            return 2;
        }
        foreach (string warning in result.Warnings)
            stdout.WriteLine("warning: " + warning);
        if (result.Intact)
        {
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"intact: {result.Records} records, {result.Checkpoints} checkpoints, last sequence {result.LastSequence}{(result.Closed ? ", closed" : "")}"));
            return 0;
        }
        string seq = result.BadSequence is long s ? string.Create(CultureInfo.InvariantCulture, $" (sequence {s})") : "";
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"TAMPERED at line {result.BadLine}{seq}: {result.Reason}"));
        return 1;
    }

    /// <summary><c>vmi audit show LOG [--last N]</c>: the last <paramref name="last"/> records, one per line, unverified.</summary>
    /// <returns>0, or 2 when the log cannot be read.</returns>
    public static int Show(string log, int last, TextWriter stdout)
    {
        ArgumentNullException.ThrowIfNull(stdout);
        if (last < 1)
        {
            stdout.WriteLine("error: --last must be at least 1.");
            return 2;
        }
        var tail = new Queue<string>(Math.Min(last, 1024));
        long badLines = 0;
        try
        {
            using var stream = new FileStream(log, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, FileOptions.SequentialScan);
            var reader = new BoundedLineReader(stream);
            while (true)
            {
                BoundedLineReader.Status status = reader.Next(out ReadOnlyMemory<byte> line);
                if (status == BoundedLineReader.Status.End)
                    break;
                if (status != BoundedLineReader.Status.Line)
                {
                    badLines++;
                    if (status == BoundedLineReader.Status.TooLong)
                        break;
                    continue;
                }
                AuditFormat.Parsed? parsed = AuditFormat.TryParse(line, out _);
                if (parsed is null)
                {
                    badLines++;
                    continue;
                }
                if (parsed.Value.Record is not { } r)
                    continue;
                if (tail.Count == last)
                    tail.Dequeue();
                tail.Enqueue(Format(r));
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            stdout.WriteLine($"error: cannot read the audit log {log}: {e.Message}");
            return 2;
        }
        foreach (string line in tail)
            stdout.WriteLine(line);
        stdout.WriteLine(badLines > 0
            ? $"({badLines} unreadable line(s) skipped; not verified: run 'vmi audit verify')"
            : "(not verified: run 'vmi audit verify')");
        return 0;
    }

    private static string Format(AuditRecord r)
    {
        string details = string.Concat(r.Details.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $" {p.Key}={Quote(p.Value)}"));
        return string.Create(CultureInfo.InvariantCulture,
            $"{r.Sequence} {AuditFormat.FormatTime(r.Time)} {Quote(r.Actor)} {r.Action} {Quote(r.Subject)} {AuditRecord.OutcomeName(r.Outcome)}{details}");
    }

    // Guest- or user-supplied text must not forge extra lines or terminal escapes on the operator's screen.
    private static string Quote(string s)
    {
        bool plain = s.Length > 0 && s.All(c => c > ' ' && c != '"' && c != '\\' && c != '\x7f' && !char.IsControl(c));
        if (plain)
            return s;
        var sb = new System.Text.StringBuilder("\"");
        foreach (char c in s)
        {
            if (c is '"' or '\\')
                sb.Append('\\').Append(c);
            else if (char.IsControl(c))
                sb.Append(CultureInfo.InvariantCulture, $"\\u{(int)c:x4}");
            else
                sb.Append(c);
        }
        return sb.Append('"').ToString();
    }

    /// <summary>
    /// <c>vmi audit keygen --out FILE</c>: creates the audit signing key (mode 0600, never overwriting) and
    /// <c>FILE.pub</c>. The private key belongs to the audit service account: administrators must not be able
    /// to read it, or they could re-sign an edited log. Verifiers need only <c>FILE.pub</c>.
    /// </summary>
    /// <returns>0, or 2 when the file exists or cannot be written.</returns>
    public static int Keygen(string outFile, TextWriter stdout, TextWriter? stderr = null)
    {
        ArgumentNullException.ThrowIfNull(stdout);
        try
        {
            using SigningKey key = SigningKey.Generate();
            key.Save(outFile);
            stdout.WriteLine($"wrote the audit signing key {outFile} (mode 0600) and its public key {outFile}.pub; key id {key.KeyId}");
            stdout.WriteLine($"Make {outFile} owned by and readable only by the audit service account (e.g. 'chown vmi-audit {outFile}'), not by administrators: whoever can read it can rewrite the audit log undetectably.");
            stdout.WriteLine($"Verify with: vmi audit verify LOG --key {outFile}.pub (only the public key is needed).");
            return 0;
        }
        catch (VmiException e)
        {
            (stderr ?? stdout).WriteLine("error: " + e.Message);
            return 2;
        }
    }
}
