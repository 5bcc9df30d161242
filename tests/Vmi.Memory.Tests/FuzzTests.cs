using System.Buffers.Binary;
using Vmi.Core;
using Xunit;

namespace Vmi.Memory.Tests;

/// <summary>
/// Property tests over random, hostile inputs (seeded, so failures reproduce): random page tables never make
/// the walker throw, Walk and TryTranslate agree, and both agree with a deliberately different reference
/// walker written straight from the SDM; random ELF corruption yields either a dump or a GuestMemoryException.
/// </summary>
public sealed class FuzzTests
{
    private const int PoolPages = 24;

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    [InlineData(7)]
    [InlineData(8)]
    public void Random_page_tables_walk_consistently(int seed)
    {
        var rng = new Random(seed);
        var seen = new HashSet<string>();
        for (int round = 0; round < 25; round++)
        {
            int maxPhys = rng.Next(4) switch { 0 => 36, 1 => 39, 2 => 46, _ => 52 };
            // Table frames live in a small pool so random pointers often hit real tables and walks go deep.
            ulong limit = rng.Next(4) == 0 ? 0x8000UL : 1UL << 52;
            var memory = new SparsePhysicalMemory(limit);
            for (int page = 1; page <= PoolPages; page++)
            {
                ulong frame = (ulong)page << 12;
                if (frame >= limit)
                    break;
                for (int i = 0; i < 512; i++)
                    memory.WriteUInt64(frame + (ulong)i * 8, RandomEntry(rng, maxPhys));
            }
            var context = new PagingContext(
                Cr3: ((ulong)(uint)rng.Next(1, PoolPages + 3) << 12) | (ulong)(uint)rng.Next(0x1000) | (rng.Next(2) == 0 ? 1UL << 63 : 0),
                La57: rng.Next(2) == 0,
                Nxe: rng.Next(3) != 0,
                MaxPhysicalAddressBits: maxPhys);
            var walker = new PageWalker(memory);
            var vm = new VirtualMemory(memory, context, new TranslationCache(256));

            for (int n = 0; n < 400; n++)
            {
                ulong va = RandomAddress(rng, context.La57);
                WalkResult walk = walker.Walk(context, va);
                bool ok = walker.TryTranslate(context, va, out Translation t, out WalkStatus status);
                string where = $"seed {seed} round {round} va 0x{va:x} ctx {context}";

                Assert.True(walk.Status == status, $"{where}: Walk {walk.Status} vs TryTranslate {status}");
                Assert.Equal(ok, walk.Succeeded);
                Assert.Equal(walk.Translation ?? default, t);
                Assert.InRange(walk.Steps.Count, 0, context.Levels);
                Assert.False(string.IsNullOrEmpty(walk.Describe()));

                seen.Add(ok ? $"{t.Size}" : $"{status}@{walk.FaultLevel}");
                var reference = ReferenceWalk(memory, context, va);
                Assert.True(reference.Status == status, $"{where}: reference {reference.Status} vs {status} ({walk.Describe()})");
                Assert.Equal(reference.Level, walk.FaultLevel);
                if (ok)
                {
                    Assert.Equal(reference.Physical, t.PhysicalAddress);
                    Assert.Equal(reference.Size, t.Size);
                    Assert.Equal(reference.Flags, t.Flags);
                    Assert.Equal(va & ((ulong)t.Size - 1), t.PhysicalAddress & ((ulong)t.Size - 1));
                    Assert.True(t.PhysicalAddress < 1UL << maxPhys);
                }

                // Cached translation (twice: miss then hit) agrees too.
                Assert.Equal(ok, vm.TryTranslate(va, out Translation c1));
                Assert.Equal(ok, vm.TryTranslate(va, out Translation c2));
                Assert.Equal(t, c1);
                Assert.Equal(t, c2);

                // A short virtual read never throws and reports a consistent prefix.
                var buffer = new byte[rng.Next(0, 64)];
                VirtualReadResult r = vm.Read(va, buffer);
                Assert.InRange(r.BytesRead, 0, buffer.Length);
                Assert.Equal(r.BytesRead == buffer.Length, r.IsComplete);
            }
        }
        // The generator must actually reach every outcome, or the property proves little.
        string[] required =
        [
            "Size4K", "Size2M", "Size1G", "NonCanonical@", "NotPresent@Pt", "NotPresent@Pml4",
            "ReservedBitsSet@Pml4", "ReservedBitsSet@Pd", "ReservedBitsSet@Pdpt", "ReservedBitsSet@Pt", "TableUnreadable@Pd",
        ];
        Assert.All(required, r => Assert.Contains(r, seen));
    }

