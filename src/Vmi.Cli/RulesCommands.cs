using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Vmi.Detectors.Av;
using Vmi.Updates;

namespace Vmi.Cli;

/// <summary>
/// <c>vmi rules …</c>: signed rule feeds. Publisher side: keygen, init, publish, timestamp, rotate-root.
/// Client side: update (the TUF workflow, atomic install) and status.
/// </summary>
internal static class RulesCommands
{
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    public static Command Create()
    {
        var cmd = new Command("rules", "Signed, rollback-protected rule bundles: publish a feed, update from one, show what is in force.");
        cmd.Subcommands.Add(Keygen());
        cmd.Subcommands.Add(Init());
        cmd.Subcommands.Add(Publish());
        cmd.Subcommands.Add(Timestamp());
        cmd.Subcommands.Add(RotateRoot());
        cmd.Subcommands.Add(Update());
        cmd.Subcommands.Add(Status());
        return cmd;
    }

    private static Option<string> FeedDir() => new("--feed") { Description = "The feed folder (what a static web server serves).", Required = true };

    private static Option<string[]> Keys(string name, string description, bool required = false) =>
        new(name) { Description = description, AllowMultipleArgumentsPerToken = true, Required = required };

    private static Option<string[]> ValidFor() =>
        new("--valid-for") { Description = "How long new metadata stays valid, per role: root=365d targets=90d snapshot=7d timestamp=1d (units d, h, m).", AllowMultipleArgumentsPerToken = true };

    private static Option<string[]> Thresholds() =>
        new("--threshold") { Description = "Signatures a role needs: root=2 targets=1 … (default 1 each).", AllowMultipleArgumentsPerToken = true };

    private static Command Keygen()
    {
        var cmd = new Command("keygen", "Create an Ed25519 signing key: FILE (private, mode 0600) and FILE.pub.");
        var output = new Option<string>("--out") { Description = "The private key file to create (never overwritten).", Required = true };
        cmd.Options.Add(output);
        cmd.SetAction(parse =>
        {
            using SigningKey key = SigningKey.Generate();
            string path = parse.GetValue(output)!;
            key.Save(path);
            Console.WriteLine($"{key.KeyId}  {path} (public: {path}.pub)");
            return CommandRunner.ExitOk;
        });
        return cmd;
    }

    private static Command Init()
    {
        var cmd = new Command("init", "Create a feed's first root: who signs each role. The root keys sign it (and are needed again only to rotate keys: keep them offline).");
        var feed = FeedDir();
        var rootKeys = Keys("--root-key", "Root private key files (they sign the root).", required: true);
        var targets = Keys("--targets-key", "Targets keys (public .pub or private files).", required: true);
        var snapshot = Keys("--snapshot-key", "Snapshot keys.", required: true);
        var timestamp = Keys("--timestamp-key", "Timestamp keys.", required: true);
        var threshold = Thresholds();
        var valid = ValidFor();
        foreach (Option o in new Option[] { feed, rootKeys, targets, snapshot, timestamp, threshold, valid })
            cmd.Options.Add(o);
        cmd.SetAction(parse => AuditTrail.Run("rules.init", parse.GetValue(feed)!, () =>
        {
            List<SigningKey> signers = LoadPrivate(parse.GetValue(rootKeys));
            try
            {
                var plan = new RootPlan(new Dictionary<Role, IReadOnlyList<UpdatePublicKey>>
                {
                    [Role.Root] = [.. signers.Select(s => s.Public)],
                    [Role.Targets] = LoadPublic(parse.GetValue(targets)),
                    [Role.Snapshot] = LoadPublic(parse.GetValue(snapshot)),
                    [Role.Timestamp] = LoadPublic(parse.GetValue(timestamp)),
                }, ParseThresholds(parse.GetValue(threshold)));
                RootMetadata root = new FeedPublisher(parse.GetValue(feed)!).Initialize(plan, signers, ParseExpiries(parse.GetValue(valid)));
                Console.WriteLine($"created root v{root.Version} in {Path.GetFullPath(parse.GetValue(feed)!)}; expires {MetadataFormat.FormatTime(root.Expires)}");
                Console.WriteLine($"give clients {Path.Combine(Path.GetFullPath(parse.GetValue(feed)!), "1.root.json")} once, out of band: vmi rules update --feed URL --root 1.root.json");
            }
            finally
            {
                signers.ForEach(s => s.Dispose());
            }
            return CommandRunner.ExitOk;
        }).GetAwaiter().GetResult());
        return cmd;
    }

