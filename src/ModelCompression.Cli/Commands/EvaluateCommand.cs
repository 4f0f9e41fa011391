using System.CommandLine;
using ModelCompression.Evaluation;
using ModelCompression.Policy;
using ModelCompression.Reporting;

namespace ModelCompression.Cli.Commands;

/// <summary><c>compress-model evaluate original.onnx compressed.onnx --validation-data val.npz …</c>: gate an existing pair.</summary>
public static class EvaluateCommand
{
    public static Command Create(TextWriter output, TextWriter error, CancellationToken cancellation)
    {
        var original = new Argument<string>("original") { Description = "The reference model." };
        var compressed = new Argument<string>("compressed") { Description = "The model to gate against it." };
        var reportDir = new Option<string>("--report-dir") { Description = "Write JSON/Markdown/HTML reports to this folder." };
        var policy = new PolicyOptions(PolicyOptions.IsGateSetting);
        var command = new Command("evaluate", "Gate an existing original/compressed pair on accuracy, agreement, latency and size.") { original, compressed, reportDir };
        policy.AddTo(command);
        command.SetAction(parse => CompressModelApp.Guard(error, () =>
        {
            var settings = policy.Parse(parse);
            Runtime.OnnxRuntimeLoader.UseLibrary(Runtime.OnnxRuntimeLoader.LibraryFor(settings));
            var originalPath = Path.GetFullPath(parse.GetValue(original)!);
            var compressedPath = Path.GetFullPath(parse.GetValue(compressed)!);
            foreach (var path in new[] { originalPath, compressedPath }) CompressionEngine.LoadChecked(path).Dispose();
            var measurements = ConsoleOutput.WithProgress(output, progress => Gate.Measure(originalPath, compressedPath, settings, cancellation, progress));
            var verdict = Gate.Judge(measurements, settings);
            var diagnostics = verdict.Failures.Select(f => new Diagnostics.Diagnostic(f.Code, Diagnostics.Severity.Error, f.Message, compressedPath)).ToList();
            var report = new CompressionReport
            {
                Model = originalPath, Target = compressedPath, Output = compressedPath, Policy = CompressionEngine.Describe(settings), Layers = [],
                Measurements = measurements, Verdict = verdict, Diagnostics = diagnostics, Timings = [],
            };
            if (parse.GetValue(reportDir) is { } dir) ReportWriter.WriteAll(report, Path.GetFullPath(dir), Path.GetFileNameWithoutExtension(compressedPath));
            ConsoleOutput.WriteDiagnostics(error, diagnostics);
            output.WriteLine(ConsoleOutput.SummaryLine(report));
            return verdict.Passed ? ReturnCode.Success : ReturnCode.GateFailed;
        }));
        return command;
    }
}
