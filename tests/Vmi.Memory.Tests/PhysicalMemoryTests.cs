using System.Buffers.Binary;
using Vmi.Core;
using Xunit;

namespace Vmi.Memory.Tests;

public sealed class SparsePhysicalMemoryTests
{
    [Fact]
    public void Unwritten_pages_are_unbacked_and_written_pages_zero_filled()
    {
        using var m = new SparsePhysicalMemory();
        m.Write(0x1ffe, [1, 2, 3, 4]); // straddles pages 1 and 2
        Assert.Equal([new PhysicalRange(0x1000, 0x2000)], m.Ranges);
        Span<byte> buf = stackalloc byte[6];
        Assert.True(m.TryRead(0x1ffd, buf));
        Assert.Equal([0, 1, 2, 3, 4, 0], buf.ToArray());
        Assert.False(m.TryRead(0xfff, buf));
        Assert.Equal(0, m.ReadPartial(0x3000, buf));
        Assert.Equal(3, m.ReadPartial(0x2ffd, buf));
        Assert.True(m.TryRead(0x5000, Span<byte>.Empty));
    }

    [Fact]
    public void ReadUInt64_fast_and_straddling_paths()
    {
        using var m = new SparsePhysicalMemory();
        m.WriteUInt64(0x1000, 0x1122334455667788);
        m.WriteUInt64(0x1ffc, 0xaabbccddeeff0011); // crosses into page 2
        Assert.True(m.TryReadUInt64(0x1000, out ulong v));
        Assert.Equal(0x1122334455667788UL, v);
        Assert.True(m.TryReadUInt64(0x1ffc, out v));
        Assert.Equal(0xaabbccddeeff0011UL, v);
        Assert.False(m.TryReadUInt64(0x2ffc, out v)); // page 3 missing
        Assert.Equal(0UL, v);
    }

    [Fact]
    public void Size_limit_is_byte_exact_and_writes_beyond_it_throw()
    {
        using var m = new SparsePhysicalMemory(0x1004);
        m.Write(0x1000, [9, 9, 9, 9]);
        Assert.Equal([new PhysicalRange(0x1000, 4)], m.Ranges);
        Assert.False(m.TryReadUInt64(0x1000, out _));
        Assert.Equal(4, m.ReadPartial(0x1000, new byte[16]));
        Assert.Throws<ArgumentOutOfRangeException>(() => m.Write(0x1002, [1, 2, 3]));
        Assert.Throws<ArgumentOutOfRangeException>(() => m.Write(ulong.MaxValue, [1, 2]));
        Assert.Throws<ArgumentOutOfRangeException>(() => new SparsePhysicalMemory(0));
    }

    [Fact]
    public void TryGetSpan_is_zero_copy_within_a_page_only()
    {
        using var m = new SparsePhysicalMemory();
        m.Allocate(0x1000, 0x2000);
        m.Write(0x1800, [7]);
        Assert.True(m.TryGetSpan(0x1800, 1, out ReadOnlySpan<byte> s));
        Assert.Equal(7, s[0]);
        Assert.False(m.TryGetSpan(0x1ff0, 0x20, out _));
        Assert.False(m.TryGetSpan(0x1000, -1, out _));
        Assert.True(m.TryGetSpan(0x9000, 0, out s));
        Assert.True(s.IsEmpty);
        Assert.False(m.TryGetSpan(ulong.MaxValue, 2, out _));
    }

    [Fact]
    public void Remove_unbacks_pages_and_ranges_follow()
    {
        using var m = new SparsePhysicalMemory();
        m.Allocate(0, 0x4000);
        m.Remove(0x1000, 1);
        Assert.Equal([new PhysicalRange(0, 0x1000), new PhysicalRange(0x2000, 0x2000)], m.Ranges);
        m.Remove(0, ulong.MaxValue);
        Assert.Empty(m.Ranges);
        Assert.Equal(0, m.PageCount);
    }

    [Fact]
    public void Extensions_read_typed_values_and_check_backing()
    {
        using var m = new SparsePhysicalMemory();
        m.WriteUInt64(0x1000, 0xcafef00d);
        Assert.True(m.TryRead(0x1000, out uint lo));
        Assert.Equal(0xcafef00du, lo);
        Assert.True(m.IsBacked(0x1000, 0x1000));
        Assert.False(m.IsBacked(0x1000, 0x1001));
        Assert.False(m.IsBacked(ulong.MaxValue, 2));
        Assert.Equal(0x1000UL, m.BackedBytes());
    }
}

