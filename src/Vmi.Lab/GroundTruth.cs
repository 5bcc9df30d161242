using System.Globalization;
using System.Text;

namespace Vmi.Lab;

/// <summary>A process as the guest itself reports it from /proc.</summary>
public sealed record GuestProcess(int Pid, int Ppid, int Uid, string Comm, IReadOnlyList<string> Cmdline);

/// <summary>A /proc/iomem line.</summary>
public sealed record IomemRange(ulong Start, ulong End, string Name);

/// <summary>What the lab guest says about itself (the reference introspection is compared against).</summary>
public sealed class GroundTruth
{
    public string Version { get; private set; } = "";
    public string CommandLine { get; private set; } = "";
    public List<GuestProcess> Processes { get; } = [];
    /// <summary>/proc/modules lines.</summary>
    public List<string> Modules { get; } = [];
    /// <summary>Selected /proc/kallsyms entries: name → address.</summary>
    public Dictionary<string, ulong> Symbols { get; } = new(StringComparer.Ordinal);
    public List<IomemRange> Iomem { get; } = [];

    /// <summary>Parses the lines between the framing markers of the guest's "truth" answer.</summary>
    /// <exception cref="FormatException">A line is not in the guest's format.</exception>
    public static GroundTruth Parse(IEnumerable<string> lines)
    {
        var t = new GroundTruth();
        foreach (string raw in lines)
        {
            if (raw.Length < 2 || raw[1] != ' ')
                continue; // a kernel message interleaved on the console
            string rest = raw[2..];
            switch (raw[0])
            {
                case 'V': t.Version = rest; break;
                case 'C': t.CommandLine = rest; break;
                case 'M': t.Modules.Add(rest); break;
                case 'P':
                {
                    string[] f = rest.Split(' ');
                    if (f.Length != 5)
                        throw new FormatException($"bad process line: {raw}");
                    string comm = Encoding.UTF8.GetString(Convert.FromHexString(f[3])).TrimEnd('\n');
                    var cmd = f[4] == "-" ? [] : Encoding.UTF8.GetString(Convert.FromHexString(f[4])).TrimEnd('\0').Split('\0');
                    t.Processes.Add(new GuestProcess(int.Parse(f[0], CultureInfo.InvariantCulture), int.Parse(f[1], CultureInfo.InvariantCulture),
                        int.Parse(f[2], CultureInfo.InvariantCulture), comm, cmd));
                    break;
                }
                case 'K':
                {
                    string[] f = rest.Split(' ');
                    if (f.Length == 3)
                        t.Symbols[f[2]] = ulong.Parse(f[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                    break;
                }
                case 'I':
                {
                    // "00100000-1ffdffff : System RAM" (nested entries are indented)
                    string s = rest.Trim();
                    int dash = s.IndexOf('-', StringComparison.Ordinal);
                    int colon = s.IndexOf(" : ", StringComparison.Ordinal);
                    if (dash > 0 && colon > dash)
                    {
                        t.Iomem.Add(new IomemRange(ulong.Parse(s[..dash], NumberStyles.HexNumber, CultureInfo.InvariantCulture),
                            ulong.Parse(s[(dash + 1)..colon], NumberStyles.HexNumber, CultureInfo.InvariantCulture), s[(colon + 3)..]));
                    }
                    break;
                }
                default: break;
            }
        }
        return t;
    }
}
