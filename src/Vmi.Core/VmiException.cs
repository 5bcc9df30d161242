namespace Vmi.Core;

/// <summary>Base of every error Vmi reports on purpose. Messages are written for the user: what went wrong and what to do.</summary>
public class VmiException : Exception
{
    public VmiException() { }
    public VmiException(string message) : base(message) { }
    public VmiException(string message, Exception innerException) : base(message, innerException) { }
}

/// <summary>Guest memory could not be read or is malformed (unbacked physical address, corrupt structure).</summary>
public class GuestMemoryException : VmiException
{
    public GuestMemoryException() { }
    public GuestMemoryException(string message) : base(message) { }
    public GuestMemoryException(string message, Exception innerException) : base(message, innerException) { }
}

/// <summary>A target (VM, dump file) cannot be opened or attached to.</summary>
public class TargetException : VmiException
{
    public TargetException() { }
    public TargetException(string message) : base(message) { }
    public TargetException(string message, Exception innerException) : base(message, innerException) { }
}

/// <summary>A peer (QMP, gdb stub) broke its protocol or reported an error.</summary>
public class ProtocolException : VmiException
{
    public ProtocolException() { }
    public ProtocolException(string message) : base(message) { }
    public ProtocolException(string message, Exception innerException) : base(message, innerException) { }
}

/// <summary>The lab (guest build or boot) cannot proceed: a missing tool, package or artifact.</summary>
public class LabException : VmiException
{
    public LabException() { }
    public LabException(string message) : base(message) { }
    public LabException(string message, Exception innerException) : base(message, innerException) { }
}
