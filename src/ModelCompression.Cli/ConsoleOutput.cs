using System.Globalization;
using ModelCompression.Diagnostics;
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

    /// <summary><c>net.onnx: accuracy 90.20% -> 90.10%, latency 0.62x, size 0.25x: pass</c></summary>
    public static string SummaryLine(CompressionReport report)
    {
        var m = report.Measurements;
        var parts = new List<string>();
        if (m.Original?.Top1 is { } a && m.Compressed?.Top1 is { } b) parts.Add($"accuracy {Pct(a)} -> {Pct(b)}");
        else if (m.Comparison is { } c) parts.Add($"agreement {Pct(c.Agreement)}");
        if (m.LatencyRatio is { } l) parts.Add($"latency {l.ToString("0.00", CultureInfo.InvariantCulture)}x");
        parts.Add($"size {m.SizeRatio.ToString("0.00", CultureInfo.InvariantCulture)}x");
        if (m.Original is null) parts.Add("no validation data: accuracy and latency not measured");
        // The output is named too: two items may compress one model into two variants.
        var target = report.Output is null ? report.Model : $"{report.Model} -> {report.Output}";
        return $"{target}: {string.Join(", ", parts)}: {report.VerdictText}";
    }

    private static string Pct(double v) => (v * 100).ToString("0.00", CultureInfo.InvariantCulture) + "%";

    /// <summary>
    /// Runs <paramref name="work"/> with progress: a live Spectre.Console display on a terminal, one plain line per
    /// stage when output is redirected (CI logs, MSBuild).
    /// </summary>
    public static T WithProgress<T>(TextWriter output, Func<IProgress<(string Stage, double Fraction)>, T> work)
    {
        var interactive = ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;
        if (!interactive)
        {
            string? last = null;
            return work(new Passes.InlineProgress<(string Stage, double Fraction)>(p =>
            {
                if (p.Stage == last) return;
                last = p.Stage;
                output.WriteLine($"  {p.Stage}…");
            }));
        }
        return AnsiConsole.Progress().AutoClear(true).HideCompleted(true).Start(ctx =>
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
