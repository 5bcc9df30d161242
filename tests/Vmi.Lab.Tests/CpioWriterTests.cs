using System.Diagnostics;
using System.Text;
using Vmi.Lab;
using Xunit;

namespace Vmi.Lab.Tests;

public sealed class CpioWriterTests
{
    private static byte[] Build(Action<CpioWriter> fill)
    {
        var ms = new MemoryStream();
        var w = new CpioWriter(ms);
        fill(w);
        w.Finish();
        return ms.ToArray();
    }

    [Fact]
    public void Parents_come_before_children_and_entries_are_aligned()
    {
        byte[] archive = Build(w =>
        {
            w.AddDirectory("lab/bin");
            w.AddFile("lab/bin/tool", Encoding.ASCII.GetBytes("abc"), 0x1ED);
            w.AddCharDevice("dev/console", 5, 1);
        });
        var names = ReadNames(archive);
        Assert.Equal(["lab", "lab/bin", "lab/bin/tool", "dev", "dev/console", "TRAILER!!!"], names);
        Assert.Equal(0, archive.Length % 4);
    }

    [Fact]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public void Real_cpio_lists_and_extracts_the_archive()
    {
        if (Vmi.Core.ExternalTool.Find("cpio") is not string cpio)
        {
            Assert.Fail("cpio is not installed (apt-get install -y cpio): it is the reference this test compares against");
            return;
        }
        byte[] archive = Build(w =>
        {
            w.AddFile("init", Encoding.ASCII.GetBytes("#!/bin/sh\necho hi\n"), 0x1ED);
            w.AddSymlink("bin/sh", "busybox");
            w.AddFile("a/b/c.txt", Encoding.UTF8.GetBytes("héllo"));
        });
        string dir = Directory.CreateTempSubdirectory("vmi-cpio-").FullName;
        try
        {
            var psi = new ProcessStartInfo(cpio, "-idm --quiet") { WorkingDirectory = dir, RedirectStandardInput = true, RedirectStandardError = true };
            using var p = Process.Start(psi)!;
            p.StandardInput.BaseStream.Write(archive);
            p.StandardInput.Close();
            p.WaitForExit();
            Assert.Equal(0, p.ExitCode);
            Assert.Equal("#!/bin/sh\necho hi\n", File.ReadAllText(Path.Combine(dir, "init")));
            Assert.Equal("héllo", File.ReadAllText(Path.Combine(dir, "a/b/c.txt")));
            Assert.Equal("busybox", new FileInfo(Path.Combine(dir, "bin/sh")).LinkTarget);
            Assert.True(File.GetUnixFileMode(Path.Combine(dir, "init")).HasFlag(UnixFileMode.UserExecute));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Writing_a_file_twice_is_an_error()
    {
        var w = new CpioWriter(new MemoryStream());
        w.AddFile("x", [1]);
        Assert.Throws<InvalidOperationException>(() => w.AddFile("x", [2]));
    }

    private static List<string> ReadNames(byte[] a)
    {
        var names = new List<string>();
        int pos = 0;
        while (pos + 110 <= a.Length)
        {
            string header = Encoding.ASCII.GetString(a, pos, 110);
            Assert.StartsWith("070701", header, StringComparison.Ordinal);
            int fileSize = Convert.ToInt32(header.Substring(54, 8), 16);
            int nameSize = Convert.ToInt32(header.Substring(94, 8), 16);
            string name = Encoding.UTF8.GetString(a, pos + 110, nameSize - 1);
            names.Add(name);
            pos += 110 + nameSize;
            pos = (pos + 3) & ~3;
            pos += fileSize;
            pos = (pos + 3) & ~3;
            if (name == "TRAILER!!!")
                break;
        }
        return names;
    }
}
