using System.Buffers.Binary;
using Vmi.Memory;

namespace Vmi.Linux.Model;

/// <summary>A system call table entry: the handler address and the symbol it falls in.</summary>
public sealed record SyscallEntry(int Number, ulong Handler, string? Symbol, ulong SymbolOffset, bool InKernelText);

/// <summary>An IDT gate.</summary>
public sealed record IdtEntry(int Vector, ulong Handler, ushort Selector, int GateType, int Dpl, bool Present, int Ist, string? Symbol, ulong SymbolOffset, bool InKernelText);

public sealed partial class LinuxKernel
{
    /// <summary>Upper bound of syscall table entries read (x86-64 6.1 has 451).</summary>
    public const int MaxSyscalls = 1024;

    /// <summary>The symbol containing <paramref name="address"/> and the offset into it; null when none does.</summary>
    public (string? Name, ulong Offset) ResolveAddress(ulong address)
    {
        var syms = _symbols.Symbols;
        int lo = 0, hi = syms.Count - 1, found = -1;
        while (lo <= hi)
        {
            int mid = lo + ((hi - lo) >> 1);
            if (syms[mid].Address <= address)
            {
                found = mid;
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }
        if (found < 0)
            return (null, 0);
        return (syms[found].Name, address - syms[found].Address);
    }

    /// <summary>Inside the kernel image's code: .text (_stext.._etext) or init text (_sinittext.._einittext).</summary>
    private bool InKernelText(ulong address) =>
        (_symbols.TryGetAddress("_stext", out ulong s) && _symbols.TryGetAddress("_etext", out ulong e) && address >= s && address < e)
        || (_symbols.TryGetAddress("_sinittext", out ulong si) && _symbols.TryGetAddress("_einittext", out ulong ei) && address >= si && address < ei);

    /// <summary>
    /// The system call table. Its length is the distance to the next symbol (the table is an array
    /// symbol in .rodata), bounded by <see cref="MaxSyscalls"/>.
    /// </summary>
    public KernelList<SyscallEntry> GetSyscallTable()
    {
        var issues = new List<KernelWalkIssue>();
        ulong table = Symbol("sys_call_table");
        int count = MaxSyscalls;
        var syms = _symbols.Symbols;
        foreach (var s in syms)
        {
            if (s.Address > table)
            {
                count = (int)Math.Min((ulong)MaxSyscalls, (s.Address - table) / 8);
                break;
            }
        }
        var result = new List<SyscallEntry>(count);
        for (int i = 0; i < count; i++)
        {
            ulong at = table + (ulong)i * 8;
            if (!_kernel.TryReadUInt64(at, out ulong handler))
            {
                issues.Add(new KernelWalkIssue("syscall table", at, $"entry {i} is unreadable"));
                break;
            }
            var (name, off) = ResolveAddress(handler);
            result.Add(new SyscallEntry(i, handler, name, off, InKernelText(handler)));
        }
        // The symbol distance may include alignment padding after the table: no real entry is null.
        while (result.Count > 0 && result[^1].Handler == 0)
            result.RemoveAt(result.Count - 1);
        return new KernelList<SyscallEntry>(result, issues);
    }

    /// <summary>The 256 gates of idt_table (the IDT Linux loads on every CPU).</summary>
    public KernelList<IdtEntry> GetIdt()
    {
        var issues = new List<KernelWalkIssue>();
        ulong idt = Symbol("idt_table");
        var result = new List<IdtEntry>(256);
        Span<byte> gate = stackalloc byte[16];
        for (int v = 0; v < 256; v++)
        {
            ulong at = idt + (ulong)v * 16;
            if (!_kernel.TryRead(at, gate))
            {
                issues.Add(new KernelWalkIssue("IDT", at, $"gate {v} is unreadable"));
                break;
            }
            // 64-bit gate: offset 15..0 | selector | IST, type, DPL, P | offset 31..16 | offset 63..32 | reserved
            ulong handler = BinaryPrimitives.ReadUInt16LittleEndian(gate)
                | ((ulong)BinaryPrimitives.ReadUInt16LittleEndian(gate[6..]) << 16)
                | ((ulong)BinaryPrimitives.ReadUInt32LittleEndian(gate[8..]) << 32);
            ushort selector = BinaryPrimitives.ReadUInt16LittleEndian(gate[2..]);
            int ist = gate[4] & 7;
            int type = gate[5] & 0xf;
            int dpl = (gate[5] >> 5) & 3;
            bool present = (gate[5] & 0x80) != 0;
            var (name, off) = present ? ResolveAddress(handler) : (null, 0UL);
            result.Add(new IdtEntry(v, handler, selector, type, dpl, present, ist, name, off, present && InKernelText(handler)));
        }
        return new KernelList<IdtEntry>(result, issues);
    }
}
