using System.Buffers.Binary;
using Vmi.Detectors.Linux;
using Vmi.Events;
using Vmi.Pipeline;
using Xunit;

namespace Vmi.Detectors.Tests;

/// <summary>The disassembly patterns on byte arrays, no guest.</summary>
public sealed class InlineHookDisassemblyTests
{
    private const ulong At = 0xffffffff81234560;
    private const ulong Rootkit = 0xffffffffc0a01234;

    private static byte[] Rel32(byte opcode, ulong from, ulong to)
    {
        var b = new byte[5];
        b[0] = opcode;
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(1), (int)(long)(to - (from + 5)));
        return b;
    }

    [Fact]
    public void Jmp_rel32_target_is_computed_and_decoding_stops()
    {
        byte[] code = [.. Rel32(0xe9, At, Rootkit), 0x55, 0x48, 0x89, 0xe5];
        PrologueAnalysis a = InlineHookDetector.Disassemble(code, At, 8);
        ControlTransfer t = Assert.Single(a.Transfers);
        Assert.Equal(("jmp rel", Rootkit, At), (t.Kind, t.Target, t.Address));
        Assert.Single(a.Instructions);
        Assert.Equal(5, a.BytesDecoded);
        Assert.Contains("jmp 0xffffffffc0a01234", a.Text, StringComparison.Ordinal);
    }

    [Fact]
    public void Push_imm32_ret_is_sign_extended_to_a_kernel_address()
    {
        byte[] code = [0x68, 0x34, 0x12, 0xa0, 0xc0, 0xc3];
        ControlTransfer t = Assert.Single(InlineHookDetector.Disassemble(code, At, 8).Transfers);
        Assert.Equal(("push imm; ret", Rootkit), (t.Kind, t.Target));
    }

    [Fact]
    public void Mov_imm64_then_jmp_register_is_followed()
    {
        byte[] code = [0x48, 0xb8, .. BitConverter.GetBytes(Rootkit), 0xff, 0xe0];
        ControlTransfer t = Assert.Single(InlineHookDetector.Disassemble(code, At, 8).Transfers);
        Assert.Equal(("mov imm; jmp reg", Rootkit), (t.Kind, t.Target));
    }

    [Fact]
    public void Sign_extended_mov_then_call_register_is_followed()
    {
        // mov r11, 0xffffffffc0a01234 (imm32 sign-extended); call r11
        byte[] code = [0x49, 0xc7, 0xc3, 0x34, 0x12, 0xa0, 0xc0, 0x41, 0xff, 0xd3, 0xc3];
        ControlTransfer t = Assert.Single(InlineHookDetector.Disassemble(code, At, 8).Transfers);
        Assert.Equal(("mov imm; call reg", Rootkit), (t.Kind, t.Target));
    }

    [Fact]
    public void Register_overwritten_between_mov_and_jmp_is_not_followed()
    {
        byte[] code = [0x48, 0xb8, .. BitConverter.GetBytes(Rootkit), 0x48, 0x31, 0xc0, 0xff, 0xe0];
        Assert.Empty(InlineHookDetector.Disassemble(code, At, 8).Transfers);
    }

    [Fact]
    public void Jmp_through_rip_relative_pointer_reads_the_pointer()
    {
        // jmp qword ptr [rip+0x10]
        byte[] code = [0xff, 0x25, 0x10, 0x00, 0x00, 0x00];
        ulong slot = At + 6 + 0x10;
        ControlTransfer t = Assert.Single(InlineHookDetector.Disassemble(code, At, 8, readPointer: p => p == slot ? Rootkit : null).Transfers);
        Assert.Equal(("jmp [rip+disp]", Rootkit), (t.Kind, t.Target));
    }

    [Fact]
    public void Call_rel32_into_kernel_text_is_a_transfer_the_detector_accepts()
    {
        var text = new TextRange(0xffffffff81000000, 0xffffffff82000000);
        // nop5 (patched __fentry__ site); call into text; push rbp; ret
        byte[] code = [0x0f, 0x1f, 0x44, 0x00, 0x00, .. Rel32(0xe8, At + 5, 0xffffffff81100000), 0x55, 0xc3];
        PrologueAnalysis a = InlineHookDetector.Disassemble(code, At, 8);
        ControlTransfer t = Assert.Single(a.Transfers);
        Assert.Equal("call rel", t.Kind);
        Assert.True(text.Contains(t.Target));
        Assert.Equal(4, a.Instructions.Count);
        // push rbp; ret returns to an unknown value: no transfer invented.
        Assert.DoesNotContain(a.Transfers, x => x.Kind == "push imm; ret");
    }

    [Fact]
    public void Decoding_stops_at_the_instruction_limit_and_survives_garbage()
    {
        byte[] nops = Enumerable.Repeat((byte)0x90, 32).ToArray();
        Assert.Equal(8, InlineHookDetector.Disassemble(nops, At, 8).Instructions.Count);
        byte[] garbage = [0x0f, 0xff, 0xff, 0xff];
        PrologueAnalysis g = InlineHookDetector.Disassemble(garbage, At, 8);
        Assert.Empty(g.Transfers);
        byte[] truncated = [0xe9, 0x00];
        Assert.Empty(InlineHookDetector.Disassemble(truncated, At, 8).Transfers);
        Assert.Empty(InlineHookDetector.Disassemble([], At, 8).Instructions);
    }
}

