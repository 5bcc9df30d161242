namespace Vmi.Memory.Tests;

/// <summary>A file under the temp directory, deleted on dispose.</summary>
internal sealed class TempFile : IDisposable
{
    public TempFile(string? suffix = null)
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"vmi-memory-{Guid.NewGuid():N}{suffix}");
    }

    public string Path { get; }

    public static TempFile WithBytes(byte[] bytes)
    {
        var file = new TempFile();
        File.WriteAllBytes(file.Path, bytes);
        return file;
    }

    public void Dispose()
    {
        try
        {
            File.Delete(Path);
        }
        catch (IOException)
        {
            // Best effort: a leaked temp file must not fail a test.
        }
    }
}
