using System.Buffers.Binary;
using Vmi.Memory;

namespace Vmi.Linux.Model;

/// <summary>
/// One static-key patch site of the kernel image (struct jump_entry, relative form): the instruction at
/// <see cref="Code"/> is a NOP or a JMP to <see cref="Target"/>, switched by the static key.
/// </summary>
/// <param name="EntryAddress">Address of the jump_entry.</param>
/// <param name="Code">Patched instruction (&amp;entry.code + entry.code).</param>
/// <param name="Target">Jump target (&amp;entry.target + entry.target).</param>
/// <param name="Key">struct static_key (&amp;entry.key + (entry.key &amp; ~3)).</param>
/// <param name="Branch">Bit 0 of key: the branch's default direction.</param>
/// <param name="Init">Bit 1 of key: the site is in init text (freed after boot).</param>
public sealed record JumpEntry(ulong EntryAddress, ulong Code, ulong Target, ulong Key, bool Branch, bool Init);

public sealed partial class LinuxKernel
{
    /// <summary>Most jump entries read (6.1 distribution kernels have ~20-40k).</summary>
    public const int MaxJumpEntries = 1 << 20;

    /// <summary>The kernel address space reader (kernel page tables, translation-cached).</summary>
    public VirtualMemory KernelMemory => _kernel;

    /// <summary>Kernel text, [_stext, _etext); (0, 0) when the symbols are missing.</summary>
    public (ulong Start, ulong End) KernelText => SymbolRange("_stext", "_etext");

    /// <summary>Init text, [_sinittext, _einittext) (freed after boot, but still where init code was); (0, 0) when missing.</summary>
    public (ulong Start, ulong End) InitText => SymbolRange("_sinittext", "_einittext");

    /// <summary>
    /// The whole init section, [__init_begin, __init_end): init text plus what the linker script puts next to
    /// it (.exit.text, .altinstr_aux, init data). Some static-key sites live here outside [_sinittext, _einittext)
    /// (exit functions on 6.1); (0, 0) when missing.
    /// </summary>
    public (ulong Start, ulong End) InitSection => SymbolRange("__init_begin", "__init_end");

    /// <summary>True when <paramref name="address"/> lies in the kernel's own text (not init text, not modules).</summary>
    public bool IsKernelText(ulong address)
    {
        (ulong start, ulong end) = KernelText;
        return address >= start && address < end;
    }

    /// <summary>
    /// The kernel image's static-key patch sites, __start___jump_table..__stop___jump_table. Entries are
    /// relative (CONFIG_HAVE_ARCH_JUMP_LABEL_RELATIVE, x86-64): s32 code, s32 target, s64 key, each an
    /// offset from its own field. Modules have their own tables, not listed here.
    /// </summary>
    public KernelList<JumpEntry> GetJumpEntries()
    {
        var issues = new List<KernelWalkIssue>();
        var result = new List<JumpEntry>();
        if (!_symbols.TryGetAddress("__start___jump_table", out ulong start) || !_symbols.TryGetAddress("__stop___jump_table", out ulong stop))
        {
            issues.Add(new KernelWalkIssue("jump table", 0, "the kernel has no __start___jump_table/__stop___jump_table"));
            return new KernelList<JumpEntry>(result, issues);
        }
        const int entrySize = 16;
        if (stop < start || (stop - start) % entrySize != 0)
        {
            issues.Add(new KernelWalkIssue("jump table", start, $"bounds 0x{start:x}..0x{stop:x} are not a whole number of 16-byte entries"));
            if (stop < start)
                return new KernelList<JumpEntry>(result, issues);
        }
        ulong count = (stop - start) / entrySize;
        if (count > MaxJumpEntries)
        {
            issues.Add(new KernelWalkIssue("jump table", start, $"{count} entries: read the first {MaxJumpEntries}"));
            count = MaxJumpEntries;
        }
        var chunk = new byte[entrySize * 256];
        for (ulong done = 0; done < count;)
        {
            int n = (int)Math.Min(256, count - done);
            ulong at = start + (done * entrySize);
            Span<byte> buffer = chunk.AsSpan(0, n * entrySize);
            if (!_kernel.TryRead(at, buffer))
            {
                issues.Add(new KernelWalkIssue("jump table", at, "jump table page is unreadable"));
                break;
            }
            for (int i = 0; i < n; i++)
            {
                ulong entry = at + (ulong)(i * entrySize);
                Span<byte> e = buffer.Slice(i * entrySize, entrySize);
                long code = BinaryPrimitives.ReadInt32LittleEndian(e);
                long target = BinaryPrimitives.ReadInt32LittleEndian(e[4..]);
                long key = BinaryPrimitives.ReadInt64LittleEndian(e[8..]);
                result.Add(new JumpEntry(entry, entry + (ulong)code, entry + 4 + (ulong)target, entry + 8 + (ulong)(key & ~3L), (key & 1) != 0, (key & 2) != 0));
            }
            done += (ulong)n;
        }
        return new KernelList<JumpEntry>(result, issues);
    }

    private (ulong Start, ulong End) SymbolRange(string start, string end) =>
        _symbols.TryGetAddress(start, out ulong s) && _symbols.TryGetAddress(end, out ulong e) && e >= s ? (s, e) : (0, 0);
}
