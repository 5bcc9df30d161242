using System.Buffers.Binary;
using Vmi.Memory;

namespace Vmi.Linux.Model;

/// <summary>A struct module found by scanning memory, not by following a list.</summary>
/// <param name="Address">Address of the struct module.</param>
/// <param name="Name">module.name.</param>
/// <param name="State">module.state (0 live, 1 coming, 2 going, 3 unformed).</param>
/// <param name="CoreBase">Base of the core (text) allocation.</param>
/// <param name="Size">Core (+ init, on 6.1) size in bytes, like <see cref="LinuxModule.Size"/>.</param>
public sealed record CarvedModule(ulong Address, string Name, int State, ulong CoreBase, ulong Size);

public sealed partial class LinuxKernel
{
    /// <summary>
    /// Module area of x86-64 (Documentation/x86/x86_64/mm.rst, 4- and 5-level paging alike):
    /// MODULES_VADDR = __START_KERNEL_map + KERNEL_IMAGE_SIZE = 0xffffffff80000000 + 1 GiB, MODULES_END =
    /// 0xffffffffff000000 (6.1; the fixmap starts above). Neither is a symbol, hence constants.
    /// </summary>
    public const ulong ModulesStart = 0xffff_ffff_c000_0000, ModulesEnd = 0xffff_ffff_ff00_0000;

    /// <summary>Most mapped 4 KiB pages one carve scans (256 MiB of module memory).</summary>
    public const int MaxCarvePages = 1 << 16;

    /// <summary>Most candidates (self-pointer hits) one carve validates.</summary>
    public const int MaxCarveCandidates = 1 << 14;

    // include/linux/poison.h on x86-64: POISON_POINTER_DELTA = CONFIG_ILLEGAL_POINTER_VALUE = 0xdead000000000000;
    // list_del() leaves these in an unlinked entry, which is what a rootkit's list_del(&THIS_MODULE->list) does.
    private const ulong ListPoison1 = 0xdead_0000_0000_0100, ListPoison2 = 0xdead_0000_0000_0122;

    /// <summary>
    /// Finds struct module instances in the mapped pages of the module area by their invariants, without
    /// the module list or sysfs: module.mkobj.mod points back at the module (set at load, untouched by
    /// kobject_del), state is 0..3, name is a non-empty printable NUL-terminated string, and list.next/prev
    /// are kernel pointers (or list_del's poison). Only mapped pages are read (the page tables are walked
    /// so unmapped gigabytes cost nothing); work is bounded by <see cref="MaxCarvePages"/> and
    /// <see cref="MaxCarveCandidates"/>.
    /// </summary>
    public KernelList<CarvedModule> CarveModules() => CarveModules(ModulesStart, ModulesEnd);

    /// <summary>Carves struct modules in <c>[start, end)</c> (see <see cref="CarveModules()"/>).</summary>
    public KernelList<CarvedModule> CarveModules(ulong start, ulong end)
    {
        var issues = new List<KernelWalkIssue>();
        var result = new List<CarvedModule>();
        int selfOffset = X.ModuleMkobjMod;
        if (selfOffset < 0)
        {
            issues.Add(new KernelWalkIssue("module carving", start, "the kernel's BTF lacks module.mkobj.mod"));
            return new KernelList<CarvedModule>(result, issues);
        }
        IReadOnlyList<MappedPage> pages = _kernel.EnumerateMapped(start, end, MaxCarvePages, MaxCarvePages, out bool truncated);
        if (truncated)
            issues.Add(new KernelWalkIssue("module carving", start, $"more than {MaxCarvePages} mapped pages or page tables: scanned the first ones only"));
        var seen = new HashSet<ulong>();
        int candidates = 0, scanned = 0;
        var page = new byte[4096];
        foreach (MappedPage mapped in pages)
        {
            for (ulong off = 0; off < mapped.Size; off += 4096)
            {
                if (++scanned > MaxCarvePages)
                {
                    issues.Add(new KernelWalkIssue("module carving", mapped.VirtualAddress + off, $"more than {MaxCarvePages} pages: stopped"));
                    return new KernelList<CarvedModule>(result, issues);
                }
                ulong va = mapped.VirtualAddress + off;
                if (!Memory.TryRead(mapped.PhysicalAddress + off, page))
                    continue;
                for (int i = 0; i < page.Length; i += 8)
                {
                    // Cheap filter: a qword equal to its own address minus offsetof(module, mkobj.mod).
                    ulong value = BinaryPrimitives.ReadUInt64LittleEndian(page.AsSpan(i));
                    ulong at = va + (ulong)i;
                    if (value != at - (ulong)selfOffset || !seen.Add(value))
                        continue;
                    if (++candidates > MaxCarveCandidates)
                    {
                        issues.Add(new KernelWalkIssue("module carving", at, $"more than {MaxCarveCandidates} candidates: stopped"));
                        return new KernelList<CarvedModule>(result, issues);
                    }
                    if (TryValidateModule(value) is { } module)
                        result.Add(module);
                }
            }
        }
        return new KernelList<CarvedModule>(result, issues);
    }

    private CarvedModule? TryValidateModule(ulong c)
    {
        if (!TryU32(c + (ulong)_o.ModuleState, out uint state) || state > 3)
            return null;
        if (!_kernel.TryReadUInt64(c + (ulong)_o.ModuleList, out ulong next) || !_kernel.TryReadUInt64(c + (ulong)_o.ModuleList + 8, out ulong prev))
            return null;
        if (!(IsKernelPointer(next) || next == ListPoison1) || !(IsKernelPointer(prev) || prev == ListPoison2))
            return null;
        Span<byte> name = stackalloc byte[_o.ModuleNameLength];
        if (!_kernel.TryRead(c + (ulong)_o.ModuleName, name))
            return null;
        int nul = name.IndexOf((byte)0);
        if (nul <= 0)
            return null;
        foreach (byte b in name[..nul])
        {
            if (b is < 0x21 or > 0x7e)
                return null;
        }
        TryU32(c + (ulong)_o.ModuleCoreSize, out uint coreSize);
        uint initSize = 0;
        if (_o.ModuleInitSize >= 0)
            TryU32(c + (ulong)_o.ModuleInitSize, out initSize);
        _kernel.TryReadUInt64(c + (ulong)_o.ModuleCoreBase, out ulong coreBase);
        return new CarvedModule(c, System.Text.Encoding.ASCII.GetString(name[..nul]), (int)state, coreBase, (ulong)coreSize + initSize);
    }
}
