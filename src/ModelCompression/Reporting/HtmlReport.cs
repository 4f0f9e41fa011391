using System.Net;
using System.Text;
using static ModelCompression.Reporting.ReportText;

namespace ModelCompression.Reporting;

/// <summary>A self-contained HTML page: tables and inline SVG charts, no scripts, no network.</summary>
public static class HtmlReport
{
    private const string OriginalColor = "#8da0cb";
    private const string CompressedColor = "#fc8d62";

    public static string Render(CompressionReport report)
    {
        var m = report.Measurements;
        var name = Path.GetFileName(report.Model);
        var html = new StringBuilder();
        html.Append("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>").Append(E(name)).Append(" — compression report</title><style>")
            .Append("body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}")
            .Append("h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}")
            .Append("table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:left}")
            .Append("td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f5f5f5}")
            .Append(".pass{color:#1a7f37}.fail{color:#cf222e}.badge{font-weight:600;padding:.1rem .5rem;border-radius:4px;border:1px solid currentColor}")
            .Append(".charts{display:flex;flex-wrap:wrap;gap:1.5rem}.chart{border:1px solid #eee;padding:.5rem}.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 1rem;vertical-align:middle}")
            .Append("</style></head><body>");
        html.Append("<h1>").Append(E(name)).Append(" <span class=\"badge ").Append(report.Verdict.Passed ? "pass" : "fail").Append("\">").Append(E(report.VerdictText)).Append("</span></h1>");
        html.Append("<p>").Append(E(report.Model)).Append(" → ").Append(E(report.Output ?? report.Candidate ?? "")).Append(report.Output is null ? " (candidate, not written to the output)" : "").Append("</p>");

        if (report.Verdict.Failures.Count > 0 || report.Diagnostics.Count > 0)
        {
            html.Append("<h2>Diagnostics</h2><ul>");
            foreach (var d in report.Diagnostics) html.Append("<li><b>").Append(E(d.Code)).Append("</b> ").Append(d.Severity.ToString().ToLowerInvariant()).Append(": ").Append(E(d.Message)).Append("</li>");
            html.Append("</ul>");
        }

        html.Append("<h2>Summary</h2><table><tr><th></th><th>Original</th><th>Compressed</th><th>Change</th></tr>");
        foreach (var row in SummaryRows(report))
            html.Append("<tr><td>").Append(E(row.Name)).Append("</td><td class=\"n\">").Append(E(row.Original)).Append("</td><td class=\"n\">").Append(E(row.Compressed)).Append("</td><td class=\"n\">").Append(E(row.Change)).Append("</td></tr>");
        html.Append("</table>");

        html.Append("<h2>Charts</h2><div class=\"legend\"><span style=\"background:").Append(OriginalColor).Append("\"></span>original<span style=\"background:").Append(CompressedColor).Append("\"></span>compressed</div><div class=\"charts\">");
        html.Append(PairChart("Size (MiB)", [("file", m.OriginalBytes / 1048576.0, m.CompressedBytes / 1048576.0)], "0.00"));
        if (m.Original?.Top1 is { } a1 && m.Compressed?.Top1 is { } b1)
            html.Append(PairChart("Accuracy (%)", [("top-1", a1 * 100, b1 * 100), ($"top-{m.Original.K}", (m.Original.TopK ?? 0) * 100, (m.Compressed.TopK ?? 0) * 100)], "0.00"));
        if (m.OriginalLatency is { } lo && m.CompressedLatency is { } lc)
            html.Append(PairChart($"Latency at batch {m.BatchSize} (ms)", [("p50", lo.P50Ms, lc.P50Ms), ("p95", lo.P95Ms, lc.P95Ms)], "0.00"));
        var layersWithParams = report.Layers.Where(l => l.ParametersBefore > 0).ToList();
        if (layersWithParams.Count > 0)
            html.Append(PairChart("Parameters per layer (thousands)", layersWithParams.Select(l => (l.Layer + " · " + l.Technique, l.ParametersBefore / 1000.0, l.ParametersAfter / 1000.0)).ToList(), "0.0"));
        html.Append("</div>");

        if (report.Layers.Count > 0)
        {
            html.Append("<h2>Per-layer changes</h2><table><tr>");
            foreach (var c in LayerColumns) html.Append("<th>").Append(E(c)).Append("</th>");
            html.Append("</tr>");
            foreach (var layer in report.Layers)
            {
                html.Append("<tr>");
                var cells = LayerCells(layer);
                for (var i = 0; i < cells.Length; i++) html.Append(i is >= 4 and <= 9 ? "<td class=\"n\">" : "<td>").Append(E(cells[i])).Append("</td>");
                html.Append("</tr>");
            }
            html.Append("</table>");
        }

        html.Append("<h2>Policy</h2><table>");
        foreach (var (key, value) in report.Policy.Where(p => p.Value.Length > 0)) html.Append("<tr><td>").Append(E(key)).Append("</td><td>").Append(E(value)).Append("</td></tr>");
        html.Append("</table><h2>Environment</h2><table>");
        foreach (var (key, value) in EnvironmentRows(m)) html.Append("<tr><td>").Append(E(key)).Append("</td><td>").Append(E(value)).Append("</td></tr>");
        html.Append("<tr><td>Timings</td><td>").Append(E(string.Join(", ", report.Timings.Select(t => $"{t.Step} {t.Milliseconds.ToString("0", Invariant)} ms")))).Append("</td></tr>");
        html.Append("</table><p style=\"color:#888;font-size:.8rem\">ModelCompression ").Append(E(report.ToolVersion)).Append(" · report schema ").Append(report.SchemaVersion).Append("</p></body></html>");
        return html.ToString();
    }

