using Xunit;
using System.Collections.Concurrent;
using Vmi.Core;

namespace Vmi.Audit.Tests;

public sealed class AuditLogTests : IDisposable
{
    private readonly AuditTestKit _kit = new();

    public void Dispose() => _kit.Dispose();

    [Fact]
    public void A_written_log_verifies_and_has_the_documented_layout()
    {
        _kit.WriteStandardLog();
        AuditVerification v = _kit.Verify();
        Assert.True(v.Intact, v.Reason);
        Assert.Equal(12, v.Records);
        Assert.Equal(4, v.Checkpoints);
        Assert.Equal(12, v.LastSequence);
        Assert.True(v.Closed);
        Assert.Empty(v.Warnings);

        List<string> lines = _kit.Lines();
        Assert.Equal(16, lines.Count);
        Assert.Equal(CheckpointKind.Open, AuditTestKit.ParseCheckpoint(lines[0]).Kind);
        Assert.Equal(0, AuditTestKit.ParseCheckpoint(lines[0]).Sequence);
        Assert.Equal(new string('0', 64), AuditTestKit.ParseCheckpoint(lines[0]).Prev);
        Assert.Equal(5, AuditTestKit.ParseCheckpoint(lines[6]).Sequence);
        Assert.Equal(CheckpointKind.Close, AuditTestKit.ParseCheckpoint(lines[15]).Kind);
        AuditRecord r1 = AuditTestKit.ParseRecord(lines[1]);
        Assert.Equal(1, r1.Sequence);
        Assert.Equal(AuditTestKit.LineHash(lines[0]), r1.Prev);
        Assert.Equal(AuditTestKit.LineHash(lines[1]), AuditTestKit.ParseRecord(lines[2]).Prev);
        Assert.Equal(AuditTestKit.ParseRecord(lines[5]).Hash, AuditTestKit.ParseCheckpoint(lines[6]).Hash);
        Assert.StartsWith("{\"action\":\"monitor.start\",\"actor\":\"cli:root\",\"checkpoints\":1,\"details\":{\"n\":\"1\"},\"hash\":\"", lines[1], StringComparison.Ordinal);
        Assert.EndsWith("\"sequence\":1,\"subject\":\"vm-1\",\"time\":\"2026-11-01T12:00:01.0000000Z\",\"type\":\"record\"}", lines[1], StringComparison.Ordinal);
    }

    [Fact]
    public void The_chain_continues_across_a_reopen()
    {
        _kit.WriteStandardLog();
        using (var log = AuditLog.Open(_kit.LogPath, _kit.Key, _kit.Options()))
        {
            Assert.Equal(12, log.LastSequence);
            AuditRecord r = log.Append("service", "monitor.stop", "vm-1", AuditOutcome.Failure);
            Assert.Equal(13, r.Sequence);
            log.Append("api:alice", "alert.raised", "vm-2", AuditOutcome.Rejected);
        }
        AuditVerification v = _kit.Verify();
        Assert.True(v.Intact, v.Reason);
        Assert.Equal(14, v.LastSequence);
        Assert.Equal(6, v.Checkpoints);
        Assert.True(v.Closed);
        Assert.Empty(v.Warnings);
    }

    [Fact]
    public void An_empty_log_gets_an_open_and_a_close_checkpoint()
    {
        using (AuditLog.Open(_kit.LogPath, _kit.Key, _kit.Options()))
        {
        }
        AuditVerification v = _kit.Verify();
        Assert.True(v.Intact, v.Reason);
        Assert.Equal(0, v.Records);
        Assert.Equal(2, v.Checkpoints);
    }

