using System.Globalization;
using System.Text.Json;
using Xunit;

namespace Vmi.Memory.Tests;

/// <summary>Runs the language-neutral page-walk vectors in Vectors/*.json.</summary>
public sealed class PageWalkVectorTests
{
    private static readonly string VectorDirectory = Path.Combine(AppContext.BaseDirectory, "Vectors");

    public static TheoryData<string, string, int> Cases()
    {
        var data = new TheoryData<string, string, int>();
        foreach (string path in Directory.EnumerateFiles(VectorDirectory, "*.json").Order(StringComparer.Ordinal))
        {
            using JsonDocument doc = JsonDocument.Parse(File.ReadAllText(path));
            foreach (JsonElement vector in doc.RootElement.GetProperty("vectors").EnumerateArray())
            {
                int count = vector.GetProperty("cases").GetArrayLength();
                for (int i = 0; i < count; i++)
                    data.Add(Path.GetFileName(path), vector.GetProperty("name").GetString()!, i);
            }
        }
        return data;
    }

    [Fact]
    public void Vector_files_are_present_and_names_unique()
    {
        string[] files = Directory.GetFiles(VectorDirectory, "*.json");
        Assert.True(files.Length >= 8, $"expected the vector files in {VectorDirectory}");
        foreach (string path in files)
        {
            using JsonDocument doc = JsonDocument.Parse(File.ReadAllText(path));
            var names = doc.RootElement.GetProperty("vectors").EnumerateArray().Select(v => v.GetProperty("name").GetString()).ToList();
            Assert.Equal(names.Count, names.Distinct().Count());
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Walk_matches_vector(string file, string vectorName, int caseIndex)
    {
        using JsonDocument doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(VectorDirectory, file)));
        JsonElement vector = doc.RootElement.GetProperty("vectors").EnumerateArray()
            .Single(v => v.GetProperty("name").GetString() == vectorName);
        JsonElement c = vector.GetProperty("cases")[caseIndex];
        string where = $"{file}/{vectorName}#{caseIndex} ({Str(c, "note")})";

        using SparsePhysicalMemory memory = BuildMemory(vector);
        PagingContext context = ParseContext(vector.GetProperty("context"));
        ulong va = Hex(c, "va");
        var expectedStatus = Enum.Parse<WalkStatus>(c.GetProperty("status").GetString()!);

        var walker = new PageWalker(memory);
        WalkResult result = walker.Walk(context, va);
        Assert.True(expectedStatus == result.Status, $"{where}: expected {expectedStatus}, got {result.Describe()}");
        Assert.False(string.IsNullOrWhiteSpace(result.Describe()));

        // The allocation-free path must agree with the full walk.
        bool ok = walker.TryTranslate(context, va, out Translation t, out WalkStatus status);
        Assert.Equal(expectedStatus, status);
        Assert.Equal(expectedStatus == WalkStatus.Ok, ok);

        if (c.TryGetProperty("steps", out JsonElement steps))
            Assert.True(steps.GetInt32() == result.Steps.Count, $"{where}: expected {steps.GetInt32()} steps, got {result.Steps.Count}");
        if (c.TryGetProperty("entryAddresses", out JsonElement addresses))
        {
            ulong[] expected = [.. addresses.EnumerateArray().Select(a => ParseHex(a.GetString()!))];
            Assert.Equal(expected, result.Steps.Select(s => s.EntryAddress).ToArray());
        }
        // Steps go from the top level down, one per level.
        for (int i = 0; i < result.Steps.Count; i++)
            Assert.Equal(context.Levels - i, (int)result.Steps[i].Level);

        if (expectedStatus == WalkStatus.Ok)
        {
            Assert.NotNull(result.Translation);
            Translation expected = new(va, Hex(c, "pa"), ParseSize(c.GetProperty("size").GetString()!),
                Enum.Parse<PageFlags>(c.GetProperty("flags").GetString()!.Replace('|', ',')));
            Assert.True(expected == result.Translation, $"{where}: expected {expected}, got {result.Translation}");
            Assert.Equal(expected, t);
            Assert.Null(result.FaultLevel);
        }
        else
        {
            Assert.Null(result.Translation);
            Assert.Equal(default, t);
            if (c.TryGetProperty("faultLevel", out JsonElement level))
                Assert.Equal(Enum.Parse<PagingLevel>(level.GetString()!), result.FaultLevel);
            else
                Assert.Null(result.FaultLevel);
            if (c.TryGetProperty("faultEntryAddress", out _))
                Assert.Equal(Hex(c, "faultEntryAddress"), result.FaultEntryAddress);
            if (c.TryGetProperty("reservedBits", out _))
                Assert.Equal(Hex(c, "reservedBits"), result.ReservedBits);
            if (expectedStatus is WalkStatus.NotPresent or WalkStatus.ReservedBitsSet)
                Assert.Equal(result.FaultEntryAddress, result.Steps[^1].EntryAddress);
        }

        // The same address through VirtualMemory (with and without a cache) translates identically.
        var cache = new TranslationCache(64);
        var vm = new VirtualMemory(memory, context, cache);
        for (int pass = 0; pass < 2; pass++)
        {
            Assert.Equal(ok, vm.TryTranslate(va, out Translation viaVm, out WalkStatus vmStatus));
            Assert.Equal(status, vmStatus);
            Assert.Equal(t, viaVm);
        }
    }

    internal static SparsePhysicalMemory BuildMemory(JsonElement vector)
    {
        ulong limit = vector.TryGetProperty("memoryLimit", out _) ? Hex(vector, "memoryLimit") : 1UL << 52;
        var memory = new SparsePhysicalMemory(limit);
        foreach (JsonElement entry in vector.GetProperty("entries").EnumerateArray())
            memory.WriteUInt64(Hex(entry, "pa"), Hex(entry, "value"));
        return memory;
    }

    internal static PagingContext ParseContext(JsonElement c) =>
        new(Hex(c, "cr3"), c.GetProperty("la57").GetBoolean(), c.GetProperty("nxe").GetBoolean(),
            c.GetProperty("maxPhysicalAddressBits").GetInt32());

    private static PageSize ParseSize(string s) => s switch
    {
        "4K" => PageSize.Size4K,
        "2M" => PageSize.Size2M,
        "1G" => PageSize.Size1G,
        _ => throw new FormatException($"unknown page size '{s}'"),
    };

    private static ulong Hex(JsonElement e, string name) => ParseHex(e.GetProperty(name).GetString()!);

    private static string Str(JsonElement e, string name) => e.TryGetProperty(name, out JsonElement v) ? v.GetString() ?? "" : "";

    internal static ulong ParseHex(string s)
    {
        if (!s.StartsWith("0x", StringComparison.Ordinal))
            throw new FormatException($"'{s}' is not a 0x-prefixed hex string");
        return ulong.Parse(s.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
    }
}