    private static Command Publish()
    {
        var cmd = new Command("publish", "Publish a new bundle: the given rule files (.yar/.yara YARA, .rules network) become the feed's next version. YARA files must compile.");
        var feed = FeedDir();
        var rules = Keys("--rules", "Rule files of the bundle.", required: true);
        var targets = Keys("--targets-key", "Targets private key files.", required: true);
        var snapshot = Keys("--snapshot-key", "Snapshot private key files.", required: true);
        var timestamp = Keys("--timestamp-key", "Timestamp private key files.", required: true);
        var valid = ValidFor();
        foreach (Option o in new Option[] { feed, rules, targets, snapshot, timestamp, valid })
            cmd.Options.Add(o);
        cmd.SetAction(parse => AuditTrail.Run("rules.publish", parse.GetValue(feed)!, () =>
        {
            var t = LoadPrivate(parse.GetValue(targets));
            var s = LoadPrivate(parse.GetValue(snapshot));
            var ts = LoadPrivate(parse.GetValue(timestamp));
            try
            {
                var files = (parse.GetValue(rules) ?? []).Select(f => new RuleFileInput(f)).ToList();
                foreach (RuleFileInput f in files)
                {
                    if (!File.Exists(f.Path))
                        throw new UsageException($"rule file {f.Path} does not exist.");
                }
                TargetsMetadata published = new FeedPublisher(parse.GetValue(feed)!).Publish(files, t, s, ts, ParseExpiries(parse.GetValue(valid)), BundleSignatureSource.Validate);
                Console.WriteLine($"published bundle {published.Version}: {string.Join(", ", published.Targets.Select(x => $"{x.Name} ({x.Kind}, {x.Length} bytes)"))}; targets expire {MetadataFormat.FormatTime(published.Expires)}");
            }
            finally
            {
                foreach (SigningKey k in t.Concat(s).Concat(ts))
                    k.Dispose();
            }
            return CommandRunner.ExitOk;
        }).GetAwaiter().GetResult());
        return cmd;
    }

    private static Command Timestamp()
    {
        var cmd = new Command("timestamp", "Re-sign the feed's timestamp with a new expiry (run it more often than the timestamp expires, e.g. from cron).");
        var feed = FeedDir();
        var timestamp = Keys("--timestamp-key", "Timestamp private key files.", required: true);
        var valid = ValidFor();
        foreach (Option o in new Option[] { feed, timestamp, valid })
            cmd.Options.Add(o);
        cmd.SetAction(parse => AuditTrail.Run("rules.timestamp", parse.GetValue(feed)!, () =>
        {
            var keys = LoadPrivate(parse.GetValue(timestamp));
            try
            {
                TimestampMetadata ts = new FeedPublisher(parse.GetValue(feed)!).RefreshTimestamp(keys, ParseExpiries(parse.GetValue(valid)).Timestamp);
                Console.WriteLine($"timestamp v{ts.Version} (snapshot v{ts.Snapshot.Version}) valid until {MetadataFormat.FormatTime(ts.Expires)}");
            }
            finally
            {
                keys.ForEach(k => k.Dispose());
            }
            return CommandRunner.ExitOk;
        }).GetAwaiter().GetResult());
        return cmd;
    }

