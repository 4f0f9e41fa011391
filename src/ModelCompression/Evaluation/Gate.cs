using ModelCompression.Data;
using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Policy;
using ModelCompression.Runtime;
using static ModelCompression.Evaluation.MetricFormat;

namespace ModelCompression.Evaluation;

public sealed record ModelMetrics(double? Top1, double? TopK, int K, int Samples);
public sealed record OutputComparison(double Agreement, double MeanCosine, double MeanSquaredError);

/// <summary>The smallest and largest of a per-round value.</summary>
public sealed record Spread(double Min, double Max)
{
    public static Spread? Of(IEnumerable<double> values)
    {
        var list = values.Where(double.IsFinite).ToList();
        return list.Count == 0 ? null : new Spread(list.Min(), list.Max());
    }
}

/// <summary>Everything the gate measured, original and compressed side by side.</summary>
public sealed record GateMeasurements
{
    public long OriginalBytes { get; init; }
    public long CompressedBytes { get; init; }
    public double SizeRatio => OriginalBytes == 0 ? double.NaN : (double)CompressedBytes / OriginalBytes;
    public ModelMetrics? Original { get; init; }
    public ModelMetrics? Compressed { get; init; }
    public OutputComparison? Comparison { get; init; }
    public LatencyStats? OriginalLatency { get; init; }
    public LatencyStats? CompressedLatency { get; init; }
    public double? LatencyRatio => OriginalLatency is null || CompressedLatency is null ? null : CompressedLatency.P50Ms / OriginalLatency.P50Ms;
    public double? P95LatencyRatio => OriginalLatency is null || CompressedLatency is null ? null : CompressedLatency.P95Ms / OriginalLatency.P95Ms;
    /// <summary>The p50 ratio of each round (both models timed back to back), smallest and largest: how much the ratio moved.</summary>
    public Spread? LatencyRatioSpread => RoundRatios(l => l.RoundP50Ms);
    public Spread? P95LatencyRatioSpread => RoundRatios(l => l.RoundP95Ms);
    public int BatchSize { get; init; }
    public int LatencyRounds { get; init; }
    public RuntimeEnvironment? Environment { get; init; }

    private Spread? RoundRatios(Func<LatencyStats, IReadOnlyList<double>> rounds) =>
        OriginalLatency is null || CompressedLatency is null ? null
            : Spread.Of(rounds(OriginalLatency).Zip(rounds(CompressedLatency), (o, c) => c / o));
}

/// <summary>One missed threshold: the code, the numbers and the allowed limit.</summary>
public sealed record GateFailure(string Code, string Metric, double Actual, double Limit, string Message);

public sealed record GateVerdict(IReadOnlyList<GateFailure> Failures)
{
    public bool Passed => Failures.Count == 0;
}

/// <summary>
/// The accuracy/latency/size gate: the original and the compressed model run in the same process, on the same data
/// and execution provider; the verdict lists every missed threshold with both numbers.
/// </summary>
public static class Gate
{
    /// <param name="validation">The validation data when the caller has loaded (and checked) it already; else it is loaded from the policy.</param>
    public static GateMeasurements Measure(string originalPath, string compressedPath, CompressionPolicy policy,
        CancellationToken cancellation = default, IProgress<(string Stage, double Fraction)>? progress = null, Dataset? validation = null)
    {
        var measurements = new GateMeasurements
        {
            OriginalBytes = OnnxModel.FileSizeWithExternalData(originalPath),
            CompressedBytes = OnnxModel.FileSizeWithExternalData(compressedPath),
            BatchSize = policy.Execution.BatchSize,
            LatencyRounds = policy.Get<GateOptions>().LatencyRounds,
        };
        if (policy.Data.ValidationData is null) return measurements;

        var runtime = RuntimeOptions.From(policy);
        Dataset data;
        using (var model = OnnxModel.Load(originalPath))
            data = DataCheck.Validation(validation ?? Dataset.Load(policy.Data.ValidationData), model.Graph, policy);

        using var original = OnnxRuntimeSession.Create(originalPath, runtime);
        using var compressed = OnnxRuntimeSession.Create(compressedPath, runtime);
        var originalOutputs = Predictions.Run(original, data, policy.Execution.BatchSize, cancellation, Report(progress, "evaluate original"));
        var compressedOutputs = Predictions.Run(compressed, data, policy.Execution.BatchSize, cancellation, Report(progress, "evaluate compressed"));
        if (originalOutputs.Data.Length != compressedOutputs.Data.Length)
            throw new CompressionException(DiagnosticCodes.UnsupportedModel, $"the compressed model's output has shape [{string.Join(",", compressedOutputs.Shape)}], the original's [{string.Join(",", originalOutputs.Shape)}]", compressedPath);

        ModelMetrics Score(FloatTensor outputs) => data.Labels is null
            ? new ModelMetrics(null, null, policy.Get<GateOptions>().TopK, data.Count)
            : new ModelMetrics(Metrics.TopK(outputs, data.Labels, 1), Metrics.TopK(outputs, data.Labels, policy.Get<GateOptions>().TopK), policy.Get<GateOptions>().TopK, data.Count);

        var batch = data.Take(policy.Execution.BatchSize).Inputs;
        var (originalLatency, compressedLatency) = LatencyComparison.Measure(original, compressed, batch, policy.Get<GateOptions>().LatencyRounds, cancellation, Report(progress, "latency"));
        return measurements with
        {
            Original = Score(originalOutputs),
            Compressed = Score(compressedOutputs),
            Comparison = new OutputComparison(Metrics.Agreement(originalOutputs, compressedOutputs), Metrics.MeanCosine(originalOutputs, compressedOutputs), Metrics.MeanSquaredError(originalOutputs, compressedOutputs)),
            OriginalLatency = originalLatency,
            CompressedLatency = compressedLatency,
            BatchSize = batch[0].Count,
            Environment = RuntimeEnvironment.Capture(runtime),
        };
    }

