using System.Diagnostics;
using Vmi.Linux.Symbols;
using Vmi.Memory;
using Xunit;

namespace Vmi.Linux.Tests.Symbols;

public sealed class KallsymsReaderTests
{
    private const ulong Slide = 0x2e00000;
    private const ulong Text = KallsymsBuilder.UnslidText + Slide;
    private const ulong ImageOffset = 0x210000; // in the second 2 MiB page, past the text the locator checks

    private static KallsymsBuilder Built(int count = 1500, bool absolutePercpu = true, bool seqs = false) =>
        new KallsymsBuilder { AbsolutePercpu = absolutePercpu, SeqsOfNames = seqs }.Build(KallsymsBuilder.SampleSymbols(count, Text, withPercpu: absolutePercpu), Text);

    private static void AssertSame(IReadOnlyList<KernelSymbol> expected, KallsymsTable table)
    {
        Assert.Equal(expected.Count, table.Count);
        for (int i = 0; i < expected.Count; i++)
            Assert.Equal(expected[i], table.Symbols[i]);
    }

    [Theory]
    [InlineData(1, true, false)]
    [InlineData(255, true, false)]
    [InlineData(256, true, false)]
    [InlineData(257, true, false)]
    [InlineData(1500, true, false)]
    [InlineData(1500, false, false)]
    [InlineData(1, true, true)]
    [InlineData(255, true, true)]
    [InlineData(256, true, true)]
    [InlineData(513, true, true)]
    [InlineData(1500, true, true)]
    [InlineData(1501, false, true)]
    public void Synthetic_tables_decode_exactly(int count, bool absolutePercpu, bool seqs)
    {
        KallsymsBuilder b = count == 1
            ? new KallsymsBuilder { AbsolutePercpu = absolutePercpu, SeqsOfNames = seqs }.Build([new KernelSymbol("_text_0123456789", Text, 'T')], Text) // the signature needs every digit used
            : Built(count, absolutePercpu, seqs);
        KallsymsTable table = KallsymsReader.Read(b.Image, Text);
        AssertSame(b.Symbols, table);
        KallsymsLayout l = table.Layout;
        Assert.Equal(Text + (ulong)b.TokenTable, l.TokenTable);
        Assert.Equal(Text + (ulong)b.TokenIndex, l.TokenIndex);
        Assert.Equal(Text + (ulong)b.Markers, l.Markers);
        Assert.Equal(Text + (ulong)b.Names, l.Names);
        Assert.Equal(Text + (ulong)b.NumSyms, l.NumSymsAddress);
        Assert.Equal(Text + (ulong)b.Offsets, l.Addresses);
        Assert.Equal(Text, l.RelativeBase);
        Assert.Equal(4, l.MarkerWidth);
        Assert.Equal(seqs ? Text + (ulong)b.Seqs : 0, l.SeqsOfNames);
        Assert.Equal(absolutePercpu ? KallsymsAddressMode.AbsolutePercpu : KallsymsAddressMode.Relative, l.AddressMode);
        Assert.True(table.TryGetAddress(b.Symbols[^1].Name, out ulong last));
        Assert.Equal(b.Symbols[^1].Address, last);
        Assert.True(table.TryGetAddress(count == 1 ? "_text_0123456789" : "_text", out ulong text));
        Assert.Equal(Text, text);
    }

    [Fact]
    public void Long_names_use_the_two_byte_length_form()
    {
        KallsymsBuilder b = Built(300);
        KernelSymbol longOne = b.Symbols[77];
        Assert.True(longOne.Name.Length > 300);
        Assert.Equal(longOne, KallsymsReader.Read(b.Image, Text).Symbols[77]);
    }

