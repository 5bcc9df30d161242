using System.Globalization;

namespace Vmi.Updates;

/// <summary>Who may sign each role in a new root, and how many must.</summary>
public sealed record RootPlan(IReadOnlyDictionary<Role, IReadOnlyList<UpdatePublicKey>> Keys, IReadOnlyDictionary<Role, int> Thresholds)
{
    /// <exception cref="UpdateRejectedException">LocalState: a role without keys, or a threshold out of range.</exception>
    internal RootMetadata ToRoot(long version, DateTimeOffset expires)
    {
        var keys = new Dictionary<string, UpdatePublicKey>(StringComparer.Ordinal);
        var roles = new Dictionary<Role, RoleKeys>();
        foreach (Role role in Enum.GetValues<Role>())
        {
            if (!Keys.TryGetValue(role, out var list) || list.Count == 0)
                throw new UpdateRejectedException(UpdateRejection.LocalState, "root.json", $"the {Name(role)} role needs at least one key.");
            int threshold = Thresholds.GetValueOrDefault(role, 1);
            var ids = list.Select(k => k.KeyId).Distinct(StringComparer.Ordinal).ToList();
            if (threshold < 1 || threshold > ids.Count)
                throw new UpdateRejectedException(UpdateRejection.LocalState, "root.json", $"the {Name(role)} role has threshold {threshold} but {ids.Count} distinct keys.");
            foreach (UpdatePublicKey k in list)
                keys[k.KeyId] = k;
            roles[role] = new RoleKeys(ids, threshold);
        }
        return new RootMetadata { Version = version, Expires = expires, Keys = keys, Roles = roles };
    }

    internal static string Name(Role role) => role.ToString().ToLowerInvariant();
}

/// <summary>A rule file to publish.</summary>
/// <param name="Path">The file on disk.</param>
/// <param name="Name">Its name in the bundle (a plain file name); null: the file's name.</param>
/// <param name="Kind"><c>yara</c> or <c>network</c>; null: from the extension (.yar/.yara: yara, .rules: network).</param>
public sealed record RuleFileInput(string Path, string? Name = null, string? Kind = null);

/// <summary>How long each role's new metadata stays valid.</summary>
public sealed record Expiries
{
    public TimeSpan Root { get; init; } = TimeSpan.FromDays(365);
    public TimeSpan Targets { get; init; } = TimeSpan.FromDays(90);
    public TimeSpan Snapshot { get; init; } = TimeSpan.FromDays(7);
    public TimeSpan Timestamp { get; init; } = TimeSpan.FromDays(1);
}

