using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Vmi.Core;
using Vmi.Events;
using Vmi.Pipeline;

namespace Vmi.Detectors.Linux;

/// <summary>A detector's configuration is wrong: an unknown id, a misspelled option, a value out of range.</summary>
public sealed class DetectorConfigurationException : VmiException
{
    public DetectorConfigurationException(string detectorId, string message)
        : base($"detector '{detectorId}': {message}")
    {
        DetectorId = detectorId;
    }

    public DetectorConfigurationException(string detectorId, string message, Exception innerException)
        : base($"detector '{detectorId}': {message}", innerException)
    {
        DetectorId = detectorId;
    }

    /// <summary>The detector id (or the configuration key) the problem is in.</summary>
    public string DetectorId { get; }
}

/// <summary>One detector the catalog can create: its id, its options type and how to build it from options.</summary>
/// <param name="Id">The detector's id (<c>syscall-hook</c>): also its key in the configuration.</param>
/// <param name="Title">Human name.</param>
/// <param name="SupportedOs">Guests it supports (checked before creating it).</param>
/// <param name="OptionsType">The options record bound from JSON.</param>
/// <param name="Create">Builds the detector from options (null: defaults).</param>
public sealed record DetectorRegistration(string Id, string Title, GuestOs SupportedOs, Type OptionsType, Func<object?, IDetector> Create)
{
    /// <summary>A registration for a detector with options record <typeparamref name="TOptions"/>.</summary>
    public static DetectorRegistration For<TOptions>(string id, string title, GuestOs os, Func<TOptions?, IDetector> create) where TOptions : class =>
        new(id, title, os, typeof(TOptions), o => create((TOptions?)o));
}

