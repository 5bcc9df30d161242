using System.Globalization;
using System.Text;
using System.Text.Json;
using MessagePack;
using Microsoft.Data.Sqlite;
using Vmi.Core;
using Vmi.Events;

namespace Vmi.Store;

/// <summary>
/// Alerts and events in an SQLite file: the embedded default, nothing to set up.
/// </summary>
/// <remarks>
/// <para>
/// Thread safety: every member may be called from any thread. Writes (append, acknowledge, assign) go
/// through one writer connection under a lock, each call in one transaction, so a failed call (disk full)
/// leaves everything stored before it intact and nothing of itself. Queries open their own read-only
/// connection (pooled), so they run concurrently with the writer and with each other: the database is in
/// WAL mode, where readers see the last committed state and never block the writer. Other processes
/// (<c>vmi alerts</c> while <c>vmi watch</c> writes) may open the same file the same way.
/// </para>
/// <para>
/// Appends are idempotent on <see cref="VmiEvent.Id"/>: a replayed event is ignored (the first copy wins),
/// and a replayed alert keeps its triage state.
/// </para>
/// </remarks>
public sealed class EventStore : IDisposable
{
    private readonly Lock _writeLock = new();
    private readonly SqliteConnection _writer;
    private readonly string _readConnectionString;
    private readonly TimeProvider _time;
    private readonly SqliteCommand _insertEvent;
    private readonly SqliteCommand _insertAlert;
    private bool _disposed;

    /// <summary>The store file.</summary>
    public string Path { get; }

    /// <summary>Schema version of the file (after migrations: <see cref="CurrentSchemaVersion"/>).</summary>
    public int SchemaVersion { get; }

    /// <summary>The newest schema this build reads and writes.</summary>
    public static int CurrentSchemaVersion => StoreSchema.CurrentVersion;

    private EventStore(string path, SqliteConnection writer, string readConnectionString, int schemaVersion, TimeProvider time)
    {
        Path = path;
        _writer = writer;
        _readConnectionString = readConnectionString;
        SchemaVersion = schemaVersion;
        _time = time;
        _insertEvent = Prepare(writer, """
            INSERT OR IGNORE INTO events (id, vm, seq, time, kind, class, severity, ecs_json, payload)
            VALUES ($id, $vm, $seq, $time, $kind, $class, $severity, $ecs, $payload)
            """, "$id", "$vm", "$seq", "$time", "$kind", "$class", "$severity", "$ecs", "$payload");
        _insertAlert = Prepare(writer, """
            INSERT OR IGNORE INTO alerts (id, vm, time, detector, title, severity, key, pid, process_name, techniques, evidence_json)
            VALUES ($id, $vm, $time, $detector, $title, $severity, $key, $pid, $process, $techniques, $evidence)
            """, "$id", "$vm", "$time", "$detector", "$title", "$severity", "$key", "$pid", "$process", "$techniques", "$evidence");
    }

    /// <summary>Opens the store at <paramref name="path"/>, creating the file and its schema when missing and migrating an older one.</summary>
    /// <exception cref="StoreException">
    /// The directory is missing, the path is not writable, the file is not a Vmi store, the disk is full,
    /// or the store was written by a newer Vmi. The message says which and what to do.
    /// </exception>
    public static EventStore Open(string path) => Open(path, TimeProvider.System);

    /// <summary>As <see cref="Open(string)"/>, with the clock used for acknowledgement times.</summary>
    public static EventStore Open(string path, TimeProvider time)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(time);
        string full = System.IO.Path.GetFullPath(path);
        CheckPath(full);

