using Vmi.Export.Spool;
using Xunit;

namespace Vmi.Export.Tests;

public sealed class DurableSpoolTests : IDisposable
{
    private readonly string _dir = TestData.TempDir();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Records_come_back_in_order_and_after_a_restart_from_the_cursor()
    {
        List<ExportItem> items = TestData.Items(500);
        using (DurableSpool spool = DurableSpool.Open(TestData.Spool(_dir)))
        {
            spool.AppendRange(items);
            IReadOnlyList<SpoolRecord> first = spool.Read(200, long.MaxValue);
            Assert.Equal(Enumerable.Range(0, 200).Select(i => (long)i), first.Select(r => r.Sequence));
            Assert.Equal(items[..200], first.Select(r => r.Item));
            spool.Commit(150); // acknowledged up to 149; 150..199 were handed out, not acknowledged
            spool.Read(100, long.MaxValue);
        }
        using (DurableSpool spool = DurableSpool.Open(TestData.Spool(_dir)))
        {
            Assert.Equal(150, spool.CommittedSequence);
            Assert.Equal(500, spool.NextSequence);
            Assert.Equal(350, spool.Counters.Pending);
            var rest = new List<SpoolRecord>();
            for (IReadOnlyList<SpoolRecord> r; (r = spool.Read(64, long.MaxValue)).Count > 0;)
                rest.AddRange(r);
            Assert.Equal(items[150..], rest.Select(r => r.Item));
            Assert.Equal(Enumerable.Range(150, 350).Select(i => (long)i), rest.Select(r => r.Sequence));
        }
    }

    [Fact]
    public void Acknowledged_segments_are_deleted_and_numbering_continues()
    {
        using (DurableSpool spool = DurableSpool.Open(TestData.Spool(_dir)))
        {
            spool.AppendRange(TestData.Items(1000)); // ~0.5 KB each: several 64 KB segments
            int before = Directory.GetFiles(_dir, "*.seg").Length;
            Assert.True(before > 3, $"{before} segments");
            spool.Commit(1000);
            Assert.Single(Directory.GetFiles(_dir, "*.seg")); // only the active one stays
            Assert.Equal(0, spool.Counters.Pending);
        }
        using (DurableSpool spool = DurableSpool.Open(TestData.Spool(_dir)))
        {
            Assert.Equal(1000, spool.NextSequence);
            Assert.Empty(spool.Read(10, long.MaxValue));
            spool.Append(TestData.Items(1, from: 1000)[0]);
            Assert.Equal(1000, spool.Read(10, long.MaxValue).Single().Sequence);
        }
    }

    [Theory]
    [InlineData("torn-record")]
    [InlineData("torn-header")]
    [InlineData("flipped-byte")]
    [InlineData("garbage-length")]
    public void A_corrupt_tail_is_cut_back_to_the_last_good_record(string damage)
    {
        using (DurableSpool spool = DurableSpool.Open(TestData.Spool(_dir)))
            spool.AppendRange(TestData.Items(20));
        string segment = Directory.GetFiles(_dir, "*.seg").Order().Last();
        long goodLength = new FileInfo(segment).Length;
        using (var f = new FileStream(segment, FileMode.Open, FileAccess.ReadWrite))
        {
            switch (damage)
            {
                case "torn-record": // a crash in the middle of the last record: half of it on disk
                    f.SetLength(goodLength - 100);
                    break;
                case "torn-header":
                    f.Seek(0, SeekOrigin.End);
                    f.Write([42, 0, 0]);
                    break;
                case "flipped-byte": // the last record's bytes changed: its checksum fails
                    f.Seek(-10, SeekOrigin.End);
                    int b = f.ReadByte();
                    f.Seek(-10, SeekOrigin.End);
                    f.WriteByte((byte)(b ^ 0x55));
                    break;
                case "garbage-length":
                    f.Seek(0, SeekOrigin.End);
                    f.Write([0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4, 5, 6, 7, 8]);
                    break;
            }
        }
        using (DurableSpool spool = DurableSpool.Open(TestData.Spool(_dir)))
        {
            long expected = damage is "torn-header" or "garbage-length" ? 20 : 19;
            Assert.Equal(expected, spool.NextSequence);
            Assert.True(spool.Counters.RecoveredTailBytes > 0);
            // Appending goes on after the last good record, and everything reads back in order.
            spool.AppendRange(TestData.Items(5, from: 100));
            var all = spool.Read(1000, long.MaxValue);
            Assert.Equal(expected + 5, all.Count);
            Assert.Equal(TestData.Items((int)expected).Concat(TestData.Items(5, from: 100)), all.Select(r => r.Item));
        }
    }

