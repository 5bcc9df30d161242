using System.Collections.Concurrent;
using Vmi.Signatures.Yara;
using Vmi.Updates;

namespace Vmi.Detectors.Av;

/// <summary>
/// The rules of the bundle in force in a rule-update state folder (<c>vmi rules update</c>), swapped for
/// the next bundle as soon as one is installed — by this process or another. The new bundle is compiled
/// off the detector's path and then swapped in one write, so a detector switches between two events: the
/// event in progress finishes with the old rules, the next one starts with the new ones, none is skipped.
/// A bundle that does not compile is never swapped in; the last good set stays.
/// </summary>
public sealed class BundleSignatureSource : ISignatureSource
{
    private static readonly ConcurrentDictionary<string, BundleSignatureSource> Shared = new(StringComparer.Ordinal);

    private readonly RuleStore _store;
    private readonly SignatureSet _fallback;
    private readonly Lock _reloadGate = new();
    private readonly Lock _loadGate = new();
    private SignatureSet _current;
    private long? _loadedVersion;
    private long _nextCheck;
    private DateTime _stamp;
    private Task _reload = Task.CompletedTask;
    private bool _reloadQueued;

    /// <param name="store">The state folder.</param>
    /// <param name="fallback">Rules used while no bundle is installed (the built-in rules, say).</param>
    /// <param name="checkInterval">How often <see cref="Current"/> looks whether another process installed a bundle.</param>
    public BundleSignatureSource(RuleStore store, SignatureSet fallback, TimeSpan? checkInterval = null)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(fallback);
        _store = store;
        _fallback = fallback;
        CheckInterval = checkInterval ?? TimeSpan.FromSeconds(1);
        _current = fallback;
        _stamp = store.StateStamp;
        try
        {
            Load();
        }
        catch (UpdateRejectedException e)
        {
            LastError = e.Message;
        }
    }

    /// <summary>One source per state folder in this process (compiled once, shared by every VM's detector).</summary>
    public static BundleSignatureSource For(string stateDirectory, SignatureSet fallback) =>
        Shared.GetOrAdd(Path.GetFullPath(stateDirectory), d => new BundleSignatureSource(RuleStore.Open(d), fallback));

    public TimeSpan CheckInterval { get; }

    /// <summary>Why the last bundle could not be loaded (null when it was, or none is installed).</summary>
    public string? LastError { get; private set; }

    /// <summary>Sets put in force so far (the first load counts).</summary>
    public int Swaps { get; private set; }

    /// <summary>Raised after a new set is in force (on the thread that compiled it).</summary>
    public event Action<SignatureSet>? Swapped;

    public SignatureSet Current
    {
        get
        {
            long now = Environment.TickCount64;
            if (now >= Volatile.Read(ref _nextCheck))
            {
                Volatile.Write(ref _nextCheck, now + (long)CheckInterval.TotalMilliseconds);
                DateTime stamp = _store.StateStamp;
                if (stamp != _stamp)
                {
                    _stamp = stamp;
                    ReloadInBackground();
                }
            }
            return Volatile.Read(ref _current);
        }
    }

    /// <summary>Compiles the bundle in force now if it is not the loaded one; returns when the swap is done.</summary>
    /// <returns>True when a new set went into force.</returns>
    public bool Reload()
    {
        try
        {
            return Load();
        }
        catch (UpdateRejectedException e)
        {
            LastError = e.Message;
            return false;
        }
    }

    private void ReloadInBackground()
    {
        lock (_reloadGate)
        {
            if (_reload.IsCompleted)
            {
                _reload = Task.Run(Reload);
            }
            else if (!_reloadQueued)
            {
                // The reload running may have read the state before this change: one more runs after it
                // (one queued is enough, it reads the newest state), or the change would be lost.
                _reloadQueued = true;
                _reload = _reload.ContinueWith(_ =>
                {
                    lock (_reloadGate)
                        _reloadQueued = false;
                    return Reload();
                }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
            }
        }
    }

    /// <summary>Waits for a background reload started by <see cref="Current"/> (tests, shutdown).</summary>
    public Task WaitForReloadAsync()
    {
        lock (_reloadGate)
            return _reload;
    }

    private bool Load()
    {
        lock (_loadGate)
        {
            InstalledBundle? bundle = _store.Active;
            if (bundle is null || bundle.Version == _loadedVersion)
                return false;
            var yara = bundle.FilesOfKind("yara").Select(f => f.Path).ToList();
            SignatureSet set;
            try
            {
                YaraRules rules = yara.Count == 0 ? _fallback.Rules : YaraRules.CompileFiles(yara, new YaraCompileOptions { AllowIncludes = false });
                string signers = string.Join(",", bundle.SignedBy.Select(k => k.Length > 8 ? k[..8] : k));
                set = new SignatureSet(rules, bundle.Version.ToString(System.Globalization.CultureInfo.InvariantCulture),
                    $"{bundle.Feed} (bundle {bundle.Version}, signed by {signers})");
            }
            catch (Exception e) when (e is YaraCompileException or IOException or UnauthorizedAccessException)
            {
                LastError = $"bundle {bundle.Version} does not load, the previous rules stay in force: {e.Message}";
                _loadedVersion = bundle.Version; // do not retry the same broken bundle on every event
                return false;
            }
            Volatile.Write(ref _current, set);
            _loadedVersion = bundle.Version;
            LastError = null;
            Swaps++;
            Swapped?.Invoke(set);
            return true;
        }
    }

    /// <summary>
    /// The check <c>vmi rules publish</c> and <c>vmi rules update</c> run before a bundle is published or put
    /// in force: its YARA files must compile together. Network rule files are carried as they are (their
    /// engine validates them when it loads them). Returns null when good, else the compiler's message.
    /// </summary>
    public static string? Validate(IReadOnlyList<BundleFile> files)
    {
        ArgumentNullException.ThrowIfNull(files);
        var yara = files.Where(f => f.Kind == "yara").Select(f => f.Path).ToList();
        if (yara.Count == 0)
            return null;
        try
        {
            YaraRules.CompileFiles(yara, new YaraCompileOptions { AllowIncludes = false });
            return null;
        }
        catch (YaraCompileException e)
        {
            return e.Message;
        }
    }
}
