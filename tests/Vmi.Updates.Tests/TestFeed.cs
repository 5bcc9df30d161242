using System.Text;
using Xunit;

namespace Vmi.Updates.Tests;

/// <summary>
/// One test's world under a fresh temporary folder: a feed written by <see cref="FeedPublisher"/>, the keys of
/// its roles, a client state folder, and one fake clock shared by publisher and client. Dispose deletes it all.
/// </summary>
internal sealed class TestFeed : IDisposable
{
    private int _bundles;

    public TestFeed(Expiries? expiries = null, int timestampKeyCount = 1, int timestampThreshold = 1)
    {
        Base = Path.Combine(Path.GetTempPath(), $"vmi-updates-tests-{Guid.NewGuid():N}");
        FeedDir = Path.Combine(Base, "feed");
        StateDir = Path.Combine(Base, "state");
        SourceDir = Path.Combine(Base, "sources");
        Directory.CreateDirectory(SourceDir);
        RootKeys = [NewKey()];
        TargetsKeys = [NewKey()];
        SnapshotKeys = [NewKey()];
        TimestampKeys = [.. Enumerable.Range(0, timestampKeyCount).Select(_ => NewKey())];
        TimestampThreshold = timestampThreshold;
        Publisher = new FeedPublisher(FeedDir, Time);
        Publisher.Initialize(Plan(), RootKeys, expiries);
    }

    public string Base { get; }
    public string FeedDir { get; }
    public string StateDir { get; }
    public string SourceDir { get; }
    public FakeTime Time { get; } = new();
    public FeedPublisher Publisher { get; }

    /// <summary>The keys of each role in the feed's newest root (tests that rotate replace them).</summary>
    public List<SigningKey> RootKeys { get; set; }
    public List<SigningKey> TargetsKeys { get; set; }
    public List<SigningKey> SnapshotKeys { get; set; }
    public List<SigningKey> TimestampKeys { get; set; }
    public int TimestampThreshold { get; set; }
    public int RootThreshold { get; set; } = 1;

    /// <summary>Every key made for the test, disposed at the end.</summary>
    private readonly List<SigningKey> _keys = [];

    /// <summary>A fresh Ed25519 key, disposed with the feed.</summary>
    public SigningKey NewKey()
    {
        var k = SigningKey.Generate();
        _keys.Add(k);
        return k;
    }

    /// <summary>A root plan from the current key lists.</summary>
    public RootPlan Plan() => new(
        new Dictionary<Role, IReadOnlyList<UpdatePublicKey>>
        {
            [Role.Root] = [.. RootKeys.Select(k => k.Public)],
            [Role.Targets] = [.. TargetsKeys.Select(k => k.Public)],
            [Role.Snapshot] = [.. SnapshotKeys.Select(k => k.Public)],
            [Role.Timestamp] = [.. TimestampKeys.Select(k => k.Public)],
        },
        new Dictionary<Role, int> { [Role.Timestamp] = TimestampThreshold, [Role.Root] = RootThreshold });

    /// <summary>The rule files of bundle number <paramref name="n"/>: two YARA files and a network rules file.</summary>
    public static (string Name, string Text)[] DefaultFiles(int n) =>
    [
        ("eicar.yar", $"rule eicar_v{n} {{ strings: $a = \"EICAR-STANDARD-ANTIVIRUS-TEST-FILE\" condition: $a }}\n"),
        ("webshell.yara", $"rule webshell_v{n} {{ strings: $a = \"eval(base64_decode(\" $b = \"v{n}\" condition: $a and $b }}\n"),
        ("c2.rules", $"alert tcp any any -> 203.0.113.{n} 443 (msg:\"c2 beacon v{n}\"; sid:{1000 + n}; rev:1;)\n"),
    ];

    /// <summary>Publishes the next bundle (the default files unless given) with the current keys.</summary>
    public TargetsMetadata Publish(Expiries? expiries = null, (string Name, string Text)[]? files = null)
    {
        int n = ++_bundles;
        files ??= DefaultFiles(n);
        string dir = Path.Combine(SourceDir, $"b{n}");
        Directory.CreateDirectory(dir);
        var inputs = new List<RuleFileInput>();
        foreach (var (name, text) in files)
        {
            string path = Path.Combine(dir, name);
            File.WriteAllText(path, text);
            inputs.Add(new RuleFileInput(path));
        }
        return Publisher.Publish(inputs, TargetsKeys, SnapshotKeys, TimestampKeys, expiries);
    }

