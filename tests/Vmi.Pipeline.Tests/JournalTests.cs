using System.Buffers.Binary;
using System.Reflection;
using MessagePack;
using Vmi.Core;
using Vmi.Events;
using Vmi.Pipeline.Journal;
using Xunit;

namespace Vmi.Pipeline.Tests;

public class JournalTests
{
    private static readonly DateTimeOffset T = new(2025, 3, 4, 5, 6, 7, 891, TimeSpan.Zero);

    /// <summary>One of every event type, every field set to a non-default value.</summary>
    internal static List<VmiEvent> EveryEventType()
    {
        var related = Guid.Parse("11111111-2222-3333-4444-555555555555");
        return
        [
            new ProcessStarted { VmId = "vm1", Time = T, Sequence = 1, Pid = 42, Ppid = 1, Name = "bash", Uid = 1000, Euid = 0, Cmdline = ["bash", "-i"], ExePath = "/bin/bash", TaskAddress = 0xffff888000001000 },
            new ProcessExited { VmId = "vm1", Time = T.AddSeconds(1), Sequence = 2, Pid = 42, Name = "bash", TaskAddress = 0xffff888000001000 },
            new ProcessExec { VmId = "vm1", Time = T.AddSeconds(2), Sequence = 3, Pid = 43, Name = "su", Path = "/bin/su", Cmdline = ["su", "-"], Uid = 1000, Euid = 0, SetUid = true, TaskAddress = 0xffff888000002000 },
            new ModuleLoaded { VmId = "vm1", Time = T.AddSeconds(3), Sequence = 4, Name = "vmi_rootkit", Address = 0xffffffffc0001000, CoreBase = 0xffffffffc0000000, Size = 16384 },
            new MemoryAccess { VmId = "vm1", Time = T.AddSeconds(4), Sequence = 5, Access = MemoryAccessKind.Write, Hook = "syscall-table", Vcpu = 3, Rip = 0xffffffffc0000123, RipSymbol = "evil+0x23", Gpa = 0x2a00000, Gva = 0xffffffff82000000, Size = 8, OldValue = [1, 2, 3, 4, 5, 6, 7, 8], NewValue = [8, 7, 6, 5, 4, 3, 2, 1] },
            new BreakpointHit { VmId = "vm1", Time = T.AddSeconds(5), Sequence = 6, Hook = "commit_creds", Vcpu = 1, Rip = 0xffffffff810a0000, Symbol = "commit_creds", Cr3 = 0x1234000, Registers = new Dictionary<string, ulong> { ["rdi"] = 1, ["rsp"] = 0xffffc90000003f00 } },
            new SweepTick { VmId = "vm1", Time = T.AddSeconds(6), Sequence = 7, Reason = SweepReason.Hook, Number = 12, Cause = related },
            new IntegrityFinding { VmId = "vm1", Time = T.AddSeconds(7), Sequence = 8, Detector = "syscall-hook", Subject = "sys_call_table[62]", Problem = "points outside kernel text", Severity = Severity.Critical, Expected = "0xffffffff810b0000", Actual = "0xffffffffc0000123", Address = 0xffffffff82000000 + 62 * 8, Evidence = new Dictionary<string, string> { ["owner"] = "vmi_rootkit" } },
            new NetworkFlow { VmId = "vm2", Time = T.AddSeconds(8), Sequence = 1, Protocol = "TCP", SourceIp = "192.0.2.10", SourcePort = 43210, DestinationIp = "203.0.113.9", DestinationPort = 443, Bytes = 12345, Packets = 17 },
            new SignatureMatch { VmId = "vm2", Time = T.AddSeconds(9), Sequence = 2, Rule = "Linux_Rootkit_Diamorphine", Tags = ["rootkit", "linux"], Pid = 7, ProcessName = "insmod", Region = "kernel", Address = 0xffffffffc0000000, StringId = "$s1", Data = [0xde, 0xad], BundleVersion = "2025.03" },
            new Alert { VmId = "vm1", Time = T.AddSeconds(10), Sequence = 9, Detector = "syscall-hook", Title = "sys_call_table[62] (kill) hooked", Severity = Severity.High, Techniques = [AttackTechnique.Rootkit, AttackTechnique.KernelModules], Evidence = new Dictionary<string, string> { ["slot"] = "62" }, Description = "hooks", Pid = 7, ProcessName = "insmod", RelatedEvents = [related], Key = "syscall-hook:62", BundleVersion = "1" },
            new DetectorFault { VmId = "vm1", Time = T.AddSeconds(11), Sequence = 10, Detector = "slow", Fault = DetectorFaultKind.Timeout, Message = "no result", EventId = related },
            new TelemetryShed { VmId = "vm1", Time = T.AddSeconds(12), Sequence = 11, Stage = "ingress", Count = 5, Total = 50 },
        ];
    }

