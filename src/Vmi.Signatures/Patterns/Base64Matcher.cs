namespace Vmi.Signatures.Patterns;

/// <summary>
/// base64 / base64wide strings: YARA searches for the three encodings of the text (plaintext shifted by 0,
/// 1 and 2 bytes) with the characters that depend on neighbouring bytes cut off, each as an exact literal.
/// </summary>
internal sealed class Base64Matcher
{
    private static readonly byte[] StandardAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"u8.ToArray();

    private readonly List<byte[]> literals = [];
    private readonly List<int> atomOffsets = [];

    public Base64Matcher(StringSpec spec)
    {
        var m = spec.Modifiers;
        var alphabet = spec.Base64Alphabet ?? StandardAlphabet;
        if (alphabet.Length != 64)
            throw new PatternException("length of base64 alphabet must be 64", 0);
        bool isWide = (m & StringModifiers.Wide) != 0;
        bool isAscii = (m & StringModifiers.Ascii) != 0;
        bool b64 = (m & StringModifiers.Base64) != 0;
        bool b64Wide = (m & StringModifiers.Base64Wide) != 0;
        if (isWide)
        {
            var w = AtomQuality.ToWide(spec.Text);
            if (b64)
                AddEncodings(w, alphabet, wideOutput: false);
            if (b64Wide)
                AddEncodings(w, alphabet, wideOutput: true);
        }
        if (isAscii || !isWide)
        {
            if (b64)
                AddEncodings(spec.Text, alphabet, wideOutput: false);
            if (b64Wide)
                AddEncodings(spec.Text, alphabet, wideOutput: true);
        }
        var atoms = new List<Atom>();
        for (int i = 0; i < literals.Count; i++)
        {
            var lit = literals[i];
            if (lit.Length == 0)
                continue;
            var (start, len) = AtomQuality.BestWindow(lit, nocase: false);
            atomOffsets.Add(start);
            atoms.Add(new Atom(lit.AsSpan(start, len).ToArray(), atomOffsets.Count - 1));
            MaxMatchLength = Math.Max(MaxMatchLength, lit.Length);
        }
        literals.RemoveAll(l => l.Length == 0);
        Atoms = atoms;
    }

    public IReadOnlyList<Atom> Atoms { get; }
    public int MaxMatchLength { get; }

    private void AddEncodings(byte[] input, byte[] alphabet, bool wideOutput)
    {
        for (int shift = 0; shift <= 2; shift++)
        {
            if (shift == 1 && input.Length == 1)
                continue;
            var buf = new byte[shift + input.Length];
            buf.AsSpan(0, shift).Fill((byte)'A');
            input.CopyTo(buf, shift);
            int total = buf.Length;
            int pad = total % 3 == 0 ? 0 : 3 - (total % 3);
            var enc = Encode(buf, alphabet);
            int leading = shift == 0 ? 0 : shift + 1;
            int trailing = pad == 0 ? 0 : pad + 1;
            int length = enc.Count - leading - trailing;
            var core = length > 0 ? enc.GetRange(leading, length).ToArray() : [];
            literals.Add(wideOutput ? AtomQuality.ToWide(core) : core);
        }
    }

    private static List<byte> Encode(byte[] src, byte[] alphabet)
    {
        var o = new List<byte>((src.Length + 2) / 3 * 4);
        int i = 0;
        for (; i + 3 <= src.Length; i += 3)
        {
            o.Add(alphabet[src[i] >> 2]);
            o.Add(alphabet[((src[i] & 3) << 4) | (src[i + 1] >> 4)]);
            o.Add(alphabet[((src[i + 1] & 0x0f) << 2) | (src[i + 2] >> 6)]);
            o.Add(alphabet[src[i + 2] & 0x3f]);
        }
        int left = src.Length - i;
        if (left > 0)
        {
            o.Add(alphabet[src[i] >> 2]);
            if (left == 1)
            {
                o.Add(alphabet[(src[i] & 3) << 4]);
                o.Add((byte)'=');
            }
            else
            {
                o.Add(alphabet[((src[i] & 3) << 4) | (src[i + 1] >> 4)]);
                o.Add(alphabet[(src[i + 1] & 0x0f) << 2]);
            }
            o.Add((byte)'=');
        }
        return o;
    }

    public void Verify(ReadOnlySpan<byte> data, int atomId, int atomPosition, IMatchSink sink)
    {
        if ((uint)atomId >= (uint)literals.Count)
            return;
        int start = atomPosition - atomOffsets[atomId];
        var lit = literals[atomId];
        if (start >= 0 && start + lit.Length <= data.Length && data.Slice(start, lit.Length).SequenceEqual(lit))
            sink.Add(start, lit.Length);
    }

    public void VerifyAll(ReadOnlySpan<byte> data, IMatchSink sink)
    {
        for (int o = 0; o < data.Length; o++)
        {
            foreach (var lit in literals)
            {
                if (o + lit.Length <= data.Length && data.Slice(o, lit.Length).SequenceEqual(lit))
                {
                    sink.Add(o, lit.Length);
                    break;
                }
            }
        }
    }
}
