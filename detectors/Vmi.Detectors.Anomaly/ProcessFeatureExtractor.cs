using System.Globalization;
using System.Text;
using Vmi.Core;
using Vmi.Linux.Model;
using Vmi.Memory;

namespace Vmi.Detectors.Anomaly;

/// <summary>What one sweep of feature extraction found: a vector per process, and what went wrong overall.</summary>
public sealed record FeatureSweep(IReadOnlyList<ProcessFeatures> Processes, IReadOnlyList<string> Notes);

/// <summary>
/// Reads <see cref="ProcessFeatures"/> from the Linux kernel model. Every walk is the model's bounded
/// one; a walk that reports issues or throws leaves its features NaN (missing) and a note, so a
/// corrupt structure in one process never stops the sweep or fakes a zero.
/// </summary>
public sealed class ProcessFeatureExtractor
{
    /// <summary>Upper bound of processes looked at in one sweep (the rest are skipped with a note).</summary>
    public const int DefaultMaxProcesses = 8192;

    private static readonly string[] SuspiciousDirectories = ["/tmp/", "/dev/shm/", "/run/", "/var/tmp/"];

    // include/linux/mm.h
    private const ulong VmWrite = 0x2;
    private const ulong VmExec = 0x4;

    private readonly LinuxKernel _kernel;
    private readonly VirtualMemory _kernelMemory;
    private readonly int _fileInode;
    private readonly int _inodeNlink;
    private readonly int _mmExeFile;
    private readonly Dictionary<ulong, bool> _deleted = [];

