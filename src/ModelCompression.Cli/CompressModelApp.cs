using System.CommandLine;
using ModelCompression.Cli.Commands;
using ModelCompression.Diagnostics;
using ModelCompression.Policy;

namespace ModelCompression.Cli;

/// <summary>The root command: verbs, parsing, and the one place where failures become exit codes and coded lines.</summary>
public static partial class CompressModelApp
{
    public static RootCommand CreateRootCommand(TextWriter output, TextWriter error, CancellationToken cancellation) =>
        new("Compress ONNX models (prune, quantize, factorize) and gate them on accuracy, latency and size with ONNX Runtime.")
        {
            CompressCommand.Create(output, error, cancellation),
            EvaluateCommand.Create(output, error, cancellation),
            InspectCommand.Create(output, error),
            DoctorCommand.Create(output, error),
            BatchCommand.Create(output, error, cancellation),
            SettingsCommand.Create(output, error),
        };

    public static ReturnCode Run(string[] args, TextWriter output, TextWriter error, CancellationToken cancellation = default)
    {
        var root = CreateRootCommand(output, error, cancellation);
        var parse = root.Parse(args);
        var unknown = UnknownOptions(parse);
        if (parse.Errors.Count > 0 || unknown.Count > 0)
        {
            foreach (var d in unknown) error.WriteLine(d.ToCanonicalString());
            // A mistyped option leaves its value (or a later argument) unmatched too; those errors only repeat the slip.
            foreach (var e in parse.Errors.Where(e => unknown.Count == 0 || !parse.UnmatchedTokens.Any(t => e.Message.Contains($"'{t}'", StringComparison.Ordinal))))
                error.WriteLine(new Diagnostic(DiagnosticCodes.BadUsage, Severity.Error, e.Message).ToCanonicalString());
            error.WriteLine("Run 'compress-model --help' for usage.");
            return ReturnCode.BadInput;
        }
        return (ReturnCode)parse.Invoke(new InvocationConfiguration { Output = output, Error = error, EnableDefaultExceptionHandler = false });
    }

    /// <summary>
    /// Options the command does not have (<c>--sparsty 0.5</c>): CM0101 with the closest option of the command, as a
    /// mistyped setting name is in MSBuild metadata. The parser leaves such a token unmatched or takes it for an
    /// argument (the model path); a token that looks like an option and no option took as its value is one.
    /// </summary>
    internal static List<Diagnostic> UnknownOptions(ParseResult parse)
    {
        var command = parse.CommandResult.Command;
        var options = new List<Option>();
        for (var result = parse.CommandResult; result is not null; result = result.Parent as System.CommandLine.Parsing.CommandResult)
            options.AddRange(result.Command.Options);
        var known = options.SelectMany(o => o.Aliases.Append(o.Name)).ToHashSet(StringComparer.Ordinal);
        var suggestible = options.Where(o => !o.Hidden).Select(o => o.Name).Where(n => n.StartsWith("--", StringComparison.Ordinal)).ToList();
        var optionValues = parse.CommandResult.Children.OfType<System.CommandLine.Parsing.OptionResult>().SelectMany(o => o.Tokens).ToHashSet();
        var diagnostics = new List<Diagnostic>();
        foreach (var token in parse.Tokens.TakeWhile(t => t.Type != System.CommandLine.Parsing.TokenType.DoubleDash))
        {
            if (token.Type != System.CommandLine.Parsing.TokenType.Argument || optionValues.Contains(token) || !LooksLikeOption().IsMatch(token.Value)) continue;
            var name = token.Value.Split('=', 2)[0];
            if (known.Contains(name)) continue;
            var suggestion = PolicySettings.ClosestMatch(name, suggestible) is { } best ? $" (did you mean '{best}'?)" : "";
            var verb = command is RootCommand ? "" : $" for '{command.Name}'";
            diagnostics.Add(new Diagnostic(DiagnosticCodes.UnknownSetting, Severity.Error, $"unknown option '{name}'{verb}{suggestion}"));
        }
        return diagnostics;
    }

    [System.Text.RegularExpressions.GeneratedRegex("^--?[A-Za-z]")]
    private static partial System.Text.RegularExpressions.Regex LooksLikeOption();

    /// <summary>Runs a verb's body: expected failures print their coded lines; anything else is CM0001 without a stack trace.</summary>
    public static int Guard(TextWriter error, Func<ReturnCode> body)
    {
        try
        {
            return (int)body();
        }
        catch (CompressionException e)
        {
            foreach (var d in e.Diagnostics) error.WriteLine(d.ToCanonicalString());
            return (int)ReturnCode.BadInput;
        }
        catch (OperationCanceledException)
        {
            error.WriteLine(new Diagnostic(DiagnosticCodes.Cancelled, Severity.Error, "cancelled; no output was written").ToCanonicalString());
            return (int)ReturnCode.Cancelled;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            error.WriteLine(new Diagnostic(DiagnosticCodes.InternalError, Severity.Error, $"internal error ({e.GetType().Name}): {e.Message}. Please report it with the command line.").ToCanonicalString());
            if (Environment.GetEnvironmentVariable("COMPRESS_MODEL_DEBUG") == "1") error.WriteLine(e);
            return (int)ReturnCode.InternalError;
        }
    }
}
