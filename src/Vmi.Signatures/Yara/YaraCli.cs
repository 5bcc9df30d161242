using System.Globalization;
using System.IO.MemoryMappedFiles;
using System.Text;

namespace Vmi.Signatures.Yara;

/// <summary>
/// <c>vmi yara</c>: the yara command's arguments and output for files and folders, so the two can be compared
/// line by line. Supported: -s -L -g -m -e -c -n -r -w -d NAME=VALUE -i RULE -t TAG -a SECONDS -p THREADS
/// -z BYTES; rule files before the target (an optional NAMESPACE: prefix is accepted and ignored).
/// </summary>
public static class YaraCli
{
    private sealed class Options
    {
        public bool Strings, Lengths, Tags, Meta, Namespace, Count, Negate, Recursive;
        public readonly Dictionary<string, object> Externals = new(StringComparer.Ordinal);
        public readonly List<string> Identifiers = [];
        public readonly List<string> TagFilter = [];
        public readonly List<string> Positional = [];
        public TimeSpan? Timeout;
        public int Threads = Environment.ProcessorCount;
        public long SkipLarger = long.MaxValue;
    }

    public const string Usage = "usage: vmi yara [-s] [-r] [-g] [-m] [-c] [-n] [-L] [-e] [-d NAME=VALUE]... [-i RULE] [-t TAG] [-a SECONDS] [-p THREADS] RULES_FILE... FILE|DIR";

