using System.Text;
using Vmi.Lab;
using Vmi.Memory;
using Vmi.Qemu;
using Vmi.Targets;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Integration.Tests;

/// <summary>Introspection of the live lab guest, checked against the guest's own view and QEMU's.</summary>
[Collection(LabCollection.Name)]
public sealed class LiveGuestTests(LabFixture lab, ITestOutputHelper output)
{
    private const ulong UnslidKernelBase = 0xffffffff81000000;

    private ulong Symbol(string name) =>
        lab.Truth.Symbols.TryGetValue(name, out ulong v) ? v : throw new Xunit.Sdk.XunitException($"the guest did not report {name} in kallsyms");

    private byte[] BannerBytes => Encoding.ASCII.GetBytes(lab.Truth.Version + "\n");

    [Fact]
    public void Guest_boots_with_kaslr_on_and_reports_itself()
    {
        output.WriteLine($"boot to ready: {lab.BootTime.TotalSeconds:0.0} s on {lab.Guest.Vm.Accelerator}; {lab.Guest.ReadyLine}");
        Assert.Equal(QemuVm.KvmUsable() ? "kvm" : "tcg", lab.Guest.Vm.Accelerator);
        Assert.StartsWith("Linux version ", lab.Truth.Version, StringComparison.Ordinal);
        Assert.DoesNotContain("nokaslr", lab.Truth.CommandLine, StringComparison.Ordinal);
        Assert.Contains(lab.Truth.Processes, p => p.Pid == 1);
        Assert.Contains(lab.Truth.Processes, p => p.Pid == lab.MarkerPid && p.Comm == "vmi-marker");
        Assert.True(lab.Truth.Processes.Count > 250, $"only {lab.Truth.Processes.Count} processes");
        Assert.Contains(lab.Truth.Processes, p => p.Comm == "name with space" && p.Cmdline.Contains("ärgümënt ✓"));
        Assert.Contains(lab.Truth.Processes, p => p.Comm == "exactly15chars_");
        Assert.Contains(lab.Truth.Processes, p => p.Comm == "a_much_longer_n");
        foreach (string m in new[] { "dummy ", "crc7 ", "isofs ", "cdrom " })
            Assert.Contains(lab.Truth.Modules, l => l.StartsWith(m, StringComparison.Ordinal));
        ulong text = Symbol("_text");
        output.WriteLine($"_text 0x{text:x}, KASLR slide 0x{text - UnslidKernelBase:x}");
    }

    [Fact]
    public async Task Reads_linux_banner_by_virtual_address()
    {
        await using var target = await QemuTarget.FromVmAsync(lab.Guest.Vm);
        VcpuRegisters regs = await target.GetRegistersAsync(0);
        var vm = new VirtualMemory(target.Memory, regs.Paging);
        var buffer = new byte[BannerBytes.Length];
        VirtualReadResult r = vm.Read(Symbol("linux_banner"), buffer);
        Assert.Equal(buffer.Length, r.BytesRead);
        Assert.Equal(Encoding.ASCII.GetString(BannerBytes), Encoding.ASCII.GetString(buffer));
        output.WriteLine($"paging: {(regs.La57 ? 5 : 4)} levels, CR3 0x{regs.Cr3:x}");
    }

    [Fact]
    public async Task Reads_linux_banner_by_physical_address()
    {
        // The guest's own /proc/iomem says where its kernel code starts physically; the image is
        // contiguous, so linux_banner's physical address follows from its offset from _text.
        IomemRange code = lab.Truth.Iomem.Single(r => r.Name == "Kernel code");
        ulong pa = code.Start + (Symbol("linux_banner") - Symbol("_text"));
        var buffer = new byte[BannerBytes.Length];
        Assert.True(lab.Guest.Vm.Memory.TryRead(pa, buffer));
        Assert.Equal(Encoding.ASCII.GetString(BannerBytes), Encoding.ASCII.GetString(buffer));

        await using var target = await QemuTarget.FromVmAsync(lab.Guest.Vm);
        VcpuRegisters regs = await target.GetRegistersAsync(0);
        Assert.True(new PageWalker(target.Memory).TryTranslate(regs.Paging, Symbol("linux_banner"), out Translation t, out _));
        Assert.Equal(pa, t.PhysicalAddress);
    }

