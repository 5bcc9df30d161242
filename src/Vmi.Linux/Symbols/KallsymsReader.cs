using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using Vmi.Memory;

namespace Vmi.Linux.Symbols;

/// <summary>Bounds for <see cref="KallsymsReader"/>. Guest memory is hostile: every size is capped.</summary>
public sealed record KallsymsReaderOptions
{
    /// <summary>Bytes scanned from <c>_text</c> (the tables live in the image's .rodata).</summary>
    public int MaxScanBytes { get; init; } = 64 << 20;

    /// <summary>Largest kallsyms_num_syms accepted.</summary>
    public int MaxSymbols { get; init; } = 2_000_000;

    /// <summary>Address encoding; <see cref="KallsymsAddressMode.Auto"/> detects it.</summary>
    public KallsymsAddressMode AddressMode { get; init; } = KallsymsAddressMode.Auto;

    /// <summary>Token-table signature candidates examined before giving up.</summary>
    public int MaxCandidates { get; init; } = 64;
}

/// <summary>
/// Reads the kernel's kallsyms tables from guest memory without knowing any symbol. Layout of Linux 4.6–6.1
/// (scripts/kallsyms.c, 64-bit, every table 8-aligned by ALGN):
/// <c>kallsyms_offsets</c> (s32 × n) | <c>kallsyms_relative_base</c> (u64) | <c>kallsyms_num_syms</c> (u32) |
/// <c>kallsyms_names</c> (per symbol: length byte — two bytes, ULEB128-style, when ≥ 0x80 — then token
/// indices; the first expanded character is the type) | <c>kallsyms_markers</c> (u32 per 256 symbols:
/// offset into names) | [<c>kallsyms_seqs_of_names</c> (3 bytes per symbol), 6.2+ and backported to later
/// 6.1 stable kernels such as Debian's] | <c>kallsyms_token_table</c> (256 NUL-terminated tokens) | <c>kallsyms_token_index</c>
/// (256 × u16 offsets into the token table).
/// </summary>
/// <remarks>
/// Found from the token table: every character used in a symbol name is its own single-character token at
/// its own byte value, so the table contains "0\0" "1\0" … "9\0" at tokens 48–57. From there everything else
/// follows by layout, and each step is cross-checked (token index against the strings, markers against the
/// names walk, num_syms against the marker count, addresses sorted).
/// </remarks>
public static class KallsymsReader
{
    /// <summary>KSYM_NAME_LEN in 6.1 (type character + name, without NUL).</summary>
    public const int MaxNameLength = 512;

    private const int Align = 8;
    private static ReadOnlySpan<byte> DigitTokens => "0\01\02\03\04\05\06\07\08\09\0"u8;

    /// <summary>Locates the kernel and reads its kallsyms.</summary>
    /// <exception cref="KernelNotFoundException">No kernel image was found.</exception>
    /// <exception cref="KallsymsException">The tables were not found or are malformed.</exception>
    public static KallsymsTable Read(IPhysicalMemory memory, PagingContext context, KallsymsReaderOptions? options = null)
    {
        KernelLocation kernel = KernelLocator.Locate(memory, context);
        return Read(new VirtualMemory(memory, context), kernel, options);
    }

    /// <summary>Reads kallsyms from the image found by <see cref="KernelLocator"/>.</summary>
    /// <exception cref="KallsymsException">The tables were not found or are malformed.</exception>
    public static KallsymsTable Read(IPhysicalMemory memory, PagingContext context, KernelLocation kernel, KallsymsReaderOptions? options = null) =>
        Read(new VirtualMemory(memory, context), kernel, options);

    /// <summary>Reads kallsyms from the image found by <see cref="KernelLocator"/>.</summary>
    /// <exception cref="KallsymsException">The tables were not found or are malformed.</exception>
    public static KallsymsTable Read(VirtualMemory memory, KernelLocation kernel, KallsymsReaderOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        options ??= new KallsymsReaderOptions();
        ulong length = Math.Min((ulong)options.MaxScanBytes, Math.Max(kernel.MappedLength, KernelLocator.Step));
        return Read(memory, kernel.VirtualBase, (int)length, options);
    }