    [Fact]
    public void Reads_through_page_tables_after_locating_the_kernel()
    {
        KallsymsBuilder b = Built(3000);
        (SparsePhysicalMemory mem, PagingContext ctx, ulong phys) = MapKernel(b.Image, la57: true);
        KernelLocation k = KernelLocator.Locate(mem, ctx);
        Assert.Equal(Text, k.VirtualBase);
        Assert.Equal(phys, k.PhysicalBase);
        Assert.Equal((long)Slide, k.Slide);
        Assert.Equal(4UL << 20, k.MappedLength);
        var sw = Stopwatch.StartNew();
        KallsymsTable table = KallsymsReader.Read(mem, ctx);
        AssertSame(b.Symbols, table);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(2), sw.Elapsed.ToString());
    }

    [Fact]
    public void A_hole_in_the_tables_is_reported_not_read_as_zeros()
    {
        KallsymsBuilder b = Built(3000);
        (SparsePhysicalMemory mem, PagingContext ctx, ulong phys) = MapKernel(b.Image, la57: false);
        // Drop the physical page holding the middle of kallsyms_names.
        mem.Remove(phys + ImageOffset + (ulong)(((b.Names + b.Markers) / 2) & ~0xFFF), 4096);
        var e = Assert.Throws<KallsymsException>(() => KallsymsReader.Read(mem, ctx));
        Assert.Contains("unmapped", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void No_token_table_is_a_clear_error()
    {
        var image = new byte[1 << 16];
        new Random(3).NextBytes(image);
        var e = Assert.Throws<KallsymsException>(() => KallsymsReader.Read(image, Text));
        Assert.Contains("kallsyms_token_table", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Decoy_signature_is_skipped_and_a_lone_decoy_is_reported()
    {
        KallsymsBuilder b = Built(600);
        byte[] onlyDecoy = b.Image[..b.Offsets];
        var e = Assert.Throws<KallsymsException>(() => KallsymsReader.Read(onlyDecoy, Text));
        Assert.Contains("rejected", e.Message, StringComparison.Ordinal);
    }

    public static TheoryData<string, string> Corruptions => new()
    {
        { "num_syms huge", "num_syms" },
        { "num_syms one short", "num_syms" },
        { "name length runs past the names", "names" },
        { "marker wrong", "markers" },
        { "markers not increasing", "markers" },
        { "token index out of range", "token" },
        { "token index points inside a token", "token" },
        { "relative base not a kernel address", "relative_base" },
        { "offsets unsorted", "sorted" },
        { "type not a letter", "type" },
    };

    [Theory]
    [MemberData(nameof(Corruptions))]
    public void Corrupt_tables_give_KallsymsException_promptly(string corruption, string mentioned)
    {
        Corrupt(Built(1500), corruption, mentioned);
        Corrupt(Built(1500, seqs: true), corruption, mentioned);
    }

    [Fact]
    public void Corrupt_seqs_of_names_is_rejected()
    {
        KallsymsBuilder b = Built(1500, seqs: true);
        b.Image[b.Seqs + 3 * 10] = 0x7F; // index far beyond num_syms
        var e = Assert.Throws<KallsymsException>(() => KallsymsReader.Read(b.Image, Text));
        Assert.Contains("seqs_of_names", e.Message, StringComparison.Ordinal);
    }

    private static void Corrupt(KallsymsBuilder b, string corruption, string mentioned)
    {
        switch (corruption)
        {
            case "num_syms huge": b.PokeU32(b.NumSyms, 0xFFFF_FFF0); break;
            case "num_syms one short": b.PokeU32(b.NumSyms, (uint)b.Symbols.Count - 1); break;
            case "name length runs past the names": b.Image[FindLastNameStart(b)] = 0x7F; break;
            case "marker wrong": b.PokeU32(b.Markers + 4 * 2, BitConverter.ToUInt32(b.Image, b.Markers + 4 * 2) + 1); break;
            case "markers not increasing": b.PokeU32(b.Markers + 4 * 3, 1); break;
            case "token index out of range": b.PokeU16(b.TokenIndex + 2 * 200, 0xFFFF); break;
            case "token index points inside a token": b.PokeU16(b.TokenIndex + 2 * 'A', (ushort)(BitConverter.ToUInt16(b.Image, b.TokenIndex + 2 * 'A') + 1)); break;
            case "relative base not a kernel address": b.Image[b.RelativeBase + 7] = 0; break;
            case "offsets unsorted": b.PokeU32(b.Offsets + 4 * 700, unchecked((uint)-5)); break;
            case "type not a letter": CorruptFirstType(b); break;
            default: throw new ArgumentException(corruption);
        }
        var sw = Stopwatch.StartNew();
        var e = Assert.Throws<KallsymsException>(() => KallsymsReader.Read(b.Image, Text));
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(1), sw.Elapsed.ToString());
        Assert.Contains(mentioned, e.Message, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void Random_corruption_never_escapes_as_anything_but_KallsymsException()
    {
        KallsymsBuilder clean = Built(700, seqs: true);
        var rng = new Random(42);
        int decoded = 0, rejected = 0;
        for (int iteration = 0; iteration < 300; iteration++)
        {
            byte[] image = (byte[])clean.Image.Clone();
            for (int flips = 1 + rng.Next(4); flips > 0; flips--)
                image[clean.Offsets + rng.Next(clean.End - clean.Offsets)] = (byte)rng.Next(256);
            try
            {
                KallsymsTable t = KallsymsReader.Read(image, Text);
                Assert.True(t.Count <= 700);
                decoded++;
            }
            catch (KallsymsException)
            {
                rejected++;
            }
        }
        Assert.Equal(300, decoded + rejected);
        Assert.True(rejected > 0);
    }

    [Fact]
    public void Options_bound_the_symbol_count()
    {
        KallsymsBuilder b = Built(1500);
        Assert.Throws<KallsymsException>(() => KallsymsReader.Read(b.Image, Text, new KallsymsReaderOptions { MaxSymbols = 1000 }));
    }

    private static int FindLastNameStart(KallsymsBuilder b)
    {
        int pos = b.Names + (int)BitConverter.ToUInt32(b.Image, b.Markers + 4 * ((b.Symbols.Count - 1) / 256));
        for (int i = (b.Symbols.Count - 1) / 256 * 256; i < b.Symbols.Count - 1; i++)
        {
            int len = b.Image[pos];
            pos += (len & 0x80) != 0 ? 2 + ((len & 0x7F) | (b.Image[pos + 1] << 7)) : 1 + len;
        }
        return pos;
    }

    private static void CorruptFirstType(KallsymsBuilder b)
    {
        // Symbol 0's first token expands to its type letter; point it at a digit token instead.
        b.Image[b.Names + 1] = (byte)'7';
    }

    /// <summary>Maps the image at <see cref="Text"/> with 2 MiB pages onto physical 0x3e00000 (+ two 2 MiB pages).</summary>
    internal static (SparsePhysicalMemory Memory, PagingContext Context, ulong Phys) MapKernel(byte[] image, bool la57)
    {
        const ulong phys = 0x3e00000;
        var mem = new SparsePhysicalMemory(1UL << 32);
        ulong top = 0x1000, next = 0x2000;
        ulong table = top;
        int[] shifts = la57 ? [48, 39, 30] : [39, 30];
        foreach (int shift in shifts)
        {
            ulong child = next;
            next += 0x1000;
            mem.WriteUInt64(table + ((Text >> shift) & 511) * 8, child | 0x3);
            table = child;
        }
        for (ulong i = 0; i < 2; i++)
            mem.WriteUInt64(table + (((Text >> 21) + i) & 511) * 8, (phys + (i << 21)) | 0x83); // P | RW | PS
        mem.Allocate(phys, 4UL << 20);
        mem.Write(phys, [0x48, 0x8d, 0x25, 0x51, 0x3f, 0xa0, 0x01]);
        mem.Write(phys + ImageOffset, image);
        return (mem, new PagingContext(top, la57), phys);
    }
}
