using System.Text.Json;
using System.Text.Json.Serialization;

namespace Vmi.Updates;

/// <summary>A rule file of an installed bundle.</summary>
public sealed record BundleFile(string Name, string Kind, long Length, string Sha256)
{
    /// <summary>Full path of the installed copy (set when read from the store).</summary>
    [JsonIgnore] public string Path { get; init; } = "";
}

/// <summary>A verified bundle as installed: what it holds, where it came from, who signed it.</summary>
public sealed record InstalledBundle
{
    /// <summary>The targets metadata version: the bundle's version, named in alerts.</summary>
    public required long Version { get; init; }
    public required string Feed { get; init; }
    public required DateTimeOffset InstalledAt { get; init; }
    /// <summary>Key ids that signed the targets metadata (validly).</summary>
    public required IReadOnlyList<string> SignedBy { get; init; }
    public required DateTimeOffset TargetsExpires { get; init; }
    public required long RootVersion { get; init; }
    public required IReadOnlyList<BundleFile> Files { get; init; }
    /// <summary>Folder holding the files.</summary>
    [JsonIgnore] public string Directory { get; init; } = "";

    public IEnumerable<BundleFile> FilesOfKind(string kind) => Files.Where(f => f.Kind == kind);
}

/// <summary>One update check, as the audit trail records it.</summary>
/// <param name="Time">When the check ended.</param>
/// <param name="Feed">The feed checked.</param>
/// <param name="Outcome"><c>installed</c>, <c>up-to-date</c> or <c>rejected</c>.</param>
/// <param name="BundleVersion">The bundle in force after the check (null when rejected).</param>
/// <param name="ActiveVersion">The bundle in force before the check.</param>
/// <param name="Rejection">The rejection kind (<c>rollback</c>, <c>expired</c> …) when rejected.</param>
/// <param name="Message">What happened, in one line.</param>
public sealed record UpdateAuditRecord(DateTimeOffset Time, string Feed, string Outcome, long? BundleVersion, long? ActiveVersion, string? Rejection, string Message);