    [Fact]
    public async Task Translations_and_reads_agree_with_qemu_for_kernel_and_user_addresses()
    {
        QemuVm vm = lab.Guest.Vm;
        QmpClient qmp = vm.Qmp;
        var gdb = await vm.AttachGdbAsync(); // attaching stops the guest
        try
        {
            // Stop the guest while it runs the marker process in user mode, so both the kernel and
            // the marker's user mappings are in vCPU 0's current address space.
            VcpuRegisters? regs = null;
            await using var target = await QemuTarget.FromVmAsync(vm, gdb);
            for (int attempt = 0; attempt < 200; attempt++)
            {
                var r = await target.GetRegistersAsync(0);
                if (r.Cpl == 3 && ReadsMarker(target.Memory, r.Paging))
                {
                    regs = r;
                    break;
                }
                await gdb.ResumeAsync();
                await Task.Delay(20 + attempt % 7 * 5);
                await gdb.InterruptAsync();
            }
            Assert.True(regs is not null, "never caught the guest in the marker process in user mode");
            PagingContext ctx = regs!.Paging;
            var walker = new PageWalker(target.Memory);
            var virt = new VirtualMemory(target.Memory, ctx);

            Assert.True(virt.TryReadUInt64(Symbol("page_offset_base"), out ulong directMap));
            Assert.True(virt.TryReadUInt64(Symbol("vmemmap_base"), out ulong vmemmap));
            var addresses = new List<(string Name, ulong Va)>
            {
                ("_text", Symbol("_text")), ("_stext", Symbol("_stext")), ("linux_banner", Symbol("linux_banner")),
                ("init_task", Symbol("init_task")), ("sys_call_table", Symbol("sys_call_table")), ("idt_table", Symbol("idt_table")),
                ("page_offset_base", Symbol("page_offset_base")), ("direct map +0", directMap), ("direct map +1M", directMap + 0x100000),
                ("direct map +100M", directMap + 100_000_000), ("vmemmap", vmemmap), ("percpu (k_gs_base)", regs.All.GetValueOrDefault("k_gs_base")),
                ("user rip", regs.Rip), ("user rsp", regs.Rsp), ("marker", lab.MarkerAddress), ("marker page 2", lab.MarkerAddress + 0x20),
                ("null", 0), ("low page", 0x1000), ("non-canonical", 0xdead_0000_0000_0000), ("user hole", 0x0000_1000_0000_0000),
                ("end of direct map", directMap + (1UL << 40)), ("top", 0xffff_ffff_ffff_f000),
            };
            int mapped = 0;
            foreach (var (name, va) in addresses)
            {
                ulong? qemuPa = await QemuMonitor.Gva2GpaAsync(qmp, va);
                bool ours = walker.TryTranslate(ctx, va, out Translation t, out WalkStatus status);
                output.WriteLine($"{name,-20} 0x{va:x16} qemu {(qemuPa is ulong q ? $"0x{q:x}" : "unmapped"),-14} vmi {(ours ? $"0x{t.PhysicalAddress:x}" : status.ToString())}");
                Assert.Equal(qemuPa.HasValue, ours);
                if (!ours)
                    continue;
                mapped++;
                Assert.Equal(qemuPa!.Value, t.PhysicalAddress);
                byte[]? qx = await QemuMonitor.ExamineAsync(qmp, "x", va, 16);
                byte[]? qxp = await QemuMonitor.ExamineAsync(qmp, "xp", t.PhysicalAddress, 16);
                var mine = new byte[16];
                int n = virt.Read(va, mine).BytesRead;
                if (qx is not null && n == 16)
                    Assert.Equal(Convert.ToHexString(qx), Convert.ToHexString(mine));
                var minePhys = new byte[16];
                if (qxp is not null && target.Memory.TryRead(t.PhysicalAddress, minePhys))
                    Assert.Equal(Convert.ToHexString(qxp), Convert.ToHexString(minePhys));
            }
            Assert.True(mapped >= 12, $"only {mapped} addresses were mapped");
        }
        finally
        {
            await gdb.DetachAsync();
            await gdb.DisposeAsync();
            await vm.ResumeAsync();
        }
    }

