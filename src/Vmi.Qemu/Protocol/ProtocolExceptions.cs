using Vmi.Core;

namespace Vmi.Qemu;

/// <summary>A QEMU peer (QMP, gdb stub) did not answer, or an awaited event or stop did not come, within the time allowed.</summary>
public sealed class ProtocolTimeoutException : ProtocolException
{
    public ProtocolTimeoutException() { }
    public ProtocolTimeoutException(string message) : base(message) { }
    public ProtocolTimeoutException(string message, Exception innerException) : base(message, innerException) { }
}

/// <summary>QMP answered a command with an <c>error</c> object.</summary>
public sealed class QmpErrorException : ProtocolException
{
    public QmpErrorException() { }
    public QmpErrorException(string message) : base(message) { }
    public QmpErrorException(string message, Exception innerException) : base(message, innerException) { }

    /// <summary>Creates the exception for <paramref name="command"/> from QMP's error class and description.</summary>
    public QmpErrorException(string command, string errorClass, string description)
        : base($"QMP command '{command}' failed: {errorClass}: {description}")
    {
        Command = command;
        ErrorClass = errorClass;
        Description = description;
    }

    /// <summary>The command that failed.</summary>
    public string? Command { get; }

    /// <summary>QMP's error class: <c>GenericError</c>, <c>CommandNotFound</c>, <c>DeviceNotFound</c>, ...</summary>
    public string? ErrorClass { get; }

    /// <summary>QMP's human-readable description.</summary>
    public string? Description { get; }
}
