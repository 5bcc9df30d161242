using System.CommandLine;
using System.Globalization;
using Vmi.Core;

namespace Vmi.Cli;

/// <summary>Runs a parsed command line and turns Vmi's errors into one clear line and an exit code.</summary>
internal static class CommandRunner
{
    public const int ExitOk = 0;
    public const int ExitError = 1;
    public const int ExitUsage = 2;
    public const int ExitPartial = 3;

    public static async Task<int> InvokeAsync(RootCommand root, string[] args)
    {
        ParseResult parse = root.Parse(args);
        if (parse.Errors.Count > 0 && parse.Action is not System.CommandLine.Help.HelpAction)
        {
            foreach (var error in parse.Errors)
                await Console.Error.WriteLineAsync("vmi: " + error.Message).ConfigureAwait(false);
            await Console.Error.WriteLineAsync("vmi: see 'vmi " + string.Join(' ', args.TakeWhile(a => !a.StartsWith('-'))) + " --help'").ConfigureAwait(false);
            return ExitUsage;
        }
        try
        {
            return await parse.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false }).ConfigureAwait(false);
        }
        catch (VmiException e)
        {
            await Console.Error.WriteLineAsync("vmi: error: " + e.Message).ConfigureAwait(false);
            return ExitError;
        }
        catch (TimeoutException e)
        {
            await Console.Error.WriteLineAsync("vmi: error: " + e.Message).ConfigureAwait(false);
            return ExitError;
        }
        catch (OperationCanceledException)
        {
            await Console.Error.WriteLineAsync("vmi: stopped before the command finished.").ConfigureAwait(false);
            return ExitError;
        }
        catch (UsageException e)
        {
            await Console.Error.WriteLineAsync("vmi: " + e.Message).ConfigureAwait(false);
            return ExitUsage;
        }
    }

    /// <summary>Parses an address or size: 0x-prefixed hex, or decimal; underscores allowed.</summary>
    /// <exception cref="UsageException">Not a number.</exception>
    public static ulong ParseNumber(string text, string what)
    {
        string t = text.Replace("_", "", StringComparison.Ordinal).Trim();
        bool ok = t.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? ulong.TryParse(t.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong v)
            : ulong.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out v);
        return ok ? v : throw new UsageException($"{what} '{text}' is not a number (use 0x… for hex).");
    }
}

/// <summary>A command line that parses but makes no sense (exit code 2).</summary>
internal sealed class UsageException(string message) : Exception(message);