    private static Command RotateRoot()
    {
        var cmd = new Command("rotate-root", "Write the next root version with new keys. It must be signed by a threshold of the current root keys and of the new ones (give both with --sign-key).");
        var feed = FeedDir();
        var sign = Keys("--sign-key", "Private root keys that sign the new root: old and new.", required: true);
        var rootKeys = Keys("--root-key", "The new root's keys (public or private files; default: unchanged).");
        var targets = Keys("--targets-key", "The new targets keys (default: unchanged).");
        var snapshot = Keys("--snapshot-key", "The new snapshot keys (default: unchanged).");
        var timestamp = Keys("--timestamp-key", "The new timestamp keys (default: unchanged).");
        var threshold = Thresholds();
        var valid = ValidFor();
        foreach (Option o in new Option[] { feed, sign, rootKeys, targets, snapshot, timestamp, threshold, valid })
            cmd.Options.Add(o);
        cmd.SetAction(parse => AuditTrail.Run("rules.rotate-root", parse.GetValue(feed)!, () =>
        {
            var signers = LoadPrivate(parse.GetValue(sign));
            try
            {
                var publisher = new FeedPublisher(parse.GetValue(feed)!);
                RootMetadata current = publisher.LatestRoot();
                IReadOnlyList<UpdatePublicKey> Or(string[]? files, Role role) => files is { Length: > 0 } ? LoadPublic(files) : [.. current.KeysOf(role)];
                var thresholds = current.Roles.ToDictionary(r => r.Key, r => r.Value.Threshold);
                foreach (var (role, n) in ParseThresholds(parse.GetValue(threshold)))
                    thresholds[role] = n;
                var plan = new RootPlan(new Dictionary<Role, IReadOnlyList<UpdatePublicKey>>
                {
                    [Role.Root] = Or(parse.GetValue(rootKeys), Role.Root),
                    [Role.Targets] = Or(parse.GetValue(targets), Role.Targets),
                    [Role.Snapshot] = Or(parse.GetValue(snapshot), Role.Snapshot),
                    [Role.Timestamp] = Or(parse.GetValue(timestamp), Role.Timestamp),
                }, thresholds);
                RootMetadata next = publisher.RotateRoot(plan, signers, ParseExpiries(parse.GetValue(valid)));
                Console.WriteLine($"root v{next.Version} written; expires {MetadataFormat.FormatTime(next.Expires)}. Publish or re-sign the timestamp with the new keys if they changed.");
            }
            finally
            {
                signers.ForEach(k => k.Dispose());
            }
            return CommandRunner.ExitOk;
        }).GetAwaiter().GetResult());
        return cmd;
    }

    private static Option<string> StateOption() => new("--state") { Description = "Rule state folder (default $VMI_RULES_DIR or ~/.local/share/vmi/rules)." };

