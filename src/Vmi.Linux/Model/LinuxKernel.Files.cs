using System.Buffers.Binary;
using System.Globalization;

namespace Vmi.Linux.Model;

/// <summary>
/// An open file descriptor of a process (what /proc/PID/fd shows). <paramref name="Path"/> is the link
/// target /proc would show: a path for files on a filesystem, "socket:[INODE]", "pipe:[INODE]",
/// "anon_inode:[NAME]"; null when it could not be read.
/// </summary>
public sealed record LinuxOpenFile(int Fd, ulong File, string? Path, bool IsSocket, ulong Inode);

public sealed partial class LinuxKernel
{
    private const int MaxPathDepth = 64;

    /// <summary>Upper bound of descriptors scanned in one fd table (sysctl fs.nr_open defaults to 1M and caps it).</summary>
    public const int MaxFds = 1 << 20;
    private const int FdChunk = 512;

    /// <summary>
    /// The open files of a process, from task_struct.files → files_struct.fdt → fdtable.fd[0..max_fds).
    /// A process without a file table (kernel thread, exiting task) has none.
    /// </summary>
    public KernelList<LinuxOpenFile> GetOpenFiles(LinuxProcess process)
    {
        ArgumentNullException.ThrowIfNull(process);
        var issues = new List<KernelWalkIssue>();
        var result = new List<LinuxOpenFile>();
        foreach (var (fd, file) in FileTable(process, issues))
            result.Add(DescribeFile(fd, file));
        return new KernelList<LinuxOpenFile>(result, issues);
    }

    /// <summary>(fd, struct file *) for every open descriptor of the process, in fd order.</summary>
    private List<(int Fd, ulong File)> FileTable(LinuxProcess process, List<KernelWalkIssue> issues)
    {
        var files = new List<(int, ulong)>();
        int taskFiles = Types.OffsetOf("task_struct", "files");
        int filesFdt = Types.OffsetOf("files_struct", "fdt");
        int fdtMax = Types.OffsetOf("fdtable", "max_fds");
        int fdtFd = Types.OffsetOf("fdtable", "fd");
        if (!_kernel.TryReadUInt64(process.TaskAddress + (ulong)taskFiles, out ulong filesStruct))
        {
            issues.Add(new KernelWalkIssue("task", process.TaskAddress, $"task_struct of pid {process.Pid} is unreadable"));
            return files;
        }
        if (filesStruct == 0)
            return files;
        if (!_kernel.TryReadUInt64(filesStruct + (ulong)filesFdt, out ulong fdt) || fdt == 0
            || !TryU32(fdt + (ulong)fdtMax, out uint maxFds) || !_kernel.TryReadUInt64(fdt + (ulong)fdtFd, out ulong fdArray))
        {
            issues.Add(new KernelWalkIssue("files_struct", filesStruct, $"fd table of pid {process.Pid} is unreadable"));
            return files;
        }
        if (maxFds > MaxFds)
        {
            issues.Add(new KernelWalkIssue("fdtable", fdt, $"max_fds {maxFds} of pid {process.Pid} is above {MaxFds}; only the first {MaxFds} descriptors are read"));
            maxFds = MaxFds;
        }
        var chunk = new byte[FdChunk * 8];
        for (uint start = 0; start < maxFds; start += FdChunk)
        {
            int count = (int)Math.Min(FdChunk, maxFds - start);
            Span<byte> span = chunk.AsSpan(0, count * 8);
            var r = _kernel.Read(fdArray + (ulong)start * 8, span);
            if (!r.IsComplete)
            {
                issues.Add(new KernelWalkIssue("fdtable", fdArray + (ulong)start * 8 + (ulong)r.BytesRead,
                    $"fd array of pid {process.Pid} is unreadable from descriptor {start + (uint)(r.BytesRead / 8)}"));
                count = r.BytesRead / 8;
            }
            for (int i = 0; i < count; i++)
            {
                ulong file = BinaryPrimitives.ReadUInt64LittleEndian(span[(i * 8)..]);
                if (file != 0)
                    files.Add(((int)(start + (uint)i), file));
            }
            if (!r.IsComplete)
                break;
        }
        return files;
    }

    private LinuxOpenFile DescribeFile(int fd, ulong file)
    {
        int fOp = Types.OffsetOf("file", "f_op");
        int fInode = Types.OffsetOf("file", "f_inode");
        int iIno = Types.OffsetOf("inode", "i_ino");
        ulong ino = 0;
        _kernel.TryReadUInt64(file + (ulong)fOp, out ulong op);
        if (_kernel.TryReadUInt64(file + (ulong)fInode, out ulong inode) && inode != 0)
            _kernel.TryReadUInt64(inode + (ulong)iIno, out ino);
        string inoText = ino.ToString(CultureInfo.InvariantCulture);
        if (op != 0 && _symbols.TryGetAddress("socket_file_ops", out ulong sockOps) && op == sockOps)
            return new LinuxOpenFile(fd, file, "socket:[" + inoText + "]", true, ino);
        if (op != 0 && _symbols.TryGetAddress("pipefifo_fops", out ulong pipeOps) && op == pipeOps && FsTypeName(inode) == "pipefs")
            return new LinuxOpenFile(fd, file, "pipe:[" + inoText + "]", false, ino);
        // Pseudo filesystems name their files through d_op->d_dname like /proc shows them.
        string? fs = FsTypeName(inode);
        switch (fs)
        {
            case "sockfs":
                return new LinuxOpenFile(fd, file, "socket:[" + inoText + "]", true, ino);
            case "pipefs":
                return new LinuxOpenFile(fd, file, "pipe:[" + inoText + "]", false, ino);
            case "anon_inodefs":
            {
                string? name = DentryName(file);
                return new LinuxOpenFile(fd, file, name is null ? null : "anon_inode:" + name, false, ino);
            }
        }
        return new LinuxOpenFile(fd, file, FilePath(file), false, ino);
    }

