using System.Net;
using System.Text;
using ModelCompression.Evaluation;
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
        var name = report.Title;
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

        if (m.Outputs.Count > 0)
            Table(html.Append("<h2>Output fidelity</h2>"), FidelityColumns, m.Outputs.Select(FidelityCells), IsNumericFidelityColumn);

        html.Append("<h2>Charts</h2><div class=\"legend\"><span style=\"background:").Append(OriginalColor).Append("\"></span>original<span style=\"background:").Append(CompressedColor).Append("\"></span>compressed</div><div class=\"charts\">");
        var sizeRows = new List<ChartRow> { new("file", m.OriginalBytes / 1048576.0, m.CompressedBytes / 1048576.0) };
        if (m.OriginalSizes is { } os && m.CompressedSizes is { } cs)
        {
            sizeRows.Add(new("Deflate", os.Deflate / 1048576.0, cs.Deflate / 1048576.0));
            sizeRows.Add(new("Brotli", os.Brotli / 1048576.0, cs.Brotli / 1048576.0));
        }
        html.Append(PairChart("Size (MiB)", sizeRows, "0.00"));
        if (m.Original?.Top1 is { } a1 && m.Compressed?.Top1 is { } b1)
        {
            var accuracy = new List<ChartRow> { new("top-1", a1 * 100, b1 * 100) };
            if (m.Original.TopK is { } ak && m.Compressed.TopK is { } bk) accuracy.Add(new($"top-{m.Original.K}", ak * 100, bk * 100));
            // From 0, 93.60 and 93.50 draw as equal bars: the top-1 chart's axis starts just below the smaller value (its
            // title says where), and a second chart draws the changes themselves.
            var low = Math.Min(a1, b1) * 100;
            var axisStart = Math.Max(0, Math.Floor(low - Math.Max(0.5, Math.Abs(a1 - b1) * 100)));
            html.Append(PairChart($"Top-1 accuracy (%), axis from {axisStart.ToString("0", Invariant)} %", accuracy.Take(1).ToList(), "0.00", axisStart));
            html.Append(DeltaChart("Accuracy change (pt)", accuracy.Select(r => (r.Label, r.Compressed - r.Original)).ToList()));
        }
        if (m.OriginalLatency is { } lo && m.CompressedLatency is { } lc)
        {
            var rounds = Math.Min(lo.RoundP50Ms.Count, lc.RoundP50Ms.Count);
            html.Append(PairChart($"Latency at batch {m.BatchSize} (ms)" + (rounds > 1 ? $"; whiskers: min–max of {rounds} rounds" : ""),
            [
                new("p50", lo.P50Ms, lc.P50Ms, Spread.Of(lo.RoundP50Ms), Spread.Of(lc.RoundP50Ms)),
                new("p95", lo.P95Ms, lc.P95Ms, Spread.Of(lo.RoundP95Ms), Spread.Of(lc.RoundP95Ms)),
            ], "0.00"));
        }
        var layersWithParams = report.Layers.Where(l => l.ParametersBefore > 0).ToList();
        if (layersWithParams.Count > 0)
            html.Append(PairChart("Parameters per layer (thousands): before, nonzero after", layersWithParams.Select(l => new ChartRow(l.Layer + " · " + l.Technique, l.ParametersBefore / 1000.0, l.NonZeroParametersAfter / 1000.0)).ToList(), "0.0"));
        html.Append("</div>");

        if (SearchLine(report) is { } searchLine)
        {
            html.Append(report.Search!.Mode == "auto" ? "<h2>Auto</h2><p>" : "<h2>Fallback</h2><p>").Append(E(searchLine)).Append("</p>");
            if (report.Search.Trials.Count > 0)
            {
                var trials = report.Search.Trials;
                var chosen = report.Search.ChosenTrial;
                html.Append("<div class=\"charts\">");
                if (trials.Any(t => t.SizeRatio is not null && t.AccuracyDrop is not null))
                    html.Append(ParetoChart("Trials: accuracy drop (pt) vs size ratio; filled = meets every threshold, line = Pareto front, ring = chosen",
                        trials.Where(t => t.SizeRatio is not null && t.AccuracyDrop is not null).Select(t => (t.SizeRatio!.Value, t.AccuracyDrop!.Value * 100, t.Feasible, t.Index == chosen)).ToList()));
                if (trials.Any(t => t.LatencyRatio is not null && t.AccuracyDrop is not null))
                    html.Append(ParetoChart("Trials: accuracy drop (pt) vs latency ratio",
                        trials.Where(t => t.LatencyRatio is not null && t.AccuracyDrop is not null).Select(t => (t.LatencyRatio!.Value, t.AccuracyDrop!.Value * 100, t.Feasible, t.Index == chosen)).ToList()));
                html.Append(TrajectoryChart("Search trajectory: objective per trial (dots), best that meets every threshold so far (line)",
                    trials.Select(t => (t.Objective, t.Feasible)).ToList()));
                html.Append("</div>");
                Table(html.Append("<h3>Trials</h3>"), TrialColumns, trials.Select(t => TrialCells(t, chosen).ToArray()), i => i is 2 or 3 or 4 or 5);
            }
            if (report.Search!.Reverted.Count > 0) Table(html, RevertedColumns, report.Search.Reverted.Select(r => RevertedCells(r).ToArray()), i => i is 1 or 2);
            if (report.Search.Rounds.Count > 1) Table(html.Append("<h3>Rounds</h3>"), RoundColumns, report.Search.Rounds.Select(r => RoundCells(r).ToArray()), i => i is 0 or 2 or 3 or 5);
        }

        if (report.Layers.Count > 0)
            Table(html.Append("<h2>Per-layer changes</h2>"), LayerColumns, report.Layers.Select(LayerCells), IsNumericLayerColumn);

        html.Append("<h2>Policy</h2><table>");
        foreach (var (key, value) in report.Policy.Where(p => p.Value.Length > 0)) html.Append("<tr><td>").Append(E(key)).Append("</td><td>").Append(E(value)).Append("</td></tr>");
        html.Append("</table><h2>Environment</h2><table>");
        foreach (var (key, value) in EnvironmentRows(m)) html.Append("<tr><td>").Append(E(key)).Append("</td><td>").Append(E(value)).Append("</td></tr>");
        html.Append("<tr><td>Timings</td><td>").Append(E(string.Join(", ", report.Timings.Select(t => $"{t.Step} {t.Milliseconds.ToString("0", Invariant)} ms")))).Append("</td></tr>");
        html.Append("</table><p style=\"color:#888;font-size:.8rem\">ModelCompression ").Append(E(report.ToolVersion)).Append(" · report schema ").Append(report.SchemaVersion).Append("</p></body></html>");
        return html.ToString();
    }

    private sealed record ChartRow(string Label, double Original, double Compressed, Spread? OriginalSpread = null, Spread? CompressedSpread = null);

    /// <summary>
    /// Horizontal grouped bars: one original and one compressed bar per row, labelled with their values; bars start at
    /// <paramref name="axisStart"/> (stated in the title when not 0), whiskers show a per-round spread.
    /// </summary>
    private static string PairChart(string title, IReadOnlyList<ChartRow> rows, string format, double axisStart = 0)
    {
        const int labelWidth = 190, barWidth = 260, rowHeight = 34, top = 28;
        var max = rows.Select(r => Math.Max(Math.Max(r.Original, r.Compressed), Math.Max(r.OriginalSpread?.Max ?? 0, r.CompressedSpread?.Max ?? 0))).DefaultIfEmpty(1).Max();
        var span = max - axisStart;
        if (!(span > 0)) span = 1;
        double Scale(double v) => Math.Max(0, v - axisStart) / span * barWidth;
        var height = top + rows.Count * rowHeight + 8;
        var svg = new StringBuilder();
        svg.Append("<div class=\"chart\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"").Append(labelWidth + barWidth + 90).Append("\" height=\"").Append(height).Append("\" role=\"img\" aria-label=\"").Append(E(title)).Append("\">");
        svg.Append("<text x=\"0\" y=\"16\" font-size=\"13\" font-weight=\"600\">").Append(E(title)).Append("</text>");
        for (var i = 0; i < rows.Count; i++)
        {
            var row = rows[i];
            var y = top + i * rowHeight;
            var shown = row.Label.Length > 30 ? row.Label[..29] + "…" : row.Label;
            svg.Append("<text x=\"0\" y=\"").Append(y + 19).Append("\" font-size=\"11\">").Append(E(shown)).Append("<title>").Append(E(row.Label)).Append("</title></text>");
            Bar(svg, labelWidth, y + 3, Scale(row.Original), OriginalColor, row.Original.ToString(format, Invariant), row.OriginalSpread is { } os ? (Scale(os.Min), Scale(os.Max)) : null);
            Bar(svg, labelWidth, y + 17, Scale(row.Compressed), CompressedColor, row.Compressed.ToString(format, Invariant), row.CompressedSpread is { } cs ? (Scale(cs.Min), Scale(cs.Max)) : null);
        }
        return svg.Append("</svg></div>").ToString();
    }

    /// <summary>Bars left or right of a zero line, one per row: a change, drawn at a scale that makes it visible.</summary>
    private static string DeltaChart(string title, IReadOnlyList<(string Label, double Change)> rows)
    {
        const int labelWidth = 90, halfWidth = 130, rowHeight = 22, top = 28;
        var scale = Math.Max(0.1, rows.Max(r => Math.Abs(r.Change)));
        var zero = labelWidth + halfWidth;
        var height = top + rows.Count * rowHeight + 8;
        var svg = new StringBuilder();
        svg.Append("<div class=\"chart\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"").Append(labelWidth + 2 * halfWidth + 10).Append("\" height=\"").Append(height).Append("\" role=\"img\" aria-label=\"").Append(E(title)).Append("\">");
        svg.Append("<text x=\"0\" y=\"16\" font-size=\"13\" font-weight=\"600\">").Append(E(title)).Append("</text>");
        svg.Append("<line x1=\"").Append(zero).Append("\" y1=\"").Append(top - 4).Append("\" x2=\"").Append(zero).Append("\" y2=\"").Append(height - 4).Append("\" stroke=\"#888\"/>");
        for (var i = 0; i < rows.Count; i++)
        {
            var (label, change) = rows[i];
            var y = top + i * rowHeight;
            var width = Math.Max(0.5, Math.Abs(change) / scale * (halfWidth - 50));
            var x = change < 0 ? zero - width : zero;
            var text = MetricFormat.PointChange(0, change / 100);
            svg.Append("<text x=\"0\" y=\"").Append(y + 12).Append("\" font-size=\"11\">").Append(E(label)).Append("</text>");
            svg.Append("<rect x=\"").Append(x.ToString("0.0", Invariant)).Append("\" y=\"").Append(y + 2).Append("\" width=\"").Append(width.ToString("0.0", Invariant)).Append("\" height=\"12\" fill=\"").Append(change < 0 ? "#cf222e" : "#1a7f37").Append("\"/>");
            var textX = change < 0 ? x - 4 : x + width + 4;
            svg.Append("<text x=\"").Append(textX.ToString("0.0", Invariant)).Append("\" y=\"").Append(y + 12).Append("\" font-size=\"10\"").Append(change < 0 ? " text-anchor=\"end\"" : "").Append('>').Append(E(text)).Append("</text>");
        }
        return svg.Append("</svg></div>").ToString();
    }

    private static void Bar(StringBuilder svg, int x, int y, double width, string color, string value, (double Min, double Max)? whisker)
    {
        var w = Math.Max(0.5, width);
        svg.Append("<rect x=\"").Append(x).Append("\" y=\"").Append(y).Append("\" width=\"").Append(w.ToString("0.0", Invariant)).Append("\" height=\"12\" fill=\"").Append(color).Append("\"/>");
        var end = w;
        if (whisker is { } s && s.Max > s.Min)
        {
            string X(double v) => (x + v).ToString("0.0", Invariant);
            svg.Append("<path d=\"M").Append(X(s.Min)).Append(' ').Append(y + 6).Append("H").Append(X(s.Max))
               .Append("M").Append(X(s.Min)).Append(' ').Append(y + 2).Append("V").Append(y + 10)
               .Append("M").Append(X(s.Max)).Append(' ').Append(y + 2).Append("V").Append(y + 10).Append("\" stroke=\"#333\" fill=\"none\"/>");
            end = Math.Max(end, s.Max);
        }
        svg.Append("<text x=\"").Append((x + end + 4).ToString("0.0", Invariant)).Append("\" y=\"").Append(y + 10).Append("\" font-size=\"10\">").Append(E(value)).Append("</text>");
    }

    /// <summary>A table with a header row; cells of numeric columns are right-aligned.</summary>
    private const int PlotWidth = 420, PlotHeight = 260, Margin = 44;

    /// <summary>An SVG scatter of trials (x: a ratio, y: the accuracy drop) with the Pareto front of the points that meet every threshold.</summary>
    private static string ParetoChart(string title, IReadOnlyList<(double X, double Y, bool Feasible, bool Chosen)> points)
    {
        var finite = points.Where(p => double.IsFinite(p.X) && double.IsFinite(p.Y)).ToList();
        if (finite.Count == 0) return "";
        var plot = Plot.Of(finite.Select(p => p.X), finite.Select(p => p.Y));
        var svg = plot.Start(title);
        // Pareto front: feasible points no other feasible point beats on both axes, by x.
        var front = finite.Where(p => p.Feasible && !finite.Any(q => q.Feasible && q.X <= p.X && q.Y <= p.Y && (q.X < p.X || q.Y < p.Y))).OrderBy(p => p.X).ToList();
        if (front.Count > 1) svg.Append("<polyline fill=\"none\" stroke=\"#2a7\" stroke-width=\"1.5\" points=\"").Append(string.Join(" ", front.Select(p => $"{F(plot.X(p.X))},{F(plot.Y(p.Y))}"))).Append("\"/>");
        foreach (var p in finite)
        {
            svg.Append($"<circle cx=\"{F(plot.X(p.X))}\" cy=\"{F(plot.Y(p.Y))}\" r=\"3.5\" fill=\"{(p.Feasible ? "#2a7" : "none")}\" stroke=\"{(p.Feasible ? "#2a7" : "#c44")}\"/>");
            if (p.Chosen) svg.Append($"<circle cx=\"{F(plot.X(p.X))}\" cy=\"{F(plot.Y(p.Y))}\" r=\"8\" fill=\"none\" stroke=\"#000\" stroke-width=\"1.5\"/>");
        }
        return svg.Append("</svg></figure>").ToString();
    }

    /// <summary>An SVG of the objective per trial and the best feasible objective so far.</summary>
    private static string TrajectoryChart(string title, IReadOnlyList<(double Objective, bool Feasible)> trials)
    {
        var finite = trials.Select((t, i) => (I: i + 1.0, t.Objective, t.Feasible)).Where(t => double.IsFinite(t.Objective)).ToList();
        if (finite.Count == 0) return "";
        var plot = Plot.Of(finite.Select(t => t.I), finite.Select(t => t.Objective));
        var svg = plot.Start(title);
        var best = double.PositiveInfinity;
        var line = new List<string>();
        foreach (var t in finite)
        {
            if (t.Feasible) best = Math.Min(best, t.Objective);
            if (double.IsFinite(best)) line.Add($"{F(plot.X(t.I))},{F(plot.Y(best))}");
            svg.Append($"<circle cx=\"{F(plot.X(t.I))}\" cy=\"{F(plot.Y(t.Objective))}\" r=\"3\" fill=\"{(t.Feasible ? "#2a7" : "none")}\" stroke=\"{(t.Feasible ? "#2a7" : "#c44")}\"/>");
        }
        if (line.Count > 1) svg.Append("<polyline fill=\"none\" stroke=\"#36c\" stroke-width=\"1.5\" points=\"").Append(string.Join(" ", line)).Append("\"/>");
        return svg.Append("</svg></figure>").ToString();
    }

    /// <summary>The axes of an SVG plot: data ranges (from 0) mapped onto the plot area, with three labels per axis.</summary>
    private sealed record Plot(double X0, double X1, double Y0, double Y1)
    {
        public static Plot Of(IEnumerable<double> xs, IEnumerable<double> ys)
        {
            var (x0, x1) = Range(xs.Append(0));
            var (y0, y1) = Range(ys.Append(0));
            return new Plot(x0, x1, y0, y1);
        }

        public double X(double v) => Margin + (v - X0) / (X1 - X0) * (PlotWidth - Margin - 10);
        public double Y(double v) => PlotHeight - Margin + 10 - (v - Y0) / (Y1 - Y0) * (PlotHeight - Margin);

        public StringBuilder Start(string title)
        {
            var svg = new StringBuilder("<figure><figcaption>").Append(E(title)).Append($"</figcaption><svg viewBox=\"0 0 {PlotWidth} {PlotHeight}\" width=\"{PlotWidth}\" height=\"{PlotHeight}\" font-size=\"10\">");
            svg.Append($"<line x1=\"{Margin}\" y1=\"{F(Y(Y0))}\" x2=\"{PlotWidth - 10}\" y2=\"{F(Y(Y0))}\" stroke=\"#888\"/><line x1=\"{Margin}\" y1=\"{F(Y(Y0))}\" x2=\"{Margin}\" y2=\"{F(Y(Y1))}\" stroke=\"#888\"/>");
            foreach (var v in new[] { X0, (X0 + X1) / 2, X1 }) svg.Append($"<text x=\"{F(X(v))}\" y=\"{F(Y(Y0) + 14)}\" text-anchor=\"middle\">{E(v.ToString("0.###", Invariant))}</text>");
            foreach (var v in new[] { Y0, (Y0 + Y1) / 2, Y1 }) svg.Append($"<text x=\"{Margin - 4}\" y=\"{F(Y(v) + 3)}\" text-anchor=\"end\">{E(v.ToString("0.###", Invariant))}</text>");
            return svg;
        }

        private static (double Low, double High) Range(IEnumerable<double> values)
        {
            var list = values.Where(double.IsFinite).ToList();
            var (low, high) = (list.Min(), list.Max());
            return high > low ? (low, high + (high - low) * 0.05) : (low, low + 1);
        }
    }

    private static string F(double v) => v.ToString("0.#", Invariant);

    private static void Table(StringBuilder html, IReadOnlyList<string> columns, IEnumerable<string[]> rows, Func<int, bool> numeric)
    {
        html.Append("<table><tr>");
        foreach (var c in columns) html.Append("<th>").Append(E(c)).Append("</th>");
        html.Append("</tr>");
        foreach (var cells in rows)
        {
            html.Append("<tr>");
            for (var i = 0; i < cells.Length; i++) html.Append(numeric(i) ? "<td class=\"n\">" : "<td>").Append(E(cells[i])).Append("</td>");
            html.Append("</tr>");
        }
        html.Append("</table>");
    }

    private static string E(string text) => WebUtility.HtmlEncode(text);
}