    private static ulong RandomEntry(Random rng, int maxPhys)
    {
        if (rng.Next(100) < 10)
            return 0;
        ulong frame = rng.Next(100) < 85
            ? (ulong)(uint)rng.Next(0, PoolPages + 4) << 12                        // a table in (or just past) the pool
            : (ulong)rng.NextInt64() & (((1UL << maxPhys) - 1) & ~0xFFFUL);         // anywhere
        ulong e = frame | ((ulong)(uint)rng.Next(0x200) & ~0x81UL);                 // RW US PWT PCD A D G at random
        if (rng.Next(100) < 85)
            e |= 1;                                                                 // mostly present
        if (rng.Next(100) < 15)
            e |= 0x80;                                                              // PS (PAT in a PTE)
        if (rng.Next(100) < 15)
            e |= 1UL << 63;                                                         // XD
        if (rng.Next(100) < 10)
            e |= (ulong)(uint)rng.Next(0x800) << 52;                                // ignored / PKE bits 52..62
        if (rng.Next(100) < 5 && maxPhys < 52)
            e |= 1UL << rng.Next(maxPhys, 52);                                      // reserved address bit
        if (rng.Next(100) < 8)
            e |= (ulong)(uint)rng.Next(0x2_0000) << 13;                             // large-page alignment bits
        return e;
    }

    private static ulong RandomAddress(Random rng, bool la57)
    {
        int bits = la57 ? 57 : 48;
        ulong va = (ulong)rng.NextInt64() & ((1UL << bits) - 1);
        if (((va >> (bits - 1)) & 1) != 0)
            va |= ~((1UL << bits) - 1);                                             // sign-extend: canonical
        if (rng.Next(10) == 0)
            va ^= 1UL << rng.Next(bits, 64);                                        // break canonicality
        if (rng.Next(4) == 0)
            va &= ~0x1F_FFFFUL | (ulong)(uint)rng.Next(0x1000);                            // small offsets within a page
        return va;
    }

