using System.Diagnostics;
using System.Buffers;
using Vmi.Signatures.Patterns;

namespace Vmi.Signatures.Yara;

/// <summary>Limits for one scan.</summary>
public sealed record YaraScanOptions
{
    /// <summary>Wall-clock limit for one scan; null for none.</summary>
    public TimeSpan? Timeout { get; init; }
    /// <summary>Matcher steps (regex/hex verification work and loop iterations) one scan may spend.</summary>
    public long MaxSteps { get; init; } = 4_000_000_000;
    /// <summary>Matches kept per string (YARA: 1,000,000); further matches are counted as dropped.</summary>
    public int MaxMatchesPerString { get; init; } = 1_000_000;
    /// <summary>Matches kept across all strings of one scan: the scan's memory bound.</summary>
    public long MaxTotalMatches { get; init; } = 10_000_000;
    /// <summary>Bytes of each match kept as evidence (YARA prints at most 512).</summary>
    public int MaxMatchData { get; init; } = 512;
    /// <summary>Threads used to search one large block; 1 disables parallel search.</summary>
    public int Parallelism { get; init; } = Environment.ProcessorCount;
    /// <summary>Offset added to every reported match (a region's address, for example).</summary>
    public long BaseOffset { get; init; }
    /// <summary>Evaluate entrypoint for PE/ELF data (files); memory regions leave it undefined.</summary>
    public bool ComputeEntryPoint { get; init; } = true;
    public CancellationToken Cancellation { get; init; }
}

/// <summary>One match of one string.</summary>
public readonly record struct YaraMatch(long Offset, int Length, byte[] Data);

/// <summary>The matches of one string of a matching rule.</summary>
public sealed record YaraStringMatches(YaraString String, IReadOnlyList<YaraMatch> Matches);

/// <summary>A rule whose condition held.</summary>
public sealed record YaraRuleMatch(YaraRule Rule, IReadOnlyList<YaraStringMatches> Strings);

/// <summary>The outcome of scanning one block of data.</summary>
public sealed record YaraScanResult(IReadOnlyList<YaraRuleMatch> Matches, IReadOnlyList<string> Warnings, long BytesScanned, TimeSpan Elapsed);

/// <summary>The scan stopped: time or step budget exhausted, or cancelled.</summary>
public sealed class YaraScanException : Exception
{
    public YaraScanException() { }
    public YaraScanException(string message) : base(message) { }
    public YaraScanException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>A string's matches within one scan: kept sorted by offset, one per offset.</summary>
internal sealed class MatchList
{
    public static readonly MatchList Empty = new();
    private (long Offset, int Length)[] items = [];

    public int Count { get; private set; }

    public (long Offset, int Length) this[int i] => items[i];

    public static MatchList From(List<(long Offset, int Length)> raw)
    {
        // Stable by offset: the first match reported for an offset wins (the pattern engine reports in data order).
        var ordered = raw.Count < 2 || IsSorted(raw) ? raw : raw.OrderBy(m => m.Offset).ToList();
        var list = new MatchList { items = new (long, int)[ordered.Count] };
        long last = long.MinValue;
        int n = 0;
        foreach (var m in ordered)
        {
            if (m.Offset == last)
                continue;
            list.items[n++] = m;
            last = m.Offset;
        }
        list.Count = n;
        return list;
    }

    private static bool IsSorted(List<(long Offset, int Length)> raw)
    {
        for (int i = 1; i < raw.Count; i++)
        {
            if (raw[i].Offset < raw[i - 1].Offset)
                return false;
        }
        return true;
    }

    public bool AnyAt(long offset) => Find(offset) is int i && i < Count && items[i].Offset == offset;

    public int CountIn(long lo, long hi)
    {
        if (hi < lo || Count == 0)
            return 0;
        int a = Find(lo) ?? Count;
        int b = Find(hi + 1 < hi ? hi : hi + 1) ?? Count;
        return Math.Max(0, b - a);
    }

