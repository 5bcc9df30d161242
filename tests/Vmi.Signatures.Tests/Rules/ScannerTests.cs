using System.Text;
using Vmi.Signatures.Yara;
using Xunit;

namespace Vmi.Signatures.Tests.Rules;

/// <summary>The scanner's own guarantees: parallel search equals serial, one rule set serves concurrent scans, multi-block (process) semantics, and budgets.</summary>
public sealed class ScannerTests
{
    private const string Rules = """
        rule Text_and_hex { strings: $t = "boundary-marker" $h = { DE AD ?? EF } condition: $t and #h >= 2 }
        rule Nocase_wide { strings: $w = "Edge" wide nocase condition: $w }
        rule Regex_xor { strings: $r = /zz[0-9]{3}yy/ $x = "secret" xor(1-3) condition: any of them }
        """;

    private static byte[] Data(int size)
    {
        var data = new byte[size];
        new Random(7).NextBytes(data);
        // Straddle every 1 MiB boundary (where parallel chunks are cut) with one of the strings, in turn.
        for (int k = 1; (k << 20) < size; k++)
        {
            int at = k << 20;
            switch (k % 4)
            {
                case 0: Encoding.ASCII.GetBytes("boundary-marker").CopyTo(data, at - 7); break;
                case 1: new byte[] { 0xDE, 0xAD, 0x00, 0xEF }.CopyTo(data, at - 2); break;
                case 2: Encoding.Unicode.GetBytes("eDgE").CopyTo(data, at - 3); break;
                default: Encoding.ASCII.GetBytes("zz123yy").CopyTo(data, at - 4); break;
            }
            var secret = Encoding.ASCII.GetBytes("secret");
            for (int i = 0; i < secret.Length; i++)
                data[at + 100 + i] = (byte)(secret[i] ^ 2);
        }
        Encoding.ASCII.GetBytes("boundary-marker").CopyTo(data, 0);
        Encoding.ASCII.GetBytes("zz999yy").CopyTo(data, size - 7);
        return data;
    }

    private static string Describe(YaraScanResult r) =>
        string.Join("\n", r.Matches.SelectMany(m => m.Strings.SelectMany(s => s.Matches.Select(x => $"{m.Rule.Name} {s.String.Id} {x.Offset} {x.Length} {Convert.ToHexString(x.Data)}"))));

    [Fact]
    public void Parallel_search_finds_exactly_what_a_serial_search_finds_including_across_chunk_boundaries()
    {
        var rules = YaraRules.Compile(Rules);
        var data = Data(8 << 20);
        var serial = YaraScanner.Scan(rules, data, new YaraScanOptions { Parallelism = 1 });
        var parallel = YaraScanner.Scan(rules, data, new YaraScanOptions { Parallelism = 4 });
        Assert.Equal(3, serial.Matches.Count);
        Assert.Equal(Describe(serial), Describe(parallel));
        // The strings straddling chunk boundaries were found: the marker at 4 MiB (and offset 0), the hex at 1 and 5 MiB.
        var marker = serial.Matches.Single(m => m.Rule.Name == "Text_and_hex").Strings.Single(s => s.String.Id == "$t");
        Assert.Equal([0L, (4L << 20) - 7], marker.Matches.Select(m => m.Offset));
        var hex = serial.Matches.Single(m => m.Rule.Name == "Text_and_hex").Strings.Single(s => s.String.Id == "$h");
        Assert.Equal([(1L << 20) - 2, (5L << 20) - 2], hex.Matches.Where(m => m.Data[0] == 0xDE && m.Data[3] == 0xEF && (m.Offset + 2) % (1 << 20) == 0).Select(m => m.Offset));
        var xor = serial.Matches.Single(m => m.Rule.Name == "Regex_xor").Strings.Single(s => s.String.Id == "$x");
        Assert.Equal(7, xor.Matches.Count);
    }

