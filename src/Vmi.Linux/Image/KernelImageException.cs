using Vmi.Core;

namespace Vmi.Linux.Image;

/// <summary>A kernel image (bzImage, ELF vmlinux) is malformed or cannot be unpacked.</summary>
public class KernelImageException : VmiException
{
    public KernelImageException() { }
    public KernelImageException(string message) : base(message) { }
    public KernelImageException(string message, Exception innerException) : base(message, innerException) { }
}