    /// <summary>An independent walker written bit by bit from the SDM, as a test oracle.</summary>
    private static (WalkStatus Status, PagingLevel? Level, ulong Physical, PageSize Size, PageFlags Flags) ReferenceWalk(
        IPhysicalMemory memory, PagingContext c, ulong va)
    {
        int levels = c.La57 ? 5 : 4;
        int vaBits = c.La57 ? 57 : 48;
        ulong upper = va >> (vaBits - 1);              // bits vaBits-1 .. 63 must be all 0 or all 1
        ulong allOnes = (1UL << (64 - vaBits + 1)) - 1;
        if (upper != 0 && upper != allOnes)
            return (WalkStatus.NonCanonical, null, 0, 0, 0);

        ulong table = 0;
        for (int bit = 12; bit < c.MaxPhysicalAddressBits; bit++)
            table |= c.Cr3 & (1UL << bit);
        bool rw = true, us = true, xd = false;
        for (int level = levels; level >= 1; level--)
        {
            int index = (int)((va >> (3 + 9 * level)) & 511);
            if (!memory.TryReadUInt64(table + (ulong)index * 8, out ulong e))
                return (WalkStatus.TableUnreadable, (PagingLevel)level, 0, 0, 0);
            if ((e & 1) == 0)
                return (WalkStatus.NotPresent, (PagingLevel)level, 0, 0, 0);
            bool ps = ((e >> 7) & 1) == 1;
            bool reserved = false;
            for (int bit = c.MaxPhysicalAddressBits; bit <= 51; bit++)
                reserved |= ((e >> bit) & 1) == 1;
            reserved |= !c.Nxe && (e >> 63) == 1;
            reserved |= level >= 4 && ps;
            if (level == 3 && ps)
                for (int bit = 13; bit <= 29; bit++)
                    reserved |= ((e >> bit) & 1) == 1;
            if (level == 2 && ps)
                for (int bit = 13; bit <= 20; bit++)
                    reserved |= ((e >> bit) & 1) == 1;
            if (reserved)
                return (WalkStatus.ReservedBitsSet, (PagingLevel)level, 0, 0, 0);
            rw &= ((e >> 1) & 1) == 1;
            us &= ((e >> 2) & 1) == 1;
            xd |= c.Nxe && (e >> 63) == 1;
            bool leaf = level == 1 || (ps && level <= 3);
            if (!leaf)
            {
                table = 0;
                for (int bit = 12; bit < c.MaxPhysicalAddressBits; bit++)
                    table |= e & (1UL << bit);
                continue;
            }
            int offsetBits = level switch { 1 => 12, 2 => 21, _ => 30 };
            ulong physical = 0;
            for (int bit = 0; bit < 64; bit++)
            {
                ulong source = bit < offsetBits ? va : (bit < c.MaxPhysicalAddressBits ? e : 0);
                physical |= source & (1UL << bit);
            }
            var flags = PageFlags.Present;
            if (rw) flags |= PageFlags.Writable;
            if (us) flags |= PageFlags.User;
            if (xd) flags |= PageFlags.NoExecute;
            if (((e >> 8) & 1) == 1) flags |= PageFlags.Global;
            if (((e >> 6) & 1) == 1) flags |= PageFlags.Dirty;
            if (((e >> 5) & 1) == 1) flags |= PageFlags.Accessed;
            return (WalkStatus.Ok, null, physical, (PageSize)(1UL << offsetBits), flags);
        }
        throw new InvalidOperationException("unreachable");
    }

    [Theory]
    [InlineData(31)]
    [InlineData(32)]
    public void Mapped_and_sparse_memories_walk_identically(int seed)
    {
        // The walker reads a MappedPhysicalMemory through a devirtualized path: it must agree with the interface path.
        var rng = new Random(seed);
        const int pages = PoolPages + 1;
        var sparse = new SparsePhysicalMemory(pages * 0x1000UL);
        sparse.Allocate(0, pages * 0x1000UL);
        for (int page = 1; page < pages; page++)
            for (int i = 0; i < 512; i++)
                sparse.WriteUInt64(((ulong)page << 12) + (ulong)i * 8, RandomEntry(rng, 52));
        var image = new byte[pages * 0x1000];
        Assert.True(sparse.TryRead(0, image));
        using TempFile file = TempFile.WithBytes(image);
        using MappedPhysicalMemory mapped = MappedPhysicalMemory.Open(file.Path, QemuRamLayout.Linear((ulong)image.Length));
        var viaSparse = new PageWalker(sparse);
        var viaMapped = new PageWalker(mapped);
        for (int n = 0; n < 20_000; n++)
        {
            var context = new PagingContext((ulong)(uint)rng.Next(0, pages + 2) << 12, rng.Next(2) == 0, rng.Next(4) != 0);
            ulong va = RandomAddress(rng, context.La57);
            bool a = viaSparse.TryTranslate(context, va, out Translation ta, out WalkStatus sa);
            bool b = viaMapped.TryTranslate(context, va, out Translation tb, out WalkStatus sb);
            Assert.Equal((a, sa, ta), (b, sb, tb));
            Assert.Equal(sa, viaMapped.Walk(context, va).Status);
        }
    }