/// <summary>
/// Writes a feed: a folder any static web server can serve. Layout (TUF consistent snapshots):
/// <c>N.root.json</c> for every root version (and <c>root.json</c>, the newest), <c>N.targets.json</c>,
/// <c>N.snapshot.json</c>, <c>timestamp.json</c>, and the rule files as <c>targets/SHA256.NAME</c>.
/// Files are written before the metadata that names them and <c>timestamp.json</c> last, each by rename,
/// so a client never sees a half-published bundle. Root keys are needed only to create or rotate the
/// root, so they can stay offline; publishing needs the targets, snapshot and timestamp keys.
/// </summary>
public sealed class FeedPublisher(string feedDirectory, TimeProvider? time = null)
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;

    public string Directory { get; } = Path.GetFullPath(feedDirectory);

    /// <summary>Creates the feed's first root (version 1), signed by <paramref name="rootSigners"/>.</summary>
    /// <exception cref="UpdateRejectedException">LocalState: the feed already has a root, or the signers do not meet the root threshold.</exception>
    public RootMetadata Initialize(RootPlan plan, IReadOnlyList<SigningKey> rootSigners, Expiries? expiries = null)
    {
        ArgumentNullException.ThrowIfNull(plan);
        if (File.Exists(Path.Combine(Directory, "1.root.json")))
            throw new UpdateRejectedException(UpdateRejection.LocalState, Path.Combine(Directory, "1.root.json"), "the feed already has a root; rotate it with 'vmi rules rotate-root' instead.");
        System.IO.Directory.CreateDirectory(Path.Combine(Directory, "targets"));
        RootMetadata root = plan.ToRoot(1, Now + (expiries ?? new Expiries()).Root);
        RequireThreshold(root, Role.Root, rootSigners, "the new root");
        byte[] bytes = MetadataFormat.Sign(root, rootSigners);
        RuleStore.WriteAtomic(Path.Combine(Directory, "1.root.json"), bytes);
        RuleStore.WriteAtomic(Path.Combine(Directory, "root.json"), bytes);
        return root;
    }

    /// <summary>
    /// Writes root version N+1 with <paramref name="plan"/>'s keys, signed by <paramref name="signers"/>: they
    /// must include a threshold of the current root keys and a threshold of the new ones, or clients refuse it.
    /// </summary>
    public RootMetadata RotateRoot(RootPlan plan, IReadOnlyList<SigningKey> signers, Expiries? expiries = null)
    {
        ArgumentNullException.ThrowIfNull(plan);
        RootMetadata current = LatestRoot();
        RootMetadata next = plan.ToRoot(current.Version + 1, Now + (expiries ?? new Expiries()).Root);
        RequireThreshold(current, Role.Root, signers, $"root v{current.Version} (the keys being replaced)");
        RequireThreshold(next, Role.Root, signers, $"root v{next.Version} (the new keys)");
        byte[] bytes = MetadataFormat.Sign(next, signers);
        RuleStore.WriteAtomic(Path.Combine(Directory, $"{next.Version}.root.json"), bytes);
        RuleStore.WriteAtomic(Path.Combine(Directory, "root.json"), bytes);
        return next;
    }

    /// <summary>Publishes a new bundle made of <paramref name="files"/> (it replaces the previous bundle's file set).</summary>
    /// <returns>The new targets metadata (its version is the bundle version).</returns>
    /// <exception cref="UpdateRejectedException">LocalState: a key is not trusted for its role, a file is missing, two files have one name; InvalidBundle when <paramref name="validate"/> refuses.</exception>
    public TargetsMetadata Publish(IReadOnlyList<RuleFileInput> files, IReadOnlyList<SigningKey> targetsKeys, IReadOnlyList<SigningKey> snapshotKeys,
        IReadOnlyList<SigningKey> timestampKeys, Expiries? expiries = null, Func<IReadOnlyList<BundleFile>, string?>? validate = null)
    {
        ArgumentNullException.ThrowIfNull(files);
        expiries ??= new Expiries();
        RootMetadata root = LatestRoot();
        RequireThreshold(root, Role.Targets, targetsKeys, "targets");
        RequireThreshold(root, Role.Snapshot, snapshotKeys, "snapshot");
        RequireThreshold(root, Role.Timestamp, timestampKeys, "timestamp");

        var entries = new List<TargetFileInfo>();
        var staged = new List<(TargetFileInfo Info, byte[] Data, string Source)>();
        foreach (RuleFileInput f in files)
        {
            string name = f.Name ?? Path.GetFileName(f.Path);
            if (!MetadataFormat.IsSafeTargetName(name))
                throw new UpdateRejectedException(UpdateRejection.LocalState, f.Path, $"\"{name}\" cannot be a bundle file name (letters, digits, . _ -; no leading dot).");
            if (entries.Any(e => e.Name == name))
                throw new UpdateRejectedException(UpdateRejection.LocalState, f.Path, $"two files are named {name} in the bundle.");
            string kind = f.Kind ?? KindOf(name) ?? throw new UpdateRejectedException(UpdateRejection.LocalState, f.Path,
                "cannot tell a YARA file from a network rules file by its extension (.yar/.yara or .rules); give the kind.");
            byte[] data;
            try
            {
                data = File.ReadAllBytes(f.Path);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new UpdateRejectedException(UpdateRejection.LocalState, f.Path, $"cannot read the rule file: {e.Message}", e);
            }
            var info = new TargetFileInfo(name, kind, data.Length, MetadataFormat.HashesOf(data));
            entries.Add(info);
            staged.Add((info, data, f.Path));
        }
        if (validate?.Invoke([.. staged.Select(s => new BundleFile(s.Info.Name, s.Info.Kind, s.Info.Length, s.Info.Hashes["sha256"]) { Path = s.Source })]) is string problem)
            throw new UpdateRejectedException(UpdateRejection.InvalidBundle, "targets.json", $"not published: {problem}");

        var (oldTimestamp, oldSnapshot, oldTargets) = CurrentVersions();
        var targets = new TargetsMetadata { Version = oldTargets + 1, Expires = Now + expiries.Targets, Targets = entries };
        System.IO.Directory.CreateDirectory(Path.Combine(Directory, "targets"));
        foreach (var (info, data, _) in staged)
        {
            string path = Path.Combine(Directory, info.FeedPath);
            // Content-addressed: an existing file is kept unless it no longer matches its name (a damaged copy).
            if (!File.Exists(path) || !MetadataFormat.Matches(File.ReadAllBytes(path), info.Length, info.Hashes))
                RuleStore.WriteAtomic(path, data);
        }
        byte[] targetsBytes = MetadataFormat.Sign(targets, targetsKeys);
        RuleStore.WriteAtomic(Path.Combine(Directory, $"{targets.Version}.targets.json"), targetsBytes);
        var snapshot = new SnapshotMetadata
        {
            Version = oldSnapshot + 1, Expires = Now + expiries.Snapshot,
            Targets = new MetaFileInfo(targets.Version, targetsBytes.Length, MetadataFormat.HashesOf(targetsBytes)),
        };
        byte[] snapshotBytes = MetadataFormat.Sign(snapshot, snapshotKeys);
        RuleStore.WriteAtomic(Path.Combine(Directory, $"{snapshot.Version}.snapshot.json"), snapshotBytes);
        WriteTimestamp(oldTimestamp + 1, snapshot.Version, snapshotBytes, timestampKeys, expiries.Timestamp);
        return targets;
    }

    /// <summary>Re-signs the timestamp with a new version and expiry (run often: clients refuse an expired one).</summary>
    public TimestampMetadata RefreshTimestamp(IReadOnlyList<SigningKey> timestampKeys, TimeSpan? validFor = null)
    {
        RootMetadata root = LatestRoot();
        RequireThreshold(root, Role.Timestamp, timestampKeys, "timestamp");
        var (ts, snap, _) = CurrentVersions();
        if (snap == 0)
            throw new UpdateRejectedException(UpdateRejection.LocalState, Directory, "nothing published yet: run 'vmi rules publish' first.");
        byte[] snapshotBytes = File.ReadAllBytes(Path.Combine(Directory, $"{snap}.snapshot.json"));
        return WriteTimestamp(ts + 1, snap, snapshotBytes, timestampKeys, validFor ?? new Expiries().Timestamp);
    }

    private TimestampMetadata WriteTimestamp(long version, long snapshotVersion, byte[] snapshotBytes, IReadOnlyList<SigningKey> keys, TimeSpan validFor)
    {
        var timestamp = new TimestampMetadata
        {
            Version = version, Expires = Now + validFor,
            Snapshot = new MetaFileInfo(snapshotVersion, snapshotBytes.Length, MetadataFormat.HashesOf(snapshotBytes)),
        };
        RuleStore.WriteAtomic(Path.Combine(Directory, "timestamp.json"), MetadataFormat.Sign(timestamp, keys));
        return timestamp;
    }

    /// <summary>The newest root of the feed.</summary>
    /// <exception cref="UpdateRejectedException">LocalState: no feed here.</exception>
    public RootMetadata LatestRoot()
    {
        string path = Path.Combine(Directory, "root.json");
        if (!File.Exists(path))
            throw new UpdateRejectedException(UpdateRejection.LocalState, Directory, "no feed here: create one with 'vmi rules init'.");
        return MetadataFormat.Parse<RootMetadata>(File.ReadAllBytes(path), path).Signed;
    }

    private (long Timestamp, long Snapshot, long Targets) CurrentVersions()
    {
        string ts = Path.Combine(Directory, "timestamp.json");
        if (!File.Exists(ts))
            return (0, 0, 0);
        var timestamp = MetadataFormat.Parse<TimestampMetadata>(File.ReadAllBytes(ts), ts).Signed;
        string snapPath = Path.Combine(Directory, $"{timestamp.Snapshot.Version}.snapshot.json");
        var snapshot = MetadataFormat.Parse<SnapshotMetadata>(File.ReadAllBytes(snapPath), snapPath).Signed;
        return (timestamp.Version, snapshot.Version, snapshot.Targets.Version);
    }

    private static void RequireThreshold(RootMetadata root, Role role, IReadOnlyList<SigningKey> keys, string what)
    {
        ArgumentNullException.ThrowIfNull(keys);
        RoleKeys rk = root.Roles[role];
        int trusted = keys.Select(k => k.KeyId).Distinct(StringComparer.Ordinal).Count(rk.KeyIds.Contains);
        if (trusted < rk.Threshold)
        {
            string given = keys.Count == 0 ? "no keys" : string.Join(", ", keys.Select(k => k.Public.ShortId));
            throw new UpdateRejectedException(UpdateRejection.LocalState, "root.json", string.Create(CultureInfo.InvariantCulture,
                $"{what}: {trusted} of the given keys ({given}) are {RootPlan.Name(role)} keys of root v{root.Version}; {rk.Threshold} needed (its keys: {string.Join(", ", rk.KeyIds.Select(k => k[..8]))})."));
        }
    }

    /// <summary>The kind a rule file's extension says, or null.</summary>
    public static string? KindOf(string name) => Path.GetExtension(name).ToLowerInvariant() switch
    {
        ".yar" or ".yara" => "yara",
        ".rules" => "network",
        _ => null,
    };

    private DateTimeOffset Now
    {
        get
        {
            DateTimeOffset now = _time.GetUtcNow();
            return new DateTimeOffset(now.Year, now.Month, now.Day, now.Hour, now.Minute, now.Second, TimeSpan.Zero);
        }
    }
}
