using System.Globalization;
using Vmi.Events;
using Vmi.Linux.Model;
using Vmi.Pipeline;

namespace Vmi.Detectors.Linux;

/// <summary>Options of <see cref="HiddenModuleDetector"/>.</summary>
public sealed record HiddenModuleDetectorOptions
{
    /// <summary>Compare /sys/module (module_kset) with the module list. Default true.</summary>
    public bool UseSysfs { get; init; } = true;

    /// <summary>Carve struct modules out of the module area and compare them with the module list. Default true.</summary>
    public bool UseCarving { get; init; } = true;

    /// <summary>
    /// module.state values a carved module must have to count (0 live, 1 coming, 2 going, 3 unformed).
    /// Default live only: an unloaded module's memory can stay mapped for a while (lazy vfree), and
    /// free_module() marks it unformed first, so stale remains never alert.
    /// </summary>
    public IReadOnlyList<int> CarvedStates { get; init; } = [0];

    /// <summary>Severity of the alerts. Default <see cref="Severity.Critical"/>.</summary>
    public Severity Severity { get; init; } = Severity.Critical;
}

/// <summary>
/// Finds kernel modules hidden from the module list (what /proc/modules and lsmod show): a module that
/// sysfs (module_kset) still lists, or whose struct module is found by carving the module area, but that
/// is not on the list. Rootkits unlink themselves with list_del(&amp;THIS_MODULE->list), often also
/// kobject_del() to leave /sys/module; carving finds them either way (module.mkobj.mod still points at the module).
/// </summary>
public sealed class HiddenModuleDetector : IDetector
{
    public const string Id = "hidden-module";

    private readonly HiddenModuleDetectorOptions _options;

    public HiddenModuleDetector(HiddenModuleDetectorOptions? options = null)
    {
        _options = options ?? new HiddenModuleDetectorOptions();
    }

    public DetectorInfo Info { get; } = new(
        Id,
        "Kernel module hidden from the module list",
        "A kernel module is in /sys/module or in module memory but not on the kernel's module list: a rootkit unlinked itself to hide from lsmod.",
        GuestOs.Linux,
        [AttackTechnique.Rootkit, AttackTechnique.HideArtifacts])
    {
        TimeBudget = TimeSpan.FromSeconds(15),
    };

    public bool Accepts(VmiEvent e) => e is SweepTick or ModuleLoaded;

    public ValueTask AnalyzeAsync(VmiEvent e, DetectorContext context)
    {
        ArgumentNullException.ThrowIfNull(e);
        ArgumentNullException.ThrowIfNull(context);
        if (context.Guest.Linux is not LinuxKernel kernel)
            return ValueTask.CompletedTask;
        KernelList<LinuxModule> list = kernel.GetModules();
        if (!list.IsComplete)
            context.Report("module list", "the module list walk was incomplete: " + string.Join("; ", list.Issues.Take(5)), Severity.Low);
        var listed = list.Items.Select(m => m.ModuleAddress).ToHashSet();
        var hidden = new Dictionary<ulong, Hidden>();
        if (_options.UseSysfs)
        {
            foreach (SysfsModule s in kernel.GetSysfsModules().Items)
            {
                if (s.Module == 0 || listed.Contains(s.Module))
                    continue; // built-in modules have no struct module
                Hidden h = GetOrAdd(hidden, s.Module, s.Name);
                h.Views.Add("sysfs");
            }
        }
        if (_options.UseCarving)
        {
            foreach (CarvedModule c in kernel.CarveModules().Items)
            {
                if (listed.Contains(c.Address) || !_options.CarvedStates.Contains(c.State))
                    continue;
                Hidden h = GetOrAdd(hidden, c.Address, c.Name);
                h.Views.Add("carving");
                h.Carved = c;
            }
        }
        if (hidden.Count == 0)
            return ValueTask.CompletedTask;
        // Re-read the list: a module loading or unloading between the walks is not hidden.
        var again = kernel.GetModules().Items.Select(m => m.ModuleAddress).ToHashSet();
        foreach (Hidden h in hidden.Values.Where(h => !again.Contains(h.Address)))
            Raise(h, e, context);
        return ValueTask.CompletedTask;
    }

    private static Hidden GetOrAdd(Dictionary<ulong, Hidden> hidden, ulong address, string name)
    {
        if (!hidden.TryGetValue(address, out Hidden? h))
            hidden[address] = h = new Hidden(address, name);
        return h;
    }

    private void Raise(Hidden h, VmiEvent e, DetectorContext context)
    {
        string address = string.Create(CultureInfo.InvariantCulture, $"0x{h.Address:x}");
        string views = string.Join(",", h.Views.Order(StringComparer.Ordinal));
        var evidence = new Dictionary<string, string>
        {
            ["name"] = h.Name,
            ["module"] = address,
            ["views"] = views,
            ["missing_from"] = "module list",
        };
        if (h.Carved is { } c)
        {
            evidence["core_base"] = string.Create(CultureInfo.InvariantCulture, $"0x{c.CoreBase:x}");
            evidence["size"] = c.Size.ToString(CultureInfo.InvariantCulture);
            evidence["state"] = c.State.ToString(CultureInfo.InvariantCulture);
        }
        context.Report("module list", $"module {h.Name} is not on the module list", _options.Severity,
            expected: "every loaded module on the modules list", actual: "seen only in " + views, address: h.Address, evidence: evidence);
        context.Raise(
            key: $"{Id}:{h.Name}:{address}",
            title: $"hidden kernel module {h.Name}: found by {views} but not on the module list",
            severity: _options.Severity,
            evidence: evidence,
            relatedEvents: [e.Id]);
    }

    private sealed class Hidden(ulong address, string name)
    {
        public ulong Address { get; } = address;
        public string Name { get; } = name;
        public HashSet<string> Views { get; } = [];
        public CarvedModule? Carved { get; set; }
    }
}
