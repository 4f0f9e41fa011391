using System.CommandLine;
using ModelCompression.Cli.Commands;
using ModelCompression.Diagnostics;

namespace ModelCompression.Cli;

/// <summary>The root command: verbs, parsing, and the one place where failures become exit codes and coded lines.</summary>
public static class CompressModelApp
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
        if (parse.Errors.Count > 0)
        {
            foreach (var e in parse.Errors) error.WriteLine(new Diagnostic(DiagnosticCodes.BadUsage, Severity.Error, e.Message).ToCanonicalString());
            error.WriteLine("Run 'compress-model --help' for usage.");
            return ReturnCode.BadInput;
        }
        return (ReturnCode)parse.Invoke(new InvocationConfiguration { Output = output, Error = error, EnableDefaultExceptionHandler = false });
    }

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