/// <summary>
/// Every Linux detector in this project, by id, with its options from JSON. The configuration is one
/// object keyed by detector id; each value holds that detector's options (camelCase or PascalCase names,
/// enums as strings) plus <c>"enabled": false</c> to turn it off:
/// <code>
/// { "inline-hook": { "maxBytes": 48, "functions": ["tcp4_seq_show"] }, "idt-hook": { "enabled": false } }
/// </code>
/// A detector missing from the configuration runs with its defaults. An unknown id or option, or a bad
/// value, is a <see cref="DetectorConfigurationException"/> naming the detector and the field.
/// </summary>
public static class DetectorCatalog
{
    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNameCaseInsensitive = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        Converters = { new JsonStringEnumConverter() },
        AllowTrailingCommas = true,
        ReadCommentHandling = JsonCommentHandling.Skip,
    };

    /// <summary>The Linux detectors, in the order they run.</summary>
    public static IReadOnlyList<DetectorRegistration> Detectors { get; } =
    [
        DetectorRegistration.For<SyscallHookOptions>(SyscallHookDetector.Id, "System call table hook", GuestOs.Linux, o => new SyscallHookDetector(o)),
        DetectorRegistration.For<IdtHookOptions>(IdtHookDetector.Id, "Interrupt descriptor table hook", GuestOs.Linux, o => new IdtHookDetector(o)),
        DetectorRegistration.For<InlineHookOptions>(InlineHookDetector.Id, "Inline function hook", GuestOs.Linux, o => new InlineHookDetector(o)),
        DetectorRegistration.For<KernelTextIntegrityOptions>(KernelTextIntegrityDetector.Id, "Kernel text integrity", GuestOs.Linux, o => new KernelTextIntegrityDetector(o)),
        DetectorRegistration.For<HiddenProcessDetectorOptions>(HiddenProcessDetector.Id, "Hidden process", GuestOs.Linux, o => new HiddenProcessDetector(o)),
        DetectorRegistration.For<HiddenModuleDetectorOptions>(HiddenModuleDetector.Id, "Hidden kernel module", GuestOs.Linux, o => new HiddenModuleDetector(o)),
        DetectorRegistration.For<CredentialEscalationDetectorOptions>(CredentialEscalationDetector.Id, "Credential escalation", GuestOs.Linux, o => new CredentialEscalationDetector(o)),
        DetectorRegistration.For<ExampleDetectorOptions>(ExampleDetector.Id, "Program run from a world-writable directory", GuestOs.Linux, o => new ExampleDetector(o)),
    ];

    /// <summary>Ids of <see cref="Detectors"/>.</summary>
    public static IReadOnlyList<string> Ids => [.. Detectors.Select(d => d.Id)];

    /// <summary>Creates one detector from its options (a JSON object, or null for defaults; <c>enabled</c> is accepted and ignored).</summary>
    /// <exception cref="DetectorConfigurationException">Unknown id, or bad options.</exception>
    public static IDetector Create(string id, JsonElement? options = null, IEnumerable<DetectorRegistration>? extra = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(id);
        DetectorRegistration registration = All(extra).FirstOrDefault(d => d.Id == id)
            ?? throw new DetectorConfigurationException(id, $"unknown detector id (known: {string.Join(", ", All(extra).Select(d => d.Id))})");
        var (_, parsed) = Bind(registration, options);
        return Build(registration, parsed);
    }

    /// <summary>
    /// Creates every detector that supports the guest's OS and is not disabled in <paramref name="config"/>.
    /// </summary>
    /// <param name="guest">The VM the detectors will watch (its OS selects them).</param>
    /// <param name="config">An object keyed by detector id (null: every detector with defaults).</param>
    /// <param name="extra">Detectors from other projects (the anomaly detector …), configured the same way.</param>
    /// <exception cref="DetectorConfigurationException">The configuration is not an object, names an unknown detector, or has bad options.</exception>
    public static IReadOnlyList<IDetector> CreateAll(GuestView guest, JsonElement? config = null, IEnumerable<DetectorRegistration>? extra = null)
    {
        ArgumentNullException.ThrowIfNull(guest);
        var registrations = All(extra).ToList();
        var sections = new Dictionary<string, JsonElement>(StringComparer.Ordinal);
        if (config is JsonElement root && root.ValueKind is not (JsonValueKind.Null or JsonValueKind.Undefined))
        {
            if (root.ValueKind != JsonValueKind.Object)
                throw new DetectorConfigurationException("(configuration)", $"must be an object keyed by detector id, not {root.ValueKind}");
            foreach (JsonProperty p in root.EnumerateObject())
            {
                if (!registrations.Any(r => r.Id == p.Name))
                    throw new DetectorConfigurationException(p.Name, $"unknown detector id (known: {string.Join(", ", registrations.Select(d => d.Id))})");
                if (!sections.TryAdd(p.Name, p.Value))
                    throw new DetectorConfigurationException(p.Name, "configured twice");
            }
        }
        var detectors = new List<IDetector>();
        foreach (DetectorRegistration r in registrations)
        {
            // Options are validated even for a detector the guest does not need: a typo fails on every VM.
            var (enabled, options) = Bind(r, sections.TryGetValue(r.Id, out JsonElement section) ? section : null);
            if (!enabled || (r.SupportedOs & guest.Os) == GuestOs.None)
                continue;
            detectors.Add(Build(r, options));
        }
        return detectors;
    }

    private static IEnumerable<DetectorRegistration> All(IEnumerable<DetectorRegistration>? extra) =>
        extra is null ? Detectors : Detectors.Concat(extra);

    /// <summary>Reads <c>enabled</c> and the options record from one detector's section.</summary>
    private static (bool Enabled, object? Options) Bind(DetectorRegistration r, JsonElement? section)
    {
        if (section is not JsonElement s || s.ValueKind is JsonValueKind.Null or JsonValueKind.Undefined)
            return (true, null);
        // "syscall-hook": false is short for { "enabled": false }.
        if (s.ValueKind is JsonValueKind.True or JsonValueKind.False)
            return (s.ValueKind == JsonValueKind.True, null);
        if (s.ValueKind != JsonValueKind.Object)
            throw new DetectorConfigurationException(r.Id, $"options must be an object (or true/false), not {s.ValueKind}");
        var node = JsonNode.Parse(s.GetRawText())!.AsObject();
        bool enabled = true;
        string? enabledKey = node.Select(p => p.Key).FirstOrDefault(k => string.Equals(k, "enabled", StringComparison.OrdinalIgnoreCase));
        if (enabledKey is not null)
        {
            JsonNode? value = node[enabledKey];
            if (value is null || value.GetValueKind() is not (JsonValueKind.True or JsonValueKind.False))
                throw new DetectorConfigurationException(r.Id, "option 'enabled' must be true or false");
            enabled = value.GetValue<bool>();
            node.Remove(enabledKey);
        }
        try
        {
            return (enabled, node.Deserialize(r.OptionsType, Json));
        }
        catch (JsonException ex)
        {
            string field = string.IsNullOrEmpty(ex.Path) || ex.Path == "$" ? "" : $" option '{ex.Path.TrimStart('$', '.')}'";
            throw new DetectorConfigurationException(r.Id, $"bad{(field.Length == 0 ? " options" : field)}: {ex.Message}", ex);
        }
    }

    private static IDetector Build(DetectorRegistration r, object? options)
    {
        try
        {
            return r.Create(options);
        }
        catch (ArgumentException ex)
        {
            // Constructors validate ranges (MaxBytes 1..4096 …) and name the option in the message.
            throw new DetectorConfigurationException(r.Id, "bad option: " + ex.Message, ex);
        }
    }
}
