using Vmi.Linux.Symbols;
using Xunit;

namespace Vmi.Linux.Tests.Symbols;

public sealed class SystemMapTests
{
    private const string Map = """
        0000000000000000 A fixed_percpu_data
        0000000000001000 A cpu_debug_store
        ffffffff81000000 T _text
        ffffffff81000000 T startup_64
        ffffffff81000070 T secondary_startup_64
        ffffffff82600000 D linux_banner
        ffffffff81000000 t duplicate_name
        ffffffff83000000 b duplicate_name
        """;

    [Fact]
    public void Parses_sorts_and_indexes_by_first_name()
    {
        SystemMap map = SystemMap.Parse(new StringReader(Map));
        Assert.Equal(8, map.Count);
        Assert.Equal(0xffffffff82600000, map.GetAddress("linux_banner"));
        Assert.True(map.TryGetAddress("duplicate_name", out ulong dup));
        Assert.Equal(0xffffffff81000000, dup);
        Assert.Equal(new KernelSymbol("secondary_startup_64", 0xffffffff81000070, 'T'), map.FindContaining(0xffffffff81000100));
        Assert.True(map.Symbols.Zip(map.Symbols.Skip(1)).All(p => p.First.Address <= p.Second.Address));
        Assert.False(map.TryGetAddress("nope", out _));
    }

    [Fact]
    public void WithSlide_moves_kernel_symbols_but_not_percpu_offsets()
    {
        SystemMap slid = SystemMap.Parse(new StringReader(Map)).WithSlide(0x2e00000);
        Assert.Equal(0x2e00000, slid.Slide);
        Assert.Equal(0xffffffff83e00000, slid.GetAddress("_text"));
        Assert.Equal(0x1000UL, slid.GetAddress("cpu_debug_store"));
        Assert.Equal(0xffffffff81000000, slid.WithSlide(-0x2e00000).GetAddress("_text"));
    }

    [Fact]
    public void Debian_placeholder_says_to_use_kallsyms_or_the_dbg_package()
    {
        const string placeholder = "ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n";
        Assert.Equal(83, placeholder.Length);
        var e = Assert.Throws<SystemMapException>(() => SystemMap.Parse(new StringReader(placeholder)));
        Assert.Contains("placeholder", e.Message, StringComparison.Ordinal);
        Assert.Contains("kallsyms", e.Message, StringComparison.Ordinal);
        Assert.Contains("-dbg", e.Message, StringComparison.Ordinal);

        string path = Path.GetTempFileName();
        try
        {
            File.WriteAllText(path, placeholder);
            var fromFile = Assert.Throws<SystemMapException>(() => SystemMap.Load(path));
            Assert.Contains(path, fromFile.Message, StringComparison.Ordinal);
            Assert.Contains("placeholder", fromFile.Message, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData("not a map at all")]
    [InlineData("ffffffff81000000 T")]
    [InlineData("zzzz T name")]
    [InlineData("ffffffff81000000 % name")]
    [InlineData("")]
    public void Malformed_maps_are_rejected_with_the_line(string text)
    {
        var e = Assert.Throws<SystemMapException>(() => SystemMap.Parse(new StringReader(text)));
        Assert.False(string.IsNullOrWhiteSpace(e.Message));
    }
}
