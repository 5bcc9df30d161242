namespace Vmi.Signatures.Patterns;

/// <summary>
/// Verifies "text" strings with ascii / wide / nocase / fullword / xor, in the order YARA checks them at a
/// candidate start: plain ascii, plain wide, then (xor only) xored wide and xored ascii.
/// </summary>
internal sealed class LiteralMatcher
{
    private readonly byte[] text;
    private readonly byte[] lower;
    private readonly bool ascii;
    private readonly bool wide;
    private readonly bool nocase;
    private readonly bool fullword;
    private readonly bool xor;
    /// <summary>Per atom id: how far the atom starts after the string's start.</summary>
    private readonly int[] atomOffsets;
    /// <summary>Per atom id: the form (ascii or wide bytes) the atom was cut from.</summary>
    private readonly List<byte[]> atomForms = [];

    public LiteralMatcher(StringSpec spec, PatternLimits limits)
    {
        text = spec.Text;
        var m = spec.Modifiers;
        wide = (m & StringModifiers.Wide) != 0;
        ascii = (m & StringModifiers.Ascii) != 0 || !wide;
        nocase = (m & StringModifiers.Nocase) != 0;
        fullword = (m & StringModifiers.Fullword) != 0;
        xor = (m & StringModifiers.Xor) != 0;
        lower = new byte[text.Length];
        for (int i = 0; i < text.Length; i++)
            lower[i] = ToLower(text[i]);

        var atoms = new List<Atom>();
        var offsets = new List<int>();
        if (text.Length > 0)
        {
            int xorMin = xor ? Math.Clamp(spec.XorMin, 0, 255) : 0;
            int xorMax = xor ? Math.Clamp(spec.XorMax, 0, 255) : 0;
            if (ascii)
                AddForm(text, xorMin, xorMax, atoms, offsets);
            if (wide)
                AddForm(AtomQuality.ToWide(text), xorMin, xorMax, atoms, offsets);
            if (atoms.Count > limits.MaxVariants)
                throw new PatternException($"string expands into {atoms.Count} atoms, more than the limit of {limits.MaxVariants}", 0);
        }
        Atoms = atoms;
        atomOffsets = [.. offsets];
        MaxMatchLength = text.Length * (wide ? 2 : 1);
    }

    public IReadOnlyList<Atom> Atoms { get; }
    public int MaxMatchLength { get; }

    private void AddForm(byte[] form, int xorMin, int xorMax, List<Atom> atoms, List<int> offsets)
    {
        var (start, len) = AtomQuality.BestWindow(form, nocase);
        if (!nocase && !xor)
        {
            // Exact text: lengthen the atom to the right (up to 8 bytes). The scanner keys on its first four
            // bytes and compares the rest before verifying, so strings that share a common 4-byte window
            // ("/5.0", "C:\\U") no longer cost a verification at every occurrence of it.
            len = Math.Min(MaxExactAtom, form.Length - start);
        }
        int id = offsets.Count;
        offsets.Add(start);
        atomForms.Add(form);
        var window = form.AsSpan(start, len);
        if (xor)
        {
            var seen = new HashSet<string>();
            for (int k = xorMin; k <= xorMax; k++)
            {
                var a = new byte[len];
                for (int i = 0; i < len; i++)
                    a[i] = (byte)(window[i] ^ k);
                if (seen.Add(Convert.ToHexString(a)))
                    atoms.Add(new Atom(a, id));
            }
            return;
        }
        var sets = new List<ByteSet>(len);
        foreach (byte b in window)
        {
            var s = ByteSet.Of(b);
            if (nocase)
                s.FoldCase();
            sets.Add(s);
        }
        foreach (var v in AtomQuality.Expand(sets))
            atoms.Add(new Atom(v, id));
    }

    private const int MaxExactAtom = 8;

