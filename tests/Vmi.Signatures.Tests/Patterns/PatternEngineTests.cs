using System.Text;
using Vmi.Signatures.Patterns;
using Xunit;

namespace Vmi.Signatures.Tests.Patterns;

/// <summary>Engine properties that do not need the reference yara: atoms, budgets, allocations, limits.</summary>
public sealed class PatternEngineTests
{
    private sealed class ListSink : IMatchSink
    {
        public List<(int, int)> Matches { get; } = [];
        public void Add(int offset, int length) => Matches.Add((offset, length));
    }

    private static StringSpec Regex(string src, StringModifiers m = StringModifiers.None) => new("$a", StringKind.Regex, [], src, m);

    [Fact]
    public void Text_atoms_avoid_zero_runs_and_expand_nocase()
    {
        var spec = new StringSpec("$a", StringKind.Text, Encoding.Latin1.GetBytes("\0\0\0\0\0\0Kernel32"), "", StringModifiers.Nocase);
        var cs = CompiledString.Compile(spec, PatternLimits.Default);
        Assert.All(cs.Atoms, a => Assert.DoesNotContain((byte)0, a.Bytes));
        Assert.All(cs.Atoms, a => Assert.Equal(4, a.Bytes.Length));
        Assert.True(cs.Atoms.Count is > 1 and <= 16);
    }

    [Fact]
    public void Xor_atoms_cover_every_key_in_range()
    {
        var spec = new StringSpec("$a", StringKind.Text, "hello"u8.ToArray(), "", StringModifiers.Xor, 3, 9);
        var cs = CompiledString.Compile(spec, PatternLimits.Default);
        Assert.Equal(7, cs.Atoms.Count);
    }

    [Fact]
    public void Regex_without_literal_has_no_atoms_and_verify_all_finds_matches()
    {
        var cs = CompiledString.Compile(Regex("[a-z]+"), PatternLimits.Default);
        Assert.Empty(cs.Atoms);
        var sink = new ListSink();
        cs.VerifyAll("ab1c"u8, sink, ScanBudget.Unlimited);
        Assert.Equal([(0, 2), (1, 1), (3, 1)], sink.Matches);
    }

    [Fact]
    public void Catastrophic_regex_is_stopped_by_the_budget()
    {
        var cs = CompiledString.Compile(Regex("(a|aa|aaa)*(a|aa)*(a*)*b"), PatternLimits.Default);
        var data = Encoding.ASCII.GetBytes(new string('a', 100_000));
        Assert.Throws<ScanBudgetExceededException>(() => cs.VerifyAll(data, new ListSink(), new ScanBudget(1_000_000)));
    }

    [Fact]
    public void Verify_does_not_allocate_for_text_hex_and_regex()
    {
        var data = Encoding.ASCII.GetBytes("xx hello world xx abcdef 1234 hello");
        var specs = new[]
        {
            new StringSpec("$a", StringKind.Text, "hello"u8.ToArray(), "", StringModifiers.Nocase | StringModifiers.Wide | StringModifiers.Ascii),
            new StringSpec("$b", StringKind.Hex, [], "61 62 [1-3] 65 ( 66 | 67 )", StringModifiers.None),
            Regex("wor[a-z]+ x{1,2}"),
        };
        var sink = new ListSink();
        foreach (var spec in specs)
        {
            var cs = CompiledString.Compile(spec, PatternLimits.Default);
            var budget = ScanBudget.Unlimited;
            void RunAll()
            {
                for (int k = 0; k < cs.Atoms.Count; k++)
                {
                    var atom = cs.Atoms[k];
                    for (int i = data.AsSpan().IndexOf(atom.Bytes); i >= 0;)
                    {
                        cs.Verify(data, atom, i, sink, budget);
                        int next = data.AsSpan(i + 1).IndexOf(atom.Bytes);
                        i = next < 0 ? -1 : i + 1 + next;
                    }
                }
            }
            RunAll();
            sink.Matches.Clear();
            sink.Matches.Capacity = 64;
            long before = GC.GetAllocatedBytesForCurrentThread();
            RunAll();
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.True(allocated == 0, $"{spec.Id}: Verify allocated {allocated} bytes");
            Assert.NotEmpty(sink.Matches);
        }
    }

    [Fact]
    public void Matches_operator_semantics()
    {
        Assert.True(CompiledString.Compile(Regex("x*"), PatternLimits.Default).IsMatch("abc"u8, ScanBudget.Unlimited));
        Assert.True(CompiledString.Compile(Regex("b.$"), PatternLimits.Default).IsMatch("abc"u8, ScanBudget.Unlimited));
        Assert.False(CompiledString.Compile(Regex("^b"), PatternLimits.Default).IsMatch("abc"u8, ScanBudget.Unlimited));
    }

    [Fact]
    public void Oversized_program_is_rejected_with_a_position()
    {
        var limits = new PatternLimits { MaxProgramSize = 1000 };
        var ex = Assert.Throws<PatternException>(() => CompiledString.Compile(Regex("(ab){1,2000}"), limits));
        Assert.Contains("too complex", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Regex_syntax_errors_report_the_position()
    {
        var ex = Assert.Throws<PatternException>(() => CompiledString.Compile(Regex("abc[z-a]"), PatternLimits.Default));
        Assert.Equal("bad character range", ex.Message);
        Assert.Equal(5, ex.Position);
    }
}
