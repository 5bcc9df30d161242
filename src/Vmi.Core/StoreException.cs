namespace Vmi.Core;

/// <summary>
/// The event store cannot be opened, read or written (missing directory, no permission, not a database,
/// disk full, written by a newer Vmi). Whatever was already stored is left intact.
/// </summary>
public class StoreException : VmiException
{
    public StoreException() { }
    public StoreException(string message) : base(message) { }
    public StoreException(string message, Exception innerException) : base(message, innerException) { }
}