    /// <summary>
    /// The bytes of the string that follow <paramref name="atom"/> (at most <paramref name="max"/>), lower-cased
    /// for nocase strings; null for xor strings (their tail depends on the key). The scanner compares this tail
    /// before calling <see cref="Verify"/>, which is far cheaper when many strings share a common atom.
    /// </summary>
    /// <summary>For xor strings: the unxored first byte of the atom's window and the unxored bytes after it.</summary>
    public (byte Window0, byte[] Tail)? XorTailAfter(Atom atom, int max)
    {
        if (!xor || (uint)atom.Id >= (uint)atomForms.Count)
            return null;
        byte[] form = atomForms[atom.Id];
        int start = atomOffsets[atom.Id];
        int from = start + atom.Bytes.Length;
        int n = Math.Clamp(form.Length - from, 0, max);
        return (form[start], form.AsSpan(from, n).ToArray());
    }

    public (byte[] Tail, bool Nocase)? TailAfter(Atom atom, int max)
    {
        if (xor || (uint)atom.Id >= (uint)atomForms.Count)
            return null;
        byte[] form = atomForms[atom.Id];
        int from = atomOffsets[atom.Id] + atom.Bytes.Length;
        int n = Math.Clamp(form.Length - from, 0, max);
        var tail = form.AsSpan(from, n).ToArray();
        if (nocase)
        {
            for (int i = 0; i < tail.Length; i++)
                tail[i] = ToLower(tail[i]);
        }
        return (tail, nocase);
    }

    private static byte ToLower(byte b) => b is >= (byte)'A' and <= (byte)'Z' ? (byte)(b + 32) : b;

    public void Verify(ReadOnlySpan<byte> data, int atomId, int atomPosition, IMatchSink sink)
    {
        if ((uint)atomId >= (uint)atomOffsets.Length)
            return;
        int start = atomPosition - atomOffsets[atomId];
        if (start < 0 || start >= data.Length)
            return;
        TryAt(data, start, sink);
    }

    public void VerifyAll(ReadOnlySpan<byte> data, IMatchSink sink)
    {
        if (text.Length == 0)
            return;
        for (int o = 0; o < data.Length; o++)
            TryAt(data, o, sink);
    }

    private void TryAt(ReadOnlySpan<byte> data, int start, IMatchSink sink)
    {
        var rest = data[start..];
        int n = text.Length;
        int matched = 0;
        if (nocase)
        {
            if (ascii && rest.Length >= n && EqualsNocase(rest[..n]))
                matched = n;
            if (matched == 0 && wide && rest.Length >= 2 * n && EqualsWide(rest, ignoreCase: true))
                matched = 2 * n;
        }
        else
        {
            if (ascii && rest.Length >= n && rest[..n].SequenceEqual(text))
                matched = n;
            if (matched == 0 && wide && rest.Length >= 2 * n && EqualsWide(rest, ignoreCase: false))
                matched = 2 * n;
            if (matched == 0 && xor)
            {
                if (wide && rest.Length >= 2 * n && EqualsXorWide(rest))
                    matched = 2 * n;
                if (matched == 0 && rest.Length >= n && EqualsXor(rest))
                    matched = n;
            }
        }
        if (matched == 0)
            return;
        if (fullword && !TreeMatcher.FullwordOk(data, start, matched, matched == 2 * n))
            return;
        sink.Add(start, matched);
    }

    private bool EqualsNocase(ReadOnlySpan<byte> d)
    {
        for (int i = 0; i < d.Length; i++)
        {
            if (ToLower(d[i]) != lower[i])
                return false;
        }
        return true;
    }

    private bool EqualsWide(ReadOnlySpan<byte> d, bool ignoreCase)
    {
        for (int i = 0; i < text.Length; i++)
        {
            byte c = d[2 * i];
            if (d[2 * i + 1] != 0)
                return false;
            if (ignoreCase ? ToLower(c) != lower[i] : c != text[i])
                return false;
        }
        return true;
    }

    private bool EqualsXor(ReadOnlySpan<byte> d)
    {
        byte k = (byte)(d[0] ^ text[0]);
        for (int i = 0; i < text.Length; i++)
        {
            if (d[i] != (byte)(text[i] ^ k))
                return false;
        }
        return true;
    }

    private bool EqualsXorWide(ReadOnlySpan<byte> d)
    {
        byte k = (byte)(d[0] ^ text[0]);
        for (int i = 0; i < text.Length; i++)
        {
            if (d[2 * i] != (byte)(text[i] ^ k) || d[2 * i + 1] != k)
                return false;
        }
        return true;
    }
}