    [Theory]
    [InlineData(11)]
    [InlineData(12)]
    [InlineData(13)]
    public void Corrupted_elf_cores_open_or_fail_with_GuestMemoryException(int seed)
    {
        var rng = new Random(seed);
        byte[] good = new ElfCoreBuilder()
            .AddNote("CORE", 1, new byte[336])
            .AddNote("QEMU", 0, ElfCoreBuilder.QemuCpuState(0, true))
            .AddLoad(0, new byte[0x2000])
            .AddLoad(0x10_0000, new byte[0x1000], 0x3000)
            .Build();
        int headerBytes = good.Length - 0x3000; // ELF header, program headers and notes
        using var file = new TempFile();
        for (int i = 0; i < 150; i++)
        {
            byte[] bad = (byte[])good.Clone();
            int mutations = rng.Next(1, 6);
            for (int k = 0; k < mutations; k++)
            {
                int at = rng.Next(4, headerBytes);
                bad[at] = rng.Next(3) switch { 0 => 0xff, 1 => 0, _ => (byte)rng.Next(256) };
            }
            if (rng.Next(5) == 0)
                bad = bad[..rng.Next(1, bad.Length)];
            File.WriteAllBytes(file.Path, bad);
            try
            {
                using GuestDump dump = DumpFile.Open(file.Path);
                // Whatever was accepted must be readable without faults.
                var buffer = new byte[64];
                foreach (PhysicalRange range in dump.Ranges)
                {
                    Assert.True(dump.TryRead(range.Start, buffer.AsSpan(0, (int)Math.Min(64UL, range.Length))));
                    Assert.True(dump.TryRead(range.End - 1, buffer.AsSpan(0, 1)));
                }
                foreach (PhysicalSegment s in dump.Segments)
                    Assert.True(s.FileEnd <= dump.FileLength);
            }
            catch (GuestMemoryException)
            {
                // Expected for most corruptions.
            }
        }
    }

    [Theory]
    [InlineData(21)]
    [InlineData(22)]
    public void Mapped_reads_match_a_byte_model(int seed)
    {
        var rng = new Random(seed);
        byte[] content = new byte[0x6000];
        rng.NextBytes(content);
        // Three PT_LOADs: two adjacent in GPA space, one after a hole.
        byte[] core = new ElfCoreBuilder()
            .AddLoad(0x1000, content[..0x2000])
            .AddLoad(0x3000, content[0x2000..0x3000])
            .AddLoad(0x10000, content[0x3000..])
            .Build();
        using TempFile file = TempFile.WithBytes(core);
        using GuestDump dump = DumpFile.Open(file.Path);

        byte? Model(ulong gpa) => gpa switch
        {
            >= 0x1000 and < 0x4000 => content[gpa - 0x1000],
            >= 0x10000 and < 0x13000 => content[gpa - 0x10000 + 0x3000],
            _ => null,
        };

        for (int i = 0; i < 3000; i++)
        {
            ulong address = rng.Next(4) switch
            {
                0 => (ulong)(uint)rng.Next(0, 0x14000),
                1 => 0x4000UL - (ulong)(uint)rng.Next(0, 16),
                2 => 0x13000UL - (ulong)(uint)rng.Next(0, 16),
                _ => ulong.MaxValue - (ulong)(uint)rng.Next(0, 16),
            };
            var buffer = new byte[rng.Next(0, 40)];
            int expected = 0;
            while (expected < buffer.Length && address + (ulong)expected >= address && Model(address + (ulong)expected) is not null)
                expected++;
            int got = dump.ReadPartial(address, buffer);
            Assert.Equal(expected, got);
            for (int k = 0; k < got; k++)
                Assert.Equal(Model(address + (ulong)k), buffer[k]);
            Assert.Equal(expected == buffer.Length, dump.TryRead(address, new byte[buffer.Length]));
            if (buffer.Length >= 8)
            {
                bool okU64 = dump.TryReadUInt64(address, out ulong v);
                Assert.Equal(expected >= 8, okU64);
                if (okU64)
                    Assert.Equal(BinaryPrimitives.ReadUInt64LittleEndian(buffer), v);
            }
        }
    }
}
