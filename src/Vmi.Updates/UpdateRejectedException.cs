using Vmi.Core;

namespace Vmi.Updates;

/// <summary>Why an update was refused. Every kind leaves the bundle in force as it was.</summary>
public enum UpdateRejection
{
    /// <summary>The feed could not be reached or a file it lists is missing.</summary>
    Unavailable,
    /// <summary>A metadata file is not well-formed TUF metadata (bad JSON, a missing or mistyped field, an unsafe target name).</summary>
    Malformed,
    /// <summary>Signatures come only from keys the role does not trust (signed by the wrong key).</summary>
    UntrustedKey,
    /// <summary>A trusted key's signature does not verify: the signed content was changed after signing.</summary>
    InvalidSignature,
    /// <summary>Valid signatures from too few of the role's keys.</summary>
    ThresholdNotMet,
    /// <summary>A version older than the one already trusted (rollback or replay).</summary>
    Rollback,
    /// <summary>Metadata past its expiry (a freeze attack, or a feed that stopped re-signing).</summary>
    Expired,
    /// <summary>A file does not match the version, length or hash that the role above it lists (mix-and-match).</summary>
    Mismatch,
    /// <summary>A download is larger than its limit (an endless-data attack).</summary>
    TooLarge,
    /// <summary>A rule file does not match the length and hashes the signed targets list (tampered target).</summary>
    TargetMismatch,
    /// <summary>The signed bundle's rules do not compile: it is not installed.</summary>
    InvalidBundle,
    /// <summary>The metadata uses a feature this client does not implement (delegations, another spec major version).</summary>
    Unsupported,
    /// <summary>The local state refuses the request (no trusted root yet, another update running, the disk is full).</summary>
    LocalState,
}

/// <summary>An update was refused; the message says what was wrong and the bundle in force stays.</summary>
public sealed class UpdateRejectedException : VmiException
{
    public UpdateRejectedException(UpdateRejection kind, string file, string message, Exception? inner = null)
        : base($"{file}: {message}", inner ?? new InvalidOperationException(message))
    {
        Kind = kind;
        File = file;
    }

    public UpdateRejectedException() : this(UpdateRejection.Malformed, "?", "update rejected") { }

    public UpdateRejectedException(string message) : this(UpdateRejection.Malformed, "?", message) { }

    public UpdateRejectedException(string message, Exception innerException) : this(UpdateRejection.Malformed, "?", message, innerException) { }

    public UpdateRejection Kind { get; }

    /// <summary>The file that was refused (<c>timestamp.json</c>, <c>3.root.json</c>, <c>targets/eicar.yar</c>) or the local state.</summary>
    public string File { get; }

    /// <summary>Kebab-case name of <see cref="Kind"/> for logs and audit records.</summary>
    public string KindName => KindText(Kind);

    public static string KindText(UpdateRejection kind) => kind switch
    {
        UpdateRejection.UntrustedKey => "untrusted-key",
        UpdateRejection.InvalidSignature => "invalid-signature",
        UpdateRejection.ThresholdNotMet => "threshold-not-met",
        UpdateRejection.TooLarge => "too-large",
        UpdateRejection.TargetMismatch => "target-mismatch",
        UpdateRejection.InvalidBundle => "invalid-bundle",
        UpdateRejection.LocalState => "local-state",
        _ => kind.ToString().ToLowerInvariant(),
    };
}
