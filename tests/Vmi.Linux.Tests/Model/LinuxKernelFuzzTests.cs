using System.Diagnostics;
using Vmi.Linux.Model;
using Xunit;

namespace Vmi.Linux.Tests.Model;

/// <summary>Seeded random corruption of the synthetic guest's kernel structures: nothing may throw or hang.</summary>
public sealed class LinuxKernelFuzzTests
{
    [Theory]
    [InlineData(1, 300)]
    [InlineData(0x5eed, 300)]
    public void Random_byte_flips_in_kernel_structures_never_throw(int seed, int iterations)
    {
        var random = new Random(seed);
        var worst = TimeSpan.Zero;
        int issues = 0;
        for (int iteration = 0; iteration < iterations; iteration++)
        {
            var g = new SyntheticGuest(tasks: 12, modules: 3);
            // Flip 1..16 random bytes in the task structs (init_task included), and now and then in the
            // module, mm, maple-tree and VMA areas too.
            int flips = random.Next(1, 17);
            for (int f = 0; f < flips; f++)
            {
                ulong area, length;
                switch (random.Next(6))
                {
                    case 0: (area, length) = (SyntheticGuest.ModuleArea, 0x300); break;
                    case 1: (area, length) = (SyntheticGuest.MmArea, 0x60); break;
                    case 2: (area, length) = (SyntheticGuest.MapleArea, 0x100); break;
                    case 3: (area, length) = (SyntheticGuest.VmaArea, 0x180); break;
                    default: (area, length) = (SyntheticGuest.InitTaskOffset, 13 * SyntheticGuest.TaskSize); break;
                }
                ulong va = SyntheticGuest.Va(area + (ulong)random.NextInt64((long)length));
                byte[] b = g.ReadBytes(va, 1);
                b[0] ^= (byte)random.Next(1, 256);
                g.WriteBytes(va, b);
            }
            var sw = Stopwatch.StartNew();
            LinuxKernel k = g.CreateKernel();
            try
            {
                var ps = k.GetProcesses();
                issues += ps.Issues.Count;
                foreach (LinuxProcess p in ps.Items.Where(p => p.MmAddress != 0).Take(16))
                    issues += k.GetMappings(p).Issues.Count;
                issues += k.GetModules().Issues.Count;
                issues += k.GetSyscallTable().Issues.Count + k.GetIdt().Issues.Count;
            }
            catch (Exception e)
            {
                Assert.Fail($"seed {seed} iteration {iteration} ({flips} flips): {e}");
            }
            if (sw.Elapsed > worst)
                worst = sw.Elapsed;
        }
        Assert.True(worst < TimeSpan.FromSeconds(5), $"slowest iteration took {worst}");
        Assert.True(issues > 0, "the corruption was never noticed");
    }
}