    public static GateVerdict Judge(GateMeasurements m, CompressionPolicy policy)
    {
        var gate = policy.Get<GateOptions>();
        var failures = new List<GateFailure>();
        void Fail(string code, string metric, double actual, double limit, string message) => failures.Add(new GateFailure(code, metric, actual, limit, message));

        if (m.Compressed?.Top1 is { } accuracy && m.Original?.Top1 is { } baseline)
        {
            if (gate.MinAccuracy is { } min && accuracy < min)
                Fail(DiagnosticCodes.AccuracyBelowMinimum, "accuracy", accuracy, min,
                    $"accuracy {Percent(accuracy)} < MinAccuracy {Percent(min)} (original {Percent(baseline)})");
            if (gate.MaxAccuracyDrop is { } drop && baseline - accuracy > drop + 1e-12)
                Fail(DiagnosticCodes.AccuracyBelowMinimum, "accuracy-drop", baseline - accuracy, drop,
                    $"accuracy {Percent(accuracy)} < {Percent(baseline - drop)} (original {Percent(baseline)}: drop {Points(baseline - accuracy)}, allowed {Points(drop)})");
        }
        if (gate.MinAgreement is { } agreement && m.Comparison is { } c && c.Agreement < agreement)
            Fail(DiagnosticCodes.AgreementBelowMinimum, "agreement", c.Agreement, agreement,
                $"top-1 agreement with the original {Percent(c.Agreement)} < MinAgreement {Percent(agreement)}");
        if (gate.MaxLatencyRatio is { } ratio && m.LatencyRatio is { } measured && measured > ratio)
            Fail(DiagnosticCodes.LatencyRatioExceeded, "latency-ratio", measured, ratio,
                $"latency ratio {Ratio(measured)} > MaxLatencyRatio {Ratio(ratio)} (p50 {Milliseconds(m.CompressedLatency!.P50Ms)} vs {Milliseconds(m.OriginalLatency!.P50Ms)} at batch {m.BatchSize}" +
                (m.LatencyRatioSpread is { } spread && m.LatencyRounds > 1 ? $"; per round {RatioRange(spread.Min, spread.Max)} over {m.LatencyRounds} rounds)" : ")"));
        if (gate.MaxLatencyMs is { } ms && m.CompressedLatency is { } latency && latency.P50Ms > ms)
            Fail(DiagnosticCodes.LatencyExceeded, "latency-ms", latency.P50Ms, ms, $"latency p50 {Milliseconds(latency.P50Ms)} > MaxLatencyMs {Milliseconds(ms)} at batch {m.BatchSize}");
        if (gate.MaxSizeRatio is { } size && m.SizeRatio > size)
            Fail(DiagnosticCodes.SizeRatioExceeded, "size-ratio", m.SizeRatio, size,
                $"size ratio {Ratio(m.SizeRatio)} > MaxSizeRatio {Ratio(size)} ({Count(m.CompressedBytes)} vs {Count(m.OriginalBytes)} bytes)");
        return new GateVerdict(failures);
    }

    private static IProgress<double>? Report(IProgress<(string, double)>? progress, string stage) =>
        progress is null ? null : new Passes.InlineProgress<double>(f => progress.Report((stage, f)));
}
