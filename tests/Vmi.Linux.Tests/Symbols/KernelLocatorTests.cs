using Vmi.Linux.Symbols;
using Vmi.Memory;
using Xunit;

namespace Vmi.Linux.Tests.Symbols;

public sealed class KernelLocatorTests
{
    private const ulong Text = KallsymsBuilder.UnslidText + 0x2e00000;

    [Fact]
    public void Empty_address_space_is_KernelNotFound()
    {
        var mem = new SparsePhysicalMemory(1UL << 32);
        mem.Allocate(0x1000, 0x1000);
        var e = Assert.Throws<KernelNotFoundException>(() => KernelLocator.Locate(mem, new PagingContext(0x1000, false)));
        Assert.Contains("CR3", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Zero_filled_mapping_is_rejected_with_the_reason()
    {
        var image = new KallsymsBuilder().Build(KallsymsBuilder.SampleSymbols(300, Text), Text).Image;
        (SparsePhysicalMemory mem, PagingContext ctx, ulong phys) = KallsymsReaderTests.MapKernel(image, la57: false);
        mem.Write(phys, new byte[64]);
        var e = Assert.Throws<KernelNotFoundException>(() => KernelLocator.Locate(mem, ctx));
        Assert.Contains("zeros", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Idt_cross_check_gives_text()
    {
        var image = new KallsymsBuilder().Build(KallsymsBuilder.SampleSymbols(300, Text), Text).Image;
        (SparsePhysicalMemory mem, PagingContext ctx, ulong phys) = KallsymsReaderTests.MapKernel(image, la57: false);
        const ulong idtOffset = 0x3000, handlerOffset = 0xa00;
        ulong handler = Text + handlerOffset;
        var gate = new byte[16];
        BitConverter.GetBytes((ushort)handler).CopyTo(gate, 0);
        BitConverter.GetBytes((ushort)0x10).CopyTo(gate, 2);
        gate[5] = 0x8E; // present, DPL 0, interrupt gate
        BitConverter.GetBytes((ushort)(handler >> 16)).CopyTo(gate, 6);
        BitConverter.GetBytes((uint)(handler >> 32)).CopyTo(gate, 8);
        mem.Write(phys + idtOffset, gate);
        Assert.Equal(Text, KernelLocator.LocateFromIdt(mem, ctx, Text + idtOffset, handlerOffset));
        Assert.Throws<KernelNotFoundException>(() => KernelLocator.ReadIdtHandler(mem, ctx, Text + idtOffset, 1)); // not present
        Assert.Throws<KernelNotFoundException>(() => KernelLocator.ReadIdtHandler(mem, ctx, 0xffff_8000_0000_0000, 0)); // unmapped
    }
}
