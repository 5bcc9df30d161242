namespace Vmi.Linux.Model;

/// <summary>An entry of /sys/module: a kobject in module_kset; <see cref="Module"/> is 0 for built-in modules.</summary>
public sealed record SysfsModule(string Name, ulong Kobject, ulong Module);

public sealed partial class LinuxKernel
{
    /// <summary>
    /// The sysfs view of modules: the kobjects linked in module_kset (what /sys/module lists). A module
    /// that unlinked itself from the module list usually still sits here: a cross-view for rootkits.
    /// </summary>
    public KernelList<SysfsModule> GetSysfsModules()
    {
        var issues = new List<KernelWalkIssue>();
        var result = new List<SysfsModule>();
        ulong ksetPointer = Symbol("module_kset");
        if (!_kernel.TryReadUInt64(ksetPointer, out ulong kset) || kset == 0)
        {
            issues.Add(new KernelWalkIssue("module_kset", ksetPointer, "module_kset is null or unreadable"));
            return new KernelList<SysfsModule>(result, issues);
        }
        int ksetList = Types.OffsetOf("kset", "list");
        int kobjEntry = Types.OffsetOf("kobject", "entry");
        int kobjName = Types.OffsetOf("kobject", "name");
        int mkobjKobj = Types.OffsetOf("module_kobject", "kobj");
        int mkobjMod = Types.OffsetOf("module_kobject", "mod");
        foreach (ulong node in ListWalker.Walk(_kernel, kset + (ulong)ksetList, "module_kset", MaxModules * 4, issues))
        {
            ulong kobj = node - (ulong)kobjEntry;
            string name = _kernel.TryReadUInt64(kobj + (ulong)kobjName, out ulong namePtr) && namePtr != 0 ? ReadCString(namePtr, 64) : "";
            ulong mkobj = kobj - (ulong)mkobjKobj;
            _kernel.TryReadUInt64(mkobj + (ulong)mkobjMod, out ulong module);
            result.Add(new SysfsModule(name, kobj, module));
        }
        return new KernelList<SysfsModule>(result, issues);
    }
}