    /// <summary>Runs the command. Returns 0 on success, 1 on any error (like yara).</summary>
    public static int Run(IReadOnlyList<string> args, TextWriter stdout, TextWriter stderr)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(stdout);
        ArgumentNullException.ThrowIfNull(stderr);
        Options o;
        try
        {
            o = ParseArgs(args);
        }
        catch (ArgumentException e)
        {
            stderr.WriteLine($"error: {e.Message}");
            stderr.WriteLine(Usage);
            return 1;
        }
        if (o.Positional.Count < 2)
        {
            stderr.WriteLine("error: wrong number of arguments: give one or more rule files and then a file or folder to scan");
            stderr.WriteLine(Usage);
            return 1;
        }
        var ruleFiles = o.Positional.Take(o.Positional.Count - 1).Select(StripNamespace).ToList();
        string target = o.Positional[^1];
        YaraRules rules;
        try
        {
            rules = YaraRules.CompileFiles(ruleFiles, new YaraCompileOptions { Externals = o.Externals });
        }
        catch (YaraCompileException e)
        {
            stderr.WriteLine(e.Message);
            return 1;
        }
        var scan = new YaraScanOptions { Timeout = o.Timeout, Parallelism = 1 };
        if (File.Exists(target))
            return ScanFile(rules, target, o, scan with { Parallelism = o.Threads }, stdout, stderr, single: true) ? 0 : 1;
        if (Directory.Exists(target))
        {
            var files = EnumerateFiles(target, o.Recursive).ToList();
            var outputs = new string?[files.Count];
            var errors = new string?[files.Count];
            Parallel.For(0, files.Count, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, o.Threads) }, i =>
            {
                try
                {
                    if (new FileInfo(files[i]).Length > o.SkipLarger)
                        return;
                }
                catch (IOException)
                {
                }
                using var w = new StringWriter(CultureInfo.InvariantCulture);
                using var e = new StringWriter(CultureInfo.InvariantCulture);
                ScanFile(rules, files[i], o, scan, w, e, single: false);
                outputs[i] = w.ToString();
                errors[i] = e.ToString();
            });
            bool failed = false;
            for (int i = 0; i < files.Count; i++)
            {
                stdout.Write(outputs[i]);
                if (!string.IsNullOrEmpty(errors[i]))
                {
                    stderr.Write(errors[i]);
                    failed = true;
                }
            }
            _ = failed; // yara keeps going and exits 0 after per-file errors in a folder scan
            return 0;
        }
        stderr.WriteLine($"error scanning {target}: could not open file");
        return 1;
    }

    private static string StripNamespace(string arg)
    {
        int colon = arg.IndexOf(':', StringComparison.Ordinal);
        return colon > 0 && !File.Exists(arg) ? arg[(colon + 1)..] : arg;
    }

    private static IEnumerable<string> EnumerateFiles(string dir, bool recursive)
    {
        string[] entries;
        try
        {
            entries = Directory.GetFileSystemEntries(dir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            yield break;
        }
        Array.Sort(entries, StringComparer.Ordinal);
        string prefix = dir + "/";
        foreach (var full in entries)
        {
            string path = prefix + Path.GetFileName(full);
            if (File.Exists(full))
            {
                yield return path;
            }
            else if (recursive && Directory.Exists(full))
            {
                foreach (var f in EnumerateFiles(path, true))
                    yield return f;
            }
        }
    }

    private static bool ScanFile(YaraRules rules, string path, Options o, YaraScanOptions scan, TextWriter stdout, TextWriter stderr, bool single)
    {
        YaraScanResult result;
        try
        {
            result = ScanPath(rules, path, scan);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            stderr.WriteLine($"error scanning {path}: could not open file");
            return false;
        }
        catch (YaraScanException e)
        {
            stderr.WriteLine($"error scanning {path}: {e.Message}");
            return false;
        }
        Write(rules, result, path, o, stdout, single);
        return true;
    }

    /// <summary>Scans a file through a read-only memory map (no copy of its contents).</summary>
    public static YaraScanResult ScanPath(YaraRules rules, string path, YaraScanOptions? options = null)
    {
        long length = new FileInfo(path).Length;
        if (length == 0)
            return YaraScanner.Scan(rules, [], options);
        if (length > int.MaxValue)
            throw new IOException($"{path} is larger than 2 GiB; scan it in regions");
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        using var map = MemoryMappedFile.CreateFromFile(fs, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
        using var view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
        unsafe
        {
            byte* p = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            try
            {
                return YaraScanner.Scan(rules, new ReadOnlySpan<byte>(p + view.PointerOffset, (int)length), options);
            }
            finally
            {
                view.SafeMemoryMappedViewHandle.ReleasePointer();
            }
        }
    }

    private static void Write(YaraRules rules, YaraScanResult result, string path, Options o, TextWriter w, bool single)
    {
        var matched = result.Matches.ToDictionary(m => m.Rule);
        int count = 0;
        var sb = new StringBuilder();
        foreach (var rule in rules.Rules)
        {
            if (rule.IsPrivate)
                continue;
            bool isMatch = matched.ContainsKey(rule);
            // -c counts matching rules even with -n (yara 4.2.3 does).
            if (isMatch == (o.Negate && !o.Count))
                continue;
            if (o.Identifiers.Count > 0 && !o.Identifiers.Contains(rule.Name))
                continue;
            if (o.TagFilter.Count > 0 && !rule.Tags.Any(o.TagFilter.Contains))
                continue;
            count++;
            if (o.Count)
                continue;
            sb.Clear();
            if (o.Namespace)
                sb.Append(rule.Namespace).Append(':');
            sb.Append(rule.Name).Append(' ');
            if (o.Tags)
                sb.Append('[').Append(string.Join(',', rule.Tags)).Append("] ");
            if (o.Meta)
                sb.Append('[').Append(string.Join(',', rule.Meta.Select(FormatMeta))).Append("] ");
            sb.Append(path);
            w.WriteLine(sb.ToString());
            if (o.Strings && isMatch)
            {
                foreach (var sm in matched[rule].Strings)
                {
                    if (sm.String.IsPrivate)
                        continue;
                    foreach (var m in sm.Matches)
                    {
                        sb.Clear();
                        sb.Append("0x").Append(m.Offset.ToString("x", CultureInfo.InvariantCulture)).Append(':');
                        if (o.Lengths)
                            sb.Append(m.Data.Length.ToString(CultureInfo.InvariantCulture)).Append(':'); // yara prints the kept data's length (at most 512)
                        sb.Append(sm.String.Id).Append(": ");
                        AppendData(sb, m.Data, sm.String.IsHex);
                        w.WriteLine(sb.ToString());
                    }
                }
            }
        }
        if (o.Count)
            w.WriteLine(single ? count.ToString(CultureInfo.InvariantCulture) : $"{path}: {count.ToString(CultureInfo.InvariantCulture)}");
    }

    private static string FormatMeta(MetaEntry m) => m.Value switch
    {
        // yara 4.2 prints integer meta as "key =value" (its own format string has the space).
        long l => $"{m.Key} ={l.ToString(CultureInfo.InvariantCulture)}",
        bool b => $"{m.Key}={(b ? "true" : "false")}",
        string s => $"{m.Key}=\"{EscapeMeta(s)}\"",
        _ => $"{m.Key}={m.Value}",
    };

    /// <summary>yara's meta escaping: C escapes, and three-digit octal for other non-printable bytes.</summary>
    private static string EscapeMeta(string s)
    {
        var sb = new StringBuilder();
        foreach (char c in s)
        {
            string? e = c switch
            {
                '\t' => "\\t", '\n' => "\\n", '\r' => "\\r", '\v' => "\\v", '\a' => "\\a", '\b' => "\\b", '\f' => "\\f",
                '"' => "\\\"", '\'' => "\\'", '\\' => "\\\\", _ => null,
            };
            if (e is not null)
                sb.Append(e);
            else if (c is >= ' ' and <= '~')
                sb.Append(c);
            else
                sb.Append('\\').Append(Convert.ToString(c & 0xff, 8).PadLeft(3, '0'));
        }
        return sb.ToString();
    }

    /// <summary>Matched bytes as yara prints them: hex strings as "41 42", others with non-printables as \xHH.</summary>
    public static void AppendData(StringBuilder sb, ReadOnlySpan<byte> data, bool hex)
    {
        ArgumentNullException.ThrowIfNull(sb);
        if (hex && data.Length > 64)
        {
            // yara prints at most 64 bytes of a hex string's match, then " ...".
            AppendData(sb, data[..64], hex: true);
            sb.Append(" ...");
            return;
        }
        for (int i = 0; i < data.Length; i++)
        {
            byte b = data[i];
            if (hex)
            {
                if (i > 0)
                    sb.Append(' ');
                sb.Append(b.ToString("X2", CultureInfo.InvariantCulture));
            }
            else if (b is >= 0x20 and <= 0x7e)
            {
                sb.Append((char)b);
            }
            else
            {
                sb.Append("\\x").Append(b.ToString("X2", CultureInfo.InvariantCulture));
            }
        }
    }

    private static Options ParseArgs(IReadOnlyList<string> args)
    {
        var o = new Options();
        for (int i = 0; i < args.Count; i++)
        {
            string a = args[i];
            if (a == "--")
            {
                o.Positional.AddRange(args.Skip(i + 1));
                break;
            }
            if (a.StartsWith("--", StringComparison.Ordinal))
            {
                string name = a[2..], value = "";
                int eq = name.IndexOf('=', StringComparison.Ordinal);
                bool hasValue = eq >= 0;
                if (hasValue)
                {
                    value = name[(eq + 1)..];
                    name = name[..eq];
                }
                string Value() => hasValue ? value : i + 1 < args.Count ? args[++i] : throw new ArgumentException($"--{name} needs a value");
                switch (name)
                {
                    case "print-strings": o.Strings = true; break;
                    case "print-string-length": o.Lengths = true; break;
                    case "print-tags": o.Tags = true; break;
                    case "print-meta": o.Meta = true; break;
                    case "print-namespace": o.Namespace = true; break;
                    case "count": o.Count = true; break;
                    case "negate": o.Negate = true; break;
                    case "recursive": o.Recursive = true; break;
                    case "no-warnings": break;
                    case "define": Define(o, Value()); break;
                    case "identifier": o.Identifiers.Add(Value()); break;
                    case "tag": o.TagFilter.Add(Value()); break;
                    case "timeout": o.Timeout = TimeSpan.FromSeconds(ParseInt(Value(), "timeout")); break;
                    case "threads": o.Threads = (int)Math.Clamp(ParseInt(Value(), "threads"), 1, 64); break;
                    case "skip-larger": o.SkipLarger = ParseInt(Value(), "skip-larger"); break;
                    default: throw new ArgumentException($"unknown option --{name}");
                }
                continue;
            }
            if (a.Length > 1 && a[0] == '-')
            {
                for (int k = 1; k < a.Length; k++)
                {
                    char c = a[k];
                    string TakeValue()
                    {
                        string rest = a[(k + 1)..];
                        k = a.Length;
                        if (rest.Length > 0)
                            return rest.StartsWith('=') ? rest[1..] : rest;
                        return i + 1 < args.Count ? args[++i] : throw new ArgumentException($"-{c} needs a value");
                    }
                    switch (c)
                    {
                        case 's': o.Strings = true; break;
                        case 'L': o.Lengths = true; break;
                        case 'g': o.Tags = true; break;
                        case 'm': o.Meta = true; break;
                        case 'e': o.Namespace = true; break;
                        case 'c': o.Count = true; break;
                        case 'n': o.Negate = true; break;
                        case 'r': o.Recursive = true; break;
                        case 'w': break;
                        case 'd': Define(o, TakeValue()); break;
                        case 'i': o.Identifiers.Add(TakeValue()); break;
                        case 't': o.TagFilter.Add(TakeValue()); break;
                        case 'a': o.Timeout = TimeSpan.FromSeconds(ParseInt(TakeValue(), "timeout")); break;
                        case 'p': o.Threads = (int)Math.Clamp(ParseInt(TakeValue(), "threads"), 1, 64); break;
                        case 'z': o.SkipLarger = ParseInt(TakeValue(), "skip-larger"); break;
                        default: throw new ArgumentException($"unknown option -{c}");
                    }
                }
                continue;
            }
            o.Positional.Add(a);
        }
        return o;
    }

    private static long ParseInt(string s, string what) =>
        long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out long v) && v >= 0
            ? v
            : throw new ArgumentException($"{what} must be a non-negative integer, got \"{s}\"");

    private static void Define(Options o, string def)
    {
        int eq = def.IndexOf('=', StringComparison.Ordinal);
        if (eq <= 0)
            throw new ArgumentException($"bad external variable \"{def}\": use -d NAME=VALUE");
        string name = def[..eq], value = def[(eq + 1)..];
        o.Externals[name] = ParseExternal(value);
    }

    /// <summary>An external's value as yara reads it: true/false, an integer, a float, else a string.</summary>
    public static object ParseExternal(string value)
    {
        ArgumentNullException.ThrowIfNull(value);
        if (value is "true" or "false")
            return value == "true";
        if (long.TryParse(value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long l))
            return l;
        if (value.Contains('.', StringComparison.Ordinal) && double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double d))
            return d;
        return value;
    }
}
