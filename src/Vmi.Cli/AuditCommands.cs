using System.CommandLine;
using Vmi.Audit;
using Vmi.Updates;

namespace Vmi.Cli;

/// <summary>
/// <c>vmi audit keygen | verify | show</c>, and the audit trail the other commands write to when
/// <c>VMI_AUDIT_LOG</c> and <c>VMI_AUDIT_KEY</c> are set (the key belongs to the account that runs Vmi's
/// services, not to the administrators: they verify with the public half).
/// </summary>
internal static class AuditCommands
{
    public static Command Create()
    {
        var cmd = new Command("audit", "The tamper-evident audit trail: create its signing key, verify a log, show its last records. Nothing edits or deletes records.");

        var keygen = new Command("keygen", "Create the audit signing key (FILE, mode 0600, for the service account) and FILE.pub (for verifiers).");
        var output = new Option<string>("--out") { Description = "The private key file to create.", Required = true };
        keygen.Options.Add(output);
        keygen.SetAction(parse => AuditCli.Keygen(parse.GetValue(output)!, Console.Out, Console.Error));
        cmd.Subcommands.Add(keygen);

        var verify = new Command("verify", "Check a log's hash chain and signed checkpoints; names the first changed, removed, inserted, reordered or truncated record. Exit 0 intact, 1 tampered, 2 unreadable.");
        var log = new Argument<string>("LOG") { Description = "The audit log." };
        var key = new Option<string>("--key") { Description = "The audit public key (KEY.pub).", Required = true };
        var expect = new Option<long?>("--expect-seq") { Description = "The last sequence number known from elsewhere (detects truncation back to a checkpoint)." };
        var live = new Option<bool>("--live") { Description = "The log is still being written: records after the last checkpoint are a warning, not tampering." };
        verify.Arguments.Add(log);
        foreach (Option o in new Option[] { key, expect, live })
            verify.Options.Add(o);
        verify.SetAction(parse => AuditCli.Verify(parse.GetValue(log)!, parse.GetValue(key)!, Console.Out, Console.Error, parse.GetValue(expect), parse.GetValue(live)));
        cmd.Subcommands.Add(verify);

        var show = new Command("show", "Print the last records of a log (not verified: use verify).");
        var showLog = new Argument<string>("LOG") { Description = "The audit log." };
        var last = new Option<int>("--last") { Description = "How many records (default 20).", DefaultValueFactory = _ => 20 };
        show.Arguments.Add(showLog);
        show.Options.Add(last);
        show.SetAction(parse => AuditCli.Show(parse.GetValue(showLog)!, parse.GetValue(last), Console.Out));
        cmd.Subcommands.Add(show);
        return cmd;
    }
}

/// <summary>
/// The audit trail of this process: the log named by <c>VMI_AUDIT_LOG</c>, signed with <c>VMI_AUDIT_KEY</c>.
/// Without them nothing is recorded (and nothing is said); with only one of them every command stops with
/// a clear error rather than run unaudited.
/// </summary>
internal sealed class AuditTrail : IDisposable
{
    private static readonly Lazy<AuditTrail?> Current = new(Open, LazyThreadSafetyMode.ExecutionAndPublication);
    private readonly AuditLog _log;
    private readonly SigningKey _key;
    private readonly Lock _gate = new();

    private AuditTrail(AuditLog log, SigningKey key)
    {
        _log = log;
        _key = key;
        AppDomain.CurrentDomain.ProcessExit += (_, _) => Dispose();
    }

    /// <summary>The process's trail, or null when auditing is not configured.</summary>
    public static AuditTrail? Instance => Current.Value;

    private static AuditTrail? Open()
    {
        string? path = Environment.GetEnvironmentVariable("VMI_AUDIT_LOG");
        string? keyFile = Environment.GetEnvironmentVariable("VMI_AUDIT_KEY");
        if (string.IsNullOrEmpty(path) && string.IsNullOrEmpty(keyFile))
            return null;
        if (string.IsNullOrEmpty(path) || string.IsNullOrEmpty(keyFile))
            throw new Vmi.Core.VmiException("auditing needs both VMI_AUDIT_LOG (the log) and VMI_AUDIT_KEY (the signing key from 'vmi audit keygen'); only one is set.");
        SigningKey key = SigningKey.Load(keyFile);
        try
        {
            return new AuditTrail(AuditLog.Open(path, key), key);
        }
        catch
        {
            key.Dispose();
            throw;
        }
    }

    /// <summary>The actor of this process's records: the command line's user.</summary>
    public static string Actor => "cli:" + Environment.UserName;

    /// <summary>Appends one record (no-op without an audit trail).</summary>
    public static void Record(string action, string subject, AuditOutcome outcome, IReadOnlyDictionary<string, string>? details = null)
    {
        if (Instance is not AuditTrail trail)
            return;
        lock (trail._gate)
            trail._log.Append(Actor, action, subject, outcome, details);
    }

    /// <summary>Runs a management command and records it: success, failure (with the error) or rejection.</summary>
    public static async Task<int> RunAsync(string action, string subject, Func<Task<int>> body, IReadOnlyDictionary<string, string>? details = null)
    {
        _ = Instance; // a misconfigured trail stops the command before it acts
        int rc;
        try
        {
            rc = await body().ConfigureAwait(false);
        }
        catch (Exception e) when (e is Vmi.Core.VmiException or UsageException)
        {
            Record(action, subject, e is UpdateRejectedException ? AuditOutcome.Rejected : AuditOutcome.Failure,
                With(details, "error", e.Message));
            throw;
        }
        Record(action, subject, rc == 0 ? AuditOutcome.Success : AuditOutcome.Failure, With(details, "exit", rc.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        return rc;
    }

    public static Task<int> Run(string action, string subject, Func<int> body, IReadOnlyDictionary<string, string>? details = null) =>
        RunAsync(action, subject, () => Task.FromResult(body()), details);

    private static Dictionary<string, string> With(IReadOnlyDictionary<string, string>? details, string key, string value)
    {
        var d = details is null ? new Dictionary<string, string>(StringComparer.Ordinal) : new Dictionary<string, string>(details, StringComparer.Ordinal);
        d[key] = value;
        return d;
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _log.Dispose();
            _key.Dispose();
        }
    }
}
