using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Vmi.Memory;
using Vmi.Targets;

namespace Vmi.Cli;

/// <summary>`vmi mem read` and `vmi mem translate`.</summary>
internal static class MemoryCommands
{
    public static Command Create()
    {
        var mem = new Command("mem", "Read and translate guest memory.");
        mem.Subcommands.Add(Read());
        mem.Subcommands.Add(Translate());
        return mem;
    }

    private static Option<string> TargetOption() => new("--target")
    {
        Description = "What to introspect: " + TargetSpec.Syntax,
        Required = true,
    };

    private static Option<string> Cr3Option() => new("--cr3") { Description = "Address space (CR3) to translate in; default: vCPU 0's current CR3." };
    private static Option<int> VcpuOption() => new("--vcpu") { Description = "vCPU whose registers give the default CR3 and paging mode." };
    private static Option<string> PagingOption() => new("--paging")
    {
        Description = "auto (from CR4.LA57), 4 or 5 levels.",
        DefaultValueFactory = _ => "auto",
    };

    private static Command Read()
    {
        var target = TargetOption();
        var phys = new Option<string>("--phys") { Description = "Guest physical address." };
        var virt = new Option<string>("--virt") { Description = "Guest virtual address." };
        var cr3 = Cr3Option();
        var vcpu = VcpuOption();
        var paging = PagingOption();
        var len = new Option<string>("--len") { Description = "Bytes to read (at most 64 MiB).", Required = true };
        var format = new Option<string>("--format") { Description = "hex (a dump with ASCII) or raw (bytes to stdout).", DefaultValueFactory = _ => "hex" };
        var cmd = new Command("read", "Read guest memory by physical or virtual address.") { target, phys, virt, cr3, vcpu, paging, len, format };
        cmd.SetAction(async (parse, ct) =>
        {
            string? p = parse.GetValue(phys), v = parse.GetValue(virt);
            if ((p is null) == (v is null))
                throw new UsageException("give exactly one of --phys and --virt.");
            ulong length = CommandRunner.ParseNumber(parse.GetValue(len)!, "--len");
            if (length == 0 || length > 64UL << 20)
                throw new UsageException("--len must be between 1 and 64 MiB.");
            string fmt = parse.GetValue(format)!;
            if (fmt is not ("hex" or "raw"))
                throw new UsageException($"--format must be hex or raw, not '{fmt}'.");

            ulong address = p is not null ? CommandRunner.ParseNumber(p, "--phys") : CommandRunner.ParseNumber(v!, "--virt");

            await using ITarget t = await TargetFactory.OpenAsync(parse.GetValue(target)!, ct).ConfigureAwait(false);
            var buffer = new byte[length];
            int read;
            string? failure = null;
            if (p is not null)
            {
                read = t.Memory.ReadPartial(address, buffer);
                if ((ulong)read < length)
                    failure = FormattableString.Invariant($"physical address 0x{address + (ulong)read:x} is not backed by guest RAM");
            }
            else
            {
                PagingContext ctx = await ResolvePagingAsync(t, parse.GetValue(cr3), parse.GetValue(vcpu), parse.GetValue(paging)!, ct).ConfigureAwait(false);
                var vm = new VirtualMemory(t.Memory, ctx);
                VirtualReadResult r = vm.Read(address, buffer);
                read = r.BytesRead;
                if ((ulong)read < length)
                    failure = FormattableString.Invariant($"virtual address 0x{r.FailedAddress:x} does not translate ({r.Status})");
            }

            if (fmt == "raw")
            {
                using Stream stdout = Console.OpenStandardOutput();
                await stdout.WriteAsync(buffer.AsMemory(0, read), ct).ConfigureAwait(false);
            }
            else
            {
                Console.Out.Write(HexDump(address, buffer.AsSpan(0, read)));
            }
            if (failure is not null)
            {
                await Console.Error.WriteLineAsync(FormattableString.Invariant($"vmi: partial read: {read} of {length} bytes; {failure}")).ConfigureAwait(false);
                return CommandRunner.ExitPartial;
            }
            return CommandRunner.ExitOk;
        });
        return cmd;
    }

    private static Command Translate()
    {
        var target = TargetOption();
        var virt = new Option<string>("--virt") { Description = "Guest virtual address.", Required = true };
        var cr3 = Cr3Option();
        var vcpu = VcpuOption();
        var paging = PagingOption();
        var json = new Option<bool>("--json") { Description = "Print the walk as JSON." };
        var cmd = new Command("translate", "Walk the guest page tables for a virtual address and print every level's entry.") { target, virt, cr3, vcpu, paging, json };
        cmd.SetAction(async (parse, ct) =>
        {
            ulong va = CommandRunner.ParseNumber(parse.GetValue(virt)!, "--virt");
            if (parse.GetValue(cr3) is string c)
                _ = CommandRunner.ParseNumber(c, "--cr3");
            await using ITarget t = await TargetFactory.OpenAsync(parse.GetValue(target)!, ct).ConfigureAwait(false);
            PagingContext ctx = await ResolvePagingAsync(t, parse.GetValue(cr3), parse.GetValue(vcpu), parse.GetValue(paging)!, ct).ConfigureAwait(false);
            WalkResult walk = new PageWalker(t.Memory).Walk(ctx, va);
            Console.Out.Write(parse.GetValue(json) ? WalkJson(ctx, walk) + "\n" : WalkText(ctx, walk));
            return walk.Status == WalkStatus.Ok ? CommandRunner.ExitOk : CommandRunner.ExitPartial;
        });
        return cmd;
    }

