using ModelCompression.Diagnostics;
using ModelCompression.Evaluation;
using ModelCompression.Reporting;
using Spectre.Console;

namespace ModelCompression.Cli;

/// <summary>How the verbs talk: coded diagnostic lines, one summary line per model, and progress.</summary>
public static class ConsoleOutput
{
    public static void WriteDiagnostics(TextWriter error, IEnumerable<Diagnostic> diagnostics)
    {
        foreach (var d in diagnostics) error.WriteLine(d.ToCanonicalString());
    }

    /// <summary>
    /// <c>net.onnx -> out.onnx: accuracy 90.20 % -> 90.10 % (-0.10 pt), latency 0.620x, size 0.250x: pass</c>, in the
    /// numbers' one format (<see cref="MetricFormat"/>), as the gate's messages and the reports write them.
    /// </summary>
    public static string SummaryLine(CompressionReport report)
    {
        var m = report.Measurements;
        var parts = new List<string>();
        if (m.Original?.Top1 is { } a && m.Compressed?.Top1 is { } b) parts.Add($"accuracy {MetricFormat.Percent(a)} -> {MetricFormat.Percent(b)} ({MetricFormat.PointChange(a, b)})");
        else if (m.Outputs.FirstOrDefault()?.Agreement is { } agreement) parts.Add($"agreement {MetricFormat.Percent(agreement)}");
        // Without labels or a class axis (a probability, a detection map): the least faithful output's cosine.
        else if (m.Outputs.Count > 0) parts.Add($"cosine {MetricFormat.Cosine(m.Outputs.Min(o => o.Cosine))}");
        if (m.LatencyRatio is { } l) parts.Add($"latency {MetricFormat.Ratio(l)}");
        parts.Add($"size {MetricFormat.Ratio(m.SizeRatio)}" + (m.DeflateRatio is { } d && m.BrotliRatio is { } br ? $" (deflate {MetricFormat.Ratio(d)}, brotli {MetricFormat.Ratio(br)})" : ""));
        if (m.Original is null) parts.Add("no validation data: accuracy and latency not measured");
        // How the per-layer settings were chosen, when Auto, the fallback or a lock file chose them.
        if (report.Search is { } search)
            parts.Add(search.Mode switch
            {
                "lock" => "per-layer settings from the lock file",
                "stale-lock" => "per-layer settings from a stale lock file",
                "auto" => $"auto: {search.Trials.Count} trials" + (search.ChosenTrial is { } c ? $", trial {c + 1} chosen" : ", none met every threshold"),
                _ => search.Reverted.Count == 0 ? $"fallback: nothing reverted ({search.GateRuns} gate run(s))" : $"fallback: {search.Reverted.Count} layer(s) reverted in {search.GateRuns} gate runs",
            });
        // The output is named too: two items may compress one model into two variants.
        var target = report.Output is null ? report.Model : $"{report.Model} -> {report.Output}";
        return $"{target}: {string.Join(", ", parts)}: {report.VerdictText}";
    }

    /// <summary>
    /// Runs <paramref name="work"/> with progress: a live Spectre.Console display with the time left on a terminal;
    /// when output is redirected (CI logs, MSBuild), a plain line per stage and, in a long stage, one every 30 s with
    /// the time left (<see cref="ProgressLines"/>).
    /// </summary>
    public static T WithProgress<T>(TextWriter output, Func<IProgress<(string Stage, double Fraction)>, T> work)
    {
        var interactive = ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;
        if (!interactive) return work(new ProgressLines(output, TimeProvider.System));
        return AnsiConsole.Progress().AutoClear(true).HideCompleted(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var tasks = new Dictionary<string, ProgressTask>();
                return work(new Passes.InlineProgress<(string Stage, double Fraction)>(p =>
                {
                    if (!tasks.TryGetValue(p.Stage, out var task))
                    {
                        foreach (var other in tasks.Values) other.Value = other.MaxValue;
                        tasks[p.Stage] = task = ctx.AddTask(Markup.Escape(p.Stage), maxValue: 1);
                    }
                    task.Value = p.Fraction;
                }));
            });
    }
}
