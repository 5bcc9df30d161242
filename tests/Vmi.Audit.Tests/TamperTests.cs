using Xunit;
using System.Text;

namespace Vmi.Audit.Tests;

/// <summary>
/// Each kind of tampering against the standard log (lines: 1 open checkpoint; 2–6 records 1–5; 7 checkpoint;
/// 8–12 records 6–10; 13 checkpoint; 14–15 records 11–12; 16 close checkpoint) is detected at the right line.
/// </summary>
public sealed class TamperTests : IDisposable
{
    private readonly AuditTestKit _kit = new();

    public TamperTests() => _kit.WriteStandardLog();

    public void Dispose() => _kit.Dispose();

    private AuditVerification Tampered(long line, long? sequence, string reasonPart, AuditVerifyOptions? options = null)
    {
        AuditVerification v = _kit.Verify(options);
        Assert.False(v.Intact, "tampering was not detected");
        Assert.Equal(line, v.BadLine);
        if (sequence is not null)
            Assert.Equal(sequence, v.BadSequence);
        Assert.Contains(reasonPart, v.Reason, StringComparison.Ordinal);
        return v;
    }

    [Fact]
    public void A_changed_field_is_a_hash_mismatch()
    {
        List<string> lines = _kit.Lines();
        lines[8] = lines[8].Replace("\"subject\":\"vm-7\"", "\"subject\":\"vm-X\"", StringComparison.Ordinal);
        _kit.WriteLines(lines);
        Tampered(9, 7, "hash mismatch");
    }

    [Fact]
    public void A_changed_field_with_its_hash_recomputed_is_caught_by_the_next_record()
    {
        List<string> lines = _kit.Lines();
        lines[8] = AuditTestKit.Rehash(AuditTestKit.ParseRecord(lines[8]), "vm-X");
        _kit.WriteLines(lines);
        Tampered(9, 7, "hash recomputed");
    }

    [Fact]
    public void A_changed_field_with_its_hash_recomputed_before_a_checkpoint_is_caught_by_the_signed_hash()
    {
        List<string> lines = _kit.Lines();
        lines[5] = AuditTestKit.Rehash(AuditTestKit.ParseRecord(lines[5]), "vm-X"); // record 5, covered by line 7
        _kit.WriteLines(lines);
        Tampered(6, 5, "signed checkpoint at line 7");
    }

    [Fact]
    public void An_edit_that_keeps_the_json_meaning_but_not_the_canonical_bytes_is_caught()
    {
        List<string> lines = _kit.Lines();
        lines[8] = lines[8].Replace("\"subject\":", "\"subject\": ", StringComparison.Ordinal);
        _kit.WriteLines(lines);
        Tampered(9, null, "canonical form");
    }

    [Fact]
    public void A_removed_record_is_a_sequence_gap_at_its_place()
    {
        List<string> lines = _kit.Lines();
        lines.RemoveAt(8); // record 7
        _kit.WriteLines(lines);
        Tampered(9, 8, "record(s) 7..7 removed");
    }

    [Fact]
    public void A_removed_record_just_before_a_checkpoint_is_caught_by_the_checkpoint()
    {
        List<string> lines = _kit.Lines();
        lines.RemoveAt(5); // record 5
        _kit.WriteLines(lines);
        Tampered(6, 5, "removed");
    }

    [Fact]
    public void An_inserted_forged_record_with_a_correct_hash_and_prev_is_named()
    {
        List<string> lines = _kit.Lines();
        // After record 7 (line 9): a forged "record 8" chained to it, before the real record 8.
        lines.Insert(9, AuditTestKit.ForgeRecord(8, "forged", 2, AuditTestKit.LineHash(lines[8])));
        _kit.WriteLines(lines);
        Tampered(10, 8, "inserted");
    }

    [Fact]
    public void An_inserted_record_that_renumbers_nothing_is_named()
    {
        List<string> lines = _kit.Lines();
        // After record 8 (line 10): a second "record 8" chained to it.
        lines.Insert(10, AuditTestKit.ForgeRecord(8, "forged", 2, AuditTestKit.LineHash(lines[9])));
        _kit.WriteLines(lines);
        Tampered(11, 8, "inserted");
    }

