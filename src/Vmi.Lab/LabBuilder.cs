using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Vmi.Core;

namespace Vmi.Lab;

/// <summary>What <see cref="LabBuilder"/> should build.</summary>
public sealed record LabBuildOptions
{
    /// <summary>Folder that caches downloaded packages and holds the built flavours.</summary>
    public required string LabDirectory { get; init; }

    /// <summary>Debian kernel flavour: "amd64" (linux-image-amd64), "cloud-amd64", "rt-amd64".</summary>
    public string Flavour { get; init; } = "amd64";

    /// <summary>Kernel modules (names as in modules.dep, '-' and '_' alike) copied into the initramfs with their dependencies.</summary>
    public IReadOnlyList<string> Modules { get; init; } = DefaultModules;

    /// <summary>Small modules the lab loads at boot (scenario "modules") so module introspection has something to find.</summary>
    public static IReadOnlyList<string> DefaultModules { get; } = ["dummy", "crc7", "isofs"];

    /// <summary>Rebuild even when the manifest says the artifacts are current.</summary>
    public bool Force { get; init; }

    /// <summary>
    /// Folder holding the installed kernel headers (linux-headers-&lt;release&gt; inside it), which the lab's
    /// own test kernel modules (Guest/modules, e.g. vmi_rootkit) are built against. Required for the
    /// default "amd64" flavour; other flavours get the modules only when their headers are there.
    /// </summary>
    public string KernelHeadersRoot { get; init; } = "/usr/src";
}

/// <summary>The built lab guest.</summary>
public sealed record LabArtifacts(string Directory, string KernelPath, string InitrdPath, string KernelVersion, string KernelPackage, string ModulesDirectory)
{
    /// <summary>Kernel command line the lab boots with. KASLR stays on: Vmi must find the slide itself.</summary>
    public static string DefaultCommandLine(string scenario = "benign") =>
        $"console=ttyS0,115200 panic=-1 loglevel=3 vmi.scenario={scenario}";

    /// <summary>Loads the artifacts of an already built flavour.</summary>
    /// <exception cref="LabException">The flavour has not been built.</exception>
    public static LabArtifacts Load(string labDirectory, string flavour = "amd64")
    {
        string dir = Path.Combine(labDirectory, flavour);
        string manifest = Path.Combine(dir, LabBuilder.ManifestName);
        if (!File.Exists(manifest))
            throw new LabException($"the lab guest ({flavour}) is not built in {labDirectory}: run 'vmi lab build' first.");
        using var doc = JsonDocument.Parse(File.ReadAllText(manifest));
        var root = doc.RootElement;
        var a = new LabArtifacts(dir, Path.Combine(dir, "vmlinuz"), Path.Combine(dir, "initrd.img"),
            root.GetProperty("kernelVersion").GetString()!, root.GetProperty("kernelPackage").GetString()!,
            Path.Combine(dir, "rootfs", "lib", "modules", root.GetProperty("kernelVersion").GetString()!));
        if (!File.Exists(a.KernelPath) || !File.Exists(a.InitrdPath))
            throw new LabException($"the lab guest in {dir} is incomplete: run 'vmi lab build --force'.");
        return a;
    }
}

/// <summary>
/// Builds the lab guest from Debian packages without installing anything into the host:
/// the kernel package and busybox-static are fetched with 'apt-get download' and unpacked with
/// 'dpkg-deb -x'; test programs are compiled with 'gcc -static'; the initramfs is written in-process.
/// </summary>
public sealed class LabBuilder
{
    internal const string ManifestName = "manifest.json";
    private const string GuestResourcePrefix = "Vmi.Lab.Guest.";
    /// <summary>Bump when the way the initramfs is assembled changes, so cached builds are redone.</summary>
    private const int LayoutVersion = 4;
    /// <summary>The flavour whose kernel headers are required (its test modules are always built).</summary>
    internal const string DefaultFlavour = "amd64";
    /// <summary>Where the lab's own test kernel modules land in the initramfs.</summary>
    public const string GuestModuleDirectory = "lib/vmi";

    private readonly TextWriter _log;

    public LabBuilder(TextWriter log) => _log = log;