    private static async Task<PagingContext> ResolvePagingAsync(ITarget target, string? cr3Text, int vcpu, string paging, CancellationToken ct)
    {
        bool? la57 = paging switch
        {
            "auto" => null,
            "4" => false,
            "5" => true,
            _ => throw new UsageException($"--paging must be auto, 4 or 5, not '{paging}'."),
        };
        if (cr3Text is not null)
        {
            ulong cr3 = CommandRunner.ParseNumber(cr3Text, "--cr3");
            if (la57 is null)
            {
                // The mode is a property of the vCPU, not of the address space: take it from the
                // target when it can tell, else assume 4-level.
                try
                {
                    VcpuRegisters regs = await target.GetRegistersAsync(vcpu, ct).ConfigureAwait(false);
                    return regs.Paging with { Cr3 = cr3 };
                }
                catch (Vmi.Core.TargetException)
                {
                    la57 = false;
                }
            }
            return new PagingContext(cr3, la57.Value);
        }
        VcpuRegisters r = await target.GetRegistersAsync(vcpu, ct).ConfigureAwait(false);
        return la57 is null ? r.Paging : r.Paging with { La57 = la57.Value };
    }

    internal static string HexDump(ulong address, ReadOnlySpan<byte> data)
    {
        var sb = new StringBuilder(data.Length * 4 + 64);
        for (int off = 0; off < data.Length; off += 16)
        {
            sb.Append(CultureInfo.InvariantCulture, $"{address + (ulong)off:x16}  ");
            int n = Math.Min(16, data.Length - off);
            for (int i = 0; i < 16; i++)
            {
                sb.Append(i < n ? data[off + i].ToString("x2", CultureInfo.InvariantCulture) : "  ");
                sb.Append(i == 7 ? "  " : " ");
            }
            sb.Append(" |");
            for (int i = 0; i < n; i++)
            {
                byte b = data[off + i];
                sb.Append(b is >= 0x20 and < 0x7f ? (char)b : '.');
            }
            sb.Append("|\n");
        }
        return sb.ToString();
    }

    private static string Flags(ulong e, PagingLevel level)
    {
        var f = new List<string>();
        if ((e & 1) != 0) f.Add("P"); else return "not-present";
        if ((e & 2) != 0) f.Add("RW");
        if ((e & 4) != 0) f.Add("US");
        if ((e & 0x20) != 0) f.Add("A");
        if ((e & 0x40) != 0 && IsLeaf(e, level)) f.Add("D");
        if ((e & 0x80) != 0 && level is PagingLevel.Pd or PagingLevel.Pdpt) f.Add("PS");
        if ((e & 0x100) != 0 && IsLeaf(e, level)) f.Add("G");
        if ((e >> 63) != 0) f.Add("NX");
        return string.Join(' ', f);
    }

    private static bool IsLeaf(ulong e, PagingLevel level) => level == PagingLevel.Pt || ((e & 0x80) != 0 && level is PagingLevel.Pd or PagingLevel.Pdpt);

    internal static string WalkText(PagingContext ctx, WalkResult walk)
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"virtual  0x{walk.VirtualAddress:x16}  ({(ctx.La57 ? 5 : 4)}-level paging, CR3 0x{ctx.Cr3:x})\n");
        foreach (WalkStep s in walk.Steps)
        {
            sb.Append(CultureInfo.InvariantCulture,
                $"{s.Level.ToString().ToUpperInvariant(),-5} index {s.Index,3}  entry at 0x{s.EntryAddress:x12} = 0x{s.Entry:x16}  {Flags(s.Entry, s.Level)}\n");
        }
        if (walk.Translation is Translation t)
        {
            string size = t.Size switch { PageSize.Size1G => "1 GiB", PageSize.Size2M => "2 MiB", _ => "4 KiB" };
            sb.Append(CultureInfo.InvariantCulture, $"physical 0x{t.PhysicalAddress:x16}  ({size} page, {t.Flags})\n");
        }
        else
        {
            sb.Append("no translation: ").Append(walk.Describe()).Append('\n');
        }
        return sb.ToString();
    }

    internal static string WalkJson(PagingContext ctx, WalkResult walk)
    {
        var doc = new Dictionary<string, object?>
        {
            ["virtual"] = Hex(walk.VirtualAddress),
            ["cr3"] = Hex(ctx.Cr3),
            ["levels"] = ctx.La57 ? 5 : 4,
            ["status"] = walk.Status.ToString(),
            ["steps"] = walk.Steps.Select(s => new Dictionary<string, object>
            {
                ["level"] = s.Level.ToString().ToUpperInvariant(),
                ["index"] = s.Index,
                ["entryAddress"] = Hex(s.EntryAddress),
                ["entry"] = Hex(s.Entry),
            }).ToArray(),
            ["physical"] = walk.Translation is Translation t ? Hex(t.PhysicalAddress) : null,
            ["pageSize"] = walk.Translation is Translation t2 ? (ulong)t2.Size : null,
            ["flags"] = walk.Translation is Translation t3 ? t3.Flags.ToString() : null,
            ["error"] = walk.Status == WalkStatus.Ok ? null : walk.Describe(),
        };
        return JsonSerializer.Serialize(doc);
    }

    private static string Hex(ulong v) => "0x" + v.ToString("x", CultureInfo.InvariantCulture);
}
