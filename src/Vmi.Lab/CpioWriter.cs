using System.Globalization;
using System.Text;

namespace Vmi.Lab;

/// <summary>
/// Writes a cpio archive in the "newc" format the Linux kernel unpacks as an initramfs
/// (Documentation/driver-api/early-userspace/buffer-format.rst). Device nodes can be written without
/// privileges, which is why the lab assembles its initramfs here instead of calling cpio.
/// </summary>
public sealed class CpioWriter : IDisposable
{
    private const int TypeDirectory = 0x4000; // S_IFDIR
    private const int TypeRegular = 0x8000;   // S_IFREG
    private const int TypeSymlink = 0xA000;   // S_IFLNK
    private const int TypeCharDevice = 0x2000; // S_IFCHR

    private readonly Stream _output;
    private readonly HashSet<string> _written = new(StringComparer.Ordinal);
    private int _inode = 1;
    private long _position;

    public CpioWriter(Stream output) => _output = output;

    public void AddDirectory(string path, int mode = 0x1ED /* 0755 */)
    {
        path = Normalize(path);
        if (_written.Contains(path))
            return;
        // The kernel's unpacker creates entries in archive order: parents must come first.
        EnsureParents(path);
        _written.Add(path);
        WriteEntry(path, TypeDirectory | mode, 0, 0, ReadOnlySpan<byte>.Empty);
    }

    public void AddFile(string path, ReadOnlySpan<byte> content, int mode = 0x1A4 /* 0644 */)
    {
        path = Normalize(path);
        EnsureParents(path);
        if (!_written.Add(path))
            throw new InvalidOperationException($"initramfs entry written twice: {path}");
        WriteEntry(path, TypeRegular | mode, 0, 0, content);
    }

    public void AddSymlink(string path, string target)
    {
        path = Normalize(path);
        EnsureParents(path);
        if (!_written.Add(path))
            return;
        WriteEntry(path, TypeSymlink | 0x1FF, 0, 0, Encoding.UTF8.GetBytes(target));
    }

    public void AddCharDevice(string path, int major, int minor, int mode = 0x180 /* 0600 */)
    {
        path = Normalize(path);
        EnsureParents(path);
        if (!_written.Add(path))
            return;
        WriteEntry(path, TypeCharDevice | mode, major, minor, ReadOnlySpan<byte>.Empty);
    }

    /// <summary>Writes the trailer. The archive is complete only after this.</summary>
    public void Finish()
    {
        WriteEntry("TRAILER!!!", 0, 0, 0, ReadOnlySpan<byte>.Empty, inode: 0);
        _output.Flush();
    }

    public void Dispose() => _output.Flush();

    private void EnsureParents(string path)
    {
        int slash = path.LastIndexOf('/');
        if (slash <= 0)
            return;
        string parent = path[..slash];
        if (!_written.Contains(parent))
        {
            EnsureParents(parent);
            AddDirectory(parent);
        }
    }

    private static string Normalize(string path) => path.Trim('/');

    private void WriteEntry(string name, int mode, int rdevMajor, int rdevMinor, ReadOnlySpan<byte> data, int? inode = null)
    {
        byte[] nameBytes = Encoding.UTF8.GetBytes(name);
        var header = new StringBuilder(110);
        header.Append("070701");
        void Field(long value) => header.Append(value.ToString("x8", CultureInfo.InvariantCulture));
        Field(inode ?? _inode++);
        Field(mode);
        Field(0); // uid
        Field(0); // gid
        Field((mode & 0xF000) == TypeDirectory ? 2 : 1); // nlink
        Field(0); // mtime: fixed, so the archive is reproducible
        Field(data.Length);
        Field(0); // devmajor
        Field(0); // devminor
        Field(rdevMajor);
        Field(rdevMinor);
        Field(nameBytes.Length + 1); // name size includes the NUL
        Field(0); // check
        Write(Encoding.ASCII.GetBytes(header.ToString()));
        Write(nameBytes);
        Write([0]);
        Pad();
        Write(data);
        Pad();
    }

    private void Write(ReadOnlySpan<byte> bytes)
    {
        _output.Write(bytes);
        _position += bytes.Length;
    }

    // newc aligns both the header+name and the data to 4 bytes.
    private void Pad()
    {
        int pad = (int)((4 - (_position & 3)) & 3);
        if (pad > 0)
            Write(new byte[pad]);
    }
}