    /// <summary>
    /// Writes the feed's next root from the current key lists (after replacing the root keys with
    /// <paramref name="newRootKeys"/> when given), signed by the previous root keys and the new ones.
    /// </summary>
    public RootMetadata RotateRoot(List<SigningKey>? newRootKeys = null)
    {
        List<SigningKey> old = RootKeys;
        if (newRootKeys is not null)
            RootKeys = newRootKeys;
        return Publisher.RotateRoot(Plan(), [.. old, .. RootKeys]);
    }

    public RuleStore Store => RuleStore.Open(StateDir);

    /// <summary>A client of the feed folder on the fake clock (unless <paramref name="options"/> says otherwise).</summary>
    public RuleUpdateClient Client(UpdateClientOptions? options = null, IFeedFetcher? fetcher = null) =>
        new(Store, fetcher ?? FeedFetchers.Create(FeedDir), options ?? new UpdateClientOptions { Time = Time });

    /// <summary>Gives the client the feed's first root, as an operator would out of band.</summary>
    public void InitializeClient() => Client().Initialize(Read("1.root.json"), "1.root.json");

    /// <summary>Initializes the client, publishes a bundle and installs it: the state every attack test starts from.</summary>
    public async Task<InstalledBundle> InstallFirstBundleAsync(Expiries? expiries = null)
    {
        InitializeClient();
        Publish(expiries);
        UpdateResult r = await Client().UpdateAsync();
        Assert.True(r.Installed, r.Message);
        return r.Active!;
    }

    public byte[] Read(string feedPath) => File.ReadAllBytes(Path.Combine(FeedDir, feedPath));

    public void Write(string feedPath, byte[] bytes) => File.WriteAllBytes(Path.Combine(FeedDir, feedPath), bytes);

    public SignedMetadata<TimestampMetadata> Timestamp => MetadataFormat.Parse<TimestampMetadata>(Read("timestamp.json"), "timestamp.json");

    public SignedMetadata<SnapshotMetadata> Snapshot(long version) => MetadataFormat.Parse<SnapshotMetadata>(Read($"{version}.snapshot.json"), "snapshot");

    public SignedMetadata<TargetsMetadata> Targets(long version) => MetadataFormat.Parse<TargetsMetadata>(Read($"{version}.targets.json"), "targets");

    public DateTimeOffset Later(TimeSpan by) => Trunc(Time.UtcNow + by);

    private static DateTimeOffset Trunc(DateTimeOffset t) => new(t.Year, t.Month, t.Day, t.Hour, t.Minute, t.Second, TimeSpan.Zero);

    /// <summary>A timestamp naming <paramref name="snapshotBytes"/> as snapshot version <paramref name="snapshotVersion"/>.</summary>
    public byte[] SignTimestamp(long version, long snapshotVersion, byte[] snapshotBytes, IEnumerable<SigningKey> keys, DateTimeOffset? expires = null) =>
        MetadataFormat.Sign(new TimestampMetadata
        {
            Version = version,
            Expires = expires ?? Later(TimeSpan.FromDays(1)),
            Snapshot = new MetaFileInfo(snapshotVersion, snapshotBytes.Length, MetadataFormat.HashesOf(snapshotBytes)),
        }, keys);

    /// <summary>A snapshot naming <paramref name="targetsBytes"/> as targets version <paramref name="targetsVersion"/>.</summary>
    public byte[] SignSnapshot(long version, long targetsVersion, byte[] targetsBytes, IEnumerable<SigningKey> keys, DateTimeOffset? expires = null) =>
        MetadataFormat.Sign(new SnapshotMetadata
        {
            Version = version,
            Expires = expires ?? Later(TimeSpan.FromDays(7)),
            Targets = new MetaFileInfo(targetsVersion, targetsBytes.Length, MetadataFormat.HashesOf(targetsBytes)),
        }, keys);

    /// <summary>
    /// Serves <paramref name="targetsBytes"/> as targets version <paramref name="targetsVersion"/> under a new snapshot
    /// and a new timestamp (one version above the feed's), signed with the given keys (the feed's own by default).
    /// </summary>
    public void ServeTargets(byte[] targetsBytes, long targetsVersion, IEnumerable<SigningKey>? snapshotKeys = null, IEnumerable<SigningKey>? timestampKeys = null)
    {
        TimestampMetadata ts = Timestamp.Signed;
        Write($"{targetsVersion}.targets.json", targetsBytes);
        long snapVersion = ts.Snapshot.Version + 1;
        byte[] snap = SignSnapshot(snapVersion, targetsVersion, targetsBytes, snapshotKeys ?? SnapshotKeys);
        Write($"{snapVersion}.snapshot.json", snap);
        Write("timestamp.json", SignTimestamp(ts.Version + 1, snapVersion, snap, timestampKeys ?? TimestampKeys));
    }

