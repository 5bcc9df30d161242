using System.Globalization;
using System.Xml;
using Vmi.Core;

namespace Vmi.Qemu;

/// <summary>Parses gdb target description XML (<c>target.xml</c> and the feature files it includes).</summary>
/// <remarks>
/// QEMU 7.2's <c>target.xml</c> is <c>&lt;target&gt;&lt;architecture&gt;i386:x86-64&lt;/architecture&gt;&lt;xi:include href="i386-64bit.xml"/&gt;&lt;/target&gt;</c>:
/// the <c>xi</c> prefix is used without being declared, so the parser pre-declares it. <c>i386-64bit.xml</c> keeps
/// <c>cs_base</c>, <c>ss_base</c>, <c>ds_base</c> and <c>es_base</c> inside an XML comment: they do not exist and do not take
/// register numbers, which is why a real XML parser (not a text search) is needed. Numbering: a <c>regnum</c>
/// attribute sets the number, every other register takes the previous number plus one, across included files.
/// QEMU 7.2 numbers rax..r15 0–15, rip 16, eflags 17, cs ss ds es fs gs 18–23, fs_base 24, gs_base 25,
/// k_gs_base 26, cr0 27, cr2 28, cr3 29, cr4 30, cr8 31, efer 32, st0–st7 33–40, x87 control 41–48,
/// xmm0–xmm15 49–64, mxcsr 65.
/// </remarks>
internal static class GdbTargetDescription
{
    public const int MaxRegisters = 4096;
    private const string XIncludeNamespace = "http://www.w3.org/2001/XInclude";

    /// <summary>An item of a description in document order: a register or an include.</summary>
    internal abstract record Item;

    internal sealed record RegisterItem(string Name, int? RegNum, int BitSize, string? Group, string? Type, string? Feature) : Item;

    internal sealed record IncludeItem(string Href) : Item;

    internal sealed record Parsed(string? Architecture, IReadOnlyList<Item> Items);

    public static Parsed Parse(string xml, string annex)
    {
        var names = new NameTable();
        var namespaces = new XmlNamespaceManager(names);
        namespaces.AddNamespace("xi", XIncludeNamespace);
        var context = new XmlParserContext(names, namespaces, null, XmlSpace.None);
        var settings = new XmlReaderSettings
        {
            // The DOCTYPE names gdb-target.dtd, which is neither available nor needed.
            DtdProcessing = DtdProcessing.Ignore,
            XmlResolver = null,
            IgnoreComments = true,
            IgnoreProcessingInstructions = true,
            MaxCharactersInDocument = 4 * 1024 * 1024,
            NameTable = names,
        };

        string? architecture = null;
        string? feature = null;
        var items = new List<Item>();
        try
        {
            using var text = new StringReader(xml);
            using var reader = XmlReader.Create(text, settings, context);
            reader.Read();
            while (!reader.EOF)
            {
                if (reader.NodeType == XmlNodeType.Element && reader.LocalName == "architecture" && reader.NamespaceURI.Length == 0)
                {
                    // Reads past the end tag: the loop must not Read() again or it would skip the next element.
                    architecture = reader.ReadElementContentAsString().Trim();
                    continue;
                }

                if (reader.NodeType == XmlNodeType.Element)
                {
                    switch (reader.LocalName)
                    {
                        case "feature" when reader.NamespaceURI.Length == 0:
                            feature = reader.GetAttribute("name");
                            break;
                        case "include" when reader.NamespaceURI == XIncludeNamespace:
                            items.Add(new IncludeItem(reader.GetAttribute("href")
                                ?? throw new ProtocolException($"gdb target description '{annex}': xi:include without href.")));
                            break;
                        case "reg" when reader.NamespaceURI.Length == 0:
                            items.Add(ParseRegister(reader, annex, feature));
                            if (items.Count > MaxRegisters)
                            {
                                throw new ProtocolException($"gdb target description '{annex}' declares more than {MaxRegisters} registers.");
                            }

                            break;
                        default:
                            break;
                    }
                }

                reader.Read();
            }
        }
        catch (XmlException e)
        {
            throw new ProtocolException($"gdb target description '{annex}' is not well-formed XML: {e.Message}", e);
        }

        return new Parsed(architecture, items);
    }

    private static RegisterItem ParseRegister(XmlReader reader, string annex, string? feature)
    {
        string name = reader.GetAttribute("name") is { Length: > 0 } n
            ? n
            : throw new ProtocolException($"gdb target description '{annex}': a reg element has no name.");
        int bitSize = ParseInt(reader.GetAttribute("bitsize"), annex, name, "bitsize")
            ?? throw new ProtocolException($"gdb target description '{annex}': register '{name}' has no bitsize.");
        if (bitSize is < 1 or > 4096)
        {
            throw new ProtocolException($"gdb target description '{annex}': register '{name}' has bitsize {bitSize}.");
        }

        int? regNum = ParseInt(reader.GetAttribute("regnum"), annex, name, "regnum");
        if (regNum is < 0 or > 65535)
        {
            throw new ProtocolException($"gdb target description '{annex}': register '{name}' has regnum {regNum}.");
        }

        return new RegisterItem(name, regNum, bitSize, reader.GetAttribute("group"), reader.GetAttribute("type"), feature);
    }

    private static int? ParseInt(string? text, string annex, string register, string attribute)
    {
        if (text is null)
        {
            return null;
        }

        return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int value)
            ? value
            : throw new ProtocolException($"gdb target description '{annex}': register '{register}' has {attribute}=\"{text}\".");
    }

    /// <summary>Validates an include's href before asking the stub for it: it becomes part of a packet.</summary>
    public static bool IsSafeAnnex(string href) =>
        href.Length is > 0 and <= 256 && !href.AsSpan().ContainsAny(":#$*},;") && !href.Any(char.IsControl);
}
