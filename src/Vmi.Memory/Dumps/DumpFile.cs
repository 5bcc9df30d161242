using Vmi.Core;

namespace Vmi.Memory;

/// <summary>Opens guest memory dumps: ELF cores from QEMU's <c>dump-guest-memory</c> and raw RAM images.</summary>
public static class DumpFile
{
    /// <summary>Opens a dump; a file that is not ELF (or another recognised format) is read as a linear raw image.</summary>
    /// <exception cref="GuestMemoryException">The file is malformed or in an unsupported format.</exception>
    /// <exception cref="TargetException">The file cannot be opened or mapped.</exception>
    public static GuestDump Open(string path) => Open(path, rawLayout: null);

    /// <summary>
    /// Opens a dump. For a raw image, <paramref name="rawLayout"/> says where each GPA lives in the file
    /// (e.g. a copy of a QEMU RAM file above 4 GiB); null means file offset == GPA over the whole file.
    /// ELF cores carry their own layout and ignore it.
    /// </summary>
    /// <remarks>
    /// ELF PT_LOAD bytes between p_filesz and p_memsz are not in the file and are reported as unbacked,
    /// not as zeros, so a reader never mistakes missing data for a zeroed page.
    /// </remarks>
    /// <exception cref="GuestMemoryException">The file is malformed or in an unsupported format.</exception>
    /// <exception cref="TargetException">The file cannot be opened or mapped.</exception>
    public static GuestDump Open(string path, QemuRamLayout? rawLayout)
    {
        MappedFile file = MappedFile.Open(path);
        try
        {
            DumpFormat format = Detect(file);
            if (format == DumpFormat.Elf)
            {
                ElfCoreReader.Result elf = ElfCoreReader.Read(file);
                var memory = new MappedPhysicalMemory(file, elf.Segments);
                return new GuestDump(path, DumpFormat.Elf, memory, elf.CpuStates, elf.VmcoreInfo);
            }
            MappedPhysicalMemory raw = rawLayout is null
                ? new MappedPhysicalMemory(file, QemuRamLayout.Linear(file.Length).Segments)
                : MappedPhysicalMemory.Create(file, rawLayout);
            return new GuestDump(path, DumpFormat.Raw, raw, [], null);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private static DumpFormat Detect(MappedFile file)
    {
        if (!file.TryGetSpan(0, (int)Math.Min(16UL, file.Length), out ReadOnlySpan<byte> head))
            return DumpFormat.Raw;
        if (head.StartsWith("\u007fELF"u8))
            return DumpFormat.Elf;
        if (head.StartsWith("KDUMP   "u8))
            throw new GuestMemoryException($"'{file.Name}' is a kdump-compressed dump, which is not supported: take the dump with QMP dump-guest-memory without a compression format (no -z/-l/-s, no 'format'), which writes ELF");
        if (head.StartsWith("makedumpfile"u8))
            throw new GuestMemoryException($"'{file.Name}' is a flattened makedumpfile dump, which is not supported: use QMP dump-guest-memory without a compression format, which writes ELF");
        if (head.StartsWith("PAGEDU64"u8) || head.StartsWith("PAGEDUMP"u8))
            throw new GuestMemoryException($"'{file.Name}' is a Windows crash dump, which is not supported: use QMP dump-guest-memory (ELF) or a raw RAM image");
        if (head.StartsWith("EMiL"u8))
            throw new GuestMemoryException($"'{file.Name}' is a LiME dump, which is not supported: use QMP dump-guest-memory (ELF) or a raw RAM image");
        return DumpFormat.Raw;
    }
}