/// <summary>
/// The client's persisted state in one folder: the trusted metadata of each role, the installed bundles,
/// which one is in force, and the update audit log. Every write goes to a temporary file first and is
/// renamed into place, so a crash or a full disk never leaves a half-written file in force.
/// </summary>
/// <remarks>
/// Layout: <c>trusted/{root,timestamp,snapshot,targets}.json</c>, <c>bundles/VERSION/</c> (the rule
/// files and <c>bundle.json</c>), <c>state.json</c> (feed and the bundle in force), <c>audit.jsonl</c>.
/// </remarks>
public sealed class RuleStore
{
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase };
    private const long MaxStateBytes = 1 << 20;

    private RuleStore(string directory) => Directory = directory;

    public string Directory { get; }

    /// <summary>Default folder: $VMI_RULES_DIR, else $XDG_DATA_HOME/vmi/rules, else ~/.local/share/vmi/rules.</summary>
    public static string DefaultDirectory()
    {
        if (Environment.GetEnvironmentVariable("VMI_RULES_DIR") is { Length: > 0 } d)
            return d;
        string data = Environment.GetEnvironmentVariable("XDG_DATA_HOME") is { Length: > 0 } x
            ? x
            : System.IO.Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".local", "share");
        return System.IO.Path.Combine(data, "vmi", "rules");
    }

    /// <summary>Opens (creating, mode 0700) a state folder.</summary>
    /// <exception cref="UpdateRejectedException">LocalState: the folder cannot be created.</exception>
    public static RuleStore Open(string directory)
    {
        string full = System.IO.Path.GetFullPath(directory);
        try
        {
            foreach (string sub in new[] { full, System.IO.Path.Combine(full, "trusted"), System.IO.Path.Combine(full, "bundles") })
            {
                if (!System.IO.Directory.Exists(sub))
                {
                    if (OperatingSystem.IsWindows())
                        System.IO.Directory.CreateDirectory(sub);
                    else
                        System.IO.Directory.CreateDirectory(sub, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UpdateRejectedException(UpdateRejection.LocalState, full, $"cannot create the rule state folder: {e.Message} (pass --state DIR or set VMI_RULES_DIR).", e);
        }
        return new RuleStore(full);
    }

    private string TrustedPath(Role role) => System.IO.Path.Combine(Directory, "trusted", SignedMetadata<RootMetadata>.Name(role) + ".json");
    private string StatePath => System.IO.Path.Combine(Directory, "state.json");
    private string AuditPath => System.IO.Path.Combine(Directory, "audit.jsonl");

    /// <summary>The trusted metadata file of a role, or null when none is stored.</summary>
    public byte[]? ReadTrusted(Role role)
    {
        string path = TrustedPath(role);
        try
        {
            var info = new FileInfo(path);
            if (!info.Exists)
                return null;
            if (info.Length > 64L << 20)
                throw new UpdateRejectedException(UpdateRejection.LocalState, path, "the stored metadata is implausibly large; remove the state folder and start again from a trusted root.");
            return File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UpdateRejectedException(UpdateRejection.LocalState, path, $"cannot read the trusted metadata: {e.Message}", e);
        }
    }

    internal void WriteTrusted(Role role, byte[] bytes) => WriteAtomic(TrustedPath(role), bytes);

    internal void DeleteTrusted(Role role)
    {
        try
        {
            File.Delete(TrustedPath(role));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UpdateRejectedException(UpdateRejection.LocalState, TrustedPath(role), $"cannot remove the old metadata after a key rotation: {e.Message}", e);
        }
    }

    /// <summary>The feed the state follows, and the bundle in force.</summary>
    public StoreState State => ReadState() ?? new StoreState();

    /// <summary>The bundle in force, or null when none was installed.</summary>
    public InstalledBundle? Active => State.ActiveVersion is long v ? ReadBundle(v) : null;

    /// <summary>Changes whenever another bundle is put in force (for watchers in other processes).</summary>
    public DateTime StateStamp
    {
        get
        {
            try
            {
                return File.GetLastWriteTimeUtc(StatePath);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return DateTime.MinValue;
            }
        }
    }

    private StoreState? ReadState()
    {
        try
        {
            var info = new FileInfo(StatePath);
            if (!info.Exists)
                return null;
            if (info.Length > MaxStateBytes)
                throw new UpdateRejectedException(UpdateRejection.LocalState, StatePath, "the state file is implausibly large.");
            return JsonSerializer.Deserialize<StoreState>(File.ReadAllBytes(StatePath), Json);
        }
        catch (JsonException e)
        {
            throw new UpdateRejectedException(UpdateRejection.LocalState, StatePath, $"the state file is corrupt: {e.Message}", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UpdateRejectedException(UpdateRejection.LocalState, StatePath, $"cannot read the state: {e.Message}", e);
        }
    }

    internal void WriteState(StoreState state) => WriteAtomic(StatePath, JsonSerializer.SerializeToUtf8Bytes(state, Json));

    /// <summary>Reads an installed bundle's manifest; null when it is not there (or not whole).</summary>
    public InstalledBundle? ReadBundle(long version)
    {
        string dir = BundleDirectory(version);
        string manifest = System.IO.Path.Combine(dir, "bundle.json");
        try
        {
            if (!File.Exists(manifest))
                return null;
            InstalledBundle? b = JsonSerializer.Deserialize<InstalledBundle>(File.ReadAllBytes(manifest), Json);
            if (b is null)
                return null;
            return b with
            {
                Directory = dir,
                Files = [.. b.Files.Select(f => f with { Path = System.IO.Path.Combine(dir, MetadataFormat.IsSafeTargetName(f.Name) ? f.Name : throw new UpdateRejectedException(UpdateRejection.LocalState, manifest, $"file name {f.Name} is unsafe")) })],
            };
        }
        catch (JsonException e)
        {
            throw new UpdateRejectedException(UpdateRejection.LocalState, manifest, $"the bundle manifest is corrupt: {e.Message}", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UpdateRejectedException(UpdateRejection.LocalState, manifest, $"cannot read the bundle: {e.Message}", e);
        }
    }

    private string BundleDirectory(long version) => System.IO.Path.Combine(Directory, "bundles", version.ToString(System.Globalization.CultureInfo.InvariantCulture));

    /// <summary>
    /// Writes a verified bundle's files into a new folder, then puts it in force by rewriting the state
    /// (one rename). Older bundles but the previous one are removed afterwards.
    /// </summary>
    internal InstalledBundle Install(InstalledBundle bundle, IReadOnlyDictionary<string, byte[]> contents)
    {
        string final = BundleDirectory(bundle.Version);
        string temp = System.IO.Path.Combine(Directory, "bundles", $".incoming-{bundle.Version}-{Environment.ProcessId}");
        try
        {
            if (System.IO.Directory.Exists(temp))
                System.IO.Directory.Delete(temp, recursive: true);
            System.IO.Directory.CreateDirectory(temp);
            foreach (BundleFile f in bundle.Files)
                WriteDurable(System.IO.Path.Combine(temp, f.Name), contents[f.Name]);
            WriteDurable(System.IO.Path.Combine(temp, "bundle.json"), JsonSerializer.SerializeToUtf8Bytes(bundle, Json));
            if (System.IO.Directory.Exists(final))
                System.IO.Directory.Delete(final, recursive: true); // a leftover of an install that never went into force
            System.IO.Directory.Move(temp, final);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            TryDelete(temp);
            throw new UpdateRejectedException(UpdateRejection.LocalState, final,
                $"cannot write the new bundle: {e.Message} (is the disk full?); the bundle in force is unchanged.", e);
        }
        StoreState state = State;
        WriteState(state with { Feed = bundle.Feed, ActiveVersion = bundle.Version, PreviousVersion = state.ActiveVersion });
        Prune(bundle.Version, state.ActiveVersion);
        return ReadBundle(bundle.Version)!;
    }

    private void Prune(long active, long? previous)
    {
        foreach (string dir in System.IO.Directory.EnumerateDirectories(System.IO.Path.Combine(Directory, "bundles")))
        {
            string name = System.IO.Path.GetFileName(dir);
            if (long.TryParse(name, System.Globalization.CultureInfo.InvariantCulture, out long v) && v != active && v != previous)
                TryDelete(dir);
        }
    }

    private static void TryDelete(string dir)
    {
        try
        {
            if (System.IO.Directory.Exists(dir))
                System.IO.Directory.Delete(dir, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Left for the next prune.
        }
    }

    /// <summary>Appends an update check to the audit log (one JSON line).</summary>
    public void AppendAudit(UpdateAuditRecord record)
    {
        byte[] line = [.. JsonSerializer.SerializeToUtf8Bytes(record, new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.CamelCase }), (byte)'\n'];
        try
        {
            using var f = new FileStream(AuditPath, FileMode.Append, FileAccess.Write, FileShare.Read);
            f.Write(line);
            f.Flush(flushToDisk: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UpdateRejectedException(UpdateRejection.LocalState, AuditPath, $"cannot append to the update audit log: {e.Message}", e);
        }
    }

    /// <summary>The last <paramref name="count"/> audit records (unreadable lines are skipped).</summary>
    public IReadOnlyList<UpdateAuditRecord> ReadAudit(int count)
    {
        if (!File.Exists(AuditPath))
            return [];
        var opts = new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.CamelCase };
        var records = new Queue<UpdateAuditRecord>();
        foreach (string line in File.ReadLines(AuditPath))
        {
            try
            {
                if (JsonSerializer.Deserialize<UpdateAuditRecord>(line, opts) is UpdateAuditRecord r)
                    records.Enqueue(r);
            }
            catch (JsonException)
            {
                continue;
            }
            if (records.Count > count)
                records.Dequeue();
        }
        return [.. records];
    }

    /// <summary>Takes the store's lock: one update at a time, across processes.</summary>
    /// <exception cref="UpdateRejectedException">LocalState: another update holds it.</exception>
    public IDisposable Lock()
    {
        string path = System.IO.Path.Combine(Directory, ".lock");
        try
        {
            return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException e)
        {
            throw new UpdateRejectedException(UpdateRejection.LocalState, Directory, $"another update is running on this state folder ({e.Message}); try again when it ends.", e);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new UpdateRejectedException(UpdateRejection.LocalState, path, $"cannot open the state folder's lock file: {e.Message}", e);
        }
    }

    internal static void WriteAtomic(string path, byte[] bytes)
    {
        string temp = path + ".tmp-" + Environment.ProcessId;
        try
        {
            WriteDurable(temp, bytes);
            File.Move(temp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            try
            {
                File.Delete(temp);
            }
            catch (IOException)
            {
                // Best effort.
            }
            throw new UpdateRejectedException(UpdateRejection.LocalState, path, $"cannot write it: {e.Message} (is the disk full?); the previous version is kept.", e);
        }
    }

    private static void WriteDurable(string path, byte[] bytes)
    {
        using var f = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None);
        f.Write(bytes);
        f.Flush(flushToDisk: true);
    }
}

/// <summary>What <c>state.json</c> holds.</summary>
public sealed record StoreState
{
    public string? Feed { get; init; }
    public long? ActiveVersion { get; init; }
    public long? PreviousVersion { get; init; }
    public DateTimeOffset? LastCheck { get; init; }
    public string? LastOutcome { get; init; }
    public string? LastError { get; init; }
}
