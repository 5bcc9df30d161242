using Vmi.Lab;
using Xunit;

namespace Vmi.Lab.Tests;

public sealed class GroundTruthTests
{
    [Fact]
    public void Parses_every_record_kind_and_skips_interleaved_kernel_messages()
    {
        string[] lines =
        [
            "V Linux version 6.1.0-56-amd64 (x) #1 SMP",
            "C console=ttyS0 vmi.scenario=benign",
            "P 1 0 0 696e69740a 2f696e697400",
            // comm "a b", cmdline ["sh", "-c", "é x"]
            "P 42 1 1000 6120620a 7368002d6300c3a9207800",
            "P 2 0 0 6b746872656164640a -",
            "[   12.345678] random: crng init done",
            "M kvm 1118208 0 - Live 0x0000000000000000",
            "K ffffffff9bf61900 D linux_banner",
            "I 05600000-06401d31 : Kernel code",
            "I   00100000-1ffdffff : System RAM",
        ];
        var t = GroundTruth.Parse(lines);
        Assert.Equal("Linux version 6.1.0-56-amd64 (x) #1 SMP", t.Version);
        Assert.Contains("vmi.scenario=benign", t.CommandLine, StringComparison.Ordinal);
        Assert.Equal(3, t.Processes.Count);
        Assert.Equal((1, 0, 0, "init"), (t.Processes[0].Pid, t.Processes[0].Ppid, t.Processes[0].Uid, t.Processes[0].Comm));
        Assert.Equal(["/init"], t.Processes[0].Cmdline);
        Assert.Equal("a b", t.Processes[1].Comm);
        Assert.Equal(1000, t.Processes[1].Uid);
        Assert.Equal(["sh", "-c", "é x"], t.Processes[1].Cmdline);
        Assert.Empty(t.Processes[2].Cmdline);
        Assert.Single(t.Modules);
        Assert.Equal(0xffffffff9bf61900UL, t.Symbols["linux_banner"]);
        Assert.Equal(2, t.Iomem.Count);
        Assert.Equal(new IomemRange(0x5600000, 0x6401d31, "Kernel code"), t.Iomem[0]);
    }

    [Fact]
    public void A_broken_process_line_is_a_format_error()
    {
        Assert.Throws<FormatException>(() => GroundTruth.Parse(["P 1 0 0"]));
    }
}
