using System.Globalization;
using System.Text.Json;
using Vmi.Core;
using Xunit;

namespace Vmi.Qemu.Tests.Real;

/// <summary>QMP and the gdb stub of a real QEMU 7.2 (TCG, no guest: SeaBIOS from the reset vector).</summary>
[Collection(QemuCollection.Name)]
public class QemuProtocolTests(QemuFixture fixture)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    [Fact]
    public void Qmp_greeting_names_the_qemu_version()
    {
        JsonElement qemu = fixture.Qmp.Greeting.GetProperty("version").GetProperty("qemu");
        Assert.True(qemu.GetProperty("major").GetInt32() >= 7);
        Assert.Equal(JsonValueKind.Array, fixture.Qmp.Greeting.GetProperty("capabilities").ValueKind);
        Assert.Equal("prelaunch", fixture.InitialStatus); // -S: not started yet
    }

    [Fact]
    public async Task Qmp_stop_and_cont_report_status_and_events()
    {
        await fixture.ResetAsync();
        QmpClient qmp = fixture.Qmp;

        long mark = qmp.EventSequence;
        await qmp.ContinueAsync();
        QmpEvent resume = await qmp.WaitForEventAsync("RESUME", mark, Timeout);
        Assert.Equal("running", await qmp.QueryStatusAsync());
        Assert.True(resume.Timestamp > DateTimeOffset.UnixEpoch);

        mark = qmp.EventSequence;
        await qmp.StopAsync();
        QmpEvent stop = await qmp.WaitForEventAsync("STOP", mark, Timeout);
        Assert.True(stop.Sequence > resume.Sequence);
        Assert.Equal("paused", await qmp.QueryStatusAsync());

        var error = await Assert.ThrowsAsync<QmpErrorException>(() => qmp.ExecuteAsync("no-such-command"));
        Assert.Equal("CommandNotFound", error.ErrorClass);
    }

    [Fact]
    public async Task Hmp_info_registers_shows_the_reset_state()
    {
        await fixture.ResetAsync();
        string registers = await fixture.Qmp.HumanMonitorCommandAsync("info registers");
        Assert.Contains("EIP=0000fff0", registers, StringComparison.Ordinal);
        Assert.Contains("CR0=60000010", registers, StringComparison.Ordinal);
        Assert.Contains("CS =f000 ffff0000", registers, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Gdb_describes_the_x86_64_registers_including_control_registers()
    {
        GdbRemoteClient gdb = await fixture.GdbAsync();

        Assert.Equal("i386:x86-64", gdb.Architecture);
        string[] names = [.. gdb.Registers.Select(r => r.Name)];
        foreach (string name in new[] { "rax", "rsp", "rip", "eflags", "cs", "fs_base", "gs_base", "k_gs_base", "cr0", "cr2", "cr3", "cr4", "cr8", "efer", "xmm15", "mxcsr" })
        {
            Assert.Contains(name, names);
        }

        // cs_base..es_base are commented out in QEMU's i386-64bit.xml: they must not shift the numbering.
        Assert.DoesNotContain("cs_base", names);
        Assert.Equal(16, gdb.Registers.Single(r => r.Name == "rip").Number);
        Assert.Equal(27, gdb.Registers.Single(r => r.Name == "cr0").Number);
        Assert.Equal(32, gdb.Registers.Single(r => r.Name == "efer").Number);
        Assert.Equal(0x1000, gdb.PacketSize); // QEMU 7.2
        Assert.True(gdb.IsMultiprocess);
    }

    [Fact]
    public async Task Gdb_lists_one_thread_per_vcpu()
    {
        GdbRemoteClient gdb = await fixture.GdbAsync();
        IReadOnlyList<string> threads = await gdb.ListThreadsAsync();
        Assert.Equal(["p01.01", "p01.02"], threads);
    }

    [Fact]
    public async Task Gdb_reads_the_reset_state_of_both_vcpus()
    {
        GdbRemoteClient gdb = await fixture.ResetAsync();

        for (int vcpu = 0; vcpu < 2; vcpu++)
        {
            Assert.Equal(0xfff0UL, await gdb.ReadRegisterAsync("rip", vcpu));
            Assert.Equal(0xf000UL, await gdb.ReadRegisterAsync("cs", vcpu));
            Assert.Equal(0x60000010UL, await gdb.ReadRegisterAsync("cr0", vcpu));
            Assert.Equal(0UL, await gdb.ReadRegisterAsync("cr3", vcpu));
            Assert.Equal(0UL, await gdb.ReadRegisterAsync("cr4", vcpu));
            Assert.Equal(0UL, await gdb.ReadRegisterAsync("efer", vcpu));
        }

        IReadOnlyDictionary<string, ulong> all = await gdb.ReadRegistersAsync();
        Assert.Equal(0xfff0UL, all["rip"]);
        Assert.Equal(0x60000010UL, all["cr0"]);
        Assert.Equal(0x2UL, all["eflags"]);
        Assert.Equal(0x1f80UL, all["mxcsr"]);
        Assert.Equal(0x37fUL, all["fctrl"]);
        Assert.False(all.ContainsKey("xmm0"));
        Assert.Contains("k_gs_base", all.Keys);

        // Cross-check with QEMU's own view; EDX at reset holds the CPUID signature.
        string hmp = await fixture.Qmp.HumanMonitorCommandAsync("info registers");
        string edx = hmp.Split("EDX=")[1][..8];
        Assert.Equal(ulong.Parse(edx, NumberStyles.HexNumber, CultureInfo.InvariantCulture), all["rdx"]);
    }

    [Fact]
    public async Task Gdb_reads_the_bios_reset_vector_as_in_the_rom_file()
    {
        GdbRemoteClient gdb = await fixture.ResetAsync();
        byte[] rom = await File.ReadAllBytesAsync(BiosPath());
        byte[] expected = rom[^16..];

        // Paging is off: virtual = physical. The ROM is mapped at the top of 4 GiB.
        Assert.Equal(expected, await gdb.ReadMemoryAsync(0xfffffff0, 16));
        Assert.Equal(0xea, expected[0]); // jmp far f000:e05b

        // Below 1 MiB, 0xf0000-0xfffff is the ROM until SeaBIOS switches it to RAM and copies itself there, and QEMU's
        // system_reset does not switch it back: compare with QEMU's own view of guest physical memory instead.
        byte[] low = await gdb.ReadMemoryAsync(0xffff0, 16);
        string xp = await fixture.Qmp.HumanMonitorCommandAsync("xp /16xb 0xffff0");
        Assert.Equal(string.Join(' ', low.Select(b => $"0x{b:x2}")), string.Join(' ', xp.Split('\n', StringSplitOptions.TrimEntries).Where(l => l.Length > 0).Select(l => l.Split(": ")[1])));

        // A read larger than one packet (0x800 bytes per 'm' in QEMU 7.2) is chunked and exact.
        Assert.Equal(rom[^0x3000..], await gdb.ReadMemoryAsync(0x100000000 - 0x3000, 0x3000));

        // Beyond RAM and ROM there is nothing: QEMU answers E14.
        Assert.Null(await gdb.TryReadMemoryAsync(0x1_0000_0000_0000, 16));
        await Assert.ThrowsAsync<ProtocolException>(() => gdb.ReadMemoryAsync(0x1_0000_0000_0000, 16));
        Assert.True(gdb.IsConnected);
    }

    [Fact]
    public async Task Gdb_writes_guest_ram_that_qemu_then_sees()
    {
        GdbRemoteClient gdb = await fixture.ResetAsync();
        byte[] pattern = [0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04];

        await gdb.WriteMemoryAsync(0x7000, pattern);

        Assert.Equal(pattern, await gdb.ReadMemoryAsync(0x7000, 8));
        string xp = await fixture.Qmp.HumanMonitorCommandAsync("xp /8xb 0x7000");
        Assert.Contains("0xde 0xad 0xbe 0xef 0x01 0x02 0x03 0x04", xp, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Gdb_single_steps_the_reset_jump()
    {
        GdbRemoteClient gdb = await fixture.ResetAsync();

        GdbStopReply first = await gdb.StepAsync();

        Assert.Equal(5, first.Signal);
        Assert.Equal("p01.01", first.ThreadId);
        Assert.Equal(0xe05bUL, await gdb.ReadRegisterAsync("rip")); // the far jump at f000:fff0
        Assert.Equal(0xf000UL, await gdb.ReadRegisterAsync("cs"));

        ulong previous = 0xe05b;
        for (int i = 0; i < 3; i++)
        {
            await gdb.StepAsync();
            ulong rip = await gdb.ReadRegisterAsync("rip");
            Assert.NotEqual(previous, rip);
            previous = rip;
        }

        // Only vCPU 0 moved: the application processor still waits at the reset vector.
        Assert.Equal(0xfff0UL, await gdb.ReadRegisterAsync("rip", vcpu: 1));
    }

    [Fact]
    public async Task Gdb_write_watchpoint_hits_when_seabios_writes_the_bios_data_area_and_a_hardware_breakpoint_hits_there()
    {
        GdbRemoteClient gdb = await fixture.ResetAsync();

        // SeaBIOS writes the equipment word of the BIOS data area (0x410) during POST.
        await gdb.InsertBreakpointAsync(GdbBreakpointKind.WriteWatch, 0x410, 2);
        GdbStopReply watch;
        try
        {
            await gdb.ResumeAsync();
            watch = await gdb.TryWaitForStopAsync(TimeSpan.FromSeconds(10)) ?? throw new Xunit.Sdk.XunitException("No watchpoint stop within 10 s: " + await DiagnoseAsync(gdb));
        }
        finally
        {
            if (gdb.IsRunning)
            {
                await gdb.InterruptAsync();
            }

            await gdb.RemoveBreakpointAsync(GdbBreakpointKind.WriteWatch, 0x410, 2);
        }

        Assert.Equal(5, watch.Signal);
        Assert.Equal(GdbBreakpointKind.WriteWatch, watch.WatchKind);
        Assert.Equal(0x410UL, watch.WatchAddress);
        Assert.Equal("debug", await fixture.Qmp.QueryStatusAsync());
        ulong afterWrite = await gdb.ReadRegisterAsync("rip");

        // Start over and break, by hardware breakpoint, on the instruction after that write.
        await fixture.ResetAsync();
        await gdb.InsertBreakpointAsync(GdbBreakpointKind.Hardware, afterWrite, 1);
        GdbStopReply breakpoint;
        try
        {
            await gdb.ResumeAsync();
            breakpoint = await gdb.WaitForStopAsync(Timeout);
        }
        finally
        {
            if (gdb.IsRunning)
            {
                await gdb.InterruptAsync();
            }

            await gdb.RemoveBreakpointAsync(GdbBreakpointKind.Hardware, afterWrite, 1);
        }

        Assert.Equal(5, breakpoint.Signal);
        Assert.Null(breakpoint.WatchKind); // QEMU 7.2 sends no hwbreak reason
        Assert.Equal(afterWrite, await gdb.ReadRegisterAsync("rip"));
    }

    [Fact]
    public async Task Gdb_interrupt_stops_a_running_vm()
    {
        GdbRemoteClient gdb = await fixture.ResetAsync();
        await gdb.ResumeAsync();
        Assert.True(gdb.IsRunning);
        await Task.Delay(200);
        Assert.Equal("running", await fixture.Qmp.QueryStatusAsync());

        GdbStopReply stop = await gdb.InterruptAsync();

        Assert.Equal(2, stop.Signal);
        Assert.False(gdb.IsRunning);
        Assert.Equal("paused", await fixture.Qmp.QueryStatusAsync()); // 0x03 stops like any byte sent to a running stub
        Assert.NotEqual(0xfff0UL, await gdb.ReadRegisterAsync("rip"));
    }

    [Fact]
    public async Task Qmp_stop_while_gdb_resumed_the_vm_is_reported_to_gdb()
    {
        GdbRemoteClient gdb = await fixture.ResetAsync();
        await gdb.ResumeAsync();
        await Task.Delay(100);

        await fixture.Qmp.StopAsync();
        GdbStopReply stop = await gdb.WaitForStopAsync(Timeout);

        Assert.Equal(2, stop.Signal);
        Assert.Equal("paused", await fixture.Qmp.QueryStatusAsync());
        Assert.Equal(0x10UL, await gdb.ReadRegisterAsync("cr0") & 0x10); // registers readable again (CR0.ET is always set)
    }

    [Fact]
    public async Task Gdb_recovers_when_qmp_resumed_the_vm_behind_its_back()
    {
        GdbRemoteClient gdb = await fixture.ResetAsync();
        await fixture.Qmp.ContinueAsync();
        Assert.Equal("running", await fixture.Qmp.QueryStatusAsync());

        // QEMU drops this packet, stops the VM and answers T02; the client notices and asks again.
        // (The ROM alias at the top of 4 GiB: below 1 MiB SeaBIOS may be half way through copying itself into RAM.)
        byte[] vector = await gdb.ReadMemoryAsync(0xfffffff0, 16);

        Assert.Equal(0xea, vector[0]);
        Assert.Equal(2, gdb.LastStop?.Signal);
        Assert.Equal("paused", await fixture.Qmp.QueryStatusAsync());
        Assert.False(gdb.IsRunning);
    }

    [Fact]
    public async Task Gdb_detach_resumes_the_vm_and_qmp_cont_keeps_it_running()
    {
        GdbRemoteClient gdb = await fixture.ResetAsync();
        Assert.Equal("prelaunch", await fixture.Qmp.QueryStatusAsync()); // system_reset of a stopped VM

        await gdb.DetachAsync();

        Assert.False(gdb.IsConnected);
        Assert.Equal("running", await fixture.Qmp.QueryStatusAsync());
        await fixture.Qmp.ContinueAsync();
        Assert.Equal("running", await fixture.Qmp.QueryStatusAsync());

        // Attaching again stops the VM.
        GdbRemoteClient again = await fixture.GdbAsync();
        Assert.NotSame(gdb, again);
        Assert.Equal("paused", await fixture.Qmp.QueryStatusAsync());
        Assert.Equal(5, again.LastStop?.Signal);
    }

    private async Task<string> DiagnoseAsync(GdbRemoteClient gdb)
    {
        string status = await fixture.Qmp.QueryStatusAsync();
        GdbStopReply s = await gdb.InterruptAsync();
        return $"status before interrupt={status} stop={s.Raw} status={await fixture.Qmp.QueryStatusAsync()} rip={await gdb.ReadRegisterAsync("rip"):x} cs={await gdb.ReadRegisterAsync("cs"):x} 410={Convert.ToHexString(await gdb.ReadMemoryAsync(0x410, 2))}\n{await fixture.Qmp.HumanMonitorCommandAsync("info registers")}";
    }

    private static string BiosPath()
    {
        foreach (string folder in new[] { "/usr/share/qemu", "/usr/share/seabios" })
        {
            string path = Path.Combine(folder, "bios-256k.bin");
            if (File.Exists(path))
            {
                return path;
            }
        }

        throw new FileNotFoundException("SeaBIOS bios-256k.bin not found in /usr/share/qemu or /usr/share/seabios.");
    }
}
