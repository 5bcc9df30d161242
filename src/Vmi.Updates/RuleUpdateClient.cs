using System.Globalization;

namespace Vmi.Updates;

/// <summary>Limits and checks of the update workflow.</summary>
public sealed record UpdateClientOptions
{
    public long MaxRootBytes { get; init; } = 512 << 10;
    public long MaxTimestampBytes { get; init; } = 16 << 10;
    /// <summary>Used when the timestamp gives no length for the snapshot.</summary>
    public long MaxSnapshotBytes { get; init; } = 2 << 20;
    /// <summary>Used when the snapshot gives no length for the targets metadata.</summary>
    public long MaxTargetsBytes { get; init; } = 16 << 20;
    /// <summary>Largest rule file accepted, whatever the targets metadata says.</summary>
    public long MaxTargetFileBytes { get; init; } = 64 << 20;
    /// <summary>Largest bundle (all rule files) accepted.</summary>
    public long MaxBundleBytes { get; init; } = 256 << 20;
    /// <summary>Root versions walked in one update at most.</summary>
    public int MaxRootRotations { get; init; } = 256;
    public TimeProvider Time { get; init; } = TimeProvider.System;

    /// <summary>
    /// Checks a verified bundle before it is put in force (compiles its rules): returns null when good, else
    /// the reason it must not be installed. The file paths point at the downloaded copies.
    /// </summary>
    public Func<IReadOnlyList<BundleFile>, string?>? Validate { get; init; }
}

/// <summary>What an update did.</summary>
/// <param name="Installed">True when a new bundle went into force.</param>
/// <param name="Active">The bundle in force afterwards (null when none was ever installed).</param>
/// <param name="RootVersion">The trusted root's version afterwards.</param>
/// <param name="Message">One line for the user.</param>
public sealed record UpdateResult(bool Installed, InstalledBundle? Active, long RootVersion, string Message);

/// <summary>
/// The TUF client workflow (specification 1.0, section 5) for rule bundles: update the root through
/// every intermediate version (each signed by the old and the new root keys), then the timestamp, the
/// snapshot and the targets, each checked for signatures over its role's threshold, version rollback,
/// expiry, and the length and hashes the role above lists; then download the rule files, check them
/// against the signed targets, validate (compile) them, and install the bundle atomically. Any failure
/// throws <see cref="UpdateRejectedException"/> and leaves the bundle in force as it was.
/// </summary>
public sealed class RuleUpdateClient(RuleStore store, IFeedFetcher fetcher, UpdateClientOptions? options = null)
{
    private readonly UpdateClientOptions _options = options ?? new UpdateClientOptions();

    /// <summary>
    /// Makes <paramref name="rootFile"/> the trust anchor of a state that has none. The root must be signed
    /// by its own threshold of root keys. A state that already trusts a root refuses another one (replaying
    /// an old root would undo a key rotation); the root then only changes through the feed.
    /// </summary>
    /// <exception cref="UpdateRejectedException">Malformed, not self-signed, or a root is already trusted.</exception>
    public void Initialize(byte[] rootFile, string name = "root.json")
    {
        ArgumentNullException.ThrowIfNull(rootFile);
        using IDisposable _ = store.Lock();
        try
        {
            if (store.ReadTrusted(Role.Root) is byte[] existing)
            {
                if (existing.AsSpan().SequenceEqual(rootFile))
                    return;
                var trusted = MetadataFormat.Parse<RootMetadata>(existing, "trusted root.json");
                throw new UpdateRejectedException(UpdateRejection.Rollback, name,
                    $"this state already trusts root v{trusted.Signed.Version}; a root given by hand cannot replace it (an old root replayed would undo a key rotation). New roots arrive through the feed, signed by the old keys.");
            }
            var root = MetadataFormat.Parse<RootMetadata>(rootFile, name);
            root.Verify(root.Signed, Role.Root, name);
            store.WriteTrusted(Role.Root, rootFile);
        }
        catch (UpdateRejectedException e)
        {
            Record("rejected", null, e.KindName, e.Message);
            throw;
        }
    }

    /// <summary>Runs one update. Throws on any rejection; the reason is audited either way.</summary>
    public async Task<UpdateResult> UpdateAsync(CancellationToken cancellationToken = default)
    {
        IDisposable? held = null;
        try
        {
            held = store.Lock();
            UpdateResult result = await UpdateLockedAsync(cancellationToken).ConfigureAwait(false);
            Record(result.Installed ? "installed" : "up-to-date", result.Active?.Version, null, result.Message);
            return result;
        }
        catch (UpdateRejectedException e)
        {
            if (held is not null)
                Record("rejected", null, e.KindName, e.Message);
            throw;
        }
        finally
        {
            held?.Dispose();
        }
    }