    [Fact]
    public void A_half_written_segment_header_is_removed()
    {
        using (DurableSpool spool = DurableSpool.Open(TestData.Spool(_dir)))
            spool.AppendRange(TestData.Items(3));
        File.WriteAllBytes(Path.Combine(_dir, "00000000000000000003.seg"), "VMI"u8.ToArray()); // crash while rolling over
        using DurableSpool again = DurableSpool.Open(TestData.Spool(_dir));
        Assert.Equal(3, again.NextSequence);
        Assert.Equal(3, again.Read(10, long.MaxValue).Count);
    }

    [Fact]
    public void A_full_spool_refuses_new_records_with_a_clear_error_and_counts_them()
    {
        var options = TestData.Spool(_dir) with { SegmentBytes = 16 << 10, MaxBytes = 64 << 10 };
        using DurableSpool spool = DurableSpool.Open(options);
        int accepted = 0;
        SpoolFullException? full = null;
        foreach (ExportItem item in TestData.Items(1000))
        {
            try
            {
                spool.Append(item);
                accepted++;
            }
            catch (SpoolFullException e)
            {
                full = e;
                break;
            }
        }
        Assert.NotNull(full);
        Assert.Contains("full", full.Message, StringComparison.Ordinal);
        Assert.True(spool.Counters.Bytes <= options.MaxBytes);
        Assert.Equal(1, spool.Counters.Rejected);
        Assert.Equal(0, spool.Counters.Dropped);
        Assert.Equal(TestData.Items(accepted), spool.Read(10_000, long.MaxValue).Select(r => r.Item)); // nothing lost
    }

    [Fact]
    public void Drop_oldest_makes_room_and_counts_what_it_dropped()
    {
        var options = TestData.Spool(_dir) with { SegmentBytes = 16 << 10, MaxBytes = 64 << 10, FullPolicy = SpoolFullPolicy.DropOldest };
        using DurableSpool spool = DurableSpool.Open(options);
        spool.AppendRange(TestData.Items(1000));
        SpoolCounters c = spool.Counters;
        Assert.True(c.Bytes <= options.MaxBytes);
        Assert.True(c.Dropped > 0);
        Assert.Equal(1000, c.Appended);
        Assert.Equal(1000, c.Dropped + c.Pending); // every record is either waiting or counted as dropped
        IReadOnlyList<SpoolRecord> left = spool.Read(10_000, long.MaxValue);
        Assert.Equal(c.Pending, left.Count);
        Assert.Equal(999, left[^1].Sequence); // the newest survive
        Assert.Equal(c.Dropped, left[0].Sequence);
    }

    [Fact]
    public void Reading_respects_the_byte_budget_and_rewind_hands_records_out_again()
    {
        using DurableSpool spool = DurableSpool.Open(TestData.Spool(_dir));
        spool.AppendRange(TestData.Items(50));
        IReadOnlyList<SpoolRecord> small = spool.Read(50, 1);
        Assert.Single(small); // one oversized record still comes alone
        spool.Rewind();
        Assert.Equal(0, spool.Read(5, long.MaxValue)[0].Sequence);
    }

    [Fact]
    public void A_second_process_or_instance_cannot_open_the_same_spool()
    {
        using DurableSpool spool = DurableSpool.Open(TestData.Spool(_dir));
        ExportException e = Assert.Throws<ExportException>(() => DurableSpool.Open(TestData.Spool(_dir)));
        Assert.Contains("another exporter", e.Message, StringComparison.Ordinal);
    }
}