[Collection(LabDumpCollection.Name)]
public sealed class InlineHookDetectorTests(LabDumpFixture lab)
{
    [Fact]
    public void Benign_dump_has_no_alert()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new InlineHookDetector(), guest.Guest);
        DetectorOutput output = h.Sweep();
        LinuxDetectorKit.AssertNoAlerts(h, output);
        Assert.Empty(output.Findings);
    }

    [Fact]
    public void Prologue_overwritten_with_jmp_rel32_to_a_module_alerts_with_disassembly()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new InlineHookDetector(), guest.Guest);
        LinuxDetectorKit.AssertNoAlerts(h, h.Sweep());

        ulong function = guest.Symbol("tcp4_seq_show");
        ulong hook = LinuxDetectorKit.ModuleAddress(guest, "crc7", 0x20);
        var patch = new byte[5];
        patch[0] = 0xe9;
        BinaryPrimitives.WriteInt32LittleEndian(patch.AsSpan(1), (int)(long)(hook - (function + 5)));
        guest.Write(function, patch);

        DetectorOutput output = h.Sweep();
        Alert alert = Assert.Single(output.Alerts);
        Assert.Equal(InlineHookDetector.Id, alert.Detector);
        Assert.Equal($"inline-hook:tcp4_seq_show:{LinuxDetectorKit.Hex(hook)}", alert.Key);
        Assert.Equal("tcp4_seq_show", alert.Evidence["function"]);
        Assert.Equal(LinuxDetectorKit.Hex(function), alert.Evidence["address"]);
        Assert.Equal("jmp rel", alert.Evidence["pattern"]);
        Assert.Equal(LinuxDetectorKit.Hex(hook), alert.Evidence["target"]);
        Assert.Equal("module crc7+0x20", alert.Evidence["points_to"]);
        Assert.Equal("crc7", alert.Evidence["module"]);
        Assert.StartsWith(Convert.ToHexStringLower(patch), alert.Evidence["bytes"], StringComparison.Ordinal);
        Assert.Contains($"jmp {LinuxDetectorKit.Hex(hook)}", alert.Evidence["instructions"], StringComparison.Ordinal);
        Assert.Single(output.Findings);

        Assert.Empty(h.Sweep().Alerts);
    }

    [Fact]
    public void Mov_jmp_register_hook_on_a_syscall_handler_is_found_through_the_write_hook()
    {
        using AttackableGuest guest = lab.Attack();
        // Only syscall handlers: __x64_sys_kill is checked because the table holds it.
        var options = new InlineHookOptions { Functions = [] };
        using var h = new DetectorHarness(new InlineHookDetector(options), guest.Guest);
        LinuxDetectorKit.AssertNoAlerts(h, h.Sweep());

        ulong function = guest.Symbol("__x64_sys_kill");
        byte[] patch = [0x48, 0xb8, .. BitConverter.GetBytes(LinuxDetectorKit.UnknownAddress), 0xff, 0xe0];
        guest.Write(function + 5, patch);

        DetectorOutput output = h.MemoryWrite("kernel-text", gva: function + 5, rip: 0x1234, newValue: patch);
        Alert alert = Assert.Single(output.Alerts);
        Assert.Equal("__x64_sys_kill", alert.Evidence["function"]);
        Assert.Equal("mov imm; jmp reg", alert.Evidence["pattern"]);
        Assert.Equal(LinuxDetectorKit.Hex(function + 5 + 10), alert.Evidence["instruction_address"]); // the jmp, after the 10-byte mov
        Assert.Equal("unknown memory (not kernel text or any listed module)", alert.Evidence["points_to"]);
        Assert.Equal("0x1234", alert.Evidence["writer_rip"]);
        Assert.Single(alert.RelatedEvents);
    }
}