    private void Record(string outcome, long? version, string? rejection, string message)
    {
        DateTimeOffset now = _options.Time.GetUtcNow();
        StoreState state = store.State;
        // The feed is remembered once it worked (a mistyped --feed does not replace a good one).
        string? feed = rejection is null ? fetcher.Location : state.Feed ?? fetcher.Location;
        store.WriteState(state with { LastCheck = now, LastOutcome = outcome, LastError = rejection is null ? null : message, Feed = feed });
        store.AppendAudit(new UpdateAuditRecord(now, fetcher.Location, outcome, version, state.ActiveVersion, rejection, message));
    }

    private async Task<UpdateResult> UpdateLockedAsync(CancellationToken ct)
    {
        DateTimeOffset now = _options.Time.GetUtcNow();
        byte[] trustedRootBytes = store.ReadTrusted(Role.Root)
            ?? throw new UpdateRejectedException(UpdateRejection.LocalState, store.Directory,
                "no trusted root yet: give the feed's root.json once, obtained out of band (vmi rules update --root FILE).");
        var root = MetadataFormat.Parse<RootMetadata>(trustedRootBytes, "trusted root.json");

        // 5.3: the root, one version at a time.
        long startRoot = root.Signed.Version;
        for (int i = 0; i < _options.MaxRootRotations; i++)
        {
            long next = root.Signed.Version + 1;
            string file = $"{next}.root.json";
            byte[]? bytes = await fetcher.FetchAsync(file, _options.MaxRootBytes, ct).ConfigureAwait(false);
            if (bytes is null)
                break;
            var candidate = MetadataFormat.Parse<RootMetadata>(bytes, file);
            // The version is checked first only to name the attack: nothing is trusted before both signature checks.
            if (candidate.Signed.Version != next)
                throw new UpdateRejectedException(candidate.Signed.Version < next ? UpdateRejection.Rollback : UpdateRejection.Mismatch, file,
                    $"it holds root version {candidate.Signed.Version}, not {next}{(candidate.Signed.Version < next ? " (an old root replayed)" : "")}.");
            candidate.Verify(root.Signed, Role.Root, file + " (checked against the keys of the root it replaces)");
            candidate.Verify(candidate.Signed, Role.Root, file + " (checked against its own root keys)");
            root = candidate;
            store.WriteTrusted(Role.Root, bytes);
        }
        if (root.Signed.IsExpired(now))
            throw new UpdateRejectedException(UpdateRejection.Expired, "root.json",
                $"the newest root (v{root.Signed.Version}) expired {MetadataFormat.FormatTime(root.Signed.Expires)}; the feed's owners must sign a new root.");
        if (root.Signed.Version != startRoot)
        {
            var old = MetadataFormat.Parse<RootMetadata>(trustedRootBytes, "trusted root.json").Signed;
            // 5.3.11: rotated timestamp or snapshot keys: the old metadata can no longer be trusted as a floor.
            if (!SameKeys(old, root.Signed, Role.Timestamp) || !SameKeys(old, root.Signed, Role.Snapshot))
            {
                store.DeleteTrusted(Role.Timestamp);
                store.DeleteTrusted(Role.Snapshot);
            }
        }

        // 5.4: the timestamp.
        var trustedTimestamp = LoadTrusted<TimestampMetadata>(Role.Timestamp, root.Signed);
        byte[] tsBytes = await fetcher.FetchAsync("timestamp.json", _options.MaxTimestampBytes, ct).ConfigureAwait(false)
            ?? throw new UpdateRejectedException(UpdateRejection.Unavailable, "timestamp.json", $"the feed at {fetcher.Location} has no timestamp.json.");
        var timestamp = MetadataFormat.Parse<TimestampMetadata>(tsBytes, "timestamp.json");
        timestamp.Verify(root.Signed, Role.Timestamp, "timestamp.json");
        if (trustedTimestamp is not null)
        {
            if (timestamp.Signed.Version < trustedTimestamp.Signed.Version)
                throw new UpdateRejectedException(UpdateRejection.Rollback, "timestamp.json",
                    $"version {timestamp.Signed.Version} is older than the trusted version {trustedTimestamp.Signed.Version} (rollback).");
            if (timestamp.Signed.Snapshot.Version < trustedTimestamp.Signed.Snapshot.Version)
                throw new UpdateRejectedException(UpdateRejection.Rollback, "timestamp.json",
                    $"it names snapshot version {timestamp.Signed.Snapshot.Version}, older than the trusted {trustedTimestamp.Signed.Snapshot.Version} (snapshot rollback).");
        }
        if (timestamp.Signed.IsExpired(now))
            throw new UpdateRejectedException(UpdateRejection.Expired, "timestamp.json",
                $"expired {MetadataFormat.FormatTime(timestamp.Signed.Expires)} (a freeze attack, or the feed stopped re-signing); nothing newer is trusted.");
        store.WriteTrusted(Role.Timestamp, tsBytes);

        // 5.5: the snapshot the timestamp names.
        MetaFileInfo snapInfo = timestamp.Signed.Snapshot;
        string snapFile = $"{snapInfo.Version}.snapshot.json";
        var trustedSnapshot = LoadTrusted<SnapshotMetadata>(Role.Snapshot, root.Signed);
        SignedMetadata<SnapshotMetadata> snapshot = await FetchNamedAsync(snapFile, snapInfo, trustedSnapshot, _options.MaxSnapshotBytes,
            root.Signed, Role.Snapshot, $"timestamp v{timestamp.Signed.Version}", ct).ConfigureAwait(false);
        if (!ReferenceEquals(snapshot, trustedSnapshot) && trustedSnapshot is not null && snapshot.Signed.Targets.Version < trustedSnapshot.Signed.Targets.Version)
            throw new UpdateRejectedException(UpdateRejection.Rollback, snapFile,
                $"it names targets version {snapshot.Signed.Targets.Version}, older than the trusted {trustedSnapshot.Signed.Targets.Version} (targets rollback).");
        if (snapshot.Signed.IsExpired(now))
            throw new UpdateRejectedException(UpdateRejection.Expired, snapFile, $"expired {MetadataFormat.FormatTime(snapshot.Signed.Expires)}.");
        store.WriteTrusted(Role.Snapshot, snapshot.Raw);

        // 5.6: the targets the snapshot names.
        MetaFileInfo targetsInfo = snapshot.Signed.Targets;
        string targetsFile = $"{targetsInfo.Version}.targets.json";
        var trustedTargets = LoadTrusted<TargetsMetadata>(Role.Targets, root.Signed);
        SignedMetadata<TargetsMetadata> targets = await FetchNamedAsync(targetsFile, targetsInfo, trustedTargets, _options.MaxTargetsBytes,
            root.Signed, Role.Targets, $"snapshot v{snapshot.Signed.Version}", ct).ConfigureAwait(false);
        if (!ReferenceEquals(targets, trustedTargets) && trustedTargets is not null && targets.Signed.Version < trustedTargets.Signed.Version)
            throw new UpdateRejectedException(UpdateRejection.Rollback, targetsFile,
                $"version {targets.Signed.Version} is older than the trusted {trustedTargets.Signed.Version} (rollback).");
        if (targets.Signed.IsExpired(now))
            throw new UpdateRejectedException(UpdateRejection.Expired, targetsFile, $"expired {MetadataFormat.FormatTime(targets.Signed.Expires)}.");
        IReadOnlyList<string> signers = targets.Verify(root.Signed, Role.Targets, targetsFile);
        store.WriteTrusted(Role.Targets, targets.Raw);

        InstalledBundle? active = store.Active;
        if (active is not null && active.Version == targets.Signed.Version)
            return new UpdateResult(false, active, root.Signed.Version,
                $"up to date: bundle {active.Version} ({active.Files.Count} rule files), root v{root.Signed.Version}, timestamp v{timestamp.Signed.Version} valid until {MetadataFormat.FormatTime(timestamp.Signed.Expires)}");
        if (active is not null && active.Version > targets.Signed.Version)
            throw new UpdateRejectedException(UpdateRejection.Rollback, targetsFile,
                $"bundle {targets.Signed.Version} is older than bundle {active.Version} in force.");

        // Target files.
        long total = targets.Signed.Targets.Sum(t => t.Length);
        if (total > _options.MaxBundleBytes)
            throw new UpdateRejectedException(UpdateRejection.TooLarge, targetsFile, $"the bundle lists {total} bytes of rule files, more than the {_options.MaxBundleBytes} allowed.");
        var contents = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        var files = new List<BundleFile>();
        foreach (TargetFileInfo t in targets.Signed.Targets)
        {
            if (t.Length > _options.MaxTargetFileBytes)
                throw new UpdateRejectedException(UpdateRejection.TooLarge, t.Name, $"listed at {t.Length} bytes, more than the {_options.MaxTargetFileBytes} allowed for one rule file.");
            byte[] data = await fetcher.FetchAsync(t.FeedPath, t.Length, ct).ConfigureAwait(false)
                ?? throw new UpdateRejectedException(UpdateRejection.Unavailable, t.FeedPath, "the signed targets list it, but the feed does not have it.");
            if (!MetadataFormat.Matches(data, t.Length, t.Hashes))
                throw new UpdateRejectedException(UpdateRejection.TargetMismatch, t.FeedPath,
                    $"{data.Length} bytes whose hash is not the one targets v{targets.Signed.Version} signed (listed {t.Length} bytes, sha256 {t.Hashes["sha256"][..16]}…): tampered or corrupt; not installed.");
            contents[t.Name] = data;
            files.Add(new BundleFile(t.Name, t.Kind, t.Length, t.Hashes["sha256"]));
        }

        if (_options.Validate is { } validate)
        {
            string check = Path.Combine(Path.GetTempPath(), $"vmi-bundle-check-{Environment.ProcessId}-{Guid.NewGuid():N}");
            try
            {
                Directory.CreateDirectory(check);
                var staged = files.Select(f => f with { Path = Path.Combine(check, f.Name) }).ToList();
                foreach (BundleFile f in staged)
                    await File.WriteAllBytesAsync(f.Path, contents[f.Name], ct).ConfigureAwait(false);
                if (validate(staged) is string problem)
                    throw new UpdateRejectedException(UpdateRejection.InvalidBundle, targetsFile, $"bundle {targets.Signed.Version} is signed but its rules do not compile: {problem}");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new UpdateRejectedException(UpdateRejection.LocalState, check, $"cannot stage the bundle to check it: {e.Message}", e);
            }
            finally
            {
                try
                {
                    Directory.Delete(check, recursive: true);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    // A temporary folder; left behind.
                }
            }
        }

        var bundle = new InstalledBundle
        {
            Version = targets.Signed.Version,
            Feed = fetcher.Location,
            InstalledAt = now,
            SignedBy = signers,
            TargetsExpires = targets.Signed.Expires,
            RootVersion = root.Signed.Version,
            Files = files,
        };
        InstalledBundle installed = store.Install(bundle, contents);
        return new UpdateResult(true, installed, root.Signed.Version,
            $"installed bundle {installed.Version} ({files.Count} rule files, {total} bytes) from {fetcher.Location}; previously {(active is null ? "none" : "bundle " + active.Version)}; root v{root.Signed.Version}");
    }

