using System.Globalization;
using ModelCompression.Evaluation;

namespace ModelCompression.Reporting;

/// <summary>Cells shared by the Markdown and HTML renderers, so both say the same thing.</summary>
internal static class ReportText
{
    public static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    // Every number goes through MetricFormat, the same helper the gate's messages and the console summary use.
    public static string Percent(double? value) => MetricFormat.Percent(value);
    public static string Ms(double? value) => MetricFormat.Milliseconds(value);
    public static string Ratio(double? value) => MetricFormat.Ratio(value);
    public static string Number(double? value, string format = "0.####") => value is { } v ? v.ToString(format, Invariant) : "–";
    public static string Bytes(long bytes) => MetricFormat.Bytes(bytes);
    public static string Shape(long[]? shape) => shape is null ? "" : "[" + string.Join("×", shape) + "]";
    public static string Count(long n) => MetricFormat.Count(n);
    public static string Delta(double? before, double? after) => MetricFormat.PointChange(before, after);

    /// <summary>The per-layer table's cells, in column order, shared by both renderers.</summary>
    public static readonly string[] LayerColumns = ["Layer", "Op", "Technique", "Shape", "Params before", "Params after", "Nonzero after", "Sparsity", "Bits", "Rank", "Stored", "Deflate", "Brotli", "Entropy bound", "Rel. error", "Note"];

    /// <summary>Columns rendered right-aligned (numbers).</summary>
    public static bool IsNumericLayerColumn(int column) => column is >= 4 and <= 14;

    public static string[] LayerCells(LayerSummary r) =>
    [
        r.Layer, r.Op, r.Technique, Shape(r.Shape), Count(r.ParametersBefore), Count(r.ParametersAfter), Count(r.NonZeroParametersAfter),
        r.Sparsity is { } s ? MetricFormat.Sparsity(s) : "", r.Bits?.ToString(Invariant) ?? "", r.Rank?.ToString(Invariant) ?? "",
        r.StoredSizes is { } s1 ? Bytes(s1.File) : "", r.StoredSizes is { } s2 ? Bytes(s2.Deflate) : "", r.StoredSizes is { } s3 ? Bytes(s3.Brotli) : "",
        r.EntropyBytes is { } h ? Bytes((long)Math.Ceiling(h)) : "",
        LayerTable.Errors(r), LayerTable.Notes(r),
    ];

    /// <summary>The output-fidelity table's columns: one row per gated output.</summary>
    public static readonly string[] FidelityColumns = ["Output", "Shape", "Cosine", "SNR", "Max abs error", "MSE", "Top-1 agreement", "Decision agreement", "Mask IoU", "Non-finite"];

    /// <summary>Columns rendered right-aligned (numbers).</summary>
    public static bool IsNumericFidelityColumn(int column) => column >= 2;

    public static string[] FidelityCells(OutputFidelity o) =>
    [
        o.Name, Shape(o.Shape), MetricFormat.Cosine(o.Cosine), MetricFormat.Decibels(o.SnrDb), MetricFormat.Magnitude(o.MaxAbsError), MetricFormat.Magnitude(o.MeanSquaredError),
        o.Agreement is { } a ? $"{Percent(a)} (axis {o.ClassAxis})" : "", o.DecisionAgreement is { } d ? $"{Percent(d)} (p > {Number(o.DecisionThreshold)})" : "", o.MaskIou is { } iou ? MetricFormat.IoU(iou) : "", Count(o.NonFinite),
    ];

    /// <summary>"1.23 ms (1.20–1.31 ms)": the pooled value and the smallest and largest per-round value.</summary>
    private static string MsWithSpread(double value, IReadOnlyList<double> rounds) =>
        rounds.Count > 1 ? $"{Ms(value)} ({MetricFormat.MillisecondsRange(rounds.Min(), rounds.Max())})" : Ms(value);

    private static string RatioWithSpread(double? value, Spread? spread, int rounds) =>
        spread is not null && rounds > 1 ? $"{Ratio(value)} ({MetricFormat.RatioRange(spread.Min, spread.Max)})" : Ratio(value);

    public static IEnumerable<(string Name, string Original, string Compressed, string Change)> SummaryRows(CompressionReport report)
    {
        var m = report.Measurements;
        yield return ("Size", Bytes(m.OriginalBytes), Bytes(m.CompressedBytes), Ratio(m.SizeRatio));
        if (m.OriginalSizes is { } o && m.CompressedSizes is { } c)
        {
            yield return ("Size after Deflate (zip)", Bytes(o.Deflate), Bytes(c.Deflate), Ratio(m.DeflateRatio));
            yield return ($"Size after Brotli ({Gate.ReportQuality(m)})", Bytes(o.Brotli), Bytes(c.Brotli), Ratio(m.BrotliRatio));
        }
        yield return ("Parameters", Count(report.ParametersBefore), Count(report.ParametersAfter), Ratio(report.ParametersBefore == 0 ? null : (double)report.ParametersAfter / report.ParametersBefore));
        yield return ("Nonzero parameters", Count(report.NonZeroParametersBefore), Count(report.NonZeroParametersAfter), Ratio(report.NonZeroParametersBefore == 0 ? null : (double)report.NonZeroParametersAfter / report.NonZeroParametersBefore));
        if (m.Original?.Top1 is not null)
        {
            yield return ("Top-1 accuracy", Percent(m.Original.Top1), Percent(m.Compressed?.Top1), Delta(m.Original.Top1, m.Compressed?.Top1));
            yield return ($"Top-{m.Original.K} accuracy", Percent(m.Original.TopK), Percent(m.Compressed?.TopK), Delta(m.Original.TopK, m.Compressed?.TopK));
        }
        if (m.OriginalLatency is { } lo && m.CompressedLatency is { } lc)
        {
            var rounds = Math.Min(lo.RoundP50Ms.Count, lc.RoundP50Ms.Count);
            var spread = rounds > 1 ? $"; min–max of {rounds} rounds" : "";
            yield return ($"Latency p50 (batch {m.BatchSize}{spread})", MsWithSpread(lo.P50Ms, lo.RoundP50Ms), MsWithSpread(lc.P50Ms, lc.RoundP50Ms), RatioWithSpread(m.LatencyRatio, m.LatencyRatioSpread, rounds));
            yield return ($"Latency p95 (batch {m.BatchSize}{spread})", MsWithSpread(lo.P95Ms, lo.RoundP95Ms), MsWithSpread(lc.P95Ms, lc.RoundP95Ms), RatioWithSpread(m.P95LatencyRatio, m.P95LatencyRatioSpread, rounds));
        }
    }