    [Fact]
    public async Task Virtual_read_crosses_a_page_boundary_in_user_memory()
    {
        QemuVm vm = lab.Guest.Vm;
        var gdb = await vm.AttachGdbAsync();
        try
        {
            await using var target = await QemuTarget.FromVmAsync(vm, gdb);
            for (int attempt = 0; attempt < 200; attempt++)
            {
                var r = await target.GetRegistersAsync(0);
                var virt = new VirtualMemory(target.Memory, r.Paging);
                var buffer = new byte[32];
                if (r.Cpl == 3 && virt.Read(lab.MarkerAddress, buffer).BytesRead == 32)
                {
                    string s = Encoding.ASCII.GetString(buffer);
                    if (s.StartsWith("VMI-MARKER-", StringComparison.Ordinal))
                    {
                        Assert.StartsWith($"VMI-MARKER-{lab.MarkerPid}-CROSSES-PAGE", s, StringComparison.Ordinal);
                        Assert.NotEqual(lab.MarkerAddress >> 12, (lab.MarkerAddress + 31) >> 12);
                        return;
                    }
                }
                await gdb.ResumeAsync();
                await Task.Delay(20 + attempt % 7 * 5);
                await gdb.InterruptAsync();
            }
            Assert.Fail("never caught the marker process in user mode");
        }
        finally
        {
            await gdb.DetachAsync();
            await gdb.DisposeAsync();
            await vm.ResumeAsync();
        }
    }

    [Fact]
    public async Task Elf_dump_from_qemu_reads_the_banner_with_the_dumped_cpu_state()
    {
        string path = Path.Combine(Path.GetTempPath(), $"vmi-itest-{Environment.ProcessId}.elf");
        try
        {
            await lab.Guest.Vm.Qmp.ExecuteAsync("dump-guest-memory", new Dictionary<string, object> { ["paging"] = false, ["protocol"] = "file:" + path });
            await using var dump = DumpTarget.Open(path);
            Assert.True(dump.VcpuCount >= 1);
            VcpuRegisters regs = await dump.GetRegistersAsync(0);
            var buffer = new byte[BannerBytes.Length];
            Assert.Equal(buffer.Length, new VirtualMemory(dump.Memory, regs.Paging).Read(Symbol("linux_banner"), buffer).BytesRead);
            Assert.Equal(Encoding.ASCII.GetString(BannerBytes), Encoding.ASCII.GetString(buffer));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public async Task Cli_reads_and_translates_through_the_attach_socket()
    {
        ulong banner = Symbol("linux_banner");
        string target = lab.Guest.Vm.TargetSpec;
        var read = await VmiCli.RunAsync("mem", "read", "--target", target, "--virt", $"0x{banner:x}", "--len", BannerBytes.Length.ToString(System.Globalization.CultureInfo.InvariantCulture), "--format", "raw");
        Assert.True(read.ExitCode == 0, read.StandardError);
        Assert.Equal(Encoding.ASCII.GetString(BannerBytes), Encoding.ASCII.GetString(read.StdoutBytes));

        var tr = await VmiCli.RunAsync("mem", "translate", "--target", target, "--virt", $"0x{banner:x}", "--json");
        Assert.True(tr.ExitCode == 0, tr.StandardError);
        using var doc = System.Text.Json.JsonDocument.Parse(tr.StandardOutput);
        IomemRange code = lab.Truth.Iomem.Single(r => r.Name == "Kernel code");
        Assert.Equal($"0x{code.Start + (banner - Symbol("_text")):x}", doc.RootElement.GetProperty("physical").GetString());
        Assert.Equal("Ok", doc.RootElement.GetProperty("status").GetString());
        output.WriteLine(tr.StandardOutput);

        var bad = await VmiCli.RunAsync("mem", "read", "--target", target, "--virt", "0x1000", "--len", "16");
        Assert.Equal(3, bad.ExitCode);
        Assert.Contains("partial read", bad.StandardError, StringComparison.Ordinal);
    }

    private bool ReadsMarker(IPhysicalMemory memory, PagingContext ctx)
    {
        var buffer = new byte[11];
        return new VirtualMemory(memory, ctx).Read(lab.MarkerAddress, buffer).BytesRead == 11 && Encoding.ASCII.GetString(buffer) == "VMI-MARKER-";
    }
}