    /// <summary>Reads kallsyms from <c>[start, start + length)</c> of a virtual address space; unmapped pages read as holes.</summary>
    /// <exception cref="KallsymsException">The tables were not found or are malformed.</exception>
    public static KallsymsTable Read(VirtualMemory memory, ulong start, int length, KallsymsReaderOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(memory);
        options ??= new KallsymsReaderOptions();
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, options.MaxScanBytes);
        if ((start & 0xFFF) != 0)
            throw new ArgumentException("the start must be 4 KiB-aligned", nameof(start));
        var image = new byte[length];
        var readable = new bool[(length + 4095) / 4096];
        // Read 2 MiB at a time and stop once a complete token table is in: kallsyms sits in .rodata, so the
        // rest of the image (data, bss) need not be copied. Everything kallsyms needs precedes the token
        // index, which follows the token table within the margin below.
        const int Chunk = 2 << 20, Margin = 128 << 10; // 208 tokens × 513 bytes + the index fit in the margin
        int read = 0, searchFrom = 0, candidates = 0;
        while (read < length)
        {
            int chunkEnd = Math.Min(length, read + Chunk);
            ReadRange(memory, start, image, readable, read, chunkEnd);
            read = chunkEnd;
            int limit = read == length ? read : Math.Max(0, read - Margin);
            var img = new Image(image.AsSpan(0, read), start, readable);
            while (searchFrom < limit && candidates < options.MaxCandidates)
            {
                int hit = image.AsSpan(searchFrom, limit - searchFrom).IndexOf(DigitTokens);
                if (hit < 0)
                {
                    searchFrom = limit;
                    break;
                }
                int p = searchFrom + hit;
                searchFrom = p + 1;
                if (p == 0 || image[p - 1] != 0)
                    continue;
                candidates++;
                if (TryTokenTableAt(img, p, out _) is null)
                    return Decode(image.AsSpan(0, read), start, readable, options);
            }
        }
        return Decode(image, start, readable, options);
    }

    private static void ReadRange(VirtualMemory memory, ulong start, byte[] image, bool[] readable, int from, int to)
    {
        int done = from;
        while (done < to)
        {
            VirtualReadResult r = memory.Read(start + (ulong)done, image.AsSpan(done, to - done));
            int end = done + r.BytesRead;
            // done is page-aligned; every page wholly inside [done, end) (or the short last page) was read.
            for (int p = done / 4096; p < readable.Length && Math.Min((p + 1) * 4096, image.Length) <= end; p++)
                readable[p] = true;
            if (r.IsComplete)
                break;
            done = (end / 4096 + 1) * 4096; // skip the page that failed
        }
    }

    /// <summary>Reads kallsyms from an image already in memory (a dump, a decompressed vmlinux's loaded image).</summary>
    /// <param name="image">Bytes of the kernel image.</param>
    /// <param name="imageBase">Virtual address of <c>image[0]</c>; must be 8-aligned.</param>
    /// <param name="options">Bounds.</param>
    /// <exception cref="KallsymsException">The tables were not found or are malformed.</exception>
    public static KallsymsTable Read(ReadOnlySpan<byte> image, ulong imageBase, KallsymsReaderOptions? options = null) =>
        Decode(image, imageBase, null, options ?? new KallsymsReaderOptions());

    private static KallsymsTable Decode(ReadOnlySpan<byte> image, ulong imageBase, bool[]? readable, KallsymsReaderOptions options)
    {
        if ((imageBase & (Align - 1)) != 0)
            throw new ArgumentException("the image base must be 8-aligned", nameof(imageBase));
        var sw = Stopwatch.StartNew();
        var img = new Image(image, imageBase, readable);
        Tokens tokens = FindTokenTable(img, options);
        (Markers markers, Names names, int seqs) = FindMarkersAndNames(img, tokens.TableStart, options);
        (ulong[] addresses, KallsymsAddressMode mode, int addrTable, ulong relBaseAddr, ulong relBase) =
            ReadAddresses(img, names, options);
        KernelSymbol[] symbols = DecodeNames(img, names, tokens, addresses);
        var layout = new KallsymsLayout(img.Va(addrTable), relBaseAddr == 0 ? 0 : img.Va((int)relBaseAddr), relBase,
            img.Va(names.Start - Align), names.Count, img.Va(names.Start), img.Va(markers.Start), markers.Values.Length, markers.Width,
            seqs < 0 ? 0 : img.Va(seqs), img.Va(tokens.TableStart), img.Va(tokens.IndexStart), mode);
        return new KallsymsTable(symbols, layout, sw.Elapsed);
    }

    // ---- token table ---------------------------------------------------------------------------------

    private static Tokens FindTokenTable(Image img, KallsymsReaderOptions options)
    {
        ReadOnlySpan<byte> data = img.Data;
        string? rejected = null;
        int candidates = 0;
        int from = 0;
        while (from < data.Length && candidates < options.MaxCandidates)
        {
            int hit = data[from..].IndexOf(DigitTokens);
            if (hit < 0)
                break;
            int p = from + hit;
            from = p + 1;
            if (p == 0 || data[p - 1] != 0)
                continue; // "0" must be a whole token: the previous token's NUL precedes it
            candidates++;
            string? why = TryTokenTableAt(img, p, out Tokens tokens);
            if (why is null)
                return tokens;
            rejected ??= $"candidate \"0\" token at 0x{img.Va(p):x}: {why}";
        }
        throw new KallsymsException(rejected is null
            ? $"no kallsyms_token_table in 0x{img.Base:x}-0x{img.Va(data.Length):x} (no \"0\\01\\0…9\\0\" token run); is CONFIG_KALLSYMS set and is this the kernel image?"
            : $"no valid kallsyms_token_table in 0x{img.Base:x}-0x{img.Va(data.Length):x}; {candidates} signature candidate(s) rejected, first: {rejected}");
    }

    private static string? TryTokenTableAt(Image img, int digitZero, out Tokens tokens)
    {
        tokens = default;
        ReadOnlySpan<byte> data = img.Data;
        // Walk tokens '0' (48) … 255 forward: 208 NUL-terminated strings, each at most MaxNameLength long.
        int pos = digitZero;
        for (int i = '0'; i < 256; i++)
        {
            int limit = Math.Min(data.Length - pos, MaxNameLength + 1);
            int nul = limit <= 0 ? -1 : data.Slice(pos, limit).IndexOf((byte)0);
            if (nul < 0)
                return $"token {i} at 0x{img.Va(pos):x} is not NUL-terminated within {MaxNameLength} bytes";
            pos += nul + 1;
        }
        int tableEnd = pos;
        int indexStart = AlignUp(tableEnd);
        if (indexStart + 512 > data.Length)
            return "kallsyms_token_index would run past the scanned region";
        int[] index = new int[256];
        for (int i = 0; i < 256; i++)
            index[i] = BinaryPrimitives.ReadUInt16LittleEndian(data.Slice(indexStart + 2 * i, 2));
        int tableStart = digitZero - index['0'];
        if (index[0] != 0)
            return $"kallsyms_token_index[0] is 0x{index[0]:x}, not 0";
        if (index['0'] > digitZero || (tableStart & (Align - 1)) != 0)
            return $"kallsyms_token_index['0'] = 0x{index['0']:x} puts the table start at a bad place";
        int tableLength = tableEnd - tableStart;
        for (int i = 0; i < 256; i++)
        {
            int next = i == 255 ? tableLength : index[i + 1];
            if (index[i] >= tableLength || next <= index[i] || next > tableLength)
                return $"kallsyms_token_index[{i}] = 0x{index[i]:x} is out of range or not increasing (table is 0x{tableLength:x} bytes)";
            // Token i spans [index[i], next - 1) and is NUL-terminated exactly there.
            ReadOnlySpan<byte> tok = data.Slice(tableStart + index[i], next - index[i]);
            if (tok[^1] != 0 || tok[..^1].Contains((byte)0))
                return $"kallsyms_token_index[{i}] = 0x{index[i]:x} does not point at token {i}";
        }
        if (!img.IsReadable(tableStart, indexStart + 512 - tableStart))
            return "the token table lies partly in unmapped memory";
        var expanded = new byte[256][];
        for (int i = 0; i < 256; i++)
            expanded[i] = data.Slice(tableStart + index[i], (i == 255 ? tableLength : index[i + 1]) - index[i] - 1).ToArray();
        tokens = new Tokens(tableStart, indexStart, expanded);
        return null;
    }

    // ---- markers -------------------------------------------------------------------------------------

    private static (Markers Markers, Names Names, int Seqs) FindMarkersAndNames(Image img, int tokenTable, KallsymsReaderOptions options)
    {
        int maxMarkers = (options.MaxSymbols + 255) / 256;
        // 6.1 as released: kallsyms_markers right before the token table.
        string? why4 = TryMarkers(img, tokenTable, 4, maxMarkers, out Markers m4);
        if (why4 is null)
        {
            why4 = TryFindNames(img, m4, options, -1, out Names n4);
            if (why4 is null)
                return (m4, n4, -1);
        }
        string? why8 = TryMarkers(img, tokenTable, 8, maxMarkers, out Markers m8);
        if (why8 is null)
        {
            why8 = TryFindNames(img, m8, options, -1, out Names n8);
            if (why8 is null)
                return (m8, n8, -1);
        }
        // 6.2+, and 6.1 stable kernels with it backported (Debian 6.1.0-x): kallsyms_seqs_of_names (3 bytes
        // per symbol, big-endian index, sorted by name) between the markers and the token table. Its size
        // depends on num_syms, so try each count whose markers would end right before it.
        string? whySeqs = null;
        for (int n = 1; n <= options.MaxSymbols; n++)
        {
            int seqs = tokenTable - AlignUp(3 * n);
            int m = (n + 255) >> 8;
            int start = seqs - AlignUp(4 * m);
            if (start < 0)
                break;
            if (img.U32(start) != 0 || (m > 1 && img.U32(start + 4) == 0))
                continue;
            if ((m & 1) == 1 && img.U32(start + 4 * m) != 0)
                continue; // ALGN padding after an odd number of u32 markers
            var values = new ulong[m];
            bool increasing = true;
            for (int i = 0; i < m && increasing; i++)
            {
                values[i] = img.U32(start + 4 * i);
                increasing = i == 0 || values[i] > values[i - 1];
            }
            if (!increasing || !img.IsReadable(start, tokenTable - start))
                continue;
            var markers = new Markers(start, 4, values);
            string? why = TryFindNames(img, markers, options, n, out Names names) ?? CheckSeqs(img, seqs, n);
            if (why is null)
                return (markers, names, seqs);
            whySeqs ??= $"with kallsyms_seqs_of_names for {n} symbols at 0x{img.Va(seqs):x}: {why}";
        }
        throw new KallsymsException($"no kallsyms_markers/kallsyms_names before the token table at 0x{img.Va(tokenTable):x}: " +
            $"markers as u32: {why4}; as u64: {why8}; {whySeqs ?? "no kallsyms_seqs_of_names layout fits either"}");
    }

    private static string? CheckSeqs(Image img, int seqs, int n)
    {
        ReadOnlySpan<byte> data = img.Data;
        var seen = new bool[n];
        for (int i = 0; i < n; i++)
        {
            int at = seqs + 3 * i;
            int seq = (data[at] << 16) | (data[at + 1] << 8) | data[at + 2];
            if (seq >= n || seen[seq])
                return $"kallsyms_seqs_of_names[{i}] = {seq} is out of range or repeated";
            seen[seq] = true;
        }
        return null;
    }

    private static string? TryMarkers(Image img, int tokenTable, int width, int maxMarkers, out Markers markers)
    {
        markers = default;
        int pos = tokenTable;
        if (width == 4 && pos >= 4 && img.U32(pos - 4) == 0)
            pos -= 4; // ALGN padding after an odd number of u32 markers
        // Walk back over strictly decreasing non-zero entries to markers[0] == 0.
        var values = new List<ulong>();
        ulong previous = ulong.MaxValue;
        int p = pos - width;
        while (true)
        {
            if (p < 0)
                return "ran off the start of the scanned region";
            if (values.Count > maxMarkers)
                return $"more than {maxMarkers} entries";
            ulong v = width == 4 ? img.U32(p) : img.U64(p);
            if (v >= previous)
                return $"entry at 0x{img.Va(p):x} (0x{v:x}) is not below the next one (0x{previous:x})";
            values.Add(v);
            if (v == 0)
                break;
            previous = v;
            p -= width;
        }
        if ((p & (Align - 1)) != 0)
            return $"markers[0] at 0x{img.Va(p):x} is not 8-aligned";
        if (!img.IsReadable(p, pos - p))
            return "the markers lie partly in unmapped memory";
        values.Reverse();
        markers = new Markers(p, width, [.. values]);
        return null;
    }

    // ---- names and num_syms --------------------------------------------------------------------------

    private static string? TryFindNames(Image img, Markers markers, KallsymsReaderOptions options, int exactCount, out Names names)
    {
        names = default;
        int m = markers.Values.Length;
        ulong lastMarker = markers.Values[^1];
        if (lastMarker >= (ulong)markers.Start)
            return $"kallsyms_markers[{m - 1}] = 0x{lastMarker:x} reaches before the scanned region";
        long minCount = 256L * (m - 1) + 1, maxCount = Math.Min(256L * m, options.MaxSymbols);
        if (exactCount > 0)
            minCount = maxCount = exactCount;
        // names + markers[m-1] is the last group's start: it lies below the markers, at most 256 entries of
        // (2 + MaxNameLength) bytes below them. names itself is 8-aligned and follows num_syms (u32 + padding).
        int highest = AlignDown((int)((ulong)markers.Start - lastMarker - 1));
        int lowest = Math.Max(Align, markers.Start - (int)lastMarker - 256 * (2 + MaxNameLength));
        string? rejected = null;
        for (int n = highest; n >= lowest; n -= Align)
        {
            ulong count = img.U64(n - Align);
            if ((long)count < minCount || (long)count > maxCount)
                continue;
            string? why = WalkNames(img, n, (int)count, markers, out int[]? starts);
            if (why is null)
            {
                names = new Names(n, (int)count, starts!);
                return null;
            }
            rejected ??= $"num_syms {count} at 0x{img.Va(n - Align):x}: {why}";
        }
        return rejected is null
            ? $"no kallsyms_num_syms in ({minCount}..{maxCount}) before kallsyms_names for the {m} markers at 0x{img.Va(markers.Start):x}"
            : $"kallsyms_names does not agree with the {m} markers at 0x{img.Va(markers.Start):x}: {rejected}";
    }

    private static string? WalkNames(Image img, int names, int count, Markers markers, out int[]? starts)
    {
        starts = null;
        ReadOnlySpan<byte> data = img.Data;
        int end = markers.Start;
        if (!img.IsReadable(names - Align, end - names + Align))
            return "kallsyms_names lies partly in unmapped memory";
        var s = new int[count];
        int pos = names;
        for (int i = 0; i < count; i++)
        {
            if ((i & 0xFF) == 0 && (ulong)(pos - names) != markers.Values[i >> 8])
                return $"symbol {i} starts at names+0x{pos - names:x} but kallsyms_markers[{i >> 8}] says 0x{markers.Values[i >> 8]:x}";
            if (pos >= end)
                return $"symbol {i} starts past the end of kallsyms_names";
            s[i] = pos;
            int len = data[pos++];
            if ((len & 0x80) != 0)
            {
                if (pos >= end)
                    return $"symbol {i}'s length runs past the end of kallsyms_names";
                len = (len & 0x7F) | (data[pos++] << 7);
            }
            if (len == 0 || len > MaxNameLength + 1)
                return $"symbol {i} has compressed length {len}";
            if (len > end - pos)
                return $"symbol {i} (length {len}) runs past the end of kallsyms_names";
            pos += len;
        }
        if (AlignUp(pos) != end)
            return $"the names end at 0x{img.Va(pos):x}, not right before kallsyms_markers at 0x{img.Va(end):x}";
        starts = s;
        return null;
    }

    // ---- addresses -----------------------------------------------------------------------------------

    private static (ulong[] Addresses, KallsymsAddressMode Mode, int Table, ulong RelBaseAddr, ulong RelBase) ReadAddresses(
        Image img, Names names, KallsymsReaderOptions options)
    {
        int n = names.Count;
        int numSyms = names.Start - Align;
        string? relativeWhy = null;
        if (options.AddressMode != KallsymsAddressMode.Absolute)
        {
            int relBaseAt = numSyms - Align;
            int offsets = relBaseAt - AlignUp(4 * n);
            if (offsets < 0)
            {
                relativeWhy = "kallsyms_offsets would start before the scanned region";
            }
            else
            {
                ulong relBase = img.U64(relBaseAt);
                bool anyNegative = false;
                for (int i = 0; i < n && !anyNegative; i++)
                    anyNegative = img.I32(offsets + 4 * i) < 0;
                KallsymsAddressMode mode = options.AddressMode == KallsymsAddressMode.Auto
                    ? anyNegative ? KallsymsAddressMode.AbsolutePercpu : KallsymsAddressMode.Relative
                    : options.AddressMode;
                var a = new ulong[n];
                for (int i = 0; i < n; i++)
                {
                    int o = img.I32(offsets + 4 * i);
                    a[i] = mode == KallsymsAddressMode.AbsolutePercpu
                        ? o >= 0 ? (ulong)o : relBase - 1 - unchecked((ulong)(long)o)
                        : relBase + (uint)o;
                }
                relativeWhy = (relBase >> 63) == 0
                    ? $"kallsyms_relative_base 0x{relBase:x} at 0x{img.Va(relBaseAt):x} is not a kernel address"
                    : CheckSorted(a) ?? (img.IsReadable(offsets, numSyms - offsets) ? null : "kallsyms_offsets lies partly in unmapped memory");
                if (relativeWhy is null)
                    return (a, mode, offsets, (ulong)relBaseAt, relBase);
                if (options.AddressMode != KallsymsAddressMode.Auto)
                    throw new KallsymsException($"base-relative kallsyms addresses are inconsistent: {relativeWhy}");
            }
        }
        int table = numSyms - 8 * n;
        string absoluteWhy;
        if (table < 0)
        {
            absoluteWhy = "kallsyms_addresses would start before the scanned region";
        }
        else
        {
            var a = new ulong[n];
            for (int i = 0; i < n; i++)
                a[i] = img.U64(table + 8 * i);
            absoluteWhy = CheckSorted(a) ?? (img.IsReadable(table, numSyms - table) ? "" : "kallsyms_addresses lies partly in unmapped memory");
            if (absoluteWhy.Length == 0)
                return (a, KallsymsAddressMode.Absolute, table, 0, 0);
        }
        throw new KallsymsException(relativeWhy is null
            ? $"kallsyms addresses are inconsistent: {absoluteWhy}"
            : $"kallsyms addresses are inconsistent: as base-relative offsets: {relativeWhy}; as absolute addresses: {absoluteWhy}");
    }

    private static string? CheckSorted(ulong[] a)
    {
        for (int i = 1; i < a.Length; i++)
        {
            if (a[i] < a[i - 1])
                return $"address of symbol {i} (0x{a[i]:x}) is below that of symbol {i - 1} (0x{a[i - 1]:x}); kallsyms is sorted by address";
        }
        return null;
    }

    // ---- decoding ------------------------------------------------------------------------------------

    private static KernelSymbol[] DecodeNames(Image img, Names names, Tokens tokens, ulong[] addresses)
    {
        ReadOnlySpan<byte> data = img.Data;
        var result = new KernelSymbol[names.Count];
        Span<byte> buffer = stackalloc byte[MaxNameLength * 2];
        for (int i = 0; i < names.Count; i++)
        {
            int pos = names.Starts[i];
            int len = data[pos++];
            if ((len & 0x80) != 0)
                len = (len & 0x7F) | (data[pos++] << 7);
            int written = 0;
            foreach (byte t in data.Slice(pos, len))
            {
                byte[] token = tokens.Expanded[t];
                if (written + token.Length > MaxNameLength + 1)
                    throw new KallsymsException($"symbol {i} at 0x{img.Va(names.Starts[i]):x} expands to more than {MaxNameLength} characters");
                token.CopyTo(buffer[written..]);
                written += token.Length;
            }
            if (written < 2)
                throw new KallsymsException($"symbol {i} at 0x{img.Va(names.Starts[i]):x} expands to {written} character(s): no type and name");
            char type = (char)buffer[0];
            if (!char.IsAsciiLetter(type) && type != '?')
                throw new KallsymsException($"symbol {i} at 0x{img.Va(names.Starts[i]):x} has type byte 0x{buffer[0]:x2}, not a letter");
            ReadOnlySpan<byte> name = buffer[1..written];
            if (name.IndexOfAnyExceptInRange((byte)0x21, (byte)0x7E) >= 0)
                throw new KallsymsException($"symbol {i} at 0x{img.Va(names.Starts[i]):x} has a non-printable character in its name");
            result[i] = new KernelSymbol(Encoding.Latin1.GetString(name), addresses[i], type);
        }
        return result;
    }

    private static int AlignUp(int v) => (v + Align - 1) & ~(Align - 1);

    private static int AlignDown(int v) => v & ~(Align - 1);

    private readonly ref struct Image(ReadOnlySpan<byte> data, ulong imageBase, bool[]? readable)
    {
        public readonly ReadOnlySpan<byte> Data = data;
        public readonly ulong Base = imageBase;
        private readonly bool[]? _readable = readable;

        public ulong Va(int offset) => Base + (ulong)offset;

        public uint U32(int offset) => offset >= 0 && offset <= Data.Length - 4 ? BinaryPrimitives.ReadUInt32LittleEndian(Data.Slice(offset, 4)) : 0;

        public int I32(int offset) => (int)U32(offset);

        public ulong U64(int offset) => offset >= 0 && offset <= Data.Length - 8 ? BinaryPrimitives.ReadUInt64LittleEndian(Data.Slice(offset, 8)) : 0;

        public bool IsReadable(int offset, int length)
        {
            if (offset < 0 || length < 0 || offset > Data.Length - length)
                return false;
            if (_readable is null || length == 0)
                return true;
            for (int p = offset / 4096; p <= (offset + length - 1) / 4096; p++)
            {
                if (!_readable[p])
                    return false;
            }
            return true;
        }
    }

    private readonly record struct Tokens(int TableStart, int IndexStart, byte[][] Expanded);

    private readonly record struct Markers(int Start, int Width, ulong[] Values);

    private readonly record struct Names(int Start, int Count, int[] Starts);
}
