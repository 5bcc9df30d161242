using Vmi.Detectors.Linux;
using Vmi.Events;
using Vmi.Linux.Model;
using Vmi.Pipeline;
using Xunit;

namespace Vmi.Detectors.Tests;

[Collection(LabDumpCollection.Name)]
public sealed class CredentialEscalationDetectorTests(LabDumpFixture lab)
{
    [Fact]
    public void Benign_lab_has_no_escalation()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new CredentialEscalationDetector(), guest.Guest);
        Assert.Empty(h.Sweep().Alerts);
        Assert.Empty(h.Sweep().Alerts);
        Assert.Empty(h.Faults);
    }

    [Fact]
    public void Cred_edited_in_place_alerts_as_dkom()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new CredentialEscalationDetector(), guest.Guest);
        LinuxProcess user = UserProcess(guest);
        Assert.Empty(h.Sweep().Alerts);

        guest.WriteUInt32(user.CredAddress + (ulong)guest.OffsetOf("cred", "uid.val"), 0);
        guest.WriteUInt32(user.CredAddress + (ulong)guest.OffsetOf("cred", "euid.val"), 0);

        DetectorOutput output = h.Sweep();
        Assert.Empty(output.Faults);
        Alert alert = Assert.Single(output.Alerts);
        Assert.Equal(user.Pid, alert.Pid);
        Assert.Equal("1000", alert.Evidence["old_uid"]);
        Assert.Equal("1000", alert.Evidence["old_euid"]);
        Assert.Equal("0", alert.Evidence["new_uid"]);
        Assert.Equal("0", alert.Evidence["new_euid"]);
        Assert.Equal("false", alert.Evidence["cred_pointer_changed"]);
        Assert.Equal($"0x{user.CredAddress:x}", alert.Evidence["new_cred"]);
        Assert.Contains("DKOM", alert.Evidence["method"], StringComparison.Ordinal);
        Assert.Equal(user.CredAddress, Assert.Single(output.Findings).Address);
    }

    [Fact]
    public void Cred_pointer_swapped_to_init_cred_alerts_as_commit_creds()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new CredentialEscalationDetector(), guest.Guest);
        LinuxProcess user = UserProcess(guest);
        Assert.Empty(h.Sweep().Alerts);

        // commit_creds(prepare_kernel_cred(0)), the classic kernel exploit payload: both pointers to root creds.
        ulong initCred = guest.Symbol("init_cred");
        guest.WriteUInt64(user.TaskAddress + (ulong)guest.OffsetOf("task_struct", "cred"), initCred);
        guest.WriteUInt64(user.TaskAddress + (ulong)guest.OffsetOf("task_struct", "real_cred"), initCred);

        Alert alert = Assert.Single(h.Sweep().Alerts);
        Assert.Equal(user.Pid, alert.Pid);
        Assert.Equal("true", alert.Evidence["cred_pointer_changed"]);
        Assert.Equal($"0x{user.CredAddress:x}", alert.Evidence["old_cred"]);
        Assert.Equal($"0x{initCred:x}", alert.Evidence["new_cred"]);
        Assert.Contains(AttackTechnique.ExploitationForPrivilegeEscalation, alert.Techniques);
    }

    [Fact]
    public void Exec_of_a_set_uid_program_is_legitimate()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new CredentialEscalationDetector(), guest.Guest);
        LinuxProcess user = UserProcess(guest);
        Assert.Empty(h.Sweep().Alerts);

        // The process execs a set-uid-root program: its exe's inode gets S_ISUID and its euid becomes 0.
        ulong exeFile = guest.ReadUInt64(user.MmAddress + (ulong)guest.OffsetOf("mm_struct", "exe_file"));
        ulong inode = guest.ReadUInt64(exeFile + (ulong)guest.OffsetOf("file", "f_inode"));
        byte[] mode = guest.ReadBytes(inode + (ulong)guest.OffsetOf("inode", "i_mode"), 2);
        mode[1] |= 0x08; // S_ISUID 04000
        guest.Write(inode + (ulong)guest.OffsetOf("inode", "i_mode"), mode);
        guest.WriteUInt32(user.CredAddress + (ulong)guest.OffsetOf("cred", "euid.val"), 0);
        h.ProcessExec(user.Pid, user.Comm, user.ExePath, uid: 1000, euid: 0, setUid: true);

        Assert.Empty(h.Sweep().Alerts);
    }

    [Fact]
    public void Exec_of_an_ordinary_program_does_not_excuse_root()
    {
        using AttackableGuest guest = lab.Attack();
        using var h = new DetectorHarness(new CredentialEscalationDetector(), guest.Guest);
        LinuxProcess user = UserProcess(guest);
        Assert.Empty(h.Sweep().Alerts);
        guest.WriteUInt32(user.CredAddress + (ulong)guest.OffsetOf("cred", "euid.val"), 0);
        h.ProcessExec(user.Pid, user.Comm, user.ExePath, uid: 1000, euid: 0, setUid: false);

        Alert alert = Assert.Single(h.Sweep().Alerts);
        Assert.Equal("non-set-uid program", alert.Evidence["exec"]);
        Assert.Equal("1000", alert.Evidence["new_uid"]);
        Assert.Equal("0", alert.Evidence["new_euid"]);
    }

    private static LinuxProcess UserProcess(AttackableGuest guest)
    {
        LinuxProcess user = guest.Kernel.GetProcesses().Items.Single(p => p.Comm == LabDumpFixture.UserProcessComm);
        Assert.Equal(LabDumpFixture.UserId, user.Uid);
        Assert.Equal(user.CredAddress, user.RealCredAddress);
        return user;
    }
}