public sealed class QemuRamLayoutTests
{
    private const ulong GiB = 1UL << 30;
    private const ulong MiB = 1UL << 20;

    [Theory]
    [InlineData("pc", 512 * MiB, 512 * MiB, 0UL)]
    [InlineData("pc-i440fx-7.2", 3 * GiB, 3 * GiB, 0UL)]
    [InlineData("pc", 0xdfff_ffffUL, 0xdfff_ffffUL, 0UL)]            // just under 3.5 GiB: all low
    [InlineData("pc", 0xe000_0000UL, 3 * GiB, GiB / 2)]               // 3.5 GiB: 3 GiB low + 0.5 GiB high
    [InlineData("pc", 8 * GiB, 3 * GiB, 5 * GiB)]
    [InlineData("q35", 2 * GiB, 2 * GiB, 0UL)]
    [InlineData("q35", 0xafff_ffffUL, 0xafff_ffffUL, 0UL)]            // just under 2.75 GiB
    [InlineData("pc-q35-7.2", 0xb000_0000UL, 2 * GiB, 0x3000_0000UL)] // 2.75 GiB: 2 GiB low + 0.75 GiB high
    [InlineData("q35", 4 * GiB, 2 * GiB, 2 * GiB)]
    public void ForMachine_splits_ram_around_the_pci_hole(string machine, ulong ram, ulong low, ulong high)
    {
        QemuRamLayout layout = QemuRamLayout.ForMachine(machine, ram);
        Assert.Equal(ram, layout.RequiredFileLength);
        Assert.Equal(new PhysicalSegment(0, low, 0), layout.Segments[0]);
        if (high == 0)
        {
            Assert.Single(layout.Segments);
        }
        else
        {
            Assert.Equal(2, layout.Segments.Count);
            // RAM above lowmem appears at 4 GiB: file offset = GPA - 4 GiB + lowmem.
            Assert.Equal(new PhysicalSegment(4 * GiB, high, low), layout.Segments[1]);
            Assert.True(layout.TryGetFileOffset(4 * GiB + 0x1234, out ulong off));
            Assert.Equal(low + 0x1234, off);
            Assert.False(layout.TryGetFileOffset(low, out _)); // the hole
        }
    }

    [Fact]
    public void Unknown_machines_and_impossible_sizes_are_rejected()
    {
        Assert.Throws<GuestMemoryException>(() => QemuRamLayout.ForMachine("virt", GiB));
        Assert.Throws<GuestMemoryException>(() => QemuRamLayout.ForMachine("pc", 0));
        Assert.Throws<GuestMemoryException>(() => QemuRamLayout.Linear(1UL << 53));
        Assert.Throws<GuestMemoryException>(() => QemuRamLayout.Split(GiB, 5 * GiB));
    }

    [Fact]
    public void Split_and_linear_layouts()
    {
        Assert.Equal([new PhysicalSegment(0, 0x1000, 0)], QemuRamLayout.Linear(0x1000).Segments);
        QemuRamLayout split = QemuRamLayout.Split(3 * GiB, GiB);
        Assert.Equal([new PhysicalSegment(0, GiB, 0), new PhysicalSegment(4 * GiB, 2 * GiB, GiB)], split.Segments);
    }
}

public sealed class MappedPhysicalMemoryTests
{
    private const ulong GiB = 1UL << 30;

    [Fact]
    public void Linear_file_reads_are_zero_copy_and_bounds_checked()
    {
        byte[] content = new byte[0x3000];
        for (int i = 0; i < content.Length; i++)
            content[i] = (byte)(i * 7);
        using TempFile file = TempFile.WithBytes(content);
        using MappedPhysicalMemory m = MappedPhysicalMemory.Open(file.Path, QemuRamLayout.Linear(0x3000));

        Assert.Equal([new PhysicalRange(0, 0x3000)], m.Ranges);
        Assert.True(m.TryGetSpan(0x1000, 0x2000, out ReadOnlySpan<byte> span));
        Assert.Equal(content.AsSpan(0x1000), span);
        Assert.True(m.TryReadUInt64(0x2ff8, out ulong v));
        Assert.Equal(BinaryPrimitives.ReadUInt64LittleEndian(content.AsSpan(0x2ff8)), v);
        Assert.False(m.TryReadUInt64(0x2ff9, out _));
        Assert.False(m.TryRead(0x2fff, new byte[2]));
        Assert.Equal(1, m.ReadPartial(0x2fff, new byte[2]));
        Assert.False(m.TryGetSpan(ulong.MaxValue - 1, 4, out _));
        Assert.False(m.TryRead(ulong.MaxValue, new byte[1]));
        Assert.Equal(0, m.ReadPartial(0x3000, new byte[8]));
    }

