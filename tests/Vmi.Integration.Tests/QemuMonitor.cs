using System.Globalization;
using Vmi.Qemu;

namespace Vmi.Integration.Tests;

/// <summary>QEMU's own answers (HMP through QMP): the reference the differential tests compare against.</summary>
internal static class QemuMonitor
{
    /// <summary>QEMU's translation of a virtual address with vCPU 0's current paging, or null when unmapped.</summary>
    public static async Task<ulong?> Gva2GpaAsync(QmpClient qmp, ulong va)
    {
        string r = (await qmp.HumanMonitorCommandAsync(FormattableString.Invariant($"gva2gpa 0x{va:x}"))).Trim();
        // "gpa: 0x1234", and "gpa: 0" for zero (QEMU prints with %#x).
        if (r.StartsWith("gpa: ", StringComparison.Ordinal))
        {
            string hex = r[5..];
            return ulong.Parse(hex.StartsWith("0x", StringComparison.Ordinal) ? hex[2..] : hex, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        }
        if (r.Contains("Unmapped", StringComparison.Ordinal))
            return null;
        throw new InvalidOperationException($"unexpected gva2gpa answer: {r}");
    }

    /// <summary>Bytes from HMP "x" (virtual) or "xp" (physical); null when QEMU cannot access them.</summary>
    public static async Task<byte[]?> ExamineAsync(QmpClient qmp, string command, ulong address, int count)
    {
        string r = await qmp.HumanMonitorCommandAsync(FormattableString.Invariant($"{command} /{count}xb 0x{address:x}"));
        if (r.Contains("Cannot access", StringComparison.OrdinalIgnoreCase))
            return null;
        var bytes = new List<byte>();
        foreach (string line in r.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            int colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon < 0)
                continue;
            foreach (string tok in line[(colon + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries))
            {
                if (tok.StartsWith("0x", StringComparison.Ordinal))
                    bytes.Add(byte.Parse(tok.AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
            }
        }
        return bytes.Count == count ? bytes.ToArray() : throw new InvalidOperationException($"unexpected {command} answer: {r}");
    }
}