    /// <summary>
    /// Runs an update that must be refused with <paramref name="kind"/>, and checks what every refusal promises:
    /// the same bundle in force with its files unchanged on disk, and a "rejected" audit record naming the kind.
    /// </summary>
    public async Task<UpdateRejectedException> AssertRejectedAsync(UpdateRejection kind, RuleUpdateClient? client = null, params string[] messageParts)
    {
        RuleStore store = Store;
        InstalledBundle? before = store.Active;
        Dictionary<string, byte[]> files = before?.Files.ToDictionary(f => f.Name, f => File.ReadAllBytes(f.Path)) ?? [];
        int audits = store.ReadAudit(int.MaxValue).Count;

        var e = await Assert.ThrowsAsync<UpdateRejectedException>(() => (client ?? Client()).UpdateAsync());
        Assert.True(e.Kind == kind, $"expected a {kind} rejection, got {e.Kind}: {e.Message}");
        Assert.False(string.IsNullOrWhiteSpace(e.Message));
        Assert.StartsWith(e.File + ": ", e.Message, StringComparison.Ordinal);
        foreach (string part in messageParts)
            Assert.Contains(part, e.Message, StringComparison.OrdinalIgnoreCase);

        AssertBundleUnchanged(before, files);

        IReadOnlyList<UpdateAuditRecord> audit = store.ReadAudit(int.MaxValue);
        Assert.Equal(audits + 1, audit.Count);
        UpdateAuditRecord last = audit[^1];
        Assert.Equal("rejected", last.Outcome);
        Assert.Equal(e.KindName, last.Rejection);
        Assert.Equal(e.Message, last.Message);
        Assert.Null(last.BundleVersion);
        Assert.Equal(before?.Version, last.ActiveVersion);
        StoreState state = store.State;
        Assert.Equal("rejected", state.LastOutcome);
        Assert.Equal(e.Message, state.LastError);
        return e;
    }

    /// <summary>The bundle in force is <paramref name="before"/>, with exactly the file bytes captured then.</summary>
    public void AssertBundleUnchanged(InstalledBundle? before, Dictionary<string, byte[]> files)
    {
        InstalledBundle? after = Store.Active;
        if (before is null)
        {
            Assert.Null(after);
            return;
        }
        Assert.NotNull(after);
        Assert.Equal(before.Version, after.Version);
        Assert.Equal(before.Directory, after.Directory);
        Assert.Equal(files.Keys.Order(StringComparer.Ordinal), after.Files.Select(f => f.Name).Order(StringComparer.Ordinal));
        foreach (BundleFile f in after.Files)
        {
            Assert.True(File.Exists(f.Path), $"{f.Path} of the bundle in force is gone");
            Assert.Equal(files[f.Name], File.ReadAllBytes(f.Path));
        }
    }

    /// <summary>The installed files are exactly <paramref name="expected"/> (name, text), with their kinds.</summary>
    public static void AssertFiles(InstalledBundle bundle, (string Name, string Text)[] expected)
    {
        Assert.Equal(expected.Select(e => e.Name).Order(StringComparer.Ordinal), bundle.Files.Select(f => f.Name).Order(StringComparer.Ordinal));
        foreach (var (name, text) in expected)
        {
            BundleFile f = bundle.Files.Single(f => f.Name == name);
            Assert.Equal(Encoding.UTF8.GetBytes(text), File.ReadAllBytes(f.Path));
            Assert.Equal(Encoding.UTF8.GetByteCount(text), f.Length);
            Assert.Equal(FeedPublisher.KindOf(name), f.Kind);
            Assert.Equal(Path.Combine(bundle.Directory, name), f.Path);
        }
    }

    public void Dispose()
    {
        foreach (SigningKey k in _keys)
            k.Dispose();
        try
        {
            if (Directory.Exists(Base))
                Directory.Delete(Base, recursive: true);
        }
        catch (IOException)
        {
            // A temporary folder; the OS cleans it eventually.
        }
        catch (UnauthorizedAccessException)
        {
            // Same.
        }
    }
}