    [Fact]
    public void Checkpoints_are_written_after_the_interval_on_append_and_on_flush()
    {
        using (var log = AuditLog.Open(_kit.LogPath, _kit.Key, _kit.Options(every: 1000)))
        {
            log.Append("service", "monitor.start", "vm-1", AuditOutcome.Success);
            Assert.Single(_kit.Lines().Skip(1)); // not yet: 1 record, no interval passed
            _kit.Time.Advance(TimeSpan.FromSeconds(61));
            log.Append("service", "monitor.start", "vm-2", AuditOutcome.Success);
            Assert.Equal(4, _kit.Lines().Count); // open, r1, r2, periodic
            log.Append("service", "monitor.start", "vm-3", AuditOutcome.Success);
            log.Flush();
            Assert.Equal(5, _kit.Lines().Count); // interval not passed: flush only syncs
            _kit.Time.Advance(TimeSpan.FromSeconds(60));
            log.Flush();
            Assert.Equal(6, _kit.Lines().Count);
            log.Append("service", "monitor.start", "vm-4", AuditOutcome.Success);
            log.Checkpoint();
            Assert.Equal(8, _kit.Lines().Count);
            log.Checkpoint(); // nothing uncovered: no new line
            Assert.Equal(8, _kit.Lines().Count);
        }
        Assert.True(_kit.Verify().Intact);
    }

    [Fact]
    public void Details_with_control_characters_quotes_and_unicode_stay_on_one_line_and_round_trip()
    {
        var details = new Dictionary<string, string> { ["cmd"] = "a\nb\r\u0001\"q\"\\", ["ключ"] = "значение 🐧", ["lone"] = "x\ud800y" };
        using (var log = AuditLog.Open(_kit.LogPath, _kit.Key, _kit.Options()))
            log.Append("cli:root\n", "alert.raised", "line1\nline2", AuditOutcome.Success, details);
        List<string> lines = _kit.Lines();
        Assert.Equal(3, lines.Count);
        AuditRecord r = AuditTestKit.ParseRecord(lines[1]);
        Assert.Equal("a\nb\r\u0001\"q\"\\", r.Details["cmd"]);
        Assert.Equal("значение 🐧", r.Details["ключ"]);
        Assert.Equal("x\ufffdy", r.Details["lone"]);
        Assert.Equal("line1\nline2", r.Subject);
        Assert.True(_kit.Verify().Intact);
    }

    [Theory]
    [InlineData("Rules.Update")]
    [InlineData("rules update")]
    [InlineData("rules..update")]
    [InlineData("")]
    [InlineData("-rules")]
    public void Malformed_actions_are_refused(string action)
    {
        using var log = AuditLog.Open(_kit.LogPath, _kit.Key, _kit.Options());
        Assert.Throws<ArgumentException>(() => log.Append("cli:root", action, "x", AuditOutcome.Success));
        Assert.Throws<ArgumentException>(() => log.Append(" ", "rules.update", "x", AuditOutcome.Success));
    }

    [Fact]
    public void A_record_over_one_MiB_is_refused_and_the_log_stays_usable()
    {
        using (var log = AuditLog.Open(_kit.LogPath, _kit.Key, _kit.Options()))
        {
            var ex = Assert.Throws<ArgumentException>(() => log.Append("cli:root", "rules.update", "x", AuditOutcome.Success,
                new Dictionary<string, string> { ["blob"] = new string('a', 1_100_000) }));
            Assert.Contains("at most", ex.Message, StringComparison.Ordinal);
            Assert.Equal(1, log.Append("cli:root", "rules.update", "x", AuditOutcome.Success).Sequence);
        }
        Assert.True(_kit.Verify().Intact);
    }

    [Fact]
    public void Eight_threads_appending_1000_records_each_give_a_contiguous_verified_chain()
    {
        var sequences = new ConcurrentBag<long>();
        using (var log = AuditLog.Open(_kit.LogPath, _kit.Key, new AuditLogOptions { SyncEveryAppend = false }))
        {
            Parallel.For(0, 8, new ParallelOptions { MaxDegreeOfParallelism = 8 }, t =>
            {
                for (int i = 0; i < 1000; i++)
                    sequences.Add(log.Append("service", "alert.raised", $"t{t}-{i}", AuditOutcome.Success).Sequence);
            });
        }
        Assert.Equal(Enumerable.Range(1, 8000).Select(i => (long)i), sequences.Order());
        AuditVerification v = _kit.Verify();
        Assert.True(v.Intact, v.Reason);
        Assert.Equal(8000, v.Records);
        Assert.Equal(8000, v.LastSequence);
        Assert.Equal(82, v.Checkpoints); // open + 80 periodic + close
    }