        var builder = new SqliteConnectionStringBuilder
        {
            DataSource = full,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Cache = SqliteCacheMode.Private,
            // The writer lives as long as the store; pooling would only keep the file open after Dispose.
            Pooling = false,
            DefaultTimeout = 30,
        };
        var writer = new SqliteConnection(builder.ToString());
        try
        {
            writer.Open();
            // journal_mode is the first statement that reads the file: a non-database fails here.
            Execute(writer, "PRAGMA journal_mode = WAL;");
            // NORMAL is durable against process crashes in WAL mode; a power cut may lose the last commits, never corrupt.
            Execute(writer, "PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;");
            int version = Migrate(writer, full, time);
            builder.Mode = SqliteOpenMode.ReadOnly;
            builder.Pooling = true;
            return new EventStore(full, writer, builder.ToString(), version, time);
        }
        catch (SqliteException ex)
        {
            writer.Dispose();
            throw StoreErrors.Wrap(ex, full, "open it");
        }
        catch
        {
            writer.Dispose();
            throw;
        }
    }

    private static void CheckPath(string full)
    {
        if (Directory.Exists(full))
            throw new StoreException($"Event store {full}: this is a directory. Give the path of a file in it (e.g. {System.IO.Path.Combine(full, "vmi.db")}).");
        string? directory = System.IO.Path.GetDirectoryName(full);
        if (directory is null || Directory.Exists(directory))
            return;
        // Walk up to say precisely what is wrong: a missing directory, or a file where one should be.
        for (string? d = directory; d is not null; d = System.IO.Path.GetDirectoryName(d))
        {
            if (File.Exists(d))
                throw new StoreException($"Event store {full}: {d} is a file, not a directory. Choose another store path.");
            if (Directory.Exists(d))
                break;
        }
        throw new StoreException($"Event store {full}: the directory {directory} does not exist. Create it (mkdir -p) or choose another store path.");
    }

    private static int Migrate(SqliteConnection connection, string path, TimeProvider time)
    {
        // BEGIN IMMEDIATE: two processes opening a new store at once migrate one after the other.
        using SqliteTransaction tx = connection.BeginTransaction(deferred: false);
        Execute(connection, StoreSchema.VersionTable, tx);
        int version;
        using (SqliteCommand read = connection.CreateCommand())
        {
            read.Transaction = tx;
            read.CommandText = "SELECT COALESCE(MAX(version), 0) FROM schema_version;";
            version = Convert.ToInt32(read.ExecuteScalar(), CultureInfo.InvariantCulture);
        }
        if (version > StoreSchema.CurrentVersion)
            throw new StoreException(
                $"Event store {path} has schema version {version}, written by a newer Vmi; this one reads up to version {StoreSchema.CurrentVersion}. " +
                "Upgrade Vmi, or choose another store path.");
        foreach (var (v, sql) in StoreSchema.Migrations)
        {
            if (v <= version)
                continue;
            Execute(connection, sql, tx);
            using SqliteCommand record = connection.CreateCommand();
            record.Transaction = tx;
            record.CommandText = "INSERT INTO schema_version (version, applied_at) VALUES ($v, $at);";
            record.Parameters.AddWithValue("$v", v);
            record.Parameters.AddWithValue("$at", time.GetUtcNow().ToString("O", CultureInfo.InvariantCulture));
            record.ExecuteNonQuery();
            version = v;
        }
        tx.Commit();
        return version;
    }

    /// <summary>Stores one event (and its alert row, for an alert).</summary>
    /// <returns>False when an event with the same id was already stored (the call changed nothing).</returns>
    /// <exception cref="StoreException">The write failed (disk full …); nothing of this call was stored.</exception>
    public bool Append(VmiEvent e)
    {
        ArgumentNullException.ThrowIfNull(e);
        return AppendBatch([e]) == 1;
    }

    /// <summary>Stores events in one transaction: all of them or, on error, none.</summary>
    /// <returns>How many were new (replayed ids are skipped).</returns>
    /// <exception cref="StoreException">The write failed (disk full …); nothing of this batch was stored.</exception>
    public int AppendBatch(IEnumerable<VmiEvent> events)
    {
        ArgumentNullException.ThrowIfNull(events);
        lock (_writeLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            int added = 0;
            try
            {
                using SqliteTransaction tx = _writer.BeginTransaction(deferred: false);
                _insertEvent.Transaction = tx;
                _insertAlert.Transaction = tx;
                foreach (VmiEvent e in events)
                {
                    ArgumentNullException.ThrowIfNull(e, nameof(events));
                    if (InsertEvent(e))
                    {
                        added++;
                        if (e is Alert alert)
                            InsertAlert(alert);
                    }
                }
                tx.Commit();
            }
            catch (SqliteException ex)
            {
                throw StoreErrors.Wrap(ex, Path, "store events");
            }
            finally
            {
                _insertEvent.Transaction = null;
                _insertAlert.Transaction = null;
            }
            return added;
        }
    }

    private bool InsertEvent(VmiEvent e)
    {
        SqliteParameterCollection p = _insertEvent.Parameters;
        p[0].Value = e.Id.ToString();
        p[1].Value = e.VmId;
        p[2].Value = e.Sequence;
        p[3].Value = ToMicros(e.Time);
        p[4].Value = e.Kind;
        p[5].Value = ClassName(e.Class);
        p[6].Value = SeverityOf(e) is Severity s ? (int)s : DBNull.Value;
        p[7].Value = EcsJson(e);
        p[8].Value = EventSerializer.Serialize(e);
        return _insertEvent.ExecuteNonQuery() == 1;
    }

    private void InsertAlert(Alert a)
    {
        SqliteParameterCollection p = _insertAlert.Parameters;
        p[0].Value = a.Id.ToString();
        p[1].Value = a.VmId;
        p[2].Value = ToMicros(a.Time);
        p[3].Value = a.Detector;
        p[4].Value = a.Title;
        p[5].Value = (int)a.Severity;
        p[6].Value = a.Key;
        p[7].Value = a.Pid is int pid ? pid : DBNull.Value;
        p[8].Value = (object?)a.ProcessName ?? DBNull.Value;
        p[9].Value = string.Join(',', a.Techniques.Select(t => t.Id));
        p[10].Value = JsonSerializer.Serialize(a.Evidence);
        _insertAlert.ExecuteNonQuery();
    }

    private static string EcsJson(VmiEvent e)
    {
        try
        {
            return e.ToEcs().ToNestedJson();
        }
        catch (InvalidOperationException ex)
        {
            // A malformed document must not cost the event (or the batch): the payload is the source of truth.
            return JsonSerializer.Serialize(new Dictionary<string, string> { ["vmi.ecs_error"] = ex.Message });
        }
    }

    private static Severity? SeverityOf(VmiEvent e) => e switch
    {
        Alert a => a.Severity,
        IntegrityFinding f => f.Severity,
        _ => null,
    };

    private static string ClassName(EventClass c) => c switch
    {
        EventClass.Telemetry => "telemetry",
        EventClass.Control => "control",
        EventClass.Finding => "finding",
        EventClass.Alert => "alert",
        EventClass.Health => "health",
        _ => ((int)c).ToString(CultureInfo.InvariantCulture),
    };

    /// <summary>Marks an alert acknowledged (the first acknowledgement's time and user are kept).</summary>
    /// <returns>False when no alert has this id.</returns>
    /// <exception cref="StoreException">The write failed.</exception>
    public bool Acknowledge(Guid alertId, string? by)
    {
        var now = ToMicros(_time.GetUtcNow());
        return Update(
            "UPDATE alerts SET status = 'acknowledged', acknowledged_at = COALESCE(acknowledged_at, $now), acknowledged_by = COALESCE(acknowledged_by, $by) WHERE id = $id;",
            alertId, ("$now", now), ("$by", (object?)by ?? DBNull.Value));
    }

    /// <summary>Sets who works on an alert.</summary>
    /// <returns>False when no alert has this id.</returns>
    /// <exception cref="StoreException">The write failed.</exception>
    public bool Assign(Guid alertId, string assignee)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(assignee);
        return Update("UPDATE alerts SET assignee = $who WHERE id = $id;", alertId, ("$who", assignee));
    }

    private bool Update(string sql, Guid id, params (string Name, object Value)[] values)
    {
        lock (_writeLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            try
            {
                using SqliteCommand command = _writer.CreateCommand();
                command.CommandText = sql;
                command.Parameters.AddWithValue("$id", id.ToString());
                foreach (var (name, value) in values)
                    command.Parameters.AddWithValue(name, value);
                return command.ExecuteNonQuery() == 1;
            }
            catch (SqliteException ex)
            {
                throw StoreErrors.Wrap(ex, Path, "update the alert");
            }
        }
    }

    /// <summary>Alerts matching <paramref name="query"/>, newest first.</summary>
    /// <exception cref="StoreException">The store cannot be read.</exception>
    public IReadOnlyList<StoredAlert> QueryAlerts(AlertQuery query)
    {
        ArgumentNullException.ThrowIfNull(query);
        return Read(command =>
        {
            string where = AlertFilter(command, query);
            command.CommandText = $"""
                SELECT e.payload, a.status, a.assignee, a.acknowledged_at, a.acknowledged_by
                FROM alerts a JOIN events e ON e.id = a.id
                {where}
                ORDER BY a.time DESC, a.id DESC
                LIMIT $limit OFFSET $offset;
                """;
            AddPaging(command, query.Limit, query.Offset);
            var result = new List<StoredAlert>();
            using SqliteDataReader r = command.ExecuteReader();
            while (r.Read())
                result.Add(ReadAlert(r));
            return result;
        });
    }

    /// <summary>How many alerts match <paramref name="query"/> (its limit and offset are ignored).</summary>
    /// <exception cref="StoreException">The store cannot be read.</exception>
    public int CountAlerts(AlertQuery query)
    {
        ArgumentNullException.ThrowIfNull(query);
        return Read(command =>
        {
            command.CommandText = $"SELECT COUNT(*) FROM alerts a {AlertFilter(command, query)};";
            return Convert.ToInt32(command.ExecuteScalar(), CultureInfo.InvariantCulture);
        });
    }

    /// <summary>The alert with this id, or null.</summary>
    /// <exception cref="StoreException">The store cannot be read.</exception>
    public StoredAlert? GetAlert(Guid alertId) => Read(command =>
    {
        command.CommandText = """
            SELECT e.payload, a.status, a.assignee, a.acknowledged_at, a.acknowledged_by
            FROM alerts a JOIN events e ON e.id = a.id WHERE a.id = $id;
            """;
        command.Parameters.AddWithValue("$id", alertId.ToString());
        using SqliteDataReader r = command.ExecuteReader();
        return r.Read() ? ReadAlert(r) : null;
    });

    /// <summary>Events matching <paramref name="query"/>, in event-time order.</summary>
    /// <exception cref="StoreException">The store cannot be read, or a stored event is unreadable.</exception>
    public IReadOnlyList<VmiEvent> QueryEvents(EventQuery query)
    {
        ArgumentNullException.ThrowIfNull(query);
        return Read(command =>
        {
            string order = query.NewestFirst ? "DESC" : "ASC";
            command.CommandText = $"""
                SELECT payload FROM events {EventFilter(command, query)}
                ORDER BY time {order}, seq {order}, id {order}
                LIMIT $limit OFFSET $offset;
                """;
            AddPaging(command, query.Limit, query.Offset);
            var result = new List<VmiEvent>();
            using SqliteDataReader r = command.ExecuteReader();
            while (r.Read())
                result.Add(DeserializePayload(r, 0));
            return result;
        });
    }

    /// <summary>How many events match <paramref name="query"/> (its limit and offset are ignored).</summary>
    /// <exception cref="StoreException">The store cannot be read.</exception>
    public long CountEvents(EventQuery query)
    {
        ArgumentNullException.ThrowIfNull(query);
        return Read(command =>
        {
            command.CommandText = $"SELECT COUNT(*) FROM events {EventFilter(command, query)};";
            return Convert.ToInt64(command.ExecuteScalar(), CultureInfo.InvariantCulture);
        });
    }

    private static string AlertFilter(SqliteCommand command, AlertQuery q)
    {
        var where = new List<string>();
        void Add(string clause, string name, object value)
        {
            where.Add(clause);
            command.Parameters.AddWithValue(name, value);
        }
        if (q.VmId is not null)
            Add("a.vm = $vm", "$vm", q.VmId);
        if (q.MinSeverity is Severity s)
            Add("a.severity >= $severity", "$severity", (int)s);
        if (q.Detector is not null)
            Add("a.detector = $detector", "$detector", q.Detector);
        if (q.Status is AlertStatus status)
            Add("a.status = $status", "$status", StatusName(status));
        if (q.Since is DateTimeOffset since)
            Add("a.time >= $since", "$since", ToMicros(since));
        if (q.Until is DateTimeOffset until)
            Add("a.time < $until", "$until", ToMicros(until));
        if (!string.IsNullOrEmpty(q.Text))
        {
            // instr, not LIKE: the user's text needs no escaping of % and _.
            Add("""
                (instr(lower(a.title), lower($text)) > 0 OR instr(lower(a.detector), lower($text)) > 0
                 OR instr(lower(a.key), lower($text)) > 0 OR instr(lower(COALESCE(a.process_name, '')), lower($text)) > 0
                 OR instr(lower(a.evidence_json), lower($text)) > 0)
                """, "$text", q.Text);
        }
        return where.Count == 0 ? "" : "WHERE " + string.Join(" AND ", where);
    }

    private static string EventFilter(SqliteCommand command, EventQuery q)
    {
        var where = new List<string>();
        if (q.VmId is not null)
        {
            where.Add("vm = $vm");
            command.Parameters.AddWithValue("$vm", q.VmId);
        }
        if (q.Kinds is { Count: > 0 } kinds)
        {
            var names = new StringBuilder();
            int i = 0;
            foreach (string kind in kinds)
            {
                string name = "$k" + i.ToString(CultureInfo.InvariantCulture);
                names.Append(i++ == 0 ? "" : ", ").Append(name);
                command.Parameters.AddWithValue(name, kind);
            }
            where.Add($"kind IN ({names})");
        }
        if (q.Since is DateTimeOffset since)
        {
            where.Add("time >= $since");
            command.Parameters.AddWithValue("$since", ToMicros(since));
        }
        if (q.Until is DateTimeOffset until)
        {
            where.Add("time < $until");
            command.Parameters.AddWithValue("$until", ToMicros(until));
        }
        return where.Count == 0 ? "" : "WHERE " + string.Join(" AND ", where);
    }

    private static void AddPaging(SqliteCommand command, int limit, int offset)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(limit);
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        command.Parameters.AddWithValue("$limit", limit);
        command.Parameters.AddWithValue("$offset", offset);
    }

    private StoredAlert ReadAlert(SqliteDataReader r)
    {
        if (DeserializePayload(r, 0) is not Alert alert)
            throw new StoreException($"Event store {Path}: an alert row's payload is not an alert; the file was modified outside Vmi.");
        return new StoredAlert(
            alert,
            r.GetString(1) == "acknowledged" ? AlertStatus.Acknowledged : AlertStatus.Open,
            r.IsDBNull(2) ? null : r.GetString(2),
            r.IsDBNull(3) ? null : FromMicros(r.GetInt64(3)),
            r.IsDBNull(4) ? null : r.GetString(4));
    }

    private VmiEvent DeserializePayload(SqliteDataReader r, int column)
    {
        try
        {
            return EventSerializer.Deserialize((byte[])r.GetValue(column));
        }
        catch (Exception ex) when (ex is MessagePackSerializationException or InvalidCastException)
        {
            throw new StoreException($"Event store {Path}: a stored event cannot be read ({ex.Message}); the file was modified outside Vmi or is damaged.", ex);
        }
    }

    private T Read<T>(Func<SqliteCommand, T> query)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        try
        {
            using var connection = new SqliteConnection(_readConnectionString);
            connection.Open();
            using SqliteCommand command = connection.CreateCommand();
            return query(command);
        }
        catch (SqliteException ex)
        {
            throw StoreErrors.Wrap(ex, Path, "read it");
        }
    }

    private static string StatusName(AlertStatus status) => status switch
    {
        AlertStatus.Open => "open",
        AlertStatus.Acknowledged => "acknowledged",
        _ => throw new ArgumentOutOfRangeException(nameof(status), status, null),
    };

    /// <summary>Event time as stored: unix microseconds, UTC (the payload keeps the exact value and offset).</summary>
    internal static long ToMicros(DateTimeOffset t) => (t.UtcTicks - DateTime.UnixEpoch.Ticks) / TimeSpan.TicksPerMicrosecond;

    internal static DateTimeOffset FromMicros(long micros) => new(DateTime.UnixEpoch.Ticks + micros * TimeSpan.TicksPerMicrosecond, TimeSpan.Zero);

    /// <summary>Test hook: caps the file at its current size (<c>PRAGMA max_page_count</c>), so the next growth fails as SQLITE_FULL would on a full disk.</summary>
    internal void LimitToCurrentSize()
    {
        lock (_writeLock)
            Execute(_writer, "PRAGMA max_page_count = 1;");
    }

    /// <summary>Test hook: runs SQL on the writer connection.</summary>
    internal void ExecuteForTests(string sql)
    {
        lock (_writeLock)
            Execute(_writer, sql);
    }

    private static SqliteCommand Prepare(SqliteConnection connection, string sql, params string[] parameters)
    {
        SqliteCommand command = connection.CreateCommand();
        command.CommandText = sql;
        foreach (string name in parameters)
            command.Parameters.Add(new SqliteParameter { ParameterName = name });
        // Parameters start as null (SQL NULL) until each row sets them.
        foreach (SqliteParameter p in command.Parameters)
            p.Value = DBNull.Value;
        command.Prepare();
        return command;
    }

    private static void Execute(SqliteConnection connection, string sql, SqliteTransaction? tx = null)
    {
        using SqliteCommand command = connection.CreateCommand();
        command.Transaction = tx;
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    /// <summary>Closes the writer (checkpointing the WAL) and the pooled readers.</summary>
    public void Dispose()
    {
        lock (_writeLock)
        {
            if (_disposed)
                return;
            _disposed = true;
            _insertEvent.Dispose();
            _insertAlert.Dispose();
            _writer.Dispose();
            using var reader = new SqliteConnection(_readConnectionString);
            SqliteConnection.ClearPool(reader);
        }
    }
}
