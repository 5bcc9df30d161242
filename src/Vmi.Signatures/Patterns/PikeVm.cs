using System.Runtime.CompilerServices;

namespace Vmi.Signatures.Patterns;

/// <summary>
/// A Thompson/Pike virtual machine with thread priorities, modelled on how YARA runs regular expressions:
/// forwards it reports the length of the highest-priority match (or the shortest, for hex strings without
/// alternatives); backwards it reports every length that reaches the end of the program.
/// Threads never exceed the program size, so the work is bounded by program size × bytes examined.
/// </summary>
internal static class PikeVm
{
    [ThreadStatic]
    private static Scratch? scratch;

    private sealed class Scratch
    {
        public int[] Current = [];
        public int[] Next = [];
        public int[] Marks = [];
        public int[] Stack = [];
        public int Generation;

        public void Ensure(int size)
        {
            if (Marks.Length >= size)
                return;
            Current = new int[size];
            Next = new int[size];
            Marks = new int[size];
            Stack = new int[size * 2 + 4];
            Generation = 0;
        }
    }

    private static Scratch GetScratch(int size)
    {
        var s = scratch ??= new Scratch();
        s.Ensure(size);
        return s;
    }

    /// <summary>Runs forwards from <paramref name="start"/>. Returns the match length or -1.</summary>
    public static int Forward(ReProgram prog, int pc0, ReadOnlySpan<byte> data, int start, bool wide, bool shortest, int scanLimit, ScanBudget budget)
    {
        int cs = wide ? 2 : 1;
        int limit = Math.Min(data.Length - start, scanLimit);
        limit -= limit % cs;
        var s = GetScratch(prog.Length);
        int count = AddThread(prog, s, s.Current, 0, pc0, data, start, cs, backwards: false, NextGen(s));
        int matched = -1;
        for (int consumed = 0; count > 0; consumed += cs)
        {
            budget.Charge(count);
            int x = start + consumed;
            bool canConsume = consumed + cs <= limit && (cs == 1 || data[x + 1] == 0);
            byte input = canConsume ? data[x] : (byte)0;
            int gen = NextGen(s);
            int nextCount = 0;
            var cur = s.Current;
            for (int i = 0; i < count; i++)
            {
                int pc = cur[i];
                if (prog.Ops[pc] == ReOp.Match)
                {
                    matched = consumed;
                    if (shortest)
                        return matched;
                    break;
                }
                if (canConsume && InSet(prog.Sets, prog.A[pc], input))
                    nextCount = AddThread(prog, s, s.Next, nextCount, pc + 1, data, x + cs, cs, backwards: false, gen);
            }
            (s.Current, s.Next) = (s.Next, s.Current);
            count = nextCount;
        }
        return matched;
    }

    /// <summary>Runs backwards from <paramref name="start"/> (reading data[start-1], data[start-2], …) and writes every
    /// matched length, shortest first, into <paramref name="lengths"/>. Returns how many were written.</summary>
    public static int Backward(ReProgram prog, int pc0, ReadOnlySpan<byte> data, int start, bool wide, int scanLimit, ScanBudget budget, List<int> lengths)
    {
        int cs = wide ? 2 : 1;
        int limit = Math.Min(start, scanLimit);
        limit -= limit % cs;
        var s = GetScratch(prog.Length);
        int count = AddThread(prog, s, s.Current, 0, pc0, data, start, cs, backwards: true, NextGen(s));
        int found = 0;
        for (int consumed = 0; count > 0; consumed += cs)
        {
            budget.Charge(count);
            int x = start - consumed - cs;
            bool canConsume = consumed + cs <= limit && (cs == 1 || data[x + 1] == 0);
            byte input = canConsume ? data[x] : (byte)0;
            int gen = NextGen(s);
            int nextCount = 0;
            var cur = s.Current;
            bool matchedHere = false;
            for (int i = 0; i < count; i++)
            {
                int pc = cur[i];
                if (prog.Ops[pc] == ReOp.Match)
                {
                    if (!matchedHere)
                    {
                        lengths.Add(consumed);
                        found++;
                        matchedHere = true;
                    }
                    continue;
                }
                if (canConsume && InSet(prog.Sets, prog.A[pc], input))
                    nextCount = AddThread(prog, s, s.Next, nextCount, pc + 1, data, start - consumed - cs, cs, backwards: true, gen);
            }
            (s.Current, s.Next) = (s.Next, s.Current);
            count = nextCount;
        }
        return found;
    }

    private static int NextGen(Scratch s)
    {
        if (++s.Generation == int.MaxValue)
        {
            Array.Clear(s.Marks);
            s.Generation = 1;
        }
        return s.Generation;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool InSet(ulong[] sets, int id, byte b) => ((sets[(id << 2) + (b >> 6)] >> (b & 63)) & 1) != 0;

    /// <summary>Adds the threads reachable from pc without consuming input, in priority order. <paramref name="x"/> is
    /// the absolute position in data between the byte before and the byte after.</summary>
    private static int AddThread(ReProgram prog, Scratch s, int[] list, int count, int pc, ReadOnlySpan<byte> data, int x, int cs, bool backwards, int gen)
    {
        var stack = s.Stack;
        var marks = s.Marks;
        int sp = 0;
        stack[sp++] = pc;
        while (sp > 0)
        {
            int p = stack[--sp];
            if (marks[p] == gen)
                continue;
            marks[p] = gen;
            switch (prog.Ops[p])
            {
                case ReOp.Jump:
                    stack[sp++] = prog.A[p];
                    break;
                case ReOp.Split:
                    stack[sp++] = prog.B[p];
                    stack[sp++] = prog.A[p];
                    break;
                case ReOp.AssertStart:
                    if (x == 0)
                        stack[sp++] = p + 1;
                    break;
                case ReOp.AssertEnd:
                    if (!backwards && x == data.Length)
                        stack[sp++] = p + 1;
                    break;
                case ReOp.WordBoundary:
                case ReOp.NonWordBoundary:
                {
                    bool before = x - cs >= 0 && IsWordChar(data, x - cs, cs);
                    bool after = x + cs <= data.Length && IsWordChar(data, x, cs);
                    bool boundary = before != after;
                    if (boundary == (prog.Ops[p] == ReOp.WordBoundary))
                        stack[sp++] = p + 1;
                    break;
                }
                default:
                    list[count++] = p;
                    break;
            }
        }
        return count;
    }

    private static bool IsWordChar(ReadOnlySpan<byte> data, int i, int cs)
    {
        byte b = data[i];
        bool w = b == '_' || char.IsAsciiLetterOrDigit((char)b);
        return w && (cs == 1 || data[i + 1] == 0);
    }
}