    /// <summary>Horizontal grouped bars: one original and one compressed bar per row, labelled with their values.</summary>
    private static string PairChart(string title, IReadOnlyList<(string Label, double Original, double Compressed)> rows, string format)
    {
        const int labelWidth = 190, barWidth = 260, rowHeight = 34, top = 28;
        var max = rows.Select(r => Math.Max(r.Original, r.Compressed)).DefaultIfEmpty(1).Max();
        if (!(max > 0)) max = 1;
        var height = top + rows.Count * rowHeight + 8;
        var svg = new StringBuilder();
        svg.Append("<div class=\"chart\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"").Append(labelWidth + barWidth + 70).Append("\" height=\"").Append(height).Append("\" role=\"img\" aria-label=\"").Append(E(title)).Append("\">");
        svg.Append("<text x=\"0\" y=\"16\" font-size=\"13\" font-weight=\"600\">").Append(E(title)).Append("</text>");
        for (var i = 0; i < rows.Count; i++)
        {
            var (label, original, compressed) = rows[i];
            var y = top + i * rowHeight;
            var shown = label.Length > 30 ? label[..29] + "…" : label;
            svg.Append("<text x=\"0\" y=\"").Append(y + 19).Append("\" font-size=\"11\">").Append(E(shown)).Append("<title>").Append(E(label)).Append("</title></text>");
            Bar(svg, labelWidth, y + 3, original / max * barWidth, OriginalColor, original.ToString(format, Invariant));
            Bar(svg, labelWidth, y + 17, compressed / max * barWidth, CompressedColor, compressed.ToString(format, Invariant));
        }
        return svg.Append("</svg></div>").ToString();
    }

    private static void Bar(StringBuilder svg, int x, int y, double width, string color, string value)
    {
        var w = Math.Max(0.5, width).ToString("0.0", Invariant);
        svg.Append("<rect x=\"").Append(x).Append("\" y=\"").Append(y).Append("\" width=\"").Append(w).Append("\" height=\"12\" fill=\"").Append(color).Append("\"/>");
        svg.Append("<text x=\"").Append((x + Math.Max(0.5, width) + 4).ToString("0.0", Invariant)).Append("\" y=\"").Append(y + 10).Append("\" font-size=\"10\">").Append(E(value)).Append("</text>");
    }

    private static string E(string text) => WebUtility.HtmlEncode(text);
}