    /// <summary>
    /// The metadata file a parent role names (snapshot from the timestamp, targets from the snapshot): the trusted
    /// copy when it is that version and matches, else downloaded within the listed length (never above
    /// <paramref name="limit"/>: the parent's key may be online and stolen), checked against the listed length and
    /// hashes (mix-and-match), its role's signatures, and the version the parent names.
    /// </summary>
    private async Task<SignedMetadata<T>> FetchNamedAsync<T>(string file, MetaFileInfo info, SignedMetadata<T>? trusted, long limit,
        RootMetadata root, Role role, string parent, CancellationToken ct) where T : Metadata
    {
        if (trusted is not null && trusted.Signed.Version == info.Version && MetadataFormat.Matches(trusted.Raw, info.Length, info.Hashes))
            return trusted;
        string parentRole = parent.Split(' ')[0];
        if (info.Length > limit)
            throw new UpdateRejectedException(UpdateRejection.TooLarge, file, $"the {parentRole} lists {info.Length} bytes for it, more than the {limit} allowed.");
        byte[] bytes = await fetcher.FetchAsync(file, info.Length ?? limit, ct).ConfigureAwait(false)
            ?? throw new UpdateRejectedException(UpdateRejection.Unavailable, file, $"the {parentRole} names it, but the feed does not have it.");
        if (!MetadataFormat.Matches(bytes, info.Length, info.Hashes))
            throw new UpdateRejectedException(UpdateRejection.Mismatch, file,
                $"its length or hash is not what {parent} lists ({bytes.Length} bytes, listed {info.Length?.ToString(CultureInfo.InvariantCulture) ?? "any"}): mixed or altered metadata.");
        SignedMetadata<T> m = MetadataFormat.Parse<T>(bytes, file);
        m.Verify(root, role, file);
        if (m.Signed.Version != info.Version)
            throw new UpdateRejectedException(UpdateRejection.Mismatch, file,
                $"it is {SignedMetadata<T>.Name(role)} version {m.Signed.Version}, but the {parentRole} names version {info.Version} (mix-and-match).");
        return m;
    }

    /// <summary>A stored role's metadata, verified again with the current root; unusable (or rotated-away) files count as absent.</summary>
    private SignedMetadata<T>? LoadTrusted<T>(Role role, RootMetadata root) where T : Metadata
    {
        byte[]? bytes = store.ReadTrusted(role);
        if (bytes is null)
            return null;
        try
        {
            var m = MetadataFormat.Parse<T>(bytes, "trusted " + SignedMetadata<T>.Name(role) + ".json");
            m.Verify(root, role, "trusted " + SignedMetadata<T>.Name(role) + ".json");
            return m;
        }
        catch (UpdateRejectedException)
        {
            return null;
        }
    }

    private static bool SameKeys(RootMetadata a, RootMetadata b, Role role) =>
        a.Roles[role].KeyIds.Order(StringComparer.Ordinal).SequenceEqual(b.Roles[role].KeyIds.Order(StringComparer.Ordinal));
}
