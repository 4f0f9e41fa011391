using System.Globalization;
using ModelCompression.Evaluation;
using ModelCompression.Passes;

namespace ModelCompression.Reporting;

/// <summary>Number formatting shared by the Markdown and HTML renderers, so both say the same thing.</summary>
internal static class ReportText
{
    public static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    public static string Percent(double? value) => value is { } v ? (v * 100).ToString("0.00", Invariant) + " %" : "–";
    public static string Ms(double? value) => value is { } v ? v.ToString("0.00", Invariant) + " ms" : "–";
    public static string Ratio(double? value) => value is { } v && double.IsFinite(v) ? v.ToString("0.000", Invariant) + "×" : "–";
    public static string Number(double? value, string format = "0.####") => value is { } v ? v.ToString(format, Invariant) : "–";
    public static string Bytes(long bytes) => bytes >= 1 << 20 ? (bytes / 1048576.0).ToString("0.00", Invariant) + " MiB" : bytes >= 1024 ? (bytes / 1024.0).ToString("0.0", Invariant) + " KiB" : bytes + " B";
    public static string Shape(long[]? shape) => shape is null ? "" : "[" + string.Join("×", shape) + "]";
    public static string Count(long n) => n.ToString("N0", Invariant);

    public static string Delta(double? before, double? after) =>
        before is { } b && after is { } a ? ((a - b) * 100).ToString("+0.00;-0.00;0.00", Invariant) + " pt" : "–";

    /// <summary>The per-layer table's cells, in column order, shared by both renderers.</summary>
    public static readonly string[] LayerColumns = ["Layer", "Op", "Technique", "Shape", "Params before", "Params after", "Sparsity", "Bits", "Rank", "Rel. error", "Note"];

    public static string[] LayerCells(LayerRecord r) =>
    [
        r.Layer, r.Op, r.Technique, Shape(r.Shape), Count(r.ParametersBefore), Count(r.ParametersAfter),
        r.Sparsity is { } s ? (s * 100).ToString("0.0", Invariant) + " %" : "", r.Bits?.ToString(Invariant) ?? "", r.Rank?.ToString(Invariant) ?? "",
        r.ReconstructionError is { } e ? e.ToString("0.0000", Invariant) : "", r.Note ?? "",
    ];

    public static IEnumerable<(string Name, string Original, string Compressed, string Change)> SummaryRows(CompressionReport report)
    {
        var m = report.Measurements;
        yield return ("Size", Bytes(m.OriginalBytes), Bytes(m.CompressedBytes), Ratio(m.SizeRatio));
        yield return ("Parameters", Count(report.ParametersBefore), Count(report.ParametersAfter), Ratio(report.ParametersBefore == 0 ? null : (double)report.ParametersAfter / report.ParametersBefore));
        yield return ("Nonzero parameters", Count(report.NonZeroParametersBefore), Count(report.NonZeroParametersAfter), Ratio(report.NonZeroParametersBefore == 0 ? null : (double)report.NonZeroParametersAfter / report.NonZeroParametersBefore));
        if (m.Original?.Top1 is not null)
        {
            yield return ("Top-1 accuracy", Percent(m.Original.Top1), Percent(m.Compressed?.Top1), Delta(m.Original.Top1, m.Compressed?.Top1));
            yield return ($"Top-{m.Original.K} accuracy", Percent(m.Original.TopK), Percent(m.Compressed?.TopK), Delta(m.Original.TopK, m.Compressed?.TopK));
        }
        if (m.Comparison is { } c)
        {
            yield return ("Top-1 agreement with original", "", Percent(c.Agreement), "");
            yield return ("Mean cosine similarity of outputs", "", Number(c.MeanCosine, "0.00000"), "");
            yield return ("MSE of outputs", "", Number(c.MeanSquaredError, "0.000000"), "");
        }
        if (m.OriginalLatency is { } lo && m.CompressedLatency is { } lc)
        {
            yield return ($"Latency p50 (batch {m.BatchSize})", Ms(lo.P50Ms), Ms(lc.P50Ms), Ratio(m.LatencyRatio));
            yield return ($"Latency p95 (batch {m.BatchSize})", Ms(lo.P95Ms), Ms(lc.P95Ms), Ratio(lc.P95Ms / lo.P95Ms));
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
            yield return ("Latency method", $"{m.LatencyRounds} interleaved rounds, {latency.Runs / Math.Max(1, m.LatencyRounds)} runs per model per round, after {LatencyComparison.WarmupRuns} warm-up runs");
        yield return ("OS / .NET", $"{e.OperatingSystem} / .NET {e.DotnetVersion}");
    }
}
