namespace Vmi.Store;

/// <summary>
/// The store's schema as numbered migrations. A migration is applied once, in its own transaction with
/// the version row that records it; a released migration is never edited, changes come as a new one.
/// </summary>
internal static class StoreSchema
{
    /// <summary>The newest schema this build writes. A store with a higher version is refused.</summary>
    public const int CurrentVersion = 1;

    public const string VersionTable = """
        CREATE TABLE IF NOT EXISTS schema_version (
            version    INTEGER PRIMARY KEY,
            applied_at TEXT NOT NULL
        );
        """;

    public static readonly (int Version, string Sql)[] Migrations =
    [
        (1, """
            -- Every event. time is event time in unix microseconds (UTC); payload is the MessagePack event
            -- (the source of truth); ecs_json is the nested ECS document for export and ad-hoc SQL.
            CREATE TABLE events (
                id       TEXT PRIMARY KEY,
                vm       TEXT NOT NULL,
                seq      INTEGER NOT NULL,
                time     INTEGER NOT NULL,
                kind     TEXT NOT NULL,
                class    TEXT NOT NULL,
                severity INTEGER NULL,
                ecs_json TEXT NOT NULL,
                payload  BLOB NOT NULL
            );
            CREATE INDEX events_vm_time ON events (vm, time);
            CREATE INDEX events_time ON events (time);

            -- Alerts again, with the columns analysts filter on and the triage state. id is the event's id
            -- (not a declared foreign key: SQLite would not enforce it without a per-connection pragma).
            CREATE TABLE alerts (
                id              TEXT PRIMARY KEY,
                vm              TEXT NOT NULL,
                time            INTEGER NOT NULL,
                detector        TEXT NOT NULL,
                title           TEXT NOT NULL,
                severity        INTEGER NOT NULL,
                key             TEXT NOT NULL,
                pid             INTEGER NULL,
                process_name    TEXT NULL,
                techniques      TEXT NOT NULL,
                evidence_json   TEXT NOT NULL,
                status          TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged')),
                assignee        TEXT NULL,
                acknowledged_at INTEGER NULL,
                acknowledged_by TEXT NULL
            );
            CREATE INDEX alerts_status_severity ON alerts (status, severity);
            CREATE INDEX alerts_time ON alerts (time);
            CREATE INDEX alerts_vm_time ON alerts (vm, time);
            """),
    ];
}
