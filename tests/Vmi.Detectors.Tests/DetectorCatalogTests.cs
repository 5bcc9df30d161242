using System.Text.Json;
using System.Text.RegularExpressions;
using Vmi.Detectors.Linux;
using Vmi.Events;
using Vmi.Pipeline;
using Xunit;

namespace Vmi.Detectors.Tests;

public sealed partial class DetectorCatalogTests
{
    private static readonly GuestView Linux = new("vm", GuestOs.Linux);

    private static JsonElement Json(string json) => JsonDocument.Parse(json).RootElement.Clone();

    [GeneratedRegex("^[a-z][a-z0-9]*(-[a-z0-9]+)*$")]
    private static partial Regex KebabCase();

    [Fact]
    public void Every_detector_has_a_unique_kebab_case_id_matching_its_info()
    {
        Assert.Equal(DetectorCatalog.Ids.Count, DetectorCatalog.Ids.Distinct(StringComparer.Ordinal).Count());
        foreach (DetectorRegistration r in DetectorCatalog.Detectors)
        {
            Assert.Matches(KebabCase(), r.Id);
            IDetector d = r.Create(null);
            Assert.Equal(r.Id, d.Info.Id);
            Assert.Equal(r.SupportedOs, d.Info.SupportedOs);
            Assert.NotEmpty(d.Info.Techniques);
            Assert.False(string.IsNullOrWhiteSpace(d.Info.Description));
        }
        Assert.Contains(SyscallHookDetector.Id, DetectorCatalog.Ids);
        Assert.Contains("hidden-process", DetectorCatalog.Ids);
    }

    [Fact]
    public void No_configuration_creates_every_detector_with_defaults()
    {
        IReadOnlyList<IDetector> all = DetectorCatalog.CreateAll(Linux);
        Assert.Equal(DetectorCatalog.Ids, all.Select(d => d.Info.Id));
        Assert.Empty(DetectorCatalog.CreateAll(new GuestView("win", GuestOs.Windows)));
    }

    [Fact]
    public void Enabled_false_and_the_boolean_shorthand_turn_a_detector_off()
    {
        IReadOnlyList<IDetector> all = DetectorCatalog.CreateAll(Linux, Json("""{ "idt-hook": { "enabled": false }, "inline-hook": false, "syscall-hook": { "Enabled": true } }"""));
        Assert.DoesNotContain(all, d => d.Info.Id is "idt-hook" or "inline-hook");
        Assert.Contains(all, d => d.Info.Id == "syscall-hook");
    }

    [Fact]
    public void Options_bind_by_camel_or_pascal_case_with_enums_as_strings()
    {
        IReadOnlyList<IDetector> all = DetectorCatalog.CreateAll(Linux, Json("""
            {
              "inline-hook": { "maxBytes": 48, "Functions": ["tcp4_seq_show"], "severity": "High" },
              "kernel-text-integrity": { "pagesPerSweep": 100 },
              "tmp-exec": { "directories": ["/run/user/"] }
            }
            """));
        Assert.Contains(all, d => d is InlineHookDetector);
        Assert.Contains(all, d => d is KernelTextIntegrityDetector);
    }

    [Fact]
    public void Unknown_detector_id_is_an_error_naming_it()
    {
        var ex = Assert.Throws<DetectorConfigurationException>(() => DetectorCatalog.CreateAll(Linux, Json("""{ "syscal-hook": {} }""")));
        Assert.Equal("syscal-hook", ex.DetectorId);
        Assert.Contains("unknown detector id", ex.Message, StringComparison.Ordinal);
        Assert.Contains("syscall-hook", ex.Message, StringComparison.Ordinal);
        Assert.Throws<DetectorConfigurationException>(() => DetectorCatalog.Create("nope"));
    }

    [Fact]
    public void Misspelled_option_is_an_error_naming_detector_and_field()
    {
        var ex = Assert.Throws<DetectorConfigurationException>(() => DetectorCatalog.CreateAll(Linux, Json("""{ "inline-hook": { "maxByte": 48 } }""")));
        Assert.Equal("inline-hook", ex.DetectorId);
        Assert.Contains("maxByte", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Wrong_type_or_out_of_range_value_is_an_error_naming_the_field()
    {
        var type = Assert.Throws<DetectorConfigurationException>(() => DetectorCatalog.CreateAll(Linux, Json("""{ "kernel-text-integrity": { "pagesPerSweep": "many" } }""")));
        Assert.Equal("kernel-text-integrity", type.DetectorId);
        Assert.Contains("pagesPerSweep", type.Message, StringComparison.Ordinal);

        var range = Assert.Throws<DetectorConfigurationException>(() => DetectorCatalog.Create("inline-hook", Json("""{ "maxBytes": 0 }""")));
        Assert.Contains("MaxBytes", range.Message, StringComparison.Ordinal);

        var enabled = Assert.Throws<DetectorConfigurationException>(() => DetectorCatalog.CreateAll(Linux, Json("""{ "idt-hook": { "enabled": "no" } }""")));
        Assert.Contains("enabled", enabled.Message, StringComparison.Ordinal);

        Assert.Throws<DetectorConfigurationException>(() => DetectorCatalog.CreateAll(Linux, Json("""[1, 2]""")));
        Assert.Throws<DetectorConfigurationException>(() => DetectorCatalog.CreateAll(Linux, Json("""{ "idt-hook": 3 }""")));
    }

    [Fact]
    public void Detectors_from_other_projects_register_the_same_way()
    {
        var extra = DetectorRegistration.For<ExampleDetectorOptions>("extra-example", "Extra", GuestOs.Linux, o => new ExampleDetector(o));
        Assert.Throws<DetectorConfigurationException>(() => DetectorCatalog.CreateAll(Linux, Json("""{ "extra-example": false }""")));
        IReadOnlyList<IDetector> all = DetectorCatalog.CreateAll(Linux, Json("""{ "extra-example": { "checkOnSweep": false } }"""), [extra]);
        Assert.Equal(DetectorCatalog.Ids.Count + 1, all.Count);
    }
}