    /// <summary>Index of the first match with offset ≥ <paramref name="offset"/>.</summary>
    private int? Find(long offset)
    {
        int lo = 0, hi = Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (items[mid].Offset < offset)
                lo = mid + 1;
            else
                hi = mid;
        }
        return lo;
    }
}

/// <summary>Scans data with compiled rules. Thread-safe: one <see cref="YaraRules"/> serves any number of concurrent scans.</summary>
public static class YaraScanner
{
    private const int ParallelChunk = 1 << 20;

    /// <summary>Scans one block (a file, a memory region, a process's VMA).</summary>
    public static unsafe YaraScanResult Scan(YaraRules rules, ReadOnlySpan<byte> data, YaraScanOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(rules);
        options ??= new YaraScanOptions();
        var sw = Stopwatch.StartNew();
        var budget = new ScanBudget(options.MaxSteps);
        using var timeout = options.Timeout is TimeSpan t ? new CancellationTokenSource(t) : null;
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(options.Cancellation, timeout?.Token ?? CancellationToken.None);
        var token = linked.Token;
        fixed (byte* p = data)
        {
            var raw = Search(rules, p, data.Length, options, budget, token);
            nint ptr = (nint)p;
            int length = data.Length;
            bool Read(long offset, Span<byte> destination)
            {
                if (offset < 0 || offset > length - destination.Length)
                    return false;
                new ReadOnlySpan<byte>((byte*)ptr + offset, destination.Length).CopyTo(destination);
                return true;
            }
            var ctx = new EvalContext
            {
                Data = p,
                Length = data.Length,
                EntryPoint = options.ComputeEntryPoint ? ExecutableFormats.EntryPointOffset(data) : null,
            };
            return Evaluate(rules, raw, ctx, options, budget, timeout, token, Read, data.Length, sw);
        }
    }

