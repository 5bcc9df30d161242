using System.Text.Json;
using Microsoft.Data.Sqlite;
using Vmi.Core;
using Vmi.Events;
using Vmi.Events.Tests;
using Xunit;

namespace Vmi.Store.Tests;

public sealed class EventStoreTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    private static readonly DateTimeOffset T0 = new(2025, 6, 1, 12, 0, 0, TimeSpan.Zero);

    private static Alert MakeAlert(int n, string vm = "vm-a", Severity severity = Severity.High, string detector = "syscall-table",
        string title = "hooked", int minutes = 0, string? process = null) => new()
    {
        Id = new Guid($"00000000-0000-4000-a000-{n:D12}"),
        VmId = vm,
        Time = T0.AddMinutes(minutes),
        Detector = detector,
        Title = title,
        Severity = severity,
        Key = $"{detector}:{n}",
        ProcessName = process,
        Pid = process is null ? null : 100 + n,
        Techniques = [AttackTechnique.Rootkit],
        Evidence = new Dictionary<string, string> { ["n"] = n.ToString(System.Globalization.CultureInfo.InvariantCulture) },
    };

    [Fact]
    public void Every_event_type_round_trips_through_the_store_and_a_reopen()
    {
        string path = _dir.File("vmi.db");
        IReadOnlyList<VmiEvent> all = SampleEvents.All();
        using (EventStore store = EventStore.Open(path))
        {
            Assert.Equal(all.Count, store.AppendBatch(all));
            AssertAll(store.QueryEvents(new EventQuery()));
        }
        using (EventStore reopened = EventStore.Open(path))
        {
            Assert.Equal(1, reopened.SchemaVersion);
            AssertAll(reopened.QueryEvents(new EventQuery()));
            StoredAlert alert = Assert.Single(reopened.QueryAlerts(new AlertQuery()));
            SampleEvents.AssertSame(all.OfType<Alert>().Single(), alert.Alert);
            Assert.Equal(AlertStatus.Open, alert.Status);
        }

        void AssertAll(IReadOnlyList<VmiEvent> stored)
        {
            // The samples are one second apart: event-time order is their order.
            Assert.Equal(all.Count, stored.Count);
            for (int i = 0; i < all.Count; i++)
                SampleEvents.AssertSame(all[i], stored[i]);
        }
    }

    [Fact]
    public void Columns_hold_kind_class_severity_time_and_nested_ecs()
    {
        string path = _dir.File("vmi.db");
        using EventStore store = EventStore.Open(path);
        store.AppendBatch(SampleEvents.All());
        using var c = new SqliteConnection($"Data Source={path};Mode=ReadOnly;Pooling=False");
        c.Open();
        using SqliteCommand cmd = c.CreateCommand();
        cmd.CommandText = "SELECT id, vm, seq, time, kind, class, severity, ecs_json FROM events ORDER BY time";
        using SqliteDataReader r = cmd.ExecuteReader();
        foreach (VmiEvent e in SampleEvents.All())
        {
            Assert.True(r.Read());
            Assert.Equal(e.Id.ToString(), r.GetString(0));
            Assert.Equal(e.VmId, r.GetString(1));
            Assert.Equal(e.Sequence, r.GetInt64(2));
            Assert.Equal(e.Time.ToUnixTimeMilliseconds() * 1000, r.GetInt64(3));
            Assert.Equal(e.Kind, r.GetString(4));
            Assert.Equal(e.Class.ToString().ToLowerInvariant(), r.GetString(5));
            Assert.Equal(e is Alert or IntegrityFinding, !r.IsDBNull(6));
            using JsonDocument ecs = JsonDocument.Parse(r.GetString(7));
            Assert.Equal(e.Kind, ecs.RootElement.GetProperty("event").GetProperty("action").GetString());
            Assert.Equal(e.VmId, ecs.RootElement.GetProperty("host").GetProperty("name").GetString());
        }
        Assert.False(r.Read());
    }

    [Fact]
    public void Re_appending_is_idempotent_and_keeps_triage_state()
    {
        using EventStore store = EventStore.Open(_dir.File("vmi.db"));
        Alert alert = MakeAlert(1);
        Assert.True(store.Append(alert));
        Assert.True(store.Acknowledge(alert.Id, "ana"));
        Assert.False(store.Append(alert));
        Assert.False(store.Append(alert with { Title = "changed" }));
        Assert.Equal(SampleEvents.All().Count, store.AppendBatch(SampleEvents.All()));
        Assert.Equal(0, store.AppendBatch(SampleEvents.All()));
        Assert.Equal(0, store.AppendBatch([.. SampleEvents.All(), alert]));

        Assert.Equal(SampleEvents.All().Count + 1, store.CountEvents(new EventQuery()));
        Assert.Equal(2, store.CountAlerts(new AlertQuery()));
        StoredAlert stored = store.GetAlert(alert.Id)!;
        Assert.Equal("hooked", stored.Alert.Title);
        Assert.Equal(AlertStatus.Acknowledged, stored.Status);
    }

    [Fact]
    public void A_batch_with_a_repeated_id_stores_it_once()
    {
        using EventStore store = EventStore.Open(_dir.File("vmi.db"));
        Alert alert = MakeAlert(1);
        Assert.Equal(1, store.AppendBatch([alert, alert, alert]));
        Assert.Equal(1, store.CountAlerts(new AlertQuery()));
    }

    private static EventStore AlertFixture(string path)
    {
        EventStore store = EventStore.Open(path);
        store.AppendBatch(
        [
            MakeAlert(1, vm: "vm-a", severity: Severity.Low, minutes: 1, title: "module hidden from /proc/modules"),
            MakeAlert(2, vm: "vm-a", severity: Severity.Critical, minutes: 2, title: "sys_call_table[62] hooked"),
            MakeAlert(3, vm: "vm-b", severity: Severity.Medium, detector: "idt", minutes: 3, title: "idt[14] moved"),
            MakeAlert(4, vm: "vm-b", severity: Severity.High, detector: "cred", minutes: 4, title: "uid 0 without setuid", process: "Exploit"),
            MakeAlert(5, vm: "vm-a", severity: Severity.Info, detector: "idt", minutes: 5, title: "idt check"),
            new ProcessStarted { VmId = "vm-a", Time = T0, Pid = 1, Name = "init" },
        ]);
        return store;
    }

    private static int[] Numbers(IEnumerable<StoredAlert> alerts) =>
        [.. alerts.Select(a => int.Parse(a.Alert.Evidence["n"], System.Globalization.CultureInfo.InvariantCulture))];

    [Fact]
    public void Alert_queries_filter_and_sort_newest_first()
    {
        using EventStore store = AlertFixture(_dir.File("vmi.db"));
        Assert.Equal([5, 4, 3, 2, 1], Numbers(store.QueryAlerts(new AlertQuery())));
        Assert.Equal([5, 2, 1], Numbers(store.QueryAlerts(new AlertQuery { VmId = "vm-a" })));
        Assert.Equal([4, 2], Numbers(store.QueryAlerts(new AlertQuery { MinSeverity = Severity.High })));
        Assert.Equal([5, 3], Numbers(store.QueryAlerts(new AlertQuery { Detector = "idt" })));
        Assert.Equal([4, 3, 2], Numbers(store.QueryAlerts(new AlertQuery { Since = T0.AddMinutes(2), Until = T0.AddMinutes(5) })));
        Assert.Equal([2], Numbers(store.QueryAlerts(new AlertQuery { Text = "SYS_CALL" })));
        Assert.Equal([4], Numbers(store.QueryAlerts(new AlertQuery { Text = "exploit" })));          // process name
        Assert.Equal([3], Numbers(store.QueryAlerts(new AlertQuery { Text = "idt:3" })));            // key
        Assert.Equal([1], Numbers(store.QueryAlerts(new AlertQuery { Text = "/proc/" })));
        Assert.Empty(store.QueryAlerts(new AlertQuery { Text = "%" }));                              // no LIKE wildcards
        Assert.Equal([3], Numbers(store.QueryAlerts(new AlertQuery { VmId = "vm-b", Detector = "idt", MinSeverity = Severity.Medium })));
        Assert.Equal([4, 3], Numbers(store.QueryAlerts(new AlertQuery { Limit = 2, Offset = 1 })));
        Assert.Equal(5, store.CountAlerts(new AlertQuery { Limit = 1 }));
        Assert.Equal(2, store.CountAlerts(new AlertQuery { VmId = "vm-b" }));
        Assert.Throws<ArgumentOutOfRangeException>(() => store.QueryAlerts(new AlertQuery { Limit = -1 }));
    }

    [Fact]
    public void Acknowledge_and_assign_update_the_triage_state()
    {
        var clock = new FixedTime(T0.AddDays(1));
        string path = _dir.File("vmi.db");
        AlertFixture(path).Dispose();
        using EventStore store = EventStore.Open(path, clock);
        Guid id = MakeAlert(2).Id;

        Assert.True(store.Acknowledge(id, "ana"));
        clock.Now = T0.AddDays(2);
        Assert.True(store.Acknowledge(id, "bob")); // already acknowledged: the first one stands
        Assert.True(store.Assign(id, "carol"));
        StoredAlert a = store.GetAlert(id)!;
        Assert.Equal(AlertStatus.Acknowledged, a.Status);
        Assert.Equal(T0.AddDays(1), a.AcknowledgedAt);
        Assert.Equal("ana", a.AcknowledgedBy);
        Assert.Equal("carol", a.Assignee);

        Assert.Equal([2], Numbers(store.QueryAlerts(new AlertQuery { Status = AlertStatus.Acknowledged })));
        Assert.Equal([5, 4, 3, 1], Numbers(store.QueryAlerts(new AlertQuery { Status = AlertStatus.Open })));
        Assert.True(store.Acknowledge(MakeAlert(3).Id, null));
        Assert.Null(store.GetAlert(MakeAlert(3).Id)!.AcknowledgedBy);

        Assert.False(store.Acknowledge(Guid.NewGuid(), "ana"));
        Assert.False(store.Assign(Guid.NewGuid(), "ana"));
        Assert.Null(store.GetAlert(Guid.NewGuid()));
        Assert.Null(store.GetAlert(SampleEvents.All()[0].Id)); // an event that is not an alert
    }

    [Fact]
    public void Event_queries_filter_by_vm_kind_and_time()
    {
        using EventStore store = EventStore.Open(_dir.File("vmi.db"));
        store.AppendBatch(SampleEvents.All());
        DateTimeOffset t = SampleEvents.Time;
        Assert.Equal(["NetworkFlow", "SignatureMatch"], store.QueryEvents(new EventQuery { VmId = "vm-b" }).Select(e => e.GetType().Name));
        Assert.Equal(["ProcessStarted", "Alert"], store.QueryEvents(new EventQuery { Kinds = ["alert", "process-started"] }).Select(e => e.GetType().Name));
        Assert.Equal(["ProcessExec", "ModuleLoaded"], store.QueryEvents(new EventQuery { Since = t.AddSeconds(2), Until = t.AddSeconds(4) }).Select(e => e.GetType().Name));
        Assert.Equal(["TelemetryShed", "DetectorFault"], store.QueryEvents(new EventQuery { NewestFirst = true, Limit = 2 }).Select(e => e.GetType().Name));
        Assert.Equal(["ProcessExited"], store.QueryEvents(new EventQuery { Limit = 1, Offset = 1 }).Select(e => e.GetType().Name));
        Assert.Equal(11, store.CountEvents(new EventQuery { VmId = "vm-a" }));
        Assert.Empty(store.QueryEvents(new EventQuery { Kinds = ["no-such-kind"] }));
    }

    [Fact]
    public void Schema_is_versioned_and_a_newer_one_is_refused()
    {
        string path = _dir.File("vmi.db");
        using (EventStore store = EventStore.Open(path))
        {
            Assert.Equal(EventStore.CurrentSchemaVersion, store.SchemaVersion);
            store.Append(MakeAlert(1));
            store.ExecuteForTests("INSERT INTO schema_version (version, applied_at) VALUES (99, 'future');");
        }
        var ex = Assert.Throws<StoreException>(() => EventStore.Open(path));
        Assert.Contains("schema version 99", ex.Message, StringComparison.Ordinal);
        Assert.Contains("newer Vmi", ex.Message, StringComparison.Ordinal);

        // Refusing changed nothing: the newer Vmi still finds its data.
        using var c = new SqliteConnection($"Data Source={path};Pooling=False");
        c.Open();
        using SqliteCommand cmd = c.CreateCommand();
        cmd.CommandText = "SELECT (SELECT COUNT(*) FROM alerts) || '/' || (SELECT group_concat(version) FROM schema_version)";
        Assert.Equal("1/1,99", cmd.ExecuteScalar());
    }

    [Fact]
    public void Opening_twice_applies_migrations_once()
    {
        string path = _dir.File("vmi.db");
        EventStore.Open(path).Dispose();
        EventStore.Open(path).Dispose();
        using var c = new SqliteConnection($"Data Source={path};Pooling=False");
        c.Open();
        using SqliteCommand cmd = c.CreateCommand();
        cmd.CommandText = "SELECT COUNT(*) FROM schema_version";
        Assert.Equal(1L, cmd.ExecuteScalar());
    }

    [Theory]
    [InlineData(8192)]
    [InlineData(5)]
    public void A_file_that_is_not_a_database_is_refused_and_left_alone(int size)
    {
        string path = _dir.File("notes.txt");
        byte[] garbage = new byte[size];
        new Random(7).NextBytes(garbage);
        File.WriteAllBytes(path, garbage);

        var ex = Assert.Throws<StoreException>(() => EventStore.Open(path));
        Assert.Contains("not a Vmi event store", ex.Message, StringComparison.Ordinal);
        Assert.Contains(path, ex.Message, StringComparison.Ordinal);
        Assert.IsType<SqliteException>(ex.InnerException);
        Assert.Equal(garbage, File.ReadAllBytes(path));
    }

    [Fact]
    public void A_missing_directory_is_a_clear_error()
    {
        string path = Path.Combine(_dir.Path, "no", "such", "dir", "vmi.db");
        var ex = Assert.Throws<StoreException>(() => EventStore.Open(path));
        Assert.Contains("does not exist", ex.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(_dir.Path, "no")));
    }

    [Fact]
    public void A_path_under_a_regular_file_is_a_clear_error()
    {
        // ENOTDIR: blocks writes even for root, unlike chmod.
        string file = _dir.File("plain");
        File.WriteAllText(file, "x");
        var ex = Assert.Throws<StoreException>(() => EventStore.Open(Path.Combine(file, "vmi.db")));
        Assert.Contains("is a file, not a directory", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_directory_as_the_path_is_a_clear_error()
    {
        var ex = Assert.Throws<StoreException>(() => EventStore.Open(_dir.Path));
        Assert.Contains("is a directory", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void An_unwritable_location_is_a_clear_error()
    {
        // procfs refuses new files to everyone, root included, so this holds wherever the tests run.
        Assert.True(Directory.Exists("/proc/self"), "procfs is required by this test");
        var ex = Assert.Throws<StoreException>(() => EventStore.Open("/proc/vmi-store-test.db"));
        Assert.Contains("cannot be opened or created", ex.Message, StringComparison.Ordinal);
        Assert.Contains("/proc/vmi-store-test.db", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_read_only_file_is_a_clear_error_for_non_root_users()
    {
        string path = _dir.File("vmi.db");
        EventStore.Open(path).Dispose();
        if (Environment.UserName == "root" || OperatingSystem.IsWindows())
        {
            // Root ignores file modes; the /proc and ENOTDIR tests above cover the unwritable path for root.
            return;
        }
        File.SetUnixFileMode(path, UnixFileMode.UserRead);
        try
        {
            var ex = Assert.Throws<StoreException>(() =>
            {
                using EventStore store = EventStore.Open(path);
                store.Append(MakeAlert(1));
            });
            Assert.Contains("read-only", ex.Message, StringComparison.Ordinal);
        }
        finally
        {
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
    }

    [Fact]
    public void A_full_disk_is_a_clear_error_and_loses_nothing_stored()
    {
        string path = _dir.File("vmi.db");
        using (EventStore store = EventStore.Open(path))
        {
            store.AppendBatch(SampleEvents.All());
            store.LimitToCurrentSize();
            var big = Enumerable.Range(0, 2000)
                .Select(i => (VmiEvent)(MakeAlert(1000 + i) with { Description = new string('x', 2000) }))
                .ToList();
            var ex = Assert.Throws<StoreException>(() => store.AppendBatch(big));
            Assert.Contains("full", ex.Message, StringComparison.Ordinal);
            Assert.Contains("intact", ex.Message, StringComparison.Ordinal);

            // The failed batch left nothing behind, and what was there is readable.
            Assert.Equal(SampleEvents.All().Count, store.CountEvents(new EventQuery()));
            Assert.Single(store.QueryAlerts(new AlertQuery()));
            // The store stays usable: once space is back, the same batch goes in.
            store.ExecuteForTests("PRAGMA max_page_count = 1073741823;");
            Assert.Equal(2000, store.AppendBatch(big));
        }
        using EventStore reopened = EventStore.Open(path);
        Assert.Equal(2001, reopened.CountAlerts(new AlertQuery()));
    }

    [Fact]
    public async Task Writers_and_readers_run_concurrently()
    {
        using EventStore store = EventStore.Open(_dir.File("vmi.db"));
        var writers = Enumerable.Range(0, 4).Select(w => Task.Run(() =>
        {
            for (int b = 0; b < 10; b++)
                store.AppendBatch(Enumerable.Range(0, 50).Select(i => MakeAlert(w * 10_000 + b * 100 + i)));
        }));
        var readers = Enumerable.Range(0, 2).Select(_ => Task.Run(() =>
        {
            for (int i = 0; i < 50; i++)
                Assert.InRange(store.CountAlerts(new AlertQuery()), 0, 2000);
        }));
        await Task.WhenAll([.. writers, .. readers]);
        Assert.Equal(2000, store.CountAlerts(new AlertQuery()));
    }

    [Fact]
    public void A_second_process_style_reader_sees_committed_data()
    {
        string path = _dir.File("vmi.db");
        using EventStore writer = EventStore.Open(path);
        using EventStore reader = EventStore.Open(path);
        writer.Append(MakeAlert(1));
        Assert.Equal(1, reader.CountAlerts(new AlertQuery()));
    }

    [Fact]
    public void Disposed_store_throws_object_disposed()
    {
        EventStore store = EventStore.Open(_dir.File("vmi.db"));
        store.Dispose();
        store.Dispose();
        Assert.Throws<ObjectDisposedException>(() => store.Append(MakeAlert(1)));
        Assert.Throws<ObjectDisposedException>(() => store.QueryAlerts(new AlertQuery()));
    }
}
