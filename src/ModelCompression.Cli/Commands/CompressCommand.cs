using System.CommandLine;
using System.Globalization;
using ModelCompression.Diagnostics;
using ModelCompression.Evaluation;
using ModelCompression.Policy;

namespace ModelCompression.Cli.Commands;

/// <summary><c>compress-model compress model.onnx -o out.onnx --quantize int8 …</c>: model in, compressed model and reports out.</summary>
public static class CompressCommand
{
    public static Command Create(TextWriter output, TextWriter error, CancellationToken cancellation)
    {
        var model = new Argument<string>("model") { Description = "The ONNX model to compress (never modified)." };
        var outputOption = new Option<string>("--output", "-o") { Description = "Where to write the compressed model.", Required = true };
        var reportDir = new Option<string>("--report-dir") { Description = "Folder for the JSON/Markdown/HTML reports (and the candidate when the gate fails). Default: <output folder>/compress-model-reports." };
        var asWarning = new Option<bool>("--gate-failure-as-warning") { Description = "Write the output even when the gate fails; failures become warnings and the exit code is 0." };
        var benchmark = new Option<bool>("--benchmark") { Description = "Print pass, gate and total times and the measured latency ratio." };
        var cacheDir = new Option<string>("--cache-dir") { Description = "A folder of this output's own for intermediate models: a later run that changes only gate settings (or later passes) reuses the passes before. Default: no cache." };
        var policy = new PolicyOptions(_ => true);
        var command = new Command("compress", "Compress a model with the given policy, gate it against the original, write it and its reports.")
        {
            model, outputOption, reportDir, asWarning, benchmark, cacheDir,
        };
        policy.AddTo(command);
        command.SetAction(parse => CompressModelApp.Guard(error, () =>
        {
            var outputPath = FullPath(parse.GetValue(outputOption), "--output");
            var request = new CompressionRequest(
                parse.GetValue(model)!,
                outputPath,
                parse.GetValue(reportDir) is { } dir ? FullPath(dir, "--report-dir") : Path.Combine(Path.GetDirectoryName(outputPath)!, "compress-model-reports"),
                policy.Parse(parse))
            {
                GateFailureAsWarning = parse.GetValue(asWarning),
                CacheDirectory = parse.GetValue(cacheDir) is { } cache ? FullPath(cache, "--cache-dir") : null,
            };
            return Run(request, parse.GetValue(benchmark), output, error, cancellation);
        }));
        return command;
    }

    private static string FullPath(string? path, string option) => string.IsNullOrWhiteSpace(path)
        ? throw new CompressionException(DiagnosticCodes.BadUsage, $"{option} is empty")
        : Path.GetFullPath(path);

    public static ReturnCode Run(CompressionRequest request, bool benchmark, TextWriter output, TextWriter error, CancellationToken cancellation, string summaryPrefix = "")
    {
        var library = Runtime.OnnxRuntimeLoader.LibraryFor(request.Policy);
        if (!Runtime.OnnxRuntimeLoader.UseLibrary(library is null ? null : Path.GetFullPath(library)))
            throw new CompressionException(DiagnosticCodes.ConflictingSettings, $"ONNX Runtime is already loaded from {Runtime.OnnxRuntimeLoader.LoadedLibrary}; this process cannot switch to {library}", request.ModelPath);
        var result = ConsoleOutput.WithProgress(output, progress => CompressionEngine.Compress(request, cancellation, progress));
        ConsoleOutput.WriteDiagnostics(error, result.Diagnostics);
        output.WriteLine(summaryPrefix + ConsoleOutput.SummaryLine(result.Report));
        output.WriteLine(result.OutputWritten
            ? $"wrote {result.Report.Output}; reports in {request.ReportDirectory}"
            : $"gate failed: no output written; candidate and reports in {request.ReportDirectory}");
        if (benchmark) WriteBenchmark(output, result);
        return result.GateFailed && !request.GateFailureAsWarning ? ReturnCode.GateFailed : ReturnCode.Success;
    }

    private static void WriteBenchmark(TextWriter output, CompressionResult result)
    {
        var ci = CultureInfo.InvariantCulture;
        var timings = result.Report.Timings;
        var passes = timings.Where(t => t.Step is not ("load" or CompressionEngine.DataStep or "save" or "gate" or "total")).ToList();
        output.WriteLine("benchmark:");
        output.WriteLine($"  compress time: {passes.Sum(t => t.Milliseconds).ToString("0", ci)} ms ({string.Join(", ", passes.Select(t => t.Cached ? $"{t.Step} cached" : $"{t.Step} {t.Milliseconds.ToString("0", ci)} ms"))})");
        output.WriteLine($"  data check: {timings.First(t => t.Step == CompressionEngine.DataStep).Milliseconds.ToString("0", ci)} ms");
        output.WriteLine($"  gate time: {timings.First(t => t.Step == "gate").Milliseconds.ToString("0", ci)} ms");
        var m = result.Report.Measurements;
        output.WriteLine(m.LatencyRatio is { } r
            ? $"  latency ratio: {MetricFormat.Ratio(r)} (p50 {MetricFormat.Milliseconds(m.CompressedLatency!.P50Ms)} vs {MetricFormat.Milliseconds(m.OriginalLatency!.P50Ms)}, batch {m.BatchSize}, {Gate.LatencyRoundsText(m)}" +
              (m.LatencyRatioSpread is { } spread && m.LatencyRounds > 1 ? $", per round {MetricFormat.RatioRange(spread.Min, spread.Max)})" : ")")
            : "  latency ratio: not measured (no --validation-data)");
        output.WriteLine($"  total: {timings.First(t => t.Step == "total").Milliseconds.ToString("0", ci)} ms");
    }
}
