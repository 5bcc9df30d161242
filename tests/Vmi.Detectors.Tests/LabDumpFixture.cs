using System.Buffers.Binary;
using System.Globalization;
using System.Text.Json;
using Vmi.Events;
using Vmi.Lab;
using Vmi.Linux;
using Vmi.Linux.Model;
using Vmi.Memory;
using Vmi.Pipeline;
using Vmi.Targets;
using Xunit;

namespace Vmi.Detectors.Tests;

/// <summary>
/// An ELF memory dump of the booted lab guest ("benign,modules" plus one unprivileged process), made
/// once and cached under build/test-dumps keyed by the lab manifest's fingerprint (a rebuilt lab makes
/// a new dump). Tests read the real kernel from it and play the attacker through <see cref="Attack"/>:
/// every call gives a private copy-on-write overlay, so one test's edits never reach another.
/// </summary>
/// <remarks>Set VMI_DETECTOR_DUMP to use an existing dump instead (it must have been made the same way).</remarks>
public sealed class LabDumpFixture : IAsyncLifetime
{
    /// <summary>Scenarios booted for the dump.</summary>
    public const string Scenarios = "benign,modules";

    /// <summary>Name (comm) of the process the fixture starts with uid/gid 1000 (a copy of vmi-sleeper).</summary>
    public const string UserProcessComm = "vmi-user";

    /// <summary>The uid/gid of <see cref="UserProcessComm"/>.</summary>
    public const uint UserId = 1000;

    /// <summary>Modules the modules scenario loads (and the module list must show).</summary>
    public static IReadOnlyList<string> LabModules { get; } = ["dummy", "crc7", "isofs"];

    // Bump when the guest setup below changes, so stale cached dumps are not reused.
    private const string SetupVersion = "v1";

    private DumpTarget? _dump;

    public string DumpPath { get; private set; } = "";
    public IPhysicalMemory BaseMemory => _dump?.Memory ?? throw new InvalidOperationException("fixture not initialized");
    public PagingContext KernelPaging { get; private set; }
    public LinuxProfile Profile { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        string? env = Environment.GetEnvironmentVariable("VMI_DETECTOR_DUMP");
        if (env is { Length: > 0 })
        {
            DumpPath = env;
        }
        else
        {
            LabArtifacts artifacts = await new LabBuilder(TextWriter.Null).BuildAsync(new LabBuildOptions { LabDirectory = LabBuilder.DefaultLabDirectory() });
            DumpPath = DefaultDumpPath(artifacts);
            await EnsureDumpAsync(artifacts, DumpPath);
        }
        _dump = DumpTarget.Open(DumpPath);
        VcpuRegisters registers = await _dump.GetRegistersAsync(0);
        KernelPaging = registers.Paging;
        Profile = LinuxProfile.Bootstrap(_dump.Memory, KernelPaging);
    }

    /// <summary>A fresh guest over a private copy-on-write layer of the dump.</summary>
    public AttackableGuest Attack() => new(new OverlayPhysicalMemory(BaseMemory), KernelPaging, Profile);

    public async Task DisposeAsync()
    {
        if (_dump is not null)
            await _dump.DisposeAsync();
        _dump = null;
    }

    private static string DefaultDumpPath(LabArtifacts artifacts)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(artifacts.Directory, "manifest.json")));
        string fingerprint = doc.RootElement.TryGetProperty("fingerprint", out JsonElement fp) ? fp.GetString() ?? "unknown" : "unknown";
        string flavour = Path.GetFileName(artifacts.Directory.TrimEnd(Path.DirectorySeparatorChar));
        // build/lab → build/test-dumps in the same checkout.
        string root = Path.GetDirectoryName(LabBuilder.DefaultLabDirectory())!;
        return Path.Combine(root, "test-dumps", $"lab-benign-{flavour}-{fingerprint[..Math.Min(16, fingerprint.Length)]}-{SetupVersion}.elf");
    }

    private static async Task EnsureDumpAsync(LabArtifacts artifacts, string path)
    {
        if (File.Exists(path))
            return;
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        // Test processes of other projects may want the same dump at the same time: one makes it.
        string lockPath = path + ".lock";
        FileStream? gate = null;
        for (int attempt = 0; gate is null; attempt++)
        {
            try
            {
                gate = new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (attempt < 600)
            {
                await Task.Delay(TimeSpan.FromSeconds(1));
            }
        }
        await using (gate)
        {
            if (File.Exists(path))
                return;
            await CreateDumpAsync(artifacts, path);
        }
    }

    private static async Task CreateDumpAsync(LabArtifacts artifacts, string path)
    {
        await using LabGuest guest = await LabGuest.StartAsync(artifacts, "detector-dump", Scenarios);
        // The scenarios run in the background: wait until every lab module is loaded.
        string allLoaded = string.Join(" && ", LabModules.Select(m => $"grep -q '^{m} ' /proc/modules"));
        GuestReply reply = await guest.ShellAsync($"for i in $(seq 1 300); do if {allLoaded}; then exit 0; fi; sleep 0.2; done; exit 1", TimeSpan.FromMinutes(2));
        if (reply.ExitStatus != 0)
            throw new InvalidOperationException("the lab modules did not load: " + string.Join('\n', reply.Lines));
        // One unprivileged process, for credential tests (everything else in the lab runs as root).
        reply = await guest.ShellAsync(
            $"cp /lab/bin/vmi-sleeper /tmp/{UserProcessComm} 2>&1; mkdir -p /etc; echo 'vmiuser:x:{UserId}:{UserId}::/tmp:/bin/sh' >> /etc/passwd; echo 'vmiuser:x:{UserId}:' >> /etc/group; " +
            $"su vmiuser -c '/tmp/{UserProcessComm} </dev/null >/dev/null 2>&1 &' 2>&1; sleep 2; ps -o pid,user,comm 2>&1 | grep {UserProcessComm}",
            TimeSpan.FromMinutes(1));
        if (reply.ExitStatus != 0)
            throw new InvalidOperationException("could not start the unprivileged process: " + string.Join('\n', reply.Lines));
        string partial = path + ".partial";
        File.Delete(partial);
        await guest.Vm.Qmp.ExecuteAsync("dump-guest-memory", new Dictionary<string, object> { ["paging"] = false, ["protocol"] = "file:" + Path.GetFullPath(partial) });
        File.Move(partial, path, overwrite: true);
    }
}

