using System.Text;
using static ModelCompression.Reporting.ReportText;

namespace ModelCompression.Reporting;

/// <summary>A Markdown report that fits a CI step summary.</summary>
public static class MarkdownReport
{
    public static string Render(CompressionReport report)
    {
        var md = new StringBuilder();
        var name = report.Title;
        md.AppendLine($"## {name}: {(report.Verdict.Passed ? "✅" : "❌")} {report.VerdictText}").AppendLine();
        foreach (var failure in report.Verdict.Failures) md.AppendLine($"- **{failure.Code}** {Escape(failure.Message)}");
        foreach (var d in report.Diagnostics.Where(d => d.Severity == Diagnostics.Severity.Warning && !report.Verdict.Failures.Any(f => f.Message == d.Message)))
            md.AppendLine($"- {d.Code} (warning) {Escape(d.Message)}");
        if (report.Verdict.Failures.Count > 0 || report.Diagnostics.Count > 0) md.AppendLine();

        md.AppendLine("| | Original | Compressed | Change |").AppendLine("|---|---:|---:|---:|");
        foreach (var row in SummaryRows(report)) md.AppendLine($"| {row.Name} | {row.Original} | {row.Compressed} | {row.Change} |");
        md.AppendLine();

        if (report.Measurements.Outputs.Count > 0)
        {
            md.AppendLine("Output fidelity (compressed vs original, on the validation data):").AppendLine();
            md.AppendLine("| " + string.Join(" | ", FidelityColumns) + " |").AppendLine("|" + string.Concat(FidelityColumns.Select((_, i) => IsNumericFidelityColumn(i) ? "---:|" : "---|")));
            foreach (var output in report.Measurements.Outputs) md.AppendLine("| " + string.Join(" | ", FidelityCells(output).Select(Escape)) + " |");
            md.AppendLine();
        }

        if (SearchLine(report) is { } searchLine)
        {
            md.AppendLine(Escape(searchLine)).AppendLine();
            if (report.Search!.Reverted.Count > 0)
            {
                md.AppendLine("| " + string.Join(" | ", RevertedColumns) + " |").AppendLine("|" + string.Concat(RevertedColumns.Select(_ => "---|")));
                foreach (var r in report.Search.Reverted) md.AppendLine("| " + string.Join(" | ", RevertedCells(r).Select(Escape)) + " |");
                md.AppendLine();
            }
            if (report.Search.Rounds.Count > 1)
            {
                md.AppendLine("<details><summary>Fallback rounds (" + report.Search.Rounds.Count + ")</summary>").AppendLine();
                md.AppendLine("| " + string.Join(" | ", RoundColumns) + " |").AppendLine("|" + string.Concat(RoundColumns.Select(_ => "---|")));
                foreach (var r in report.Search.Rounds) md.AppendLine("| " + string.Join(" | ", RoundCells(r).Select(Escape)) + " |");
                md.AppendLine().AppendLine("</details>").AppendLine();
            }
        }

        if (report.Layers.Count > 0)
        {
            md.AppendLine("<details><summary>Per-layer changes (" + report.Layers.Count + ")</summary>").AppendLine();
            md.AppendLine("| " + string.Join(" | ", LayerColumns) + " |").AppendLine("|" + string.Concat(LayerColumns.Select((_, i) => IsNumericLayerColumn(i) ? "---:|" : "---|")));
            foreach (var layer in report.Layers) md.AppendLine("| " + string.Join(" | ", LayerCells(layer).Select(Escape)) + " |");
            md.AppendLine().AppendLine("</details>").AppendLine();
        }

        var settings = report.Policy.Where(p => p.Value.Length > 0).Select(p => $"{p.Key}={p.Value}");
        md.AppendLine("<details><summary>Policy and environment</summary>").AppendLine();
        md.AppendLine("Policy: `" + string.Join(" ", settings) + "`").AppendLine();
        md.AppendLine("| | |").AppendLine("|---|---|");
        foreach (var (key, value) in EnvironmentRows(report.Measurements)) md.AppendLine($"| {key} | {Escape(value)} |");
        md.AppendLine("| Timings | " + string.Join(", ", report.Timings.Select(t => $"{t.Step} {t.Milliseconds.ToString("0", Invariant)} ms")) + " |");
        md.AppendLine().AppendLine("</details>");
        return md.ToString();
    }

    private static string Escape(string text) => text.Replace("|", "\\|").Replace("\n", " ");
}
