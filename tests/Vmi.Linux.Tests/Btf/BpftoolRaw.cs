using System.Globalization;
using System.Text.RegularExpressions;
using Vmi.Core;

namespace Vmi.Linux.Tests.Btf;

/// <summary>The reference: `bpftool btf dump file X format raw`, parsed into a small independent model.</summary>
internal sealed partial class BpftoolRaw
{
    public sealed record Member(string Name, int TypeId, long BitOffset, int BitfieldSize);

    public sealed record Type(int Id, string Kind, string Name, int RefId, long Size, List<Member> Members);

    public Dictionary<int, Type> Types { get; } = [];

    public static async Task<BpftoolRaw> DumpAsync(string file)
    {
        string bpftool = ExternalTool.Require("bpftool", "bpftool");
        string text = await ExternalTool.RunCheckedAsync(bpftool, ["btf", "dump", "file", file, "format", "raw"], timeout: TimeSpan.FromMinutes(3));
        var result = new BpftoolRaw();
        Type? current = null;
        foreach (string line in text.Split('\n'))
        {
            Match h = Header().Match(line);
            if (h.Success)
            {
                int id = int.Parse(h.Groups[1].Value, CultureInfo.InvariantCulture);
                string rest = h.Groups[4].Value;
                Match r = RefType().Match(rest);
                Match s = SizeField().Match(rest);
                current = new Type(id, h.Groups[2].Value, h.Groups[3].Value,
                    r.Success ? int.Parse(r.Groups[1].Value, CultureInfo.InvariantCulture) : 0,
                    s.Success ? long.Parse(s.Groups[1].Value, CultureInfo.InvariantCulture) : 0, []);
                result.Types[id] = current;
                continue;
            }
            Match m = MemberLine().Match(line);
            if (m.Success && current is { Kind: "STRUCT" or "UNION" })
            {
                current.Members.Add(new Member(m.Groups[1].Value == "(anon)" ? "" : m.Groups[1].Value,
                    int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture),
                    long.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture),
                    m.Groups[5].Success ? int.Parse(m.Groups[5].Value, CultureInfo.InvariantCulture) : 0));
            }
        }
        return result;
    }

    public Type Struct(string name) =>
        Types.Values.Where(t => t.Kind is "STRUCT" or "UNION" && t.Name == name).OrderBy(t => t.Id).First();

    /// <summary>Independent member offset (bits) through typedefs/qualifiers and anonymous members.</summary>
    public long? BitOffsetOf(Type container, string path)
    {
        long total = 0;
        Type cur = container;
        foreach (string seg in path.Split('.'))
        {
            long? off = Find(cur, seg, out Type? memberType);
            if (off is null)
                return null;
            total += off.Value;
            cur = memberType!;
        }
        return total;
    }

    private Type Strip(int id)
    {
        Type t = Types[id];
        while (t.Kind is "TYPEDEF" or "CONST" or "VOLATILE" or "RESTRICT" or "TYPE_TAG")
            t = Types[t.RefId];
        return t;
    }

    private long? Find(Type container, string name, out Type? memberType)
    {
        foreach (Member m in container.Members)
        {
            if (m.Name == name)
            {
                memberType = m.TypeId == 0 ? null : Strip(m.TypeId);
                return m.BitOffset;
            }
            if (m.Name.Length == 0 && m.TypeId != 0 && Strip(m.TypeId) is { Kind: "STRUCT" or "UNION" } nested)
            {
                long? inner = Find(nested, name, out memberType);
                if (inner is not null)
                    return inner + m.BitOffset;
            }
        }
        memberType = null;
        return null;
    }

    [GeneratedRegex(@"^\[(\d+)\] (\w+) '([^']*)'(.*)$")]
    private static partial Regex Header();

    [GeneratedRegex(@"\b(?:type_id|ret_type_id)=(\d+)")]
    private static partial Regex RefType();

    [GeneratedRegex(@"\bsize=(\d+)")]
    private static partial Regex SizeField();

    [GeneratedRegex(@"^\t'([^']*)' type_id=(\d+) bits_offset=(\d+)( bitfield_size=(\d+))?$")]
    private static partial Regex MemberLine();
}
