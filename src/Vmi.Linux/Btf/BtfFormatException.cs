using Vmi.Core;

namespace Vmi.Linux.Btf;

/// <summary>A BTF blob is malformed, or a type or member looked up in it does not exist.</summary>
public class BtfFormatException : VmiException
{
    public BtfFormatException() { }
    public BtfFormatException(string message) : base(message) { }
    public BtfFormatException(string message, Exception innerException) : base(message, innerException) { }
}