    [Fact]
    public void File_shorter_than_the_layout_is_a_clear_error()
    {
        using TempFile file = TempFile.WithBytes(new byte[0x1000]);
        var ex = Assert.Throws<GuestMemoryException>(() => MappedPhysicalMemory.Open(file.Path, QemuRamLayout.ForMachine("pc", 0x2000)));
        Assert.Contains("needs 8192 bytes", ex.Message, StringComparison.Ordinal);
        Assert.Throws<TargetException>(() => MappedPhysicalMemory.Open(file.Path + ".missing", QemuRamLayout.Linear(1)));
    }

    [Fact]
    public void Empty_file_is_rejected()
    {
        using TempFile file = TempFile.WithBytes([]);
        Assert.Throws<GuestMemoryException>(() => MappedPhysicalMemory.Open(file.Path, QemuRamLayout.Linear(1)));
    }

    [Fact]
    public void Pc_layout_above_4g_maps_the_high_part_at_4_GiB()
    {
        // 4.5 GiB of RAM on "pc": 3 GiB at GPA 0, 1.5 GiB at GPA 4 GiB from file offset 3 GiB. The file is sparse.
        ulong ram = 4 * GiB + GiB / 2;
        using var file = new TempFile();
        using (var fs = new FileStream(file.Path, FileMode.CreateNew, FileAccess.ReadWrite))
        {
            fs.SetLength((long)ram);
            WriteMarker(fs, 0x1000, 0x1111);
            WriteMarker(fs, 3 * GiB - 8, 0x2222);        // last qword below the hole
            WriteMarker(fs, 3 * GiB, 0x3333);            // first qword of high RAM
            WriteMarker(fs, ram - 8, 0x4444);            // last qword of the file
        }
        using MappedPhysicalMemory m = MappedPhysicalMemory.Open(file.Path, QemuRamLayout.ForMachine("pc", ram));

        Assert.Equal([new PhysicalRange(0, 3 * GiB), new PhysicalRange(4 * GiB, 3 * GiB / 2)], m.Ranges);
        Assert.Equal(0x1111UL, Read(m, 0x1000));
        Assert.Equal(0x2222UL, Read(m, 3 * GiB - 8));
        Assert.Equal(0x3333UL, Read(m, 4 * GiB));
        Assert.Equal(0x4444UL, Read(m, 4 * GiB + 3 * GiB / 2 - 8));
        Assert.False(m.TryReadUInt64(3 * GiB, out _));                  // PCI hole
        Assert.False(m.TryReadUInt64(4 * GiB - 8, out _));
        Assert.False(m.TryReadUInt64(4 * GiB + 3 * GiB / 2, out _));    // past the end of RAM
        Assert.Equal(4, m.ReadPartial(3 * GiB - 4, new byte[16]));       // stops at the hole
    }

    [Fact]
    public void Stream_overload_survives_unlinking_the_file()
    {
        byte[] content = new byte[0x2000];
        content[0x1234] = 0x5a;
        var file = TempFile.WithBytes(content);
        var stream = new FileStream(file.Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        file.Dispose(); // unlink, as the QEMU backend does with its /dev/shm file
        MappedPhysicalMemory m = MappedPhysicalMemory.Open(stream, QemuRamLayout.Linear(0x2000));
        Assert.False(File.Exists(file.Path));
        Assert.True(m.TryRead(0x1234, out byte b));
        Assert.Equal(0x5a, b);
        m.Dispose();
        Assert.Throws<ObjectDisposedException>(() => stream.Length); // the memory owned the stream
    }

    private static void WriteMarker(FileStream fs, ulong offset, ulong value)
    {
        var b = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, value);
        fs.Position = (long)offset;
        fs.Write(b);
    }

    private static ulong Read(IPhysicalMemory m, ulong address)
    {
        Assert.True(m.TryReadUInt64(address, out ulong v), $"0x{address:x} should be backed");
        return v;
    }
}
