using System.Globalization;

namespace Vmi.Detectors.Anomaly;

/// <summary>
/// The behaviour of one process at one sweep, as a vector of named features (see <see cref="All"/>).
/// Raw values are counts and 0/1 flags; NaN marks a feature that could not be read (its kernel walk
/// failed), which the model treats as "as usual" rather than as zero.
/// </summary>
public sealed record ProcessFeatures
{
    // Indexes into All and Values: one constant per feature.
    public const int Threads = 0;
    public const int OpenFds = 1;
    public const int SocketFds = 2;
    public const int TcpListening = 3;
    public const int TcpConnected = 4;
    public const int UdpSockets = 5;
    public const int Vmas = 6;
    public const int WritableExecutableVmas = 7;
    public const int AnonymousExecutableVmas = 8;
    public const int SuspiciousExecutableMaps = 9;
    public const int SuspiciousExe = 10;
    public const int NoExe = 11;
    public const int ArgumentCount = 12;
    public const int CmdlineBytes = 13;
    public const int EnvironmentVariables = 14;
    public const int UidRoot = 15;
    public const int EuidRoot = 16;
    public const int EuidDiffersFromUid = 17;
    public const int ParentIsInit = 18;
    public const int ParentIsKernelThread = 19;
    public const int Children = 20;
    public const int CommDiffersFromExe = 21;

    /// <summary>The feature set, in vector order.</summary>
    public static IReadOnlyList<FeatureDefinition> All { get; } =
    [
        new("threads", FeatureScale.Log1p, "threads in the thread group"),
        new("open_fds", FeatureScale.Log1p, "open file descriptors"),
        new("socket_fds", FeatureScale.Log1p, "descriptors that are sockets (any family)"),
        new("tcp_listening", FeatureScale.Log1p, "TCP sockets in LISTEN"),
        new("tcp_connected", FeatureScale.Log1p, "TCP sockets not listening (established, connecting, closing)"),
        new("udp_sockets", FeatureScale.Log1p, "UDP sockets"),
        new("vmas", FeatureScale.Log1p, "memory mappings (VMAs)"),
        new("wx_vmas", FeatureScale.Log1p, "mappings both writable and executable"),
        new("anon_exec_vmas", FeatureScale.Log1p, "executable mappings backed by no file (the vDSO is one)"),
        new("suspicious_exec_maps", FeatureScale.Log1p, "executable file mappings from /tmp, /dev/shm, /run, /var/tmp, a memfd or a deleted file"),
        new("suspicious_exe", FeatureScale.Binary, "the executable is in /tmp, /dev/shm, /run, /var/tmp, a memfd or deleted"),
        new("no_exe", FeatureScale.Binary, "a user process whose executable is unknown"),
        new("argc", FeatureScale.Log1p, "command-line arguments"),
        new("cmdline_bytes", FeatureScale.Log1p, "command-line length in bytes"),
        new("env_vars", FeatureScale.Log1p, "environment variables"),
        new("uid_root", FeatureScale.Binary, "real uid is 0"),
        new("euid_root", FeatureScale.Binary, "effective uid is 0"),
        new("euid_differs", FeatureScale.Binary, "effective uid differs from the real uid (setuid)"),
        new("parent_is_init", FeatureScale.Binary, "parent is pid 1"),
        new("parent_is_kthread", FeatureScale.Binary, "parent is a kernel thread (usermode helper)"),
        new("children", FeatureScale.Log1p, "child processes"),
        new("comm_mismatch", FeatureScale.Binary, "comm differs from the executable's file name"),
    ];

    public required int Pid { get; init; }
    /// <summary>task_struct.start_time: with the pid, the process's identity across sweeps.</summary>
    public required ulong StartTimeNs { get; init; }
    public required string Name { get; init; }
    public string? ExePath { get; init; }
    public IReadOnlyList<string> Cmdline { get; init; } = [];
    public uint Uid { get; init; }
    public uint Euid { get; init; }
    public bool IsKernelThread { get; init; }

    /// <summary>Raw values in <see cref="All"/> order (NaN = could not be read).</summary>
    public required IReadOnlyList<double> Values { get; init; }

    /// <summary>Walks that failed or were incomplete for this process (their features are NaN).</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];

    /// <summary>The raw value of a feature by name.</summary>
    /// <exception cref="KeyNotFoundException">No feature has that name.</exception>
    public double this[string name]
    {
        get
        {
            for (int i = 0; i < All.Count; i++)
            {
                if (All[i].Name == name)
                    return Values[i];
            }
            throw new KeyNotFoundException($"no process feature named '{name}'");
        }
    }

    /// <summary>Identity across sweeps: a pid is reused, pid + start time is not.</summary>
    public string Key => string.Create(CultureInfo.InvariantCulture, $"{Pid}:{StartTimeNs}");

    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"{Pid} {Name}: ") + string.Join(' ', All.Select((f, i) => f.Name + "=" + Values[i].ToString("0.##", CultureInfo.InvariantCulture)));
}
