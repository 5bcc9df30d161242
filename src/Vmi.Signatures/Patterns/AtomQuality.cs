namespace Vmi.Signatures.Patterns;

/// <summary>Scores candidate atoms: longer, more varied and less common bytes are better; fewer variants are better.</summary>
internal static class AtomQuality
{
    public const int MaxAtomLength = 4;

    private static bool IsCommon(int b) => b is 0x00 or 0x20 or 0xFF or 0xCC or 0x90 or 0x0A or 0x0D;

    /// <summary>Quality of a window whose positions accept the given byte sets.</summary>
    public static int Score(IReadOnlyList<ByteSet> window)
    {
        int q = 0;
        var seen = new HashSet<int>();
        long variants = 1;
        foreach (var s in window)
        {
            int n = s.Count;
            variants *= n;
            if (n == 1)
            {
                int b = s.Members().First();
                seen.Add(b);
                q += IsCommon(b) ? 6 : char.IsAsciiLetter((char)b) ? 18 : 20;
            }
            else if (n == 2)
            {
                q += 15;
                seen.Add(s.Members().First() | 0x20);
            }
            else
            {
                q += n <= 4 ? 9 : 4;
            }
        }
        q += 3 * seen.Count;
        if (seen.Count == 1 && window.Count > 1)
            q -= 8 * window.Count;
        q -= 2 * (int)Math.Log2(Math.Max(1, variants));
        return q;
    }

    public static int Score(ReadOnlySpan<byte> bytes, bool nocase)
    {
        var sets = new List<ByteSet>(bytes.Length);
        foreach (byte b in bytes)
        {
            var s = ByteSet.Of(b);
            if (nocase)
                s.FoldCase();
            sets.Add(s);
        }
        return Score(sets);
    }

    /// <summary>The best window (start, length) of up to 4 bytes in a literal.</summary>
    public static (int Start, int Length) BestWindow(ReadOnlySpan<byte> bytes, bool nocase)
    {
        int len = Math.Min(MaxAtomLength, bytes.Length);
        int best = int.MinValue, bestStart = 0;
        for (int i = 0; i + len <= bytes.Length; i++)
        {
            int q = Score(bytes.Slice(i, len), nocase);
            if (q > best)
            {
                best = q;
                bestStart = i;
            }
        }
        return (bestStart, len);
    }

    /// <summary>All byte sequences accepted by a window of byte sets (cartesian product).</summary>
    public static List<byte[]> Expand(IReadOnlyList<ByteSet> window)
    {
        var result = new List<byte[]> { Array.Empty<byte>() };
        foreach (var s in window)
        {
            var next = new List<byte[]>(result.Count * s.Count);
            foreach (var prefix in result)
            {
                foreach (byte b in s.Members())
                {
                    var a = new byte[prefix.Length + 1];
                    prefix.CopyTo(a, 0);
                    a[^1] = b;
                    next.Add(a);
                }
            }
            result = next;
        }
        return result;
    }

    public static byte[] ToWide(ReadOnlySpan<byte> bytes)
    {
        var w = new byte[bytes.Length * 2];
        for (int i = 0; i < bytes.Length; i++)
            w[2 * i] = bytes[i];
        return w;
    }
}
