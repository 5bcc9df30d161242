using Vmi.Core;

namespace Vmi.Export;

/// <summary>
/// An export destination or the export spool cannot be used as configured (credentials refused, the
/// server's certificate not trusted, the spool folder unwritable or full). Records already in the spool
/// stay there.
/// </summary>
public class ExportException : VmiException
{
    public ExportException() { }
    public ExportException(string message) : base(message) { }
    public ExportException(string message, Exception innerException) : base(message, innerException) { }
}

/// <summary>
/// The spool reached its disk bound under <see cref="Spool.SpoolFullPolicy.Reject"/>: the record was not
/// accepted (and counted as rejected). The caller decides whether to shed or to wait for the exporter.
/// </summary>
public class SpoolFullException : ExportException
{
    public SpoolFullException() { }
    public SpoolFullException(string message) : base(message) { }
    public SpoolFullException(string message, Exception innerException) : base(message, innerException) { }
}
