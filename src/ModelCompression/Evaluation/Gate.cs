using System.Globalization;
using ModelCompression.Data;
using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Policy;
using ModelCompression.Runtime;

namespace ModelCompression.Evaluation;

public sealed record ModelMetrics(double? Top1, double? TopK, int K, int Samples);
public sealed record OutputComparison(double Agreement, double MeanCosine, double MeanSquaredError);

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
    public int BatchSize { get; init; }
    public int LatencyRounds { get; init; }
    public RuntimeEnvironment? Environment { get; init; }
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
    public static GateMeasurements Measure(string originalPath, string compressedPath, CompressionPolicy policy,
        CancellationToken cancellation = default, IProgress<(string Stage, double Fraction)>? progress = null)
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
        IReadOnlyList<ModelInput> inputs;
        using (var model = OnnxModel.Load(originalPath)) inputs = ModelInput.FromGraph(model.Graph);
        var data = Dataset.Load(policy.Data.ValidationData).BindTo(inputs);
        if (data.Count == 0) throw new CompressionException(DiagnosticCodes.InvalidData, "validation data holds no samples", policy.Data.ValidationData);
        if (policy.Get<GateOptions>().HasAccuracyThreshold && data.Labels is null)
            throw new CompressionException(DiagnosticCodes.MissingLabels, "MinAccuracy/MaxAccuracyDrop need class ids under 'label' or 'labels' in the validation data", policy.Data.ValidationData);

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
                Fail(DiagnosticCodes.AccuracyBelowMinimum, "accuracy", accuracy, min, $"accuracy {F(accuracy)} < MinAccuracy {F(min)} (original {F(baseline)})");
            if (gate.MaxAccuracyDrop is { } drop && baseline - accuracy > drop + 1e-12)
                Fail(DiagnosticCodes.AccuracyBelowMinimum, "accuracy-drop", baseline - accuracy, drop,
                    $"accuracy {F(accuracy)} < {F(baseline - drop)} (drop {Pt(baseline - accuracy)} pt, allowed {Pt(drop)} pt)");
        }
        if (gate.MinAgreement is { } agreement && m.Comparison is { } c && c.Agreement < agreement)
            Fail(DiagnosticCodes.AgreementBelowMinimum, "agreement", c.Agreement, agreement, $"top-1 agreement with the original {F(c.Agreement)} < MinAgreement {F(agreement)}");
        if (gate.MaxLatencyRatio is { } ratio && m.LatencyRatio is { } measured && measured > ratio)
            Fail(DiagnosticCodes.LatencyRatioExceeded, "latency-ratio", measured, ratio,
                $"latency ratio {measured:0.00}x > MaxLatencyRatio {ratio:0.00}x (p50 {m.CompressedLatency!.P50Ms:0.00} ms vs {m.OriginalLatency!.P50Ms:0.00} ms at batch {m.BatchSize})");
        if (gate.MaxLatencyMs is { } ms && m.CompressedLatency is { } latency && latency.P50Ms > ms)
            Fail(DiagnosticCodes.LatencyExceeded, "latency-ms", latency.P50Ms, ms, $"latency p50 {latency.P50Ms:0.00} ms > MaxLatencyMs {ms:0.##} ms at batch {m.BatchSize}");
        if (gate.MaxSizeRatio is { } size && m.SizeRatio > size)
            Fail(DiagnosticCodes.SizeRatioExceeded, "size-ratio", m.SizeRatio, size, $"size ratio {m.SizeRatio:0.000} > MaxSizeRatio {size:0.###} ({m.CompressedBytes:N0} vs {m.OriginalBytes:N0} bytes)");
        return new GateVerdict(failures);
    }

    private static string F(double value) => value.ToString("0.000", CultureInfo.InvariantCulture);
    private static string Pt(double fraction) => (fraction * 100).ToString("0.0", CultureInfo.InvariantCulture);

    private static IProgress<double>? Report(IProgress<(string, double)>? progress, string stage) =>
        progress is null ? null : new Passes.InlineProgress<double>(f => progress.Report((stage, f)));
}