    /// <summary>
    /// Scans several blocks (a process's memory regions, kernel regions) as one target, the way yara scans a
    /// process: matches from every block count toward one evaluation, offsets are the blocks' absolute
    /// addresses, <c>filesize</c> is undefined and <c>uintN(addr)</c> reads whichever block holds addr.
    /// </summary>
    public static unsafe YaraScanResult ScanBlocks(YaraRules rules, IReadOnlyList<(long Address, ReadOnlyMemory<byte> Data)> blocks, YaraScanOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(rules);
        ArgumentNullException.ThrowIfNull(blocks);
        options ??= new YaraScanOptions();
        var sw = Stopwatch.StartNew();
        var budget = new ScanBudget(options.MaxSteps);
        using var timeout = options.Timeout is TimeSpan t ? new CancellationTokenSource(t) : null;
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(options.Cancellation, timeout?.Token ?? CancellationToken.None);
        var raw = new List<(long, int)>?[rules.Strings.Length];
        long bytes = 0;
        // Blocks are searched in parallel (a process has many small regions); large blocks are also split
        // inside Search. Results are merged in block order, so the outcome does not depend on scheduling.
        var found = new List<(long, int)>?[blocks.Count][];
        var inner = blocks.Count > 1 ? options with { Parallelism = 1 } : options;
        try
        {
            Parallel.For(0, blocks.Count, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, options.Parallelism), CancellationToken = linked.Token }, b =>
            {
                using var pin = blocks[b].Data.Pin();
                found[b] = Search(rules, (byte*)pin.Pointer, blocks[b].Data.Length, inner, budget, linked.Token);
            });
        }
        catch (AggregateException e) when (e.InnerException is YaraScanException)
        {
            throw e.InnerException;
        }
        catch (OperationCanceledException e) when (!options.Cancellation.IsCancellationRequested)
        {
            throw new YaraScanException($"the scan timed out after {options.Timeout}", e);
        }
        for (int b = 0; b < blocks.Count; b++)
        {
            long address = blocks[b].Address;
            for (int s = 0; s < raw.Length; s++)
            {
                if (found[b][s] is not { } l)
                    continue;
                var target = raw[s] ??= [];
                foreach (var (off, len) in l)
                    target.Add((unchecked(address + off), len));
            }
            bytes += blocks[b].Data.Length;
        }
        var sorted = blocks.OrderBy(b => b.Address).ToArray();
        bool Read(long address, Span<byte> destination)
        {
            foreach (var (a, d) in sorted)
            {
                long rel = unchecked(address - a);
                if (rel >= 0 && rel <= d.Length - destination.Length)
                {
                    d.Span.Slice((int)rel, destination.Length).CopyTo(destination);
                    return true;
                }
            }
            return false;
        }
        var ctx = new EvalContext { Reader = Read };
        return Evaluate(rules, raw, ctx, options, budget, timeout, linked.Token, Read, bytes, sw);
    }

    private static YaraScanResult Evaluate(YaraRules rules, List<(long Offset, int Length)>?[] raw, EvalContext ctx, YaraScanOptions options,
        ScanBudget budget, CancellationTokenSource? timeout, CancellationToken token, BlockReader read, long bytes, Stopwatch sw)
    {
        var warnings = new List<string>();
        var lists = new MatchList[rules.Strings.Length];
        long total = 0;
        for (int s = 0; s < lists.Length; s++)
        {
            if (raw[s] is null)
            {
                lists[s] = MatchList.Empty;
                continue;
            }
            var list = MatchList.From(raw[s]!);
            if (list.Count > options.MaxMatchesPerString)
            {
                warnings.Add($"string \"{rules.Strings[s].Spec.Id}\" has more than {options.MaxMatchesPerString} matches; the rest were dropped");
                var trimmed = new List<(long, int)>(options.MaxMatchesPerString);
                for (int i = 0; i < options.MaxMatchesPerString; i++)
                    trimmed.Add(list[i]);
                list = MatchList.From(trimmed);
            }
            total += list.Count;
            if (total > options.MaxTotalMatches)
                throw new YaraScanException($"the scan exceeded its memory budget: more than {options.MaxTotalMatches} matches");
            lists[s] = list;
        }
        ctx.BaseOffset = options.BaseOffset;
        ctx.Matches = lists;
        ctx.RuleResults = new bool[rules.Rules.Count];
        ctx.Variables = new Value[Math.Max(1, rules.MaxVariables)];
        ctx.Externals = rules.ExternalValues;
        ctx.Budget = budget;
        bool globalFailed = false;
        try
        {
            foreach (var rule in rules.Rules)
            {
                token.ThrowIfCancellationRequested();
                bool ok = rule.Condition.Eval(ctx).Truth;
                ctx.RuleResults[rule.Index] = ok;
                if (rule.IsGlobal && !ok)
                    globalFailed = true;
            }
        }
        catch (ScanBudgetExceededException e)
        {
            throw new YaraScanException("the scan exceeded its step budget while evaluating conditions", e);
        }
        catch (OperationCanceledException e) when (timeout?.IsCancellationRequested == true)
        {
            throw new YaraScanException($"the scan timed out after {options.Timeout}", e);
        }
        var matched = new List<YaraRuleMatch>();
        foreach (var rule in rules.Rules)
        {
            if (!ctx.RuleResults[rule.Index] || (globalFailed && !rule.IsGlobal))
                continue;
            var strings = new List<YaraStringMatches>();
            foreach (var s in rule.Strings)
            {
                var list = lists[s.Index];
                if (list.Count == 0)
                    continue;
                var ms = new YaraMatch[list.Count];
                for (int i = 0; i < list.Count; i++)
                {
                    var (off, len) = list[i];
                    int keep = Math.Min(len, options.MaxMatchData);
                    var data = new byte[keep];
                    while (keep > 0 && !read(off, data.AsSpan(0, keep)))
                        keep--;
                    ms[i] = new YaraMatch(off + options.BaseOffset, len, keep == data.Length ? data : data[..keep]);
                }
                strings.Add(new YaraStringMatches(s, ms));
            }
            matched.Add(new YaraRuleMatch(rule, strings));
        }
        return new YaraScanResult(matched, warnings, bytes, sw.Elapsed);
    }

    private readonly unsafe struct Collector(CompiledString[] strings, byte* data, int length, ScanBudget budget, List<(long, int)>?[] raw) : IAtomVisitor
    {
        private readonly Sink?[] sinks = new Sink?[strings.Length];

        public void Hit(int stringIndex, Atom atom, int position)
        {
            var sink = sinks[stringIndex] ??= new Sink(raw, stringIndex);
            strings[stringIndex].Verify(new ReadOnlySpan<byte>(data, length), atom, position, sink, budget);
        }
    }

    private sealed class Sink(List<(long, int)>?[] raw, int index) : IMatchSink
    {
        public void Add(int offset, int length) => (raw[index] ??= []).Add((offset, length));
    }

    private static unsafe List<(long Offset, int Length)>?[] Search(YaraRules rules, byte* data, int length, YaraScanOptions options, ScanBudget budget, CancellationToken token)
    {
        var strings = rules.Strings;
        var atoms = rules.Atoms;
        int chunks = options.Parallelism <= 1 || length < 2 * ParallelChunk ? 1 : Math.Min(options.Parallelism * 4, length / ParallelChunk);
        var perChunk = new List<(long, int)>?[chunks][];
        try
        {
            if (chunks == 1)
            {
                perChunk[0] = SearchRange(rules, data, length, 0, length, budget, token);
            }
            else
            {
                long step = (length + chunks - 1) / chunks;
                nint ptr = (nint)data;
                var po = new ParallelOptions { MaxDegreeOfParallelism = options.Parallelism, CancellationToken = token };
                Parallel.For(0, chunks, po, c =>
                {
                    int start = (int)Math.Min(length, c * step);
                    int end = (int)Math.Min(length, (c + 1) * step);
                    perChunk[c] = SearchRange(rules, (byte*)ptr, length, start, end, budget, token);
                });
            }
            // Strings without atoms are checked at every offset once.
            if (atoms.NoAtomStrings.Count > 0)
            {
                var first = perChunk[0];
                foreach (int s in atoms.NoAtomStrings)
                    strings[s].VerifyAll(new ReadOnlySpan<byte>(data, length), new Sink(first, s), budget);
            }
        }
        catch (ScanBudgetExceededException e)
        {
            throw new YaraScanException("the scan exceeded its step budget (a pattern needs too much work on this data)", e);
        }
        catch (AggregateException e) when (e.InnerException is ScanBudgetExceededException)
        {
            throw new YaraScanException("the scan exceeded its step budget (a pattern needs too much work on this data)", e.InnerException);
        }
        catch (OperationCanceledException e) when (!options.Cancellation.IsCancellationRequested)
        {
            throw new YaraScanException($"the scan timed out after {options.Timeout}", e);
        }
        if (chunks == 1)
            return perChunk[0];
        var merged = new List<(long, int)>?[strings.Length];
        foreach (var chunk in perChunk)
        {
            for (int s = 0; s < strings.Length; s++)
            {
                if (chunk[s] is { } l)
                    (merged[s] ??= []).AddRange(l);
            }
        }
        return merged;
    }

    private static unsafe List<(long, int)>?[] SearchRange(YaraRules rules, byte* data, int length, int start, int end, ScanBudget budget, CancellationToken token)
    {
        var raw = new List<(long, int)>?[rules.Strings.Length];
        var collector = new Collector(rules.Strings, data, length, budget, raw);
        const int slice = 1 << 18;
        for (int s = start; s < end; s += slice)
        {
            token.ThrowIfCancellationRequested();
            rules.Atoms.Find(data, length, s, Math.Min(end, s + slice), ref collector);
        }
        return raw;
    }
}