    public static IEnumerable<(string Name, string Value)> EnvironmentRows(GateMeasurements m)
    {
        if (m.Environment is not { } e) yield break;
        yield return ("ONNX Runtime", $"{e.OnnxRuntimeVersion} ({e.OnnxRuntimeLibrary})");
        yield return ("Execution provider", e.ExecutionProvider);
        yield return ("Graph optimization", e.GraphOptimizationLevel);
        yield return ("CPU", e.Cpu);
        yield return ("Instruction sets", string.Join(" ", e.InstructionSets));
        yield return ("Threads", $"{(e.IntraOpThreads == 0 ? "ORT default" : e.IntraOpThreads.ToString(Invariant))} intra-op, {e.ProcessorCount} logical processors");
        if (m.OriginalLatency is { } latency)
            yield return ("Latency method", $"{Gate.LatencyRoundsText(m)}, {latency.Runs / Math.Max(1, m.LatencyRounds)} runs per model per round, after {LatencyComparison.WarmupRuns} warm-up runs");
        yield return ("OS / .NET", $"{e.OperatingSystem} / .NET {e.DotnetVersion}");
    }

    /// <summary>The fallback's summary line (how the per-layer settings were chosen), or null without a search.</summary>
    public static string? SearchLine(CompressionReport report) => report.Search is not { } s ? null : s.Mode switch
    {
        "lock" => $"Per-layer settings from the lock file ({s.Layers.Count} layer(s); no fallback rounds): {s.LockStatus}.",
        "auto" => $"Auto: {s.Trials.Count} trials in {(s.Milliseconds / 1000).ToString("0.0", Invariant)} s"
            + (s.ChosenTrial is { } c ? $"; trial {c + 1} chosen, gated on all the validation data" : "; no trial met every threshold, the closest was gated")
            + $". Lock file: {s.LockStatus ?? "none"}.",
        "stale-lock" => $"Per-layer settings from a stale lock file ({s.Layers.Count} layer(s); no fallback rounds): {s.LockStatus}.",
        _ => s.Rounds.Count <= 1 ? $"Fallback: the policy as given met the accuracy thresholds; nothing reverted. Lock file: {s.LockStatus ?? "none"}."
            : $"Fallback: {s.Reverted.Count} layer(s) reverted in {s.Rounds.Count} gate runs ({(s.Milliseconds / 1000).ToString("0.0", Invariant)} s). Lock file: {s.LockStatus ?? "none"}.",
    };

    public static readonly string[] RevertedColumns = ["Layer", "Rank", "Error", "From", "To", "Why"];
    public static IEnumerable<string> RevertedCells(Search.RevertedLayer r) =>
        [r.Layer, r.SensitivityRank.ToString(Invariant), r.ReconstructionError is { } e ? e.ToString("0.###", Invariant) : "", r.From, r.To, r.Reason];

    public static readonly string[] TrialColumns = ["Trial", "Knobs", "Objective", "Size", "Latency", "Accuracy drop", "Constraints", "Meets all", "Per-layer settings"];
    public static IEnumerable<string> TrialCells(Search.AutoTrial t, int? chosen) =>
    [
        (t.Index + 1).ToString(Invariant) + (chosen == t.Index ? " ✓" : ""),
        string.Join(", ", t.Knobs.Select(k => k.ToString("0.000", Invariant))),
        t.Objective.ToString("0.0000", Invariant),
        t.SizeRatio is { } size ? size.ToString("0.000", Invariant) + "x" : "",
        t.LatencyRatio is { } latency ? latency.ToString("0.000", Invariant) + "x" : "",
        t.AccuracyDrop is { } drop ? (drop * 100).ToString("0.00", Invariant) + " pt" : "",
        string.Join(", ", t.Constraints.Select(c => $"{c.Key} {c.Value.ToString("0.####", Invariant)} (≤ {t.Targets[c.Key].ToString("0.####", Invariant)})")),
        t.Feasible ? "yes" : "no",
        t.Layers,
    ];

    public static readonly string[] RoundColumns = ["Round", "Step", "Accuracy", "Bytes", "Accuracy thresholds", "Time (s)"];
    public static IEnumerable<string> RoundCells(Search.FallbackRound r) =>
        [r.Round.ToString(Invariant), r.Step, r.Accuracy is { } a ? (a * 100).ToString("0.00", Invariant) + " %" : "", r.CompressedBytes.ToString("N0", Invariant), r.AccuracyPassed ? "pass" : "fail", (r.Milliseconds / 1000).ToString("0.0", Invariant)];
}
