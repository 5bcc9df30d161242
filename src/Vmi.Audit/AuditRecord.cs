namespace Vmi.Audit;

/// <summary>How an audited action ended.</summary>
public enum AuditOutcome
{
    /// <summary>The action was carried out (<c>"success"</c>).</summary>
    Success,

    /// <summary>The action was attempted and failed (<c>"failure"</c>).</summary>
    Failure,

    /// <summary>The action was refused: not authorized, invalid, or blocked by policy (<c>"rejected"</c>).</summary>
    Rejected,
}

/// <summary>
/// One audit record as it is stored: a line of canonical JSON,
/// <c>{"action":…,"actor":…,"checkpoints":N,"details":{…},"hash":HEX,"outcome":…,"prev":HEX,"sequence":N,"subject":…,"time":…,"type":"record"}</c>.
/// </summary>
/// <remarks>
/// <see cref="Hash"/> is the SHA-256 of the record's canonical JSON without the <c>hash</c> member;
/// <see cref="Prev"/> is the SHA-256 of the previous line of the file (record or checkpoint, without its
/// newline), or 64 zeros on the first line, so every line is chained to everything before it.
/// </remarks>
public sealed class AuditRecord
{
    /// <summary>1-based, contiguous over the whole log (also across restarts).</summary>
    public required long Sequence { get; init; }

    /// <summary>When the record was appended, UTC, to 100 ns.</summary>
    public required DateTimeOffset Time { get; init; }

    /// <summary>Who acted: <c>"cli:root"</c>, <c>"api:alice"</c>, <c>"service"</c>.</summary>
    public required string Actor { get; init; }

    /// <summary>What was done, lower-case dotted kebab-case: <c>"rules.update"</c>, <c>"monitor.start"</c>, <c>"alert.raised"</c>.</summary>
    public required string Action { get; init; }

    /// <summary>What it was done to: a VM id, a rule set, an alert key; may be empty.</summary>
    public required string Subject { get; init; }

    public required AuditOutcome Outcome { get; init; }

    /// <summary>Further facts, string to string.</summary>
    public required IReadOnlyDictionary<string, string> Details { get; init; }

    /// <summary>How many checkpoint lines precede this record in the file (so a removed checkpoint is noticed).</summary>
    public required long Checkpoints { get; init; }

    /// <summary>Hex SHA-256 of the previous line, or 64 zeros.</summary>
    public required string Prev { get; init; }

    /// <summary>Hex SHA-256 of this record's canonical JSON without <c>hash</c>.</summary>
    public required string Hash { get; init; }

    /// <summary>The outcome as stored: <c>success</c>, <c>failure</c> or <c>rejected</c>.</summary>
    public static string OutcomeName(AuditOutcome outcome) => outcome switch
    {
        AuditOutcome.Success => "success",
        AuditOutcome.Failure => "failure",
        AuditOutcome.Rejected => "rejected",
        _ => throw new ArgumentOutOfRangeException(nameof(outcome), outcome, "unknown audit outcome"),
    };

    internal static bool TryParseOutcome(string s, out AuditOutcome outcome)
    {
        switch (s)
        {
            case "success": outcome = AuditOutcome.Success; return true;
            case "failure": outcome = AuditOutcome.Failure; return true;
            case "rejected": outcome = AuditOutcome.Rejected; return true;
            default: outcome = default; return false;
        }
    }
}

/// <summary>Why a checkpoint was written.</summary>
public enum CheckpointKind
{
    /// <summary>Written when the log was opened (<c>"open"</c>); it also seals records an unclean shutdown left unsealed.</summary>
    Open,

    /// <summary>Written every N records or T seconds (<c>"periodic"</c>).</summary>
    Periodic,

    /// <summary>Written when the log was closed cleanly (<c>"close"</c>); only an <c>open</c> checkpoint may follow it.</summary>
    Close,
}

/// <summary>
/// A signed checkpoint line: <c>{"hash":HEX,"keyid":HEX,"kind":…,"prev":HEX,"sequence":N,"sig":HEX,"time":…,"type":"checkpoint"}</c>.
/// <c>sig</c> is Ed25519 over the canonical JSON without <c>sig</c>; it vouches for record
/// <see cref="Sequence"/> (whose hash is <see cref="Hash"/>) and, through the chain, for every line before it.
/// </summary>
public sealed class AuditCheckpoint
{
    public required CheckpointKind Kind { get; init; }

    /// <summary>The last record covered (0 for a log with no records yet).</summary>
    public required long Sequence { get; init; }

    /// <summary>That record's <see cref="AuditRecord.Hash"/> (64 zeros for sequence 0).</summary>
    public required string Hash { get; init; }

    public required DateTimeOffset Time { get; init; }

    /// <summary>The signing key's id (see <see cref="Vmi.Updates.UpdatePublicKey.KeyId"/>).</summary>
    public required string KeyId { get; init; }

    /// <summary>Hex SHA-256 of the previous line, or 64 zeros.</summary>
    public required string Prev { get; init; }

    /// <summary>Hex Ed25519 signature.</summary>
    public required string Signature { get; init; }

    internal static string KindName(CheckpointKind kind) => kind switch
    {
        CheckpointKind.Open => "open",
        CheckpointKind.Periodic => "periodic",
        CheckpointKind.Close => "close",
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown checkpoint kind"),
    };
}