    private static Command Update()
    {
        var cmd = new Command("update", "Fetch and verify the feed's newest bundle and put it in force (atomically). Any rejection leaves the bundle in force as it was; every check is audited.");
        var feed = new Option<string>("--feed") { Description = "https:// URL or folder of the feed (default: the one used last)." };
        var root = new Option<string>("--root") { Description = "The feed's root.json, obtained out of band: needed on the first update only." };
        var state = StateOption();
        var ca = new Option<string>("--ca") { Description = "PEM certificate authority for the feed server (instead of the system's)." };
        foreach (Option o in new Option[] { feed, root, state, ca })
            cmd.Options.Add(o);
        cmd.SetAction(async (parse, ct) =>
        {
            _ = AuditTrail.Instance; // a half-configured audit trail stops the update before it acts
            RuleStore store = RuleStore.Open(parse.GetValue(state) ?? RuleStore.DefaultDirectory());
            string location = parse.GetValue(feed) ?? store.State.Feed
                ?? throw new UsageException("no feed yet: give --feed URL (and --root FILE the first time).");
            IFeedFetcher fetcher = FeedFetchers.Create(location, parse.GetValue(ca));
            try
            {
                var client = new RuleUpdateClient(store, fetcher, new UpdateClientOptions { Validate = BundleSignatureSource.Validate });
                if (parse.GetValue(root) is string rootFile)
                {
                    if (!File.Exists(rootFile))
                        throw new UsageException($"root file {rootFile} does not exist.");
                    client.Initialize(await File.ReadAllBytesAsync(rootFile, ct).ConfigureAwait(false), Path.GetFileName(rootFile));
                }
                UpdateResult result = await client.UpdateAsync(ct).ConfigureAwait(false);
                AuditTrail.Record("rules.update", location, Vmi.Audit.AuditOutcome.Success, new Dictionary<string, string>
                {
                    ["result"] = result.Installed ? "installed" : "up-to-date", ["message"] = result.Message,
                    ["bundle_in_force"] = result.Active?.Version.ToString(CultureInfo.InvariantCulture) ?? "none",
                });
                Console.WriteLine(result.Message);
                return CommandRunner.ExitOk;
            }
            catch (UpdateRejectedException e)
            {
                InstalledBundle? active = store.Active;
                AuditTrail.Record("rules.update", location, Vmi.Audit.AuditOutcome.Rejected, new Dictionary<string, string>
                {
                    ["rejection"] = e.KindName, ["error"] = e.Message, ["bundle_in_force"] = active?.Version.ToString(CultureInfo.InvariantCulture) ?? "none",
                });
                Console.Error.WriteLine($"vmi: update rejected ({e.KindName}): {e.Message}");
                Console.Error.WriteLine(active is null ? "vmi: no bundle is installed." : $"vmi: bundle {active.Version} stays in force.");
                return CommandRunner.ExitError;
            }
            finally
            {
                (fetcher as IDisposable)?.Dispose();
            }
        });
        return cmd;
    }

    private static Command Status()
    {
        var cmd = new Command("status", "What is in force: bundle, feed, signers, every role's version and expiry, the last checks.");
        var state = StateOption();
        var json = new Option<bool>("--json") { Description = "Print JSON." };
        cmd.Options.Add(state);
        cmd.Options.Add(json);
        cmd.SetAction(parse =>
        {
            RuleStore store = RuleStore.Open(parse.GetValue(state) ?? RuleStore.DefaultDirectory());
            RuleStatus status = RuleStatus.Read(store, DateTimeOffset.UtcNow);
            if (parse.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(status, Json));
            else
                Console.Write(status.ToText());
            return CommandRunner.ExitOk;
        });
        return cmd;
    }

    /// <summary>The detectors' options with <c>av-signature.rulesState</c> set to <paramref name="directory"/>.</summary>
    internal static JsonElement WithRulesState(JsonElement? detectors, string directory)
    {
        var root = detectors is JsonElement e && e.ValueKind == JsonValueKind.Object
            ? System.Text.Json.Nodes.JsonNode.Parse(e.GetRawText())!.AsObject()
            : [];
        if (root[AvDetector.Id] is not System.Text.Json.Nodes.JsonObject av)
        {
            av = [];
            root[AvDetector.Id] = av;
        }
        av["rulesState"] = Path.GetFullPath(directory);
        return JsonSerializer.SerializeToElement(root);
    }