    [Fact]
    public void Swapped_records_are_caught_at_the_first_one()
    {
        List<string> lines = _kit.Lines();
        (lines[8], lines[9]) = (lines[9], lines[8]);
        _kit.WriteLines(lines);
        Tampered(9, 8, "reordered");
    }

    [Fact]
    public void Truncating_whole_records_leaves_records_no_checkpoint_covers()
    {
        List<string> lines = _kit.Lines();
        _kit.WriteLines(lines.Take(14)); // up to record 11: record 12 and the close checkpoint are gone
        Tampered(14, 11, "not covered by a signed checkpoint");
    }

    [Fact]
    public void Removing_only_the_close_checkpoint_is_caught()
    {
        List<string> lines = _kit.Lines();
        _kit.WriteLines(lines.Take(15));
        Tampered(14, 11, "not covered by a signed checkpoint");
        // A live log may be verified with the unsealed tail allowed: then it is a warning.
        AuditVerification live = _kit.Verify(new AuditVerifyOptions { AllowUnsealedTail = true });
        Assert.True(live.Intact);
        Assert.Contains(live.Warnings, w => w.Contains("11..12", StringComparison.Ordinal));
    }

    [Fact]
    public void Truncating_mid_line_is_caught()
    {
        byte[] bytes = File.ReadAllBytes(_kit.LogPath);
        File.WriteAllBytes(_kit.LogPath, bytes[..^1]); // just the last newline
        Tampered(16, null, "ends mid-line");
        File.WriteAllBytes(_kit.LogPath, bytes[..^300]);
        Tampered(16, null, "ends mid-line");
    }

    [Fact]
    public void Truncating_back_to_a_checkpoint_needs_the_close_checkpoint_or_an_anchor()
    {
        List<string> lines = _kit.Lines();
        _kit.WriteLines(lines.Take(13)); // ends with the periodic checkpoint covering record 10
        AuditVerification v = _kit.Verify();
        Assert.True(v.Intact); // undetectable from the file alone ...
        Assert.False(v.Closed); // ... but it is not closed, and says so
        Assert.Contains(v.Warnings, w => w.Contains("close checkpoint", StringComparison.Ordinal));
        Tampered(14, 11, "sequence 12 was expected", new AuditVerifyOptions { ExpectedLastSequence = 12 });
    }

    [Fact]
    public void A_removed_checkpoint_is_caught_at_its_place()
    {
        List<string> lines = _kit.Lines();
        lines.RemoveAt(6); // the checkpoint after record 5
        _kit.WriteLines(lines);
        Tampered(7, 6, "checkpoint line was removed");
    }

    [Fact]
    public void A_duplicated_checkpoint_is_caught()
    {
        List<string> lines = _kit.Lines();
        lines.Insert(7, lines[6]);
        _kit.WriteLines(lines);
        Tampered(8, 5, "moved or duplicated");
    }

    [Fact]
    public void A_checkpoint_signed_with_another_key_is_caught()
    {
        List<string> lines = _kit.Lines();
        AuditCheckpoint c = AuditTestKit.ParseCheckpoint(lines[6]);
        lines[6] = AuditTestKit.SignCheckpoint(_kit.OtherKey, _kit.OtherKey.KeyId, "periodic", c.Sequence, c.Hash, c.Prev);
        _kit.WriteLines(lines);
        Tampered(7, 5, "not by the audit key");
    }

    [Fact]
    public void A_checkpoint_claiming_the_audit_key_but_signed_with_another_is_caught()
    {
        List<string> lines = _kit.Lines();
        AuditCheckpoint c = AuditTestKit.ParseCheckpoint(lines[6]);
        lines[6] = AuditTestKit.SignCheckpoint(_kit.OtherKey, _kit.Key.KeyId, "periodic", c.Sequence, c.Hash, c.Prev);
        _kit.WriteLines(lines);
        Tampered(7, 5, "signature is invalid");
    }

    [Fact]
    public void A_checkpoint_with_a_changed_hash_is_caught()
    {
        List<string> lines = _kit.Lines();
        AuditCheckpoint c = AuditTestKit.ParseCheckpoint(lines[6]);
        lines[6] = lines[6].Replace(c.Hash, new string('a', 64), StringComparison.Ordinal);
        _kit.WriteLines(lines);
        Tampered(7, 5, "signature is invalid");
    }

