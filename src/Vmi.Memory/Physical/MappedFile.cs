using System.IO.MemoryMappedFiles;
using Vmi.Core;

namespace Vmi.Memory;

/// <summary>A whole file mapped read-only, with a stable pointer for its lifetime.</summary>
/// <remarks>
/// The file must not shrink while mapped: touching a page past the new end raises SIGBUS and kills the
/// process. QEMU never truncates its RAM file, and dumps are closed files.
/// </remarks>
internal sealed unsafe class MappedFile : IDisposable
{
    private readonly MemoryMappedFile _file;
    private readonly MemoryMappedViewAccessor _view;
    private byte* _pointer;
    private int _disposed;

    private MappedFile(MemoryMappedFile file, MemoryMappedViewAccessor view, byte* pointer, ulong length, string name)
    {
        _file = file;
        _view = view;
        _pointer = pointer;
        Length = length;
        Name = name;
    }

    /// <summary>Length of the file when it was mapped; every access is checked against it.</summary>
    public ulong Length { get; }

    /// <summary>The path, for messages.</summary>
    public string Name { get; }

    /// <summary>Base of the mapping; valid until <see cref="Dispose"/>.</summary>
    public byte* Pointer => _pointer;

    public static MappedFile Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new TargetException($"cannot open '{path}': {ex.Message}", ex);
        }
        return Open(stream, leaveOpen: false);
    }

    public static MappedFile Open(FileStream stream, bool leaveOpen)
    {
        ArgumentNullException.ThrowIfNull(stream);
        string name = stream.Name;
        MemoryMappedFile? file = null;
        MemoryMappedViewAccessor? view = null;
        try
        {
            if (!stream.CanRead)
                throw new TargetException($"'{name}' is not open for reading");
            long length = stream.Length;
            if (length <= 0)
                throw new GuestMemoryException($"'{name}' is empty: there is no guest memory to map");
            // Capacity 0 maps the file's current length; the view is read-only so a bug here cannot corrupt the guest.
            file = MemoryMappedFile.CreateFromFile(stream, mapName: null, capacity: 0, MemoryMappedFileAccess.Read,
                HandleInheritability.None, leaveOpen);
            view = file.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* pointer = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            // The view starts on a page boundary; PointerOffset is where offset 0 of the request lies in it.
            pointer += view.PointerOffset;
            return new MappedFile(file, view, pointer, (ulong)length, name);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException)
        {
            view?.Dispose();
            file?.Dispose();
            if (!leaveOpen)
                stream.Dispose();
            throw new TargetException($"cannot map '{name}' read-only: {ex.Message}", ex);
        }
        catch
        {
            view?.Dispose();
            file?.Dispose();
            if (!leaveOpen)
                stream.Dispose();
            throw;
        }
    }

    /// <summary>A view of <c>[offset, offset + length)</c>, or false when it is not inside the file.</summary>
    public bool TryGetSpan(ulong offset, int length, out ReadOnlySpan<byte> span)
    {
        ulong end = offset + (ulong)length;
        if (length < 0 || end > Length || end < offset)
        {
            span = default;
            return false;
        }
        span = new ReadOnlySpan<byte>(_pointer + offset, length);
        return true;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        _pointer = null;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _file.Dispose();
    }
}
