using Vmi.Core;

namespace Vmi.Audit;

/// <summary>The audit log cannot be opened, appended to or read: missing key, a tampered or corrupt log, a write failure.</summary>
public sealed class AuditLogException : VmiException
{
    public AuditLogException() { }
    public AuditLogException(string message) : base(message) { }
    public AuditLogException(string message, Exception innerException) : base(message, innerException) { }
}