[CollectionDefinition(Name)]
public sealed class LabDumpCollection : ICollectionFixture<LabDumpFixture>
{
    public const string Name = "lab dump";
}

/// <summary>
/// The lab guest as an attacker with kernel write access sees it: a kernel model over a private overlay
/// of the dump, and helpers that write guest kernel virtual memory (translated through the kernel's own
/// page tables, written into the overlay) the way a rootkit would.
/// </summary>
public sealed class AttackableGuest : IDisposable
{
    internal AttackableGuest(OverlayPhysicalMemory memory, PagingContext paging, LinuxProfile profile)
    {
        Memory = memory;
        Paging = paging;
        Profile = profile;
        Kernel = profile.CreateKernel(memory, paging);
        // No translation cache: tests may rewrite page tables too.
        KernelMemory = new VirtualMemory(memory, paging);
        Guest = new GuestView("lab", GuestOs.Linux, memory, Kernel);
    }

    public OverlayPhysicalMemory Memory { get; }
    public PagingContext Paging { get; }
    public LinuxProfile Profile { get; }
    public LinuxKernel Kernel { get; }
    /// <summary>Kernel address space over the overlay (reads see the attack).</summary>
    public VirtualMemory KernelMemory { get; }
    /// <summary>What detectors get.</summary>
    public GuestView Guest { get; }

    /// <summary>Byte offset of a struct member (dotted path, e.g. "cred", "uid.val") from the kernel's BTF.</summary>
    public int OffsetOf(string type, string member) => Profile.Types.OffsetOf(type, member);

    /// <summary>Address of a kernel symbol.</summary>
    public ulong Symbol(string name) =>
        Profile.Symbols.TryGetAddress(name, out ulong a) ? a : throw new InvalidOperationException($"no kernel symbol {name}");

    /// <summary>Guest physical address of a kernel virtual address.</summary>
    /// <exception cref="InvalidOperationException">The address is not mapped.</exception>
    public ulong Translate(ulong va) =>
        KernelMemory.TryTranslate(va, out Translation t, out WalkStatus status) ? t.PhysicalAddress
            : throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"kernel address 0x{va:x} is not mapped ({status})"));

    /// <summary>Writes kernel virtual memory (page by page, so a write may span pages mapped anywhere).</summary>
    public void Write(ulong va, ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty)
        {
            int chunk = (int)Math.Min((ulong)data.Length, 0x1000 - (va & 0xFFF));
            Memory.Write(Translate(va), data[..chunk]);
            data = data[chunk..];
            va += (ulong)chunk;
        }
    }

    public void WriteUInt64(ulong va, ulong value)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, value);
        Write(va, b);
    }

    public void WriteUInt32(ulong va, uint value)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        Write(va, b);
    }

    public ulong ReadUInt64(ulong va) =>
        KernelMemory.TryReadUInt64(va, out ulong v) ? v : throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"kernel address 0x{va:x} is unreadable"));

    public uint ReadUInt32(ulong va)
    {
        Span<byte> b = stackalloc byte[4];
        if (!KernelMemory.TryRead(va, b))
            throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"kernel address 0x{va:x} is unreadable"));
        return BinaryPrimitives.ReadUInt32LittleEndian(b);
    }

    public byte[] ReadBytes(ulong va, int length)
    {
        var b = new byte[length];
        if (!KernelMemory.TryRead(va, b))
            throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"kernel address 0x{va:x} is unreadable"));
        return b;
    }

    /// <summary>
    /// list_del without poisoning, as DKOM rootkits do: the neighbours of <paramref name="node"/> (a
    /// list_head) are linked to each other; the entry's own pointers are left as they were.
    /// </summary>
    public void Unlink(ulong node)
    {
        ulong next = ReadUInt64(node);
        ulong prev = ReadUInt64(node + 8);
        WriteUInt64(prev, next);      // prev->next = next
        WriteUInt64(next + 8, prev);  // next->prev = prev
    }

    /// <summary>Unlinks a task from the task list (init_task.tasks): hidden from /proc-style walks.</summary>
    public void UnlinkTask(ulong taskAddress) => Unlink(taskAddress + (ulong)OffsetOf("task_struct", "tasks"));

    public void Dispose() => Memory.Dispose();
}
