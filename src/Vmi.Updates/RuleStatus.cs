using System.Globalization;
using System.Text;

namespace Vmi.Updates;

/// <summary>A trusted role as the status shows it.</summary>
public sealed record RoleStatus(string Role, long Version, DateTimeOffset Expires, bool Expired, IReadOnlyList<string> KeyIds, int Threshold);

/// <summary>What <c>vmi rules status</c> shows: the bundle in force, where it came from, who signed it, every role's expiry, the last checks.</summary>
public sealed record RuleStatus
{
    public required string StateDirectory { get; init; }
    public string? Feed { get; init; }
    public InstalledBundle? Active { get; init; }
    public IReadOnlyList<RoleStatus> Roles { get; init; } = [];
    public DateTimeOffset? LastCheck { get; init; }
    public string? LastOutcome { get; init; }
    public string? LastError { get; init; }
    public IReadOnlyList<UpdateAuditRecord> RecentChecks { get; init; } = [];
    /// <summary>Warnings: expired or soon-expiring metadata, no bundle, a failing feed.</summary>
    public IReadOnlyList<string> Warnings { get; init; } = [];

    public static RuleStatus Read(RuleStore store, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(store);
        StoreState state = store.State;
        var roles = new List<RoleStatus>();
        var warnings = new List<string>();
        RootMetadata? root = null;
        if (store.ReadTrusted(Role.Root) is byte[] rootBytes)
            root = MetadataFormat.Parse<RootMetadata>(rootBytes, "trusted root.json").Signed;
        foreach (Role role in Enum.GetValues<Role>())
        {
            if (store.ReadTrusted(role) is not byte[] bytes)
                continue;
            Metadata m = role switch
            {
                Role.Root => root!,
                Role.Timestamp => MetadataFormat.Parse<TimestampMetadata>(bytes, "trusted timestamp.json").Signed,
                Role.Snapshot => MetadataFormat.Parse<SnapshotMetadata>(bytes, "trusted snapshot.json").Signed,
                _ => MetadataFormat.Parse<TargetsMetadata>(bytes, "trusted targets.json").Signed,
            };
            RoleKeys? keys = root?.Roles[role];
            bool expired = m.IsExpired(now);
            string name = role.ToString().ToLowerInvariant();
            roles.Add(new RoleStatus(name, m.Version, m.Expires, expired, keys?.KeyIds ?? [], keys?.Threshold ?? 0));
            if (expired)
                warnings.Add($"{name} v{m.Version} expired {MetadataFormat.FormatTime(m.Expires)}: updates fail until the feed re-signs it");
            else if (m.Expires - now < TimeSpan.FromHours(role == Role.Timestamp ? 2 : 72))
                warnings.Add($"{name} v{m.Version} expires {MetadataFormat.FormatTime(m.Expires)} (in {Human(m.Expires - now)})");
        }
        InstalledBundle? active = store.Active;
        if (root is null)
            warnings.Add("no trusted root: run 'vmi rules update --feed URL --root ROOT.json' once");
        else if (active is null)
            warnings.Add("no bundle installed: detectors use their built-in or configured rules");
        if (state.LastOutcome == "rejected")
            warnings.Add("the last check was rejected: " + state.LastError);
        return new RuleStatus
        {
            StateDirectory = store.Directory,
            Feed = state.Feed,
            Active = active,
            Roles = roles,
            LastCheck = state.LastCheck,
            LastOutcome = state.LastOutcome,
            LastError = state.LastError,
            RecentChecks = store.ReadAudit(5),
            Warnings = warnings,
        };
    }

    public string ToText()
    {
        var s = new StringBuilder();
        var ci = CultureInfo.InvariantCulture;
        s.AppendLine(ci, $"state:   {StateDirectory}");
        s.AppendLine(ci, $"feed:    {Feed ?? "(none)"}");
        if (Active is { } b)
        {
            s.AppendLine(ci, $"bundle:  {b.Version}, installed {MetadataFormat.FormatTime(b.InstalledAt)}, signed by {string.Join(", ", b.SignedBy.Select(k => k[..Math.Min(8, k.Length)]))} (targets role of root v{b.RootVersion}), valid until {MetadataFormat.FormatTime(b.TargetsExpires)}");
            foreach (BundleFile f in b.Files)
                s.AppendLine(ci, $"         {f.Name}  {f.Kind}  {f.Length} bytes  sha256 {f.Sha256[..16]}…");
        }
        else
        {
            s.AppendLine("bundle:  none");
        }
        foreach (RoleStatus r in Roles)
            s.AppendLine(ci, $"{r.Role + ":",-11}v{r.Version}, expires {MetadataFormat.FormatTime(r.Expires)}{(r.Expired ? " (EXPIRED)" : "")}, {r.Threshold} of {r.KeyIds.Count} keys ({string.Join(", ", r.KeyIds.Select(k => k[..8]))})");
        if (LastCheck is DateTimeOffset lc)
            s.AppendLine(ci, $"checked: {MetadataFormat.FormatTime(lc)}: {LastOutcome}{(LastError is null ? "" : " — " + LastError)}");
        foreach (UpdateAuditRecord a in RecentChecks)
            s.AppendLine(ci, $"  {MetadataFormat.FormatTime(a.Time)} {a.Outcome}{(a.Rejection is null ? "" : " (" + a.Rejection + ")")}: {a.Message}");
        foreach (string w in Warnings)
            s.AppendLine("warning: " + w);
        return s.ToString();
    }

    private static string Human(TimeSpan t) => t.TotalDays >= 1 ? $"{t.TotalDays:0.#} days" : t.TotalHours >= 1 ? $"{t.TotalHours:0.#} h" : $"{Math.Max(0, t.TotalMinutes):0} min";
}
