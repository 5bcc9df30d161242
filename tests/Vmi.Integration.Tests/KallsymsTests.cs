using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Vmi.Lab;
using Vmi.Linux;
using Vmi.Linux.Symbols;
using Vmi.Targets;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Integration.Tests;

/// <summary>Finding the kernel and decoding its kallsyms from outside, checked against the guest's own /proc/kallsyms.</summary>
[Collection(LabCollection.Name)]
public sealed class KallsymsTests(LabFixture lab, ITestOutputHelper output)
{
    private ulong Symbol(string name) =>
        lab.Truth.Symbols.TryGetValue(name, out ulong v) ? v : throw new Xunit.Sdk.XunitException($"the guest did not report {name} in kallsyms");

    private async Task<(QemuTarget Target, VcpuRegisters Regs)> AttachAsync()
    {
        QemuTarget target = await QemuTarget.FromVmAsync(lab.Guest.Vm);
        return (target, await target.GetRegistersAsync(0));
    }

    [Fact]
    public async Task KernelLocator_finds_text_and_its_physical_base()
    {
        (QemuTarget target, VcpuRegisters regs) = await AttachAsync();
        await using (target)
        {
            var sw = Stopwatch.StartNew();
            KernelLocation k = KernelLocator.Locate(target.Memory, regs.Paging);
            output.WriteLine($"{k} in {sw.Elapsed.TotalMilliseconds:0.0} ms ({(regs.La57 ? 5 : 4)}-level paging)");
            Assert.Equal(Symbol("_text"), k.VirtualBase);
            Assert.Equal(lab.Truth.Iomem.Single(r => r.Name == "Kernel code").Start, k.PhysicalBase);
            Assert.Equal((long)(Symbol("_text") - KernelLocator.DefaultUnslidBase), k.Slide);
            Assert.True(k.MappedLength > Symbol("_etext") - Symbol("_text"), $"mapped length 0x{k.MappedLength:x}");
        }
    }

    [Fact]
    public async Task Kallsyms_decodes_every_truth_symbol_and_the_whole_table_matches_proc_kallsyms()
    {
        (QemuTarget target, VcpuRegisters regs) = await AttachAsync();
        KallsymsTable table;
        await using (target)
        {
            var sw = Stopwatch.StartNew();
            KernelLocation k = KernelLocator.Locate(target.Memory, regs.Paging);
            TimeSpan locate = sw.Elapsed;
            table = KallsymsReader.Read(target.Memory, regs.Paging, k);
            TimeSpan total = sw.Elapsed;
            output.WriteLine($"locate {locate.TotalMilliseconds:0.0} ms, locate+read+decode {total.TotalMilliseconds:0.0} ms (decode alone {table.DecodeTime.TotalMilliseconds:0.0} ms)");
            output.WriteLine(table.Layout.ToString());
            sw.Restart();
            KallsymsTable again = KallsymsReader.Read(target.Memory, regs.Paging, k);
            output.WriteLine($"second (warm) read+decode {sw.Elapsed.TotalMilliseconds:0.0} ms (decode alone {again.DecodeTime.TotalMilliseconds:0.0} ms)");
            Assert.Equal(table.Count, again.Count);

            // Independent cross-check of _text from the IDT: vector 0's handler minus its offset from _text.
            Assert.True(table.TryGetAddress("asm_exc_divide_error", out ulong divide));
            ulong fromIdt = KernelLocator.LocateFromIdt(target.Memory, regs.Paging, Symbol("idt_table"), divide - Symbol("_text"));
            Assert.Equal(k.VirtualBase, fromIdt);
        }

        foreach ((string name, ulong address) in lab.Truth.Symbols)
        {
            Assert.True(table.TryGetAddress(name, out ulong got), $"{name} missing from the decoded kallsyms");
            Assert.True(got == address, $"{name}: decoded 0x{got:x}, guest says 0x{address:x}");
        }

        GuestReply counts = await lab.Guest.ShellAsync("wc -l < /proc/kallsyms; grep -c '\\[' /proc/kallsyms || true", TimeSpan.FromSeconds(120));
        long[] numbers = [.. counts.Lines.Select(l => l.Trim()).Where(l => l.Length > 0 && l.All(char.IsAsciiDigit)).Select(l => long.Parse(l, CultureInfo.InvariantCulture))];
        Assert.True(numbers.Length == 2, "unexpected reply: " + string.Join(" | ", counts.Lines));
        output.WriteLine($"/proc/kallsyms: {numbers[0]} lines, {numbers[1]} of them module/bpf/trampoline symbols; decoded {table.Count}");
        Assert.Equal(numbers[0] - numbers[1], table.Count);

        // Whole-table check: the core lines of /proc/kallsyms, hashed in the guest, against ours formatted the same way.
        GuestReply hash = await lab.Guest.ShellAsync("grep -v '\\[' /proc/kallsyms | sha256sum", TimeSpan.FromSeconds(180));
        string? guestHash = hash.Lines.Select(l => l.Trim()).FirstOrDefault(l => l.Length >= 64 && l[..64].All(char.IsAsciiHexDigit))?[..64];
        var text = new StringBuilder(table.Count * 48);
        foreach (KernelSymbol s in table.Symbols)
            text.Append(CultureInfo.InvariantCulture, $"{s.Address:x16} {s.Type} {s.Name}\n");
        string ourHash = Convert.ToHexStringLower(SHA256.HashData(Encoding.ASCII.GetBytes(text.ToString())));
        output.WriteLine($"sha256 of core /proc/kallsyms: guest {guestHash}, decoded {ourHash}");
        Assert.Equal(guestHash, ourHash);
    }

    [Fact]
    public async Task Kallsyms_sample_of_proc_kallsyms_matches_name_address_and_type()
    {
        (QemuTarget target, VcpuRegisters regs) = await AttachAsync();
        KallsymsTable table;
        await using (target)
            table = KallsymsReader.Read(target.Memory, regs.Paging);

        GuestReply sample = await lab.Guest.ShellAsync("grep -v '\\[' /proc/kallsyms | awk 'NR%61==0'", TimeSpan.FromSeconds(180));
        var decoded = new HashSet<(ulong, char, string)>(table.Symbols.Select(s => (s.Address, s.Type, s.Name)));
        int compared = 0;
        var types = new SortedDictionary<char, int>();
        foreach (string line in sample.Lines)
        {
            string[] f = line.Split(' ');
            if (f.Length != 3 || f[0].Length != 16 || f[1].Length != 1 || !ulong.TryParse(f[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong address))
                continue; // a kernel message on the console
            Assert.True(decoded.Contains((address, f[1][0], f[2])), $"guest line not decoded: {line}");
            types[f[1][0]] = types.GetValueOrDefault(f[1][0]) + 1;
            compared++;
        }
        output.WriteLine($"{compared} sampled lines match; types {string.Join(' ', types.Select(t => $"{t.Key}:{t.Value}"))}");
        Assert.True(compared > 1000, $"only {compared} sample lines came back");
    }
}
