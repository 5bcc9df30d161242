using Vmi.Core;

namespace Vmi.Linux.Symbols;

/// <summary>The running kernel's image could not be found (or validated) in guest memory.</summary>
public class KernelNotFoundException : GuestMemoryException
{
    public KernelNotFoundException() { }
    public KernelNotFoundException(string message) : base(message) { }
    public KernelNotFoundException(string message, Exception innerException) : base(message, innerException) { }
}

/// <summary>The kernel's kallsyms tables could not be found in guest memory or are malformed.</summary>
public class KallsymsException : GuestMemoryException
{
    public KallsymsException() { }
    public KallsymsException(string message) : base(message) { }
    public KallsymsException(string message, Exception innerException) : base(message, innerException) { }
}

/// <summary>A System.map file is unusable (malformed, or Debian's placeholder).</summary>
public class SystemMapException : VmiException
{
    public SystemMapException() { }
    public SystemMapException(string message) : base(message) { }
    public SystemMapException(string message, Exception innerException) : base(message, innerException) { }
}
