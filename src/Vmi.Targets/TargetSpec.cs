using System.Globalization;
using Vmi.Core;

namespace Vmi.Targets;

/// <summary>Kinds of --target.</summary>
public enum TargetKind { Qemu, Dump }

/// <summary>
/// A parsed --target: <c>qemu:qmp=PATH,mem=PATH[,gdb=HOST:PORT][,machine=pc|q35]</c> for a running QEMU
/// whose RAM is a shared file, or <c>dump:PATH</c> for a raw or ELF memory image.
/// </summary>
public sealed record TargetSpec(TargetKind Kind, string? QmpPath, string? MemoryPath, string? GdbHost, int? GdbPort, string? Machine, string? DumpPath)
{
    public const string Syntax = "qemu:qmp=PATH,mem=PATH[,gdb=HOST:PORT][,machine=pc|q35] or dump:PATH";

    /// <summary>Parses a --target string.</summary>
    /// <exception cref="TargetException">The string is malformed; the message shows the syntax.</exception>
    public static TargetSpec Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int colon = text.IndexOf(':', StringComparison.Ordinal);
        if (colon <= 0)
            throw Bad(text, "no kind before ':'");
        string kind = text[..colon];
        string rest = text[(colon + 1)..];
        switch (kind)
        {
            case "dump":
                if (rest.Length == 0)
                    throw Bad(text, "no file after 'dump:'");
                return new TargetSpec(TargetKind.Dump, null, null, null, null, null, rest);
            case "qemu":
            {
                string? qmp = null, mem = null, gdbHost = null, machine = null;
                int? gdbPort = null;
                foreach (string part in rest.Split(',', StringSplitOptions.RemoveEmptyEntries))
                {
                    int eq = part.IndexOf('=', StringComparison.Ordinal);
                    if (eq <= 0)
                        throw Bad(text, $"'{part}' is not key=value");
                    string key = part[..eq], value = part[(eq + 1)..];
                    switch (key)
                    {
                        case "qmp": qmp = value; break;
                        case "mem": mem = value; break;
                        case "machine":
                            if (value is not ("pc" or "q35") && !value.StartsWith("pc-", StringComparison.Ordinal))
                                throw Bad(text, $"machine '{value}' is not pc or q35");
                            machine = value;
                            break;
                        case "gdb":
                        {
                            int c = value.LastIndexOf(':');
                            if (c <= 0 || !int.TryParse(value.AsSpan(c + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int port) || port is < 1 or > 65535)
                                throw Bad(text, $"gdb '{value}' is not HOST:PORT");
                            gdbHost = value[..c];
                            gdbPort = port;
                            break;
                        }
                        default: throw Bad(text, $"unknown key '{key}'");
                    }
                }
                if (qmp is null || mem is null)
                    throw Bad(text, "qmp= and mem= are both required");
                return new TargetSpec(TargetKind.Qemu, qmp, mem, gdbHost, gdbPort, machine, null);
            }
            default:
                throw Bad(text, $"unknown kind '{kind}'");
        }
    }

    private static TargetException Bad(string text, string why) =>
        new($"bad --target '{text}': {why}. Expected {Syntax}.");
}