    /// <summary>The name of the filesystem type an inode belongs to (inode→i_sb→s_type→name), null when unreadable.</summary>
    private string? FsTypeName(ulong inode)
    {
        if (inode == 0)
            return null;
        int iSb = Types.OffsetOf("inode", "i_sb");
        int sType = Types.OffsetOf("super_block", "s_type");
        int fstName = Types.OffsetOf("file_system_type", "name");
        if (!_kernel.TryReadUInt64(inode + (ulong)iSb, out ulong sb) || sb == 0
            || !_kernel.TryReadUInt64(sb + (ulong)sType, out ulong fsType) || fsType == 0
            || !_kernel.TryReadUInt64(fsType + (ulong)fstName, out ulong namePtr) || namePtr == 0)
            return null;
        return ReadCString(namePtr, 64);
    }

    private string? DentryName(ulong file)
    {
        int fPath = Types.OffsetOf("file", "f_path");
        int pathDentry = Types.OffsetOf("path", "dentry");
        int dName = Types.OffsetOf("dentry", "d_name");
        int qstrName = Types.OffsetOf("qstr", "name");
        if (!_kernel.TryReadUInt64(file + (ulong)(fPath + pathDentry), out ulong dentry) || dentry == 0
            || !_kernel.TryReadUInt64(dentry + (ulong)(dName + qstrName), out ulong namePtr) || namePtr == 0)
            return null;
        return ReadCString(namePtr, 256);
    }

    /// <summary>
    /// A file's path as d_path builds it: the dentry chain up to its mount's root, then on through the
    /// mount point in the parent mount (struct mount, which embeds the file's vfsmount), up to the
    /// mount that is its own parent. Bounded in depth and in mounts crossed. Without a readable
    /// vfsmount the path is relative to the file's own mount.
    /// </summary>
    public string? FilePath(ulong file)
    {
        // Layouts the kernel may lack make the path shorter (no mount crossing) or unknown, never an exception.
        if (!Types.TryOffsetOf("file", "f_path", out int fPath) || !Types.TryOffsetOf("path", "dentry", out int pathDentry)
            || !Types.TryOffsetOf("dentry", "d_parent", out int dParent) || !Types.TryOffsetOf("dentry", "d_name", out int dName)
            || !Types.TryOffsetOf("qstr", "name", out int qstrName))
            return null;
        bool canCrossMounts = Types.TryOffsetOf("path", "mnt", out int pathMnt) & Types.TryOffsetOf("vfsmount", "mnt_root", out int mntRoot)
            & Types.TryOffsetOf("mount", "mnt", out int mountMnt) & Types.TryOffsetOf("mount", "mnt_parent", out int mountParent)
            & Types.TryOffsetOf("mount", "mnt_mountpoint", out int mountPoint);
        if (!_kernel.TryReadUInt64(file + (ulong)(fPath + pathDentry), out ulong dentry) || dentry == 0)
            return null;
        ulong mount = canCrossMounts && _kernel.TryReadUInt64(file + (ulong)(fPath + pathMnt), out ulong vfsmnt) && vfsmnt != 0 ? vfsmnt - (ulong)mountMnt : 0;
        var parts = new List<string>();
        int mounts = 0;
        for (int steps = 0; steps < MaxPathDepth * 4; steps++)
        {
            ulong root = 0;
            if ((mount != 0 && !_kernel.TryReadUInt64(mount + (ulong)(mountMnt + mntRoot), out root))
                || !_kernel.TryReadUInt64(dentry + (ulong)dParent, out ulong parent))
                return null;
            if ((mount != 0 && dentry == root) || parent == dentry || parent == 0)
            {
                if (mount == 0)
                    break;
                // At the root of this mount: continue from its mount point in the parent mount.
                if (!_kernel.TryReadUInt64(mount + (ulong)mountParent, out ulong parentMount))
                    return null;
                if (parentMount == mount || parentMount == 0 || ++mounts > MaxPathDepth)
                    break;
                if (!_kernel.TryReadUInt64(mount + (ulong)mountPoint, out ulong point) || point == 0)
                    return null;
                dentry = point;
                mount = parentMount;
                continue;
            }
            if (!_kernel.TryReadUInt64(dentry + (ulong)(dName + qstrName), out ulong namePtr))
                return null;
            parts.Add(ReadCString(namePtr, 256));
            dentry = parent;
        }
        parts.Reverse();
        return "/" + string.Join('/', parts);
    }
}