    /// <summary>
    /// Checks the feed on a schedule while a monitor runs; each new bundle is compiled and swapped into the
    /// running AV detectors at once. Every check is one line on <paramref name="log"/> (and one audit record).
    /// </summary>
    internal static async Task RunUpdatesAsync(string stateDirectory, string feed, string? ca, TimeSpan interval, TextWriter log, CancellationToken ct)
    {
        if (interval < TimeSpan.FromSeconds(1))
            throw new UsageException("--update-interval must be at least 1 second (0.017 minutes).");
        RuleStore store = RuleStore.Open(stateDirectory);
        IFeedFetcher fetcher = FeedFetchers.Create(feed, ca);
        try
        {
            var client = new RuleUpdateClient(store, fetcher, new UpdateClientOptions { Validate = BundleSignatureSource.Validate });
            BundleSignatureSource source = BundleSignatureSource.For(stateDirectory, SignatureSet.BuiltIn);
            var schedule = new UpdateScheduleOptions { Interval = interval, RetryMin = TimeSpan.FromTicks(Math.Min(interval.Ticks, TimeSpan.FromMinutes(1).Ticks)) };
            var scheduler = new UpdateScheduler(client, schedule, check =>
            {
                AuditTrail.Record("rules.update", feed, check.Rejection is null ? Vmi.Audit.AuditOutcome.Success : Vmi.Audit.AuditOutcome.Rejected, new Dictionary<string, string>
                {
                    ["scheduled"] = "true",
                    ["result"] = check.Rejection?.KindName ?? (check.Result!.Installed ? "installed" : "up-to-date"),
                    ["message"] = check.Rejection?.Message ?? check.Result!.Message,
                });
                if (check.Rejection is { } r)
                {
                    log.WriteLine($"vmi rules: update rejected ({r.KindName}): {r.Message}; {(store.Active is { } a ? "bundle " + a.Version : "no bundle")} stays in force; next check in {check.NextIn.TotalMinutes:0.#} min");
                    return;
                }
                if (check.Result is { Installed: true } result)
                {
                    source.Reload();
                    // A detector's own check may have loaded it first: what matters is the set in force now.
                    bool inForce = source.Current.Version == result.Active?.Version.ToString(CultureInfo.InvariantCulture);
                    log.WriteLine($"vmi rules: {result.Message}; {(inForce ? "the detectors use it from their next event" : "not loaded, the previous rules stay: " + (source.LastError ?? "unknown reason"))}");
                }
            });
            await scheduler.RunAsync(ct).ConfigureAwait(false);
        }
        finally
        {
            (fetcher as IDisposable)?.Dispose();
        }
    }

    private static List<SigningKey> LoadPrivate(string[]? files)
    {
        var keys = new List<SigningKey>();
        try
        {
            foreach (string f in files ?? [])
                keys.Add(SigningKey.Load(f));
        }
        catch
        {
            keys.ForEach(k => k.Dispose());
            throw;
        }
        return keys;
    }

    private static List<UpdatePublicKey> LoadPublic(string[]? files) => [.. (files ?? []).Select(SigningKey.LoadPublic)];

    private static Dictionary<Role, int> ParseThresholds(string[]? values)
    {
        var result = new Dictionary<Role, int>();
        foreach (string v in values ?? [])
        {
            var (role, text) = Split(v, "--threshold");
            if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n < 1)
                throw new UsageException($"--threshold {v}: the count must be a positive number.");
            result[role] = n;
        }
        return result;
    }

    private static Expiries ParseExpiries(string[]? values)
    {
        var e = new Expiries();
        foreach (string v in values ?? [])
        {
            var (role, text) = Split(v, "--valid-for");
            TimeSpan span = ParseDuration(text) ?? throw new UsageException($"--valid-for {v}: use a number with d, h or m (e.g. 7d).");
            e = role switch
            {
                Role.Root => e with { Root = span },
                Role.Targets => e with { Targets = span },
                Role.Snapshot => e with { Snapshot = span },
                _ => e with { Timestamp = span },
            };
        }
        return e;
    }

    private static (Role, string) Split(string v, string option)
    {
        int eq = v.IndexOf('=', StringComparison.Ordinal);
        if (eq <= 0 || !Enum.TryParse(v[..eq], ignoreCase: true, out Role role) || !Enum.IsDefined(role))
            throw new UsageException($"{option} {v}: use ROLE=VALUE with ROLE root, targets, snapshot or timestamp.");
        return (role, v[(eq + 1)..]);
    }

    internal static TimeSpan? ParseDuration(string text)
    {
        if (text.Length < 2 || !double.TryParse(text[..^1], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double n) || n <= 0)
            return null;
        return text[^1] switch
        {
            'd' => TimeSpan.FromDays(n),
            'h' => TimeSpan.FromHours(n),
            'm' => TimeSpan.FromMinutes(n),
            _ => null,
        };
    }
}