    private static byte[] Write(IEnumerable<VmiEvent> events, JournalFlushPolicy flush = JournalFlushPolicy.NeverShed)
    {
        var stream = new MemoryStream();
        using (var writer = new JournalWriter(stream, flush, leaveOpen: true))
        {
            foreach (var e in events)
                writer.Append(e);
        }
        return stream.ToArray();
    }

    private static (List<VmiEvent> Events, JournalProblem? Problem) Read(byte[] bytes, bool seekable = true)
    {
        using var reader = new JournalReader(seekable ? new MemoryStream(bytes) : new NonSeekable(bytes));
        var events = reader.ReadAll().ToList();
        return (events, reader.Problem);
    }

    [Fact]
    public void The_test_covers_every_event_type_of_the_model()
    {
        var union = typeof(VmiEvent).GetCustomAttributes<UnionAttribute>().Select(u => u.SubType).ToHashSet();
        Assert.Equal(union.Count, EveryEventType().Count);
        Assert.True(union.SetEquals(EveryEventType().Select(e => e.GetType())));
    }

    [Fact]
    public void Every_event_type_round_trips_with_all_fields()
    {
        var original = EveryEventType();
        var bytes = Write(original);
        Assert.Equal("VMIJ"u8.ToArray(), bytes[..4]);
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(4)));

        var (read, problem) = Read(bytes);
        Assert.Null(problem);
        Assert.Equal(original.Count, read.Count);
        for (int i = 0; i < original.Count; i++)
        {
            Assert.Equal(original[i].GetType(), read[i].GetType());
            Assert.Equal(original[i].Id, read[i].Id);
            Assert.Equal(original[i].Time, read[i].Time);
            Assert.Equal(original[i].Sequence, read[i].Sequence);
            // Collections compare by reference in records, so compare every field through the wire form and ECS form.
            Assert.Equal(EventSerializer.Serialize(original[i]), EventSerializer.Serialize(read[i]));
            Assert.Equal(original[i].ToEcs().ToNestedJson(), read[i].ToEcs().ToNestedJson());
        }
        var mem = Assert.IsType<MemoryAccess>(read[4]);
        Assert.Equal([8, 7, 6, 5, 4, 3, 2, 1], mem.NewValue);
        Assert.Equal(0x2a00000ul, mem.Gpa);
        var alert = Assert.IsType<Alert>(read[10]);
        Assert.Equal(["T1014", "T1547.006"], alert.Techniques.Select(t => t.Id));
        Assert.Equal("62", alert.Evidence["slot"]);
        Assert.Equal(0xffffc90000003f00ul, Assert.IsType<BreakpointHit>(read[5]).Registers["rsp"]);
    }

    [Fact]
    public async Task Round_trip_through_a_file_and_async_reads()
    {
        string path = Path.Combine(Path.GetTempPath(), $"vmi-journal-{Guid.NewGuid():N}.vmij");
        try
        {
            var all = EveryEventType();
            using (var writer = JournalWriter.Create(path, JournalFlushPolicy.EveryRecord))
            {
                foreach (var e in all)
                    writer.Append(e);
                Assert.Equal(13, writer.Records);
            }
            using var reader = JournalReader.Open(path);
            var events = new List<VmiEvent>();
            await foreach (var e in reader.ReadAllAsync())
                events.Add(e);
            Assert.Equal(all.Select(e => e.Id), events.Select(e => e.Id));
            Assert.Equal(13, reader.Records);
            Assert.Equal(new FileInfo(path).Length, reader.Offset);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Empty_journal_reads_as_no_events()
    {
        var (events, problem) = Read(Write([]));
        Assert.Empty(events);
        Assert.Null(problem);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Truncated_tail_gives_the_events_before_it_and_a_problem(bool seekable)
    {
        var all = EveryEventType();
        var bytes = Write(all);
        int firstRecordEnd = 8 + 4 + BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(8));
        // Every cut inside the journal's last record yields the other 12; inside the length prefix too.
        int lastStart = Write(all.Take(12)).Length;
        for (int cut = lastStart + 1; cut < bytes.Length; cut++)
        {
            var (events, problem) = Read(bytes[..cut], seekable);
            Assert.Equal(12, events.Count);
            Assert.NotNull(problem);
            Assert.Equal(lastStart, problem.Offset);
            Assert.Equal(12, problem.Record);
            Assert.StartsWith("truncated tail: record 12 has ", problem.Message, StringComparison.Ordinal);
        }
        // A cut exactly at a record boundary is a clean, shorter journal.
        var clean = Read(bytes[..firstRecordEnd], seekable);
        Assert.Single(clean.Events);
        Assert.Null(clean.Problem);
        // A cut inside the header.
        var header = Read(bytes[..5], seekable);
        Assert.Empty(header.Events);
        Assert.Equal("truncated header: 5 of 8 bytes", header.Problem?.Message);
    }

    [Fact]
    public void Oversized_record_is_rejected_before_allocating()
    {
        var bytes = Write(EveryEventType().Take(2));
        int second = 8 + 4 + BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(8));
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(second), 0x7fff_ffff);

        using var reader = new JournalReader(new MemoryStream(bytes));
        Assert.NotNull(reader.Read());
        var ex = Assert.Throws<JournalRecordTooLargeException>(() => reader.Read());
        Assert.IsAssignableFrom<VmiException>(ex);
        Assert.Equal((second, 1L, 0x7fff_ffffL, 16 * 1024 * 1024), (ex.Offset, ex.Record, ex.Length, ex.Limit));
        Assert.Contains("over the 16777216-byte limit", ex.Message, StringComparison.Ordinal);

        // Just over a configured limit, on a non-seekable stream, is rejected the same way.
        var small = Write(EveryEventType().Take(1));
        using var strict = new JournalReader(new NonSeekable(small), maxRecordLength: 10);
        Assert.Throws<JournalRecordTooLargeException>(() => strict.Read());
    }

    [Fact]
    public void Corrupt_record_is_a_typed_error_naming_the_record()
    {
        var bytes = Write(EveryEventType().Take(3));
        int second = 8 + 4 + BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(8));
        int secondLength = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(second));
        bytes.AsSpan(second + 4, secondLength).Fill(0xc1); // 0xc1: never used in MessagePack

        using var reader = new JournalReader(new MemoryStream(bytes));
        Assert.NotNull(reader.Read());
        var ex = Assert.Throws<JournalFormatException>(() => reader.Read());
        Assert.Equal((second, 1L), (ex.Offset, ex.Record));
        Assert.IsType<MessagePackSerializationException>(ex.InnerException);
    }

    [Fact]
    public void Not_a_journal_or_a_future_version_is_rejected()
    {
        Assert.Throws<JournalFormatException>(() => Read("NOTAJOURNAL!"u8.ToArray()));
        var bytes = Write([]);
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(4), 2);
        var ex = Assert.Throws<JournalFormatException>(() => Read(bytes));
        Assert.Contains("version 2 is not supported", ex.Message, StringComparison.Ordinal);
        var zero = Write([]).Concat(new byte[4]).ToArray();
        Assert.Throws<JournalFormatException>(() => Read(zero));
    }

    [Fact]
    public void Flush_policy_flushes_never_shed_events_at_once()
    {
        var stream = new CountingStream();
        using var writer = new JournalWriter(stream, JournalFlushPolicy.NeverShed, leaveOpen: true);
        int afterHeader = stream.Flushes;
        var all = EveryEventType();
        writer.Append(all[0]); // telemetry: buffered
        Assert.Equal(afterHeader, stream.Flushes);
        writer.Append(all[10]); // alert: flushed
        Assert.Equal(afterHeader + 1, stream.Flushes);
    }

    private sealed class NonSeekable(byte[] bytes) : MemoryStream(bytes)
    {
        public override bool CanSeek => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => base.Position; set => throw new NotSupportedException(); }
        public override long Seek(long offset, SeekOrigin loc) => throw new NotSupportedException();

        // Dribble bytes out, as a pipe would.
        public override int Read(Span<byte> buffer) => base.Read(buffer[..Math.Min(buffer.Length, 3)]);
        public override int Read(byte[] buffer, int offset, int count) => base.Read(buffer, offset, Math.Min(count, 3));
    }

    private sealed class CountingStream : MemoryStream
    {
        public int Flushes { get; private set; }
        public override void Flush()
        {
            Flushes++;
            base.Flush();
        }
    }
}