    public ProcessFeatureExtractor(LinuxKernel kernel)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        _kernel = kernel;
        _kernelMemory = new VirtualMemory(kernel.Memory, kernel.KernelPaging);
        // Optional layouts: without them "deleted" is never concluded.
        _fileInode = kernel.Types.TryOffsetOf("file", "f_inode", out int fi) ? fi : -1;
        _inodeNlink = kernel.Types.TryOffsetOf("inode", "__i_nlink", out int nl) || kernel.Types.TryOffsetOf("inode", "i_nlink", out nl) ? nl : -1;
        _mmExeFile = kernel.Types.TryOffsetOf("mm_struct", "exe_file", out int ef) ? ef : -1;
    }

    /// <summary>Most processes looked at in one sweep.</summary>
    public int MaxProcesses { get; init; } = DefaultMaxProcesses;

    /// <summary>Also describe kernel threads (they have no memory map, files or command line).</summary>
    public bool IncludeKernelThreads { get; init; }

    /// <summary>Features of every (user) process of the guest now.</summary>
    /// <param name="cancellation">Checked between processes.</param>
    public FeatureSweep Extract(CancellationToken cancellation = default)
    {
        var notes = new List<string>();
        _deleted.Clear();
        KernelList<LinuxProcess> list;
        try
        {
            list = _kernel.GetProcesses();
        }
        catch (VmiException e)
        {
            return new FeatureSweep([], ["process list: " + e.Message]);
        }
        if (!list.IsComplete)
            notes.Add(Summarize("process list", list.Issues));

        // Sockets once per sweep, grouped by the process that holds them.
        Dictionary<int, (int Listen, int Connected, int Udp)>? sockets = null;
        try
        {
            KernelList<LinuxSocket> all = _kernel.GetSockets();
            if (!all.IsComplete)
                notes.Add(Summarize("sockets", all.Issues));
            sockets = [];
            foreach (LinuxSocket s in all.Items)
            {
                sockets.TryGetValue(s.Pid, out var c);
                if (s.Protocol.StartsWith("udp", StringComparison.OrdinalIgnoreCase))
                    c.Udp++;
                else if (s.State == "LISTEN")
                    c.Listen++;
                else
                    c.Connected++;
                sockets[s.Pid] = c;
            }
        }
        catch (VmiException e)
        {
            notes.Add("sockets: " + e.Message);
        }

        var byPid = new Dictionary<int, LinuxProcess>();
        var children = new Dictionary<int, int>();
        foreach (LinuxProcess p in list.Items)
        {
            byPid.TryAdd(p.Pid, p);
            children[p.Ppid] = children.GetValueOrDefault(p.Ppid) + 1;
        }

        var result = new List<ProcessFeatures>();
        foreach (LinuxProcess p in list.Items)
        {
            cancellation.ThrowIfCancellationRequested();
            if (p.IsKernelThread && !IncludeKernelThreads)
                continue;
            if (result.Count >= MaxProcesses)
            {
                notes.Add(string.Create(CultureInfo.InvariantCulture, $"more than {MaxProcesses} processes: the rest were not scored"));
                break;
            }
            byPid.TryGetValue(p.Ppid, out LinuxProcess? parent);
            result.Add(Describe(p, parent, children.GetValueOrDefault(p.Pid), sockets));
        }
        return new FeatureSweep(result, notes);
    }

    private ProcessFeatures Describe(LinuxProcess p, LinuxProcess? parent, int childCount, Dictionary<int, (int Listen, int Connected, int Udp)>? sockets)
    {
        var v = new double[ProcessFeatures.All.Count];
        var notes = new List<string>();

        v[ProcessFeatures.Threads] = p.Threads.Count;
        v[ProcessFeatures.ArgumentCount] = p.Cmdline.Count;
        v[ProcessFeatures.CmdlineBytes] = p.Cmdline.Sum(a => Encoding.UTF8.GetByteCount(a) + 1);
        if (p.CmdlineError is not null && !p.IsKernelThread)
        {
            notes.Add("cmdline: " + p.CmdlineError);
            if (p.Cmdline.Count == 0)
                v[ProcessFeatures.ArgumentCount] = v[ProcessFeatures.CmdlineBytes] = double.NaN;
        }
        v[ProcessFeatures.UidRoot] = p.Uid == 0 ? 1 : 0;
        v[ProcessFeatures.EuidRoot] = p.Euid == 0 ? 1 : 0;
        v[ProcessFeatures.EuidDiffersFromUid] = p.Euid != p.Uid ? 1 : 0;
        v[ProcessFeatures.ParentIsInit] = p.Ppid == 1 ? 1 : 0;
        v[ProcessFeatures.ParentIsKernelThread] = parent is { IsKernelThread: true } ? 1 : 0;
        v[ProcessFeatures.Children] = childCount;

        // Executable: where it lives, whether it is still linked, whether comm matches its name.
        if (p.IsKernelThread)
        {
            v[ProcessFeatures.NoExe] = 0;
        }
        else if (p.ExePath is null)
        {
            v[ProcessFeatures.NoExe] = 1;
        }
        else
        {
            bool deleted = ExeFile(p) is ulong exe && exe != 0 && IsDeleted(exe);
            v[ProcessFeatures.SuspiciousExe] = deleted || IsSuspiciousPath(p.ExePath) ? 1 : 0;
            v[ProcessFeatures.CommDiffersFromExe] = CommMatches(p.Comm, p.ExePath) ? 0 : 1;
        }

        // Sockets: per process from the sweep's socket walk.
        if (sockets is null)
        {
            v[ProcessFeatures.TcpListening] = v[ProcessFeatures.TcpConnected] = v[ProcessFeatures.UdpSockets] = double.NaN;
        }
        else
        {
            var c = sockets.GetValueOrDefault(p.Pid);
            v[ProcessFeatures.TcpListening] = c.Listen;
            v[ProcessFeatures.TcpConnected] = c.Connected;
            v[ProcessFeatures.UdpSockets] = c.Udp;
        }

        // Open files.
        if (Walk("files", notes, () => _kernel.GetOpenFiles(p)) is { } files)
        {
            v[ProcessFeatures.OpenFds] = files.Count;
            v[ProcessFeatures.SocketFds] = files.Count(f => f.IsSocket);
        }
        else
        {
            v[ProcessFeatures.OpenFds] = v[ProcessFeatures.SocketFds] = double.NaN;
        }

        // Memory map.
        if (Walk("maps", notes, () => _kernel.GetMappings(p)) is { } maps)
        {
            int wx = 0, anonExec = 0, suspicious = 0;
            foreach (LinuxVma m in maps)
            {
                bool exec = (m.Flags & VmExec) != 0;
                if (exec && (m.Flags & VmWrite) != 0)
                    wx++;
                if (exec && m.File == 0)
                    anonExec++;
                if (exec && m.File != 0 && (IsSuspiciousPath(m.Path) || IsDeleted(m.File)))
                    suspicious++;
            }
            v[ProcessFeatures.Vmas] = maps.Count;
            v[ProcessFeatures.WritableExecutableVmas] = wx;
            v[ProcessFeatures.AnonymousExecutableVmas] = anonExec;
            v[ProcessFeatures.SuspiciousExecutableMaps] = suspicious;
        }
        else
        {
            v[ProcessFeatures.Vmas] = v[ProcessFeatures.WritableExecutableVmas] = v[ProcessFeatures.AnonymousExecutableVmas] = v[ProcessFeatures.SuspiciousExecutableMaps] = double.NaN;
        }

        // Environment.
        v[ProcessFeatures.EnvironmentVariables] = Walk("environment", notes, () => _kernel.GetEnvironment(p)) is { } env ? env.Count : double.NaN;

        return new ProcessFeatures
        {
            Pid = p.Pid, StartTimeNs = p.StartTimeNs, Name = p.Name, ExePath = p.ExePath, Cmdline = p.Cmdline, Uid = p.Uid, Euid = p.Euid,
            IsKernelThread = p.IsKernelThread, Values = v, Notes = notes,
        };
    }

    /// <summary>A walk's items when it was clean; null (features missing) and a note when it was not.</summary>
    private static IReadOnlyList<T>? Walk<T>(string what, List<string> notes, Func<KernelList<T>> walk)
    {
        try
        {
            KernelList<T> list = walk();
            if (list.IsComplete)
                return list.Items;
            notes.Add(Summarize(what, list.Issues));
            return null;
        }
        catch (VmiException e)
        {
            notes.Add(what + ": " + e.Message);
            return null;
        }
    }

    private static string Summarize(string what, IReadOnlyList<KernelWalkIssue> issues) =>
        string.Create(CultureInfo.InvariantCulture, $"{what}: {issues.Count} issue(s), first: {issues[0]}");

    private ulong? ExeFile(LinuxProcess p) =>
        _mmExeFile >= 0 && _kernelMemory.TryReadUInt64(p.MmAddress + (ulong)_mmExeFile, out ulong exe) ? exe : null;

    /// <summary>A file whose inode has no links left (what /proc marks "(deleted)"; memfds are such files).</summary>
    private bool IsDeleted(ulong file)
    {
        if (_fileInode < 0 || _inodeNlink < 0)
            return false;
        if (_deleted.TryGetValue(file, out bool known))
            return known;
        Span<byte> nlink = stackalloc byte[4];
        bool deleted = _kernelMemory.TryReadUInt64(file + (ulong)_fileInode, out ulong inode) && inode != 0
            && _kernelMemory.TryRead(inode + (ulong)_inodeNlink, nlink) && BitConverter.ToUInt32(nlink) == 0;
        _deleted[file] = deleted;
        return deleted;
    }

    /// <summary>Where malware drops and runs payloads: world-writable tmpfs directories and memfds.</summary>
    internal static bool IsSuspiciousPath(string? path) =>
        path is not null && (path.StartsWith("/memfd:", StringComparison.Ordinal)
            || SuspiciousDirectories.Any(d => path.StartsWith(d, StringComparison.Ordinal)));

    /// <summary>comm is the executable's file name cut to 15 bytes (TASK_COMM_LEN 16), unless someone renamed it.</summary>
    internal static bool CommMatches(string comm, string exePath)
    {
        string name = exePath[(exePath.LastIndexOf('/') + 1)..];
        byte[] bytes = Encoding.UTF8.GetBytes(name);
        // Decoded the way the kernel model decodes comm, so a cut multi-byte character compares equal.
        string cut = bytes.Length > 15 ? Encoding.UTF8.GetString(bytes, 0, 15) : name;
        return string.Equals(comm, cut, StringComparison.Ordinal);
    }
}