    [Fact]
    public void One_compiled_rule_set_serves_concurrent_scans()
    {
        var rules = YaraRules.Compile(Rules);
        var data = Data(4 << 20);
        string expected = Describe(YaraScanner.Scan(rules, data, new YaraScanOptions { Parallelism = 1 }));
        var results = new string[16];
        Parallel.For(0, results.Length, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
            results[i] = Describe(YaraScanner.Scan(rules, data, new YaraScanOptions { Parallelism = 2 })));
        Assert.All(results, r => Assert.Equal(expected, r));
    }

    [Fact]
    public void Blocks_scan_as_one_target_at_their_addresses_like_a_process()
    {
        var rules = YaraRules.Compile("""
            rule Split { strings: $a = "first-half" $b = "second-half" condition: $a and $b and not defined filesize }
            rule Read_across { condition: uint32(0x7f0000001000) == 0x464c457f }
            rule Offsets { strings: $a = "first-half" condition: @a[1] == 0x400010 and $a at 0x400010 and $a in (0x400000..0x400100) }
            """);
        var code = new byte[4096];
        Encoding.ASCII.GetBytes("first-half").CopyTo(code, 0x10);
        var heap = new byte[8192];
        Encoding.ASCII.GetBytes("second-half").CopyTo(heap, 0x20);
        new byte[] { 0x7f, (byte)'E', (byte)'L', (byte)'F' }.CopyTo(heap, 0x1000);
        var r = YaraScanner.ScanBlocks(rules, [(0x400000L, code), (0x7f0000000000L, heap)]);
        Assert.Equal(["Split", "Read_across", "Offsets"], r.Matches.Select(m => m.Rule.Name));
        var b = r.Matches[0].Strings.Single(s => s.String.Id == "$b").Matches.Single();
        Assert.Equal(0x7f0000000020L, b.Offset);
        Assert.Equal("second-half", Encoding.ASCII.GetString(b.Data));
        // Each block alone: neither half is enough.
        Assert.DoesNotContain(YaraScanner.ScanBlocks(rules, [(0x400000L, code)]).Matches, m => m.Rule.Name == "Split");
    }

    [Fact]
    public void A_scan_over_its_time_limit_stops_with_a_clear_error()
    {
        var rules = YaraRules.Compile("rule slow { strings: $a = /a[^b]{1,2000}c/ condition: $a }");
        var data = Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("a", 32 << 20)));
        var e = Assert.Throws<YaraScanException>(() => YaraScanner.Scan(rules, data, new YaraScanOptions { Timeout = TimeSpan.FromMilliseconds(200), Parallelism = 1 }));
        Assert.Contains("timed out", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Matches_beyond_the_memory_budget_stop_the_scan_and_beyond_the_per_string_cap_are_dropped()
    {
        var rules = YaraRules.Compile("rule many { strings: $a = \"AAAA\" condition: $a }");
        var data = new byte[100_000];
        Array.Fill(data, (byte)'A');
        var capped = YaraScanner.Scan(rules, data, new YaraScanOptions { MaxMatchesPerString = 1000 });
        Assert.Equal(1000, capped.Matches.Single().Strings.Single().Matches.Count);
        Assert.Contains(capped.Warnings, w => w.Contains("more than 1000 matches", StringComparison.Ordinal));
        var e = Assert.Throws<YaraScanException>(() => YaraScanner.Scan(rules, data, new YaraScanOptions { MaxTotalMatches = 5000 }));
        Assert.Contains("memory budget", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_file_larger_than_memory_maps_is_scanned_through_a_map_and_an_empty_file_works()
    {
        var rules = YaraRules.Compile("rule r { strings: $a = \"needle\" condition: $a or filesize == 0 }");
        string dir = Directory.CreateTempSubdirectory("vmi-scan-").FullName;
        string empty = Path.Combine(dir, "empty");
        File.WriteAllBytes(empty, []);
        Assert.Single(YaraCli.ScanPath(rules, empty).Matches);
        string file = Path.Combine(dir, "file");
        var data = new byte[3 << 20];
        Encoding.ASCII.GetBytes("needle").CopyTo(data, data.Length - 6);
        File.WriteAllBytes(file, data);
        var hit = YaraCli.ScanPath(rules, file).Matches.Single().Strings.Single().Matches.Single();
        Assert.Equal(data.Length - 6, hit.Offset);
    }
}