    [Fact]
    public void A_record_appended_after_the_close_checkpoint_without_the_key_is_caught()
    {
        List<string> lines = _kit.Lines();
        lines.Add(AuditTestKit.ForgeRecord(13, "cover-up", 4, AuditTestKit.LineHash(lines[^1])));
        _kit.WriteLines(lines);
        Tampered(17, 13, "after the close checkpoint");
    }

    [Fact]
    public void A_record_appended_to_an_unclosed_log_without_the_key_is_not_covered()
    {
        List<string> lines = _kit.Lines();
        lines.RemoveAt(15); // a crashed service: no close checkpoint
        lines.Add(AuditTestKit.ForgeRecord(13, "cover-up", 3, AuditTestKit.LineHash(lines[^1])));
        _kit.WriteLines(lines);
        Tampered(14, 11, "not covered by a signed checkpoint");
    }

    [Fact]
    public void Verifying_with_the_wrong_public_key_fails_at_the_first_checkpoint()
    {
        AuditVerification v = AuditVerifier.Verify(_kit.LogPath, _kit.OtherKey.Public);
        Assert.False(v.Intact);
        Assert.Equal(1, v.BadLine);
    }

    [Fact]
    public void A_line_over_one_MiB_is_a_bounded_error()
    {
        File.AppendAllText(_kit.LogPath, new string('x', 3 << 20) + "\n");
        Tampered(17, null, "longer than");
        File.AppendAllText(_kit.LogPath, new string('y', 3 << 20)); // and without a newline at all
        Tampered(17, null, "longer than");
        Assert.Throws<AuditLogException>(() => AuditLog.Open(_kit.LogPath, _kit.Key, _kit.Options()));
    }

    [Theory]
    [InlineData("not json")]
    [InlineData("[]")]
    [InlineData("{}")]
    [InlineData("{\"type\":\"record\"}")]
    [InlineData("{\"type\":\"checkpoint\",\"type\":\"checkpoint\"}")]
    [InlineData("\u0000\u0001\u0002")]
    [InlineData("{\"type\":\"record\",\"sequence\":1e400}")]
    public void Garbage_lines_are_reported_not_thrown(string garbage)
    {
        File.AppendAllText(_kit.LogPath, garbage + "\n");
        Tampered(17, null, "");
    }

    [Fact]
    public void Invalid_utf8_is_reported_not_thrown()
    {
        using (var f = new FileStream(_kit.LogPath, FileMode.Append))
            f.Write([0x7b, 0x22, 0xc3, 0x28, 0x22, 0x7d, 0x0a]);
        Tampered(17, null, "UTF-8");
    }

    [Fact]
    public void Random_byte_flips_anywhere_are_always_detected_and_never_throw()
    {
        byte[] original = File.ReadAllBytes(_kit.LogPath);
        var random = new Random(20261123);
        for (int i = 0; i < 400; i++)
        {
            byte[] bytes = (byte[])original.Clone();
            int flips = 1 + random.Next(3);
            for (int j = 0; j < flips; j++)
                bytes[random.Next(bytes.Length)] ^= (byte)(1 + random.Next(255));
            File.WriteAllBytes(_kit.LogPath, bytes);
            AuditVerification v = _kit.Verify();
            Assert.False(v.Intact, $"iteration {i}: not detected");
            Assert.NotNull(v.BadLine);
            Assert.False(string.IsNullOrEmpty(v.Reason));
        }
    }

    [Fact]
    public void Random_truncations_and_splices_never_throw()
    {
        byte[] original = File.ReadAllBytes(_kit.LogPath);
        var random = new Random(7);
        for (int i = 0; i < 300; i++)
        {
            int a = random.Next(original.Length), b = random.Next(original.Length);
            (a, b) = (Math.Min(a, b), Math.Max(a, b));
            byte[] bytes = i % 2 == 0 ? original[..a] : [.. original[..a], .. original[b..]];
            File.WriteAllBytes(_kit.LogPath, bytes);
            AuditVerification v = _kit.Verify();
            Assert.True(v.Intact || (v.BadLine is not null && v.Reason is not null));
        }
        File.WriteAllBytes(_kit.LogPath, Encoding.UTF8.GetBytes(""));
        Assert.True(_kit.Verify().Intact);
        Assert.False(_kit.Verify(new AuditVerifyOptions { ExpectedLastSequence = 1 }).Intact);
    }
}