    /// <summary>Default lab folder: $VMI_LAB_DIR, else build/lab under the repository containing the working directory, else ~/.cache/vmi/lab.</summary>
    public static string DefaultLabDirectory()
    {
        string? env = Environment.GetEnvironmentVariable("VMI_LAB_DIR");
        if (!string.IsNullOrEmpty(env))
            return Path.GetFullPath(env);
        foreach (string start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Vmi.sln")))
                    return Path.Combine(dir.FullName, "build", "lab");
            }
        }
        return Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "vmi", "lab");
    }

    /// <summary>Builds (or reuses) the lab guest.</summary>
    /// <exception cref="LabException">A tool or package is missing; the message says how to install it.</exception>
    public async Task<LabArtifacts> BuildAsync(LabBuildOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        Directory.CreateDirectory(options.LabDirectory);
        // One build at a time per lab folder (tests and CLI may build concurrently); the lock file
        // is released by the kernel if the holder dies.
        await using FileStream lockFile = await AcquireLockAsync(Path.Combine(options.LabDirectory, ".build.lock"), cancellationToken).ConfigureAwait(false);
        return await BuildLockedAsync(options, cancellationToken).ConfigureAwait(false);
    }

    private async Task<FileStream> AcquireLockAsync(string path, CancellationToken ct)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(15);
        bool told = false;
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (DateTime.UtcNow < deadline)
            {
                if (!told)
                {
                    _log.WriteLine($"waiting for another lab build to finish ({path})");
                    told = true;
                }
                await Task.Delay(500, ct).ConfigureAwait(false);
            }
        }
    }

    private async Task<LabArtifacts> BuildLockedAsync(LabBuildOptions options, CancellationToken cancellationToken)
    {
        string aptGet = ExternalTool.Require("apt-get", "apt");
        string aptCache = ExternalTool.Require("apt-cache", "apt");
        string dpkgDeb = ExternalTool.Require("dpkg-deb", "dpkg");
        string gcc = ExternalTool.Require("gcc", "gcc libc6-dev");

        string labDir = Path.GetFullPath(options.LabDirectory);
        string debs = Path.Combine(labDir, "debs");
        string outDir = Path.Combine(labDir, options.Flavour);
        Directory.CreateDirectory(debs);
        Directory.CreateDirectory(outDir);

        string metaPackage = $"linux-image-{options.Flavour}";
        string kernelPackage = await ResolveKernelPackageAsync(aptCache, metaPackage, cancellationToken).ConfigureAwait(false);
        string kernelVersion = kernelPackage["linux-image-".Length..];

        var guestFiles = ReadGuestFiles();
        // The lab's own test kernel modules need the kernel headers of exactly this release.
        string headersDir = KernelHeadersDirectory(options.KernelHeadersRoot, kernelVersion);
        bool headersRequired = options.Flavour == DefaultFlavour;
        bool buildGuestModules = headersRequired || Directory.Exists(headersDir);
        string fingerprint = Fingerprint(kernelPackage, options.Modules.Append(headersRequired ? "guest-modules=required" : $"guest-modules={buildGuestModules}").ToList(), guestFiles);
        string manifestPath = Path.Combine(outDir, ManifestName);
        if (!options.Force && File.Exists(manifestPath) && File.Exists(Path.Combine(outDir, "initrd.img")) && File.Exists(Path.Combine(outDir, "vmlinuz")))
        {
            using var doc = JsonDocument.Parse(await File.ReadAllTextAsync(manifestPath, cancellationToken).ConfigureAwait(false));
            if (doc.RootElement.TryGetProperty("fingerprint", out var fp) && fp.GetString() == fingerprint)
            {
                _log.WriteLine($"lab guest {options.Flavour} is up to date ({kernelPackage}) in {outDir}");
                return LabArtifacts.Load(labDir, options.Flavour);
            }
        }

        if (headersRequired)
            RequireKernelHeaders(options.KernelHeadersRoot, kernelVersion, options.Flavour);
        else if (!buildGuestModules)
            _log.WriteLine($"skipping the lab's test kernel modules (vmi_rootkit) for {options.Flavour}: no kernel headers in {headersDir}; to build them: {HeadersInstallHint(kernelVersion, options.Flavour)}");

        string kernelDeb = await DownloadAsync(aptGet, debs, kernelPackage, cancellationToken).ConfigureAwait(false);
        string busyboxDeb = await DownloadAsync(aptGet, debs, "busybox-static", cancellationToken).ConfigureAwait(false);

        string rootfs = Path.Combine(outDir, "rootfs");
        if (Directory.Exists(rootfs))
            Directory.Delete(rootfs, recursive: true);
        string busyboxRoot = Path.Combine(outDir, "busybox");
        if (Directory.Exists(busyboxRoot))
            Directory.Delete(busyboxRoot, recursive: true);
        _log.WriteLine($"unpacking {Path.GetFileName(kernelDeb)}");
        await ExternalTool.RunCheckedAsync(dpkgDeb, ["-x", kernelDeb, rootfs], cancellationToken: cancellationToken).ConfigureAwait(false);
        await ExternalTool.RunCheckedAsync(dpkgDeb, ["-x", busyboxDeb, busyboxRoot], cancellationToken: cancellationToken).ConfigureAwait(false);

        string vmlinuz = Path.Combine(rootfs, "boot", $"vmlinuz-{kernelVersion}");
        if (!File.Exists(vmlinuz))
            throw new LabException($"{kernelPackage} has no /boot/vmlinuz-{kernelVersion}: is it a kernel image package?");
        File.Copy(vmlinuz, Path.Combine(outDir, "vmlinuz"), overwrite: true);
        string busybox = Path.Combine(busyboxRoot, "bin", "busybox");
        if (!File.Exists(busybox))
            throw new LabException("busybox-static did not contain /bin/busybox.");

        // Test programs, statically linked so the initramfs needs no libc.
        string programsOut = Path.Combine(outDir, "programs");
        Directory.CreateDirectory(programsOut);
        var programs = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        foreach (var (path, content) in guestFiles.Where(f => f.Key.StartsWith("programs/", StringComparison.Ordinal) && f.Key.EndsWith(".c", StringComparison.Ordinal)))
        {
            string name = Path.GetFileNameWithoutExtension(path);
            string src = Path.Combine(programsOut, name + ".c");
            string bin = Path.Combine(programsOut, name);
            await File.WriteAllBytesAsync(src, content, cancellationToken).ConfigureAwait(false);
            _log.WriteLine($"compiling {name}");
            await ExternalTool.RunCheckedAsync(gcc, ["-static", "-O2", "-Wall", "-o", bin, src],
                hint: "a static build needs libc6-dev: apt-get install -y gcc libc6-dev", cancellationToken: cancellationToken).ConfigureAwait(false);
            programs[name] = await File.ReadAllBytesAsync(bin, cancellationToken).ConfigureAwait(false);
        }

        // The lab's own test kernel modules (Guest/modules/NAME/), built against the release's headers.
        var guestModules = buildGuestModules
            ? await BuildGuestModulesAsync(headersDir, kernelVersion, guestFiles, Path.Combine(outDir, "kmod"), cancellationToken).ConfigureAwait(false)
            : new SortedDictionary<string, byte[]>(StringComparer.Ordinal);

        string modulesDir = Path.Combine(rootfs, "lib", "modules", kernelVersion);
        if (options.Modules.Count > 0 && !File.Exists(Path.Combine(modulesDir, "modules.dep")))
        {
            // Debian ships no modules.dep (depmod runs at install time): derive one from each module's .modinfo.
            await File.WriteAllTextAsync(Path.Combine(modulesDir, "modules.dep"), BuildModulesDep(modulesDir), cancellationToken).ConfigureAwait(false);
        }
        var modules = ResolveModules(modulesDir, options.Modules);

        string initrd = Path.Combine(outDir, "initrd.img");
        string tmp = initrd + ".tmp";
        _log.WriteLine($"writing initramfs ({modules.Count} modules)");
        await using (var file = File.Create(tmp))
        {
            await using var gz = new GZipStream(file, CompressionLevel.Fastest);
            using var cpio = new CpioWriter(gz);
            foreach (string d in new[] { "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "run", "root", "etc", "lab/bin", "lab/scenarios" })
                cpio.AddDirectory(d);
            cpio.AddCharDevice("dev/console", 5, 1);
            cpio.AddCharDevice("dev/null", 1, 3, 0x1B6);
            cpio.AddFile("bin/busybox", await File.ReadAllBytesAsync(busybox, cancellationToken).ConfigureAwait(false), 0x1ED);
            cpio.AddSymlink("bin/sh", "busybox");
            cpio.AddFile("init", guestFiles["init"], 0x1ED);
            cpio.AddFile("lab/lib.sh", guestFiles["lib.sh"]);
            foreach (var (path, content) in guestFiles.Where(f => f.Key.StartsWith("scenarios/", StringComparison.Ordinal)))
                cpio.AddFile("lab/" + path, content, 0x1ED);
            foreach (var (name, content) in programs)
                cpio.AddFile("lab/bin/" + name, content, 0x1ED);
            cpio.AddFile("etc/passwd", Encoding.ASCII.GetBytes("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"));
            var dep = new StringBuilder();
            foreach (var (rel, deps) in modules)
            {
                cpio.AddFile($"lib/modules/{kernelVersion}/{rel}", await File.ReadAllBytesAsync(Path.Combine(modulesDir, rel), cancellationToken).ConfigureAwait(false));
                dep.Append(rel).Append(':');
                foreach (string d in deps)
                    dep.Append(' ').Append(d);
                dep.Append('\n');
            }
            cpio.AddFile($"lib/modules/{kernelVersion}/modules.dep", Encoding.ASCII.GetBytes(dep.ToString()));
            foreach (var (name, ko) in guestModules)
                cpio.AddFile($"{GuestModuleDirectory}/{name}.ko", ko);
            cpio.Finish();
        }
        File.Move(tmp, initrd, overwrite: true);
        Directory.Delete(busyboxRoot, recursive: true);

        var manifest = new Dictionary<string, object>
        {
            ["fingerprint"] = fingerprint,
            ["flavour"] = options.Flavour,
            ["kernelPackage"] = kernelPackage,
            ["kernelVersion"] = kernelVersion,
            ["kernelSha256"] = Convert.ToHexStringLower(SHA256.HashData(await File.ReadAllBytesAsync(Path.Combine(outDir, "vmlinuz"), cancellationToken).ConfigureAwait(false))),
            ["initrdSha256"] = Convert.ToHexStringLower(SHA256.HashData(await File.ReadAllBytesAsync(initrd, cancellationToken).ConfigureAwait(false))),
            ["modules"] = modules.Select(m => m.Path).ToArray(),
            ["guestModules"] = guestModules.Keys.Select(n => $"/{GuestModuleDirectory}/{n}.ko").ToArray(),
            ["builtUtc"] = DateTimeOffset.UtcNow.ToString("O"),
        };
        await File.WriteAllTextAsync(manifestPath, JsonSerializer.Serialize(manifest, new JsonSerializerOptions { WriteIndented = true }), cancellationToken).ConfigureAwait(false);
        _log.WriteLine($"lab guest {options.Flavour} built: kernel {kernelVersion}, {new FileInfo(initrd).Length / 1024} KiB initramfs in {outDir}");
        return LabArtifacts.Load(labDir, options.Flavour);
    }

    /// <summary>The headers folder of one kernel release under a headers root (normally /usr/src).</summary>
    internal static string KernelHeadersDirectory(string headersRoot, string kernelVersion) =>
        Path.Combine(Path.GetFullPath(headersRoot), "linux-headers-" + kernelVersion);

    internal static string HeadersInstallHint(string kernelVersion, string flavour) =>
        $"apt-get install -y linux-headers-{kernelVersion}" +
        (flavour == DefaultFlavour
            ? " (or linux-headers-amd64, which resolves to the same version as linux-image-amd64 from the same mirror)"
            : $" (or linux-headers-{flavour}, which resolves to the same version as linux-image-{flavour} from the same mirror)");

    /// <summary>Returns the headers folder of the release, or fails with one line saying which package installs it.</summary>
    /// <exception cref="LabException">The headers are not installed.</exception>
    internal static string RequireKernelHeaders(string headersRoot, string kernelVersion, string flavour)
    {
        string dir = KernelHeadersDirectory(headersRoot, kernelVersion);
        if (!File.Exists(Path.Combine(dir, "Makefile")))
            throw new LabException($"the kernel headers for {kernelVersion} are missing ({dir}), needed to build the lab's test kernel module vmi_rootkit: {HeadersInstallHint(kernelVersion, flavour)}");
        return dir;
    }

    /// <summary>
    /// Builds every Guest/modules/NAME/ folder with 'make -C HEADERS M=DIR modules' and checks that each
    /// NAME.ko's vermagic names the lab kernel's release.
    /// </summary>
    private async Task<SortedDictionary<string, byte[]>> BuildGuestModulesAsync(string headersDir, string kernelVersion,
        SortedDictionary<string, byte[]> guestFiles, string buildRoot, CancellationToken ct)
    {
        var result = new SortedDictionary<string, byte[]>(StringComparer.Ordinal);
        var byModule = guestFiles.Where(f => f.Key.StartsWith("modules/", StringComparison.Ordinal) && f.Key.Count(c => c == '/') == 2)
            .GroupBy(f => f.Key.Split('/')[1], StringComparer.Ordinal);
        if (!byModule.Any())
            return result;
        string make = ExternalTool.Require("make", "make");
        if (Directory.Exists(buildRoot))
            Directory.Delete(buildRoot, recursive: true);
        foreach (var module in byModule)
        {
            string dir = Path.Combine(buildRoot, module.Key);
            Directory.CreateDirectory(dir);
            foreach (var (path, content) in module)
                await File.WriteAllBytesAsync(Path.Combine(dir, path.Split('/')[2]), content, ct).ConfigureAwait(false);
            _log.WriteLine($"building kernel module {module.Key} against {headersDir}");
            await ExternalTool.RunCheckedAsync(make, ["-C", headersDir, "M=" + dir, "modules"], dir,
                hint: $"building {module.Key}.ko needs gcc, make and the kernel headers: apt-get install -y gcc make linux-headers-{kernelVersion}",
                cancellationToken: ct).ConfigureAwait(false);
            string ko = Path.Combine(dir, module.Key + ".ko");
            if (!File.Exists(ko))
                throw new LabException($"make built no {module.Key}.ko in {dir}.");
            byte[] bytes = await File.ReadAllBytesAsync(ko, ct).ConfigureAwait(false);
            string? release = ReadVermagicRelease(bytes);
            if (release != kernelVersion)
                throw new LabException($"{ko} was built for kernel '{release ?? "(no vermagic)"}', not the lab kernel {kernelVersion}: the headers in {headersDir} do not match.");
            result[module.Key] = bytes;
        }
        return result;
    }

    /// <summary>The kernel release (first word of "vermagic=") in a module's .modinfo, or null.</summary>
    internal static string? ReadVermagicRelease(ReadOnlySpan<byte> ko)
    {
        ReadOnlySpan<byte> key = "vermagic="u8;
        int at = ko.IndexOf(key);
        if (at < 0)
            return null;
        var rest = ko[(at + key.Length)..];
        int end = rest.IndexOfAny((byte)0, (byte)' ');
        return Encoding.ASCII.GetString(end < 0 ? rest : rest[..end]);
    }

    private static async Task<string> ResolveKernelPackageAsync(string aptCache, string metaPackage, CancellationToken ct)
    {
        ToolResult r = await ExternalTool.RunAsync(aptCache, ["depends", metaPackage], cancellationToken: ct).ConfigureAwait(false);
        if (r.ExitCode == 0)
        {
            foreach (string line in r.StandardOutput.Split('\n'))
            {
                string t = line.Trim();
                const string prefix = "Depends: linux-image-";
                if (t.StartsWith(prefix, StringComparison.Ordinal) && char.IsDigit(t[prefix.Length]))
                    return t["Depends: ".Length..];
            }
        }
        throw new LabException($"cannot resolve the kernel package behind '{metaPackage}' (apt-cache depends {metaPackage}): " +
            "run 'apt-get update' so apt knows the package lists, and check the flavour name (amd64, cloud-amd64, rt-amd64).");
    }

    private async Task<string> DownloadAsync(string aptGet, string debs, string package, CancellationToken ct)
    {
        string? existing = Directory.EnumerateFiles(debs, package + "_*.deb").OrderDescending().FirstOrDefault();
        if (existing is not null)
            return existing;
        _log.WriteLine($"downloading {package}");
        await ExternalTool.RunCheckedAsync(aptGet, ["download", package], debs,
            hint: $"'apt-get download {package}' needs the Debian package lists: run 'apt-get update' first.", cancellationToken: ct).ConfigureAwait(false);
        return Directory.EnumerateFiles(debs, package + "_*.deb").OrderDescending().FirstOrDefault()
            ?? throw new LabException($"apt-get download {package} reported success but no .deb appeared in {debs}.");
    }

    /// <summary>Resolves module names to paths (relative to the modules folder) with their dependencies, dependencies first.</summary>
    internal static List<(string Path, string[] Deps)> ResolveModules(string modulesDir, IReadOnlyList<string> names)
    {
        var result = new List<(string, string[])>();
        if (names.Count == 0)
            return result;
        string depFile = Path.Combine(modulesDir, "modules.dep");
        if (!File.Exists(depFile))
            throw new LabException($"{depFile} is missing: the kernel package has no module index.");
        var deps = new Dictionary<string, string[]>(StringComparer.Ordinal);
        var byName = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string line in File.ReadLines(depFile))
        {
            int colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
                continue;
            string path = line[..colon];
            deps[path] = line[(colon + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            byName[ModuleName(path)] = path;
        }
        var done = new HashSet<string>(StringComparer.Ordinal);
        void Add(string path, int depth)
        {
            if (depth > 64 || !done.Add(path))
                return;
            foreach (string d in deps.GetValueOrDefault(path, []))
                Add(d, depth + 1);
            result.Add((path, deps.GetValueOrDefault(path, [])));
        }
        foreach (string n in names)
        {
            if (!byName.TryGetValue(n.Replace('-', '_'), out string? p))
                throw new LabException($"kernel module '{n}' is not in {depFile}.");
            Add(p, 0);
        }
        return result;
    }

    /// <summary>A modules.dep for an unpacked module tree, from the "depends=" string in each module's .modinfo.</summary>
    internal static string BuildModulesDep(string modulesDir)
    {
        var paths = Directory.EnumerateFiles(modulesDir, "*.ko*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(modulesDir, f).Replace('\\', '/'))
            .Where(f => f.EndsWith(".ko", StringComparison.Ordinal))
            .OrderBy(f => f, StringComparer.Ordinal).ToList();
        var byName = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string p in paths)
            byName.TryAdd(ModuleName(p), p);
        var sb = new StringBuilder();
        byte[] key = Encoding.ASCII.GetBytes("\0depends=");
        foreach (string p in paths)
        {
            byte[] bytes = File.ReadAllBytes(Path.Combine(modulesDir, p));
            int at = bytes.AsSpan().IndexOf(key);
            var deps = new List<string>();
            if (at >= 0)
            {
                int start = at + key.Length;
                int end = bytes.AsSpan(start).IndexOf((byte)0);
                string list = Encoding.ASCII.GetString(bytes, start, end < 0 ? 0 : end);
                foreach (string d in list.Split(',', StringSplitOptions.RemoveEmptyEntries))
                {
                    if (byName.TryGetValue(d.Replace('-', '_'), out string? dp))
                        deps.Add(dp);
                }
            }
            sb.Append(p).Append(':');
            foreach (string d in deps)
                sb.Append(' ').Append(d);
            sb.Append('\n');
        }
        return sb.ToString();
    }

    private static string ModuleName(string path)
    {
        string file = Path.GetFileName(path);
        int ko = file.IndexOf(".ko", StringComparison.Ordinal);
        return (ko > 0 ? file[..ko] : file).Replace('-', '_');
    }

    /// <summary>The guest-side files embedded in this assembly, keyed by their path under Guest/.</summary>
    internal static SortedDictionary<string, byte[]> ReadGuestFiles()
    {
        var asm = typeof(LabBuilder).Assembly;
        var files = new SortedDictionary<string, byte[]>(StringComparer.Ordinal);
        foreach (string name in asm.GetManifestResourceNames())
        {
            if (!name.StartsWith(GuestResourcePrefix, StringComparison.Ordinal))
                continue;
            using Stream s = asm.GetManifestResourceStream(name)!;
            using var ms = new MemoryStream();
            s.CopyTo(ms);
            files[name[GuestResourcePrefix.Length..].Replace('\\', '/')] = ms.ToArray();
        }
        return files;
    }

    private static string Fingerprint(string kernelPackage, IReadOnlyList<string> modules, SortedDictionary<string, byte[]> files)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        h.AppendData(Encoding.UTF8.GetBytes(LayoutVersion.ToString(System.Globalization.CultureInfo.InvariantCulture) + "\n" + kernelPackage + "\n" + string.Join(',', modules) + "\n"));
        foreach (var (k, v) in files)
        {
            h.AppendData(Encoding.UTF8.GetBytes(k));
            h.AppendData(SHA256.HashData(v));
        }
        return Convert.ToHexStringLower(h.GetHashAndReset());
    }
}