    [Fact]
    public void Open_refuses_a_log_whose_tail_is_cut_mid_line_and_leaves_it_untouched()
    {
        _kit.WriteStandardLog();
        byte[] bytes = File.ReadAllBytes(_kit.LogPath);
        File.WriteAllBytes(_kit.LogPath, bytes[..^20]);
        var ex = Assert.Throws<AuditLogException>(() => AuditLog.Open(_kit.LogPath, _kit.Key, _kit.Options()));
        Assert.IsAssignableFrom<VmiException>(ex);
        Assert.Contains("line 16", ex.Message, StringComparison.Ordinal);
        Assert.Contains("ends mid-line", ex.Message, StringComparison.Ordinal);
        Assert.Contains("Refusing to append", ex.Message, StringComparison.Ordinal);
        Assert.Contains("move it aside", ex.Message, StringComparison.Ordinal);
        Assert.Equal(bytes.Length - 20, new FileInfo(_kit.LogPath).Length);
    }

    [Fact]
    public void Open_refuses_garbage_appended_to_the_log()
    {
        _kit.WriteStandardLog();
        File.AppendAllText(_kit.LogPath, "garbage\n");
        var ex = Assert.Throws<AuditLogException>(() => AuditLog.Open(_kit.LogPath, _kit.Key, _kit.Options()));
        Assert.Contains("line 17", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_refuses_a_log_signed_with_another_key()
    {
        _kit.WriteStandardLog();
        var ex = Assert.Throws<AuditLogException>(() => AuditLog.Open(_kit.LogPath, _kit.OtherKey, _kit.Options()));
        Assert.Contains("line 1", ex.Message, StringComparison.Ordinal);
        Assert.Contains("not by the audit key", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_refuses_a_record_an_administrator_appended_after_the_close_checkpoint()
    {
        _kit.WriteStandardLog();
        List<string> lines = _kit.Lines();
        lines.Add(AuditTestKit.ForgeRecord(13, "cover-up", 4, AuditTestKit.LineHash(lines[^1])));
        _kit.WriteLines(lines);
        var ex = Assert.Throws<AuditLogException>(() => AuditLog.Open(_kit.LogPath, _kit.Key, _kit.Options()));
        Assert.Contains("line 17", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void After_a_crash_reopening_seals_the_unsealed_records_and_verify_warns_about_them()
    {
        _kit.WriteStandardLog();
        List<string> lines = _kit.Lines();
        lines.RemoveAt(lines.Count - 1); // the close checkpoint never got written
        _kit.WriteLines(lines);
        using (var log = AuditLog.Open(_kit.LogPath, _kit.Key, _kit.Options()))
            log.Append("service", "monitor.start", "vm-1", AuditOutcome.Success);
        AuditVerification v = _kit.Verify();
        Assert.True(v.Intact, v.Reason);
        Assert.Equal(13, v.LastSequence);
        string warning = Assert.Single(v.Warnings);
        Assert.Contains("records 11..12 (from line 14)", warning, StringComparison.Ordinal);
        Assert.Contains("unclean shutdown", warning, StringComparison.Ordinal);
    }

    [Fact]
    public void The_api_has_no_way_to_change_or_remove_records()
    {
        string[] allowed = ["Append", "Checkpoint", "Flush", "Dispose", "Open", "get_Path", "get_LastSequence"];
        var methods = typeof(AuditLog).GetMethods(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.DeclaredOnly);
        Assert.All(methods, m => Assert.Contains(m.Name, allowed));
    }
}

public sealed class AuditLogExclusivityTests : IDisposable
{
    private readonly AuditTestKit _kit = new();

    public void Dispose() => _kit.Dispose();

    [Fact]
    public void A_second_writer_is_refused_while_readers_can_still_verify()
    {
        using var log = AuditLog.Open(_kit.LogPath, _kit.Key, _kit.Options());
        log.Append("service", "monitor.start", "vm-1", AuditOutcome.Success);
        var ex = Assert.Throws<AuditLogException>(() => AuditLog.Open(_kit.LogPath, _kit.Key, _kit.Options()));
        Assert.Contains("another", ex.Message, StringComparison.Ordinal);
        log.Checkpoint();
        Assert.True(_kit.Verify().Intact || _kit.Verify().Reason!.Contains("not covered", StringComparison.Ordinal));
        Assert.True(_kit.Verify(new AuditVerifyOptions { AllowUnsealedTail = true }).Intact);
    }
}
