using Vmi.Core;
using Vmi.Targets;
using Xunit;

namespace Vmi.Targets.Tests;

public sealed class TargetSpecTests
{
    [Fact]
    public void Parses_qemu_targets()
    {
        var t = TargetSpec.Parse("qemu:qmp=/tmp/a.sock,mem=/dev/shm/x,gdb=127.0.0.1:1234,machine=q35");
        Assert.Equal(TargetKind.Qemu, t.Kind);
        Assert.Equal("/tmp/a.sock", t.QmpPath);
        Assert.Equal("/dev/shm/x", t.MemoryPath);
        Assert.Equal("127.0.0.1", t.GdbHost);
        Assert.Equal(1234, t.GdbPort);
        Assert.Equal("q35", t.Machine);
    }

    [Fact]
    public void Parses_dump_targets_with_colons_in_the_path()
    {
        var t = TargetSpec.Parse("dump:/tmp/a:b.elf");
        Assert.Equal(TargetKind.Dump, t.Kind);
        Assert.Equal("/tmp/a:b.elf", t.DumpPath);
    }

    [Theory]
    [InlineData("qemu:qmp=/a", "qmp= and mem= are both required")]
    [InlineData("qemu:qmp=/a,mem=/b,gdb=nope", "is not HOST:PORT")]
    [InlineData("qemu:qmp=/a,mem=/b,gdb=h:99999", "is not HOST:PORT")]
    [InlineData("qemu:qmp=/a,mem=/b,color=red", "unknown key 'color'")]
    [InlineData("qemu:qmp=/a,mem=/b,machine=virt", "is not pc or q35")]
    [InlineData("xen:dom=1", "unknown kind 'xen'")]
    [InlineData("nokind", "no kind")]
    [InlineData("dump:", "no file")]
    public void Bad_targets_explain_themselves(string text, string expected)
    {
        var e = Assert.Throws<TargetException>(() => TargetSpec.Parse(text));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        Assert.Contains(TargetSpec.Syntax, e.Message, StringComparison.Ordinal);
    }
}

public sealed class InfoRegistersTests
{
    private const string TwoCpus = """
        CPU#0
        RAX=0000000000000000 RBX=ffffffffa6c1aa40 RCX=0000000000000000 RDX=0000000000000000
        RSI=0000000000000000 RDI=0000000000000000 RBP=ffffffffa6c03e38 RSP=ffffffffa6c03e28
        R8 =0000000000000001 R9 =0000000000000000 R10=0000000000000000 R11=0000000000000000
        RIP=ffffffffa5c0a2ee RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1
        ES =0000 0000000000000000 00000000 00000000
        CS =0010 0000000000000000 ffffffff 00af9b00 DPL=0 CS64 [-RA]
        FS =0000 0000000000000000 00000000 00000000
        GS =0000 ffff9e0e1f400000 00000000 00000000
        GDT=     fffffe0000001000 0000007f
        CR0=80050033 CR2=00007f1c2b8e5000 CR3=000000000241c000 CR4=003506f0
        EFER=0000000000000d01
        CPU#1
        RIP=0000000000401000 RFL=00000202 [-------] CPL=3 II=0 A20=1 SMM=0 HLT=0
        CS =0033 0000000000000000 ffffffff 00a0fb00 DPL=3 CS64 [-RA]
        CR0=80050033 CR2=0000000000000000 CR3=0000000011111000 CR4=003516f0
        EFER=0000000000000d01
        """;

    [Fact]
    public void Parses_each_cpu_of_info_registers_a()
    {
        var cpus = QemuTarget.SplitCpus(TwoCpus);
        Assert.Equal(2, cpus.Count);
        var r0 = QemuTarget.ParseInfoRegisters(cpus[0]);
        Assert.Equal(0xffffffffa5c0a2eeUL, r0["rip"]);
        Assert.Equal(0x241c000UL, r0["cr3"]);
        Assert.Equal(0x003506f0UL, r0["cr4"]);
        Assert.Equal(0xd01UL, r0["efer"]);
        Assert.Equal(0x10UL, r0["cs"]);
        Assert.Equal(1UL, r0["r8"]);
        var r1 = QemuTarget.ParseInfoRegisters(cpus[1]);
        Assert.Equal(0x11111000UL, r1["cr3"]);
        Assert.Equal(0x33UL, r1["cs"]);
        Assert.Equal(0x003516f0UL & (1UL << 12), r1["cr4"] & (1UL << 12)); // LA57 set on CPU 1
    }

    [Fact]
    public void Registers_record_knows_the_paging_mode()
    {
        var regs = new VcpuRegisters(0, 0, 0, 0x33, 0x80050033, 0x1234_5000, 0x003516f0, 0xd01, new Dictionary<string, ulong>());
        Assert.True(regs.La57);
        Assert.Equal(3, regs.Cpl);
        Assert.True(regs.Paging.La57);
        Assert.True(regs.Paging.Nxe);
        Assert.Equal(0x1234_5000UL, regs.Paging.Cr3);
    }
}
