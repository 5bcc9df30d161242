using System.Text;
using Vmi.Core;
using Vmi.Lab;
using Xunit;

namespace Vmi.Lab.Tests;

/// <summary>The lab's test kernel rootkit, without QEMU: sources embedded, headers required, vermagic read.</summary>
public sealed class RootkitModuleTests
{
    [Fact]
    public void The_module_its_victims_and_scenario_are_embedded()
    {
        var files = LabBuilder.ReadGuestFiles();
        Assert.Contains("modules/vmi_rootkit/vmi_rootkit.c", files.Keys);
        Assert.Contains("modules/vmi_rootkit/Kbuild", files.Keys);
        Assert.Contains("programs/vmi-user.c", files.Keys);
        Assert.Contains("scenarios/rootkit.sh", files.Keys);
        Assert.Contains("obj-m := vmi_rootkit.o", Encoding.ASCII.GetString(files["modules/vmi_rootkit/Kbuild"]), StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_headers_fail_with_one_line_naming_the_package()
    {
        string root = Directory.CreateTempSubdirectory("vmi-headers-").FullName;
        try
        {
            var e = Assert.Throws<LabException>(() => LabBuilder.RequireKernelHeaders(root, "6.1.0-56-amd64", "amd64"));
            Assert.DoesNotContain('\n', e.Message);
            Assert.Contains("apt-get install -y linux-headers-6.1.0-56-amd64", e.Message, StringComparison.Ordinal);
            Assert.Contains("linux-headers-amd64", e.Message, StringComparison.Ordinal);
            Assert.Contains(Path.Combine(root, "linux-headers-6.1.0-56-amd64"), e.Message, StringComparison.Ordinal);

            var cloud = Assert.Throws<LabException>(() => LabBuilder.RequireKernelHeaders(root, "6.1.0-56-cloud-amd64", "cloud-amd64"));
            Assert.Contains("apt-get install -y linux-headers-6.1.0-56-cloud-amd64", cloud.Message, StringComparison.Ordinal);
            Assert.Contains("linux-headers-cloud-amd64", cloud.Message, StringComparison.Ordinal);

            string dir = Path.Combine(root, "linux-headers-6.1.0-56-amd64");
            Directory.CreateDirectory(dir);
            File.WriteAllText(Path.Combine(dir, "Makefile"), "");
            Assert.Equal(dir, LabBuilder.RequireKernelHeaders(root, "6.1.0-56-amd64", "amd64"));
        }
        finally
        {
            Directory.Delete(root, true);
        }
    }

    /// <summary>
    /// The whole build path: a lab build of the default flavour against a headers root without the
    /// release's headers stops before downloading anything, with the one-line message. (Resolving
    /// the kernel package needs apt's package lists, as every lab build does.)
    /// </summary>
    [Fact]
    public async Task A_lab_build_without_headers_stops_with_the_install_command()
    {
        string lab = Directory.CreateTempSubdirectory("vmi-lab-noheaders-").FullName;
        string headers = Directory.CreateTempSubdirectory("vmi-headers-").FullName;
        try
        {
            var e = await Assert.ThrowsAsync<LabException>(() => new LabBuilder(TextWriter.Null).BuildAsync(
                new LabBuildOptions { LabDirectory = lab, KernelHeadersRoot = headers }));
            Assert.Matches(@"^the kernel headers for \S+ are missing \(.*\), needed to build the lab's test kernel module vmi_rootkit: apt-get install -y linux-headers-\S+ \(or linux-headers-amd64,", e.Message);
            Assert.DoesNotContain('\n', e.Message);
            Assert.Empty(Directory.EnumerateFiles(Path.Combine(lab, "debs")));
        }
        finally
        {
            Directory.Delete(lab, true);
            Directory.Delete(headers, true);
        }
    }

    [Fact]
    public void Vermagic_release_is_read_from_modinfo()
    {
        byte[] ko = [.. "\u007fELF...__UNIQUE_ID_vermagic194\0..."u8, .. "license=GPL\0vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions \0name=x\0"u8];
        Assert.Equal("6.1.0-56-amd64", LabBuilder.ReadVermagicRelease(ko));
        Assert.Null(LabBuilder.ReadVermagicRelease("no modinfo here"u8));
    }
}
