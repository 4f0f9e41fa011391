using ModelCompression.Data;
using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Policy;
using ModelCompression.Runtime;
using static ModelCompression.Evaluation.MetricFormat;

namespace ModelCompression.Evaluation;

public sealed record ModelMetrics(double? Top1, double? TopK, int K, int Samples);

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
    /// <summary>Both models after Deflate and Brotli (what a zip or a container layer ships); null when not measured.</summary>
    public CompressedSizes? OriginalSizes { get; init; }
    public CompressedSizes? CompressedSizes { get; init; }
    public double? DeflateRatio => Ratio(s => s.Deflate);
    public double? BrotliRatio => Ratio(s => s.Brotli);

    /// <summary>The sizes <paramref name="measure"/> names (file bytes when the compressed sizes were not measured).</summary>
    public (long Original, long Compressed) Sizes(SizeMeasure measure) => measure switch
    {
        SizeMeasure.Deflate when OriginalSizes is { } o && CompressedSizes is { } c => (o.Deflate, c.Deflate),
        SizeMeasure.Brotli when OriginalSizes is { } o && CompressedSizes is { } c => (o.Brotli, c.Brotli),
        _ => (OriginalBytes, CompressedBytes),
    };

    private double? Ratio(Func<CompressedSizes, long> size) =>
        OriginalSizes is { } o && CompressedSizes is { } c && size(o) > 0 ? (double)size(c) / size(o) : null;
    public ModelMetrics? Original { get; init; }
    public ModelMetrics? Compressed { get; init; }
    /// <summary>Each gated output's fidelity to the original's, in the order gated (the labelled one first).</summary>
    public IReadOnlyList<OutputFidelity> Outputs { get; init; } = [];
    public LatencyStats? OriginalLatency { get; init; }
    public LatencyStats? CompressedLatency { get; init; }
    public double? LatencyRatio => OriginalLatency is null || CompressedLatency is null ? null : CompressedLatency.P50Ms / OriginalLatency.P50Ms;
    public double? P95LatencyRatio => OriginalLatency is null || CompressedLatency is null ? null : CompressedLatency.P95Ms / OriginalLatency.P95Ms;
    /// <summary>The p50 ratio of each round (both models timed back to back), smallest and largest: how much the ratio moved.</summary>
    public Spread? LatencyRatioSpread => RoundRatios(l => l.RoundP50Ms);
    public Spread? P95LatencyRatioSpread => RoundRatios(l => l.RoundP95Ms);
    public int BatchSize { get; init; }
    public int LatencyRounds { get; init; }
    /// <summary>
    /// True when the latency rounds ran one model at a time (all the original's, then all the candidate's) instead of
    /// interleaved: the model is past <see cref="DeployedSize.StreamedLimit"/> and its two sessions are not held
    /// together. Null when interleaved (or not measured).
    /// </summary>
    public bool? LatencyOneAtATime { get; init; }
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
    /// <param name="measureLatency">False skips the latency rounds (a search trial that neither optimizes nor constrains latency).</param>
    public static GateMeasurements Measure(string originalPath, string compressedPath, CompressionPolicy policy,
        CancellationToken cancellation = default, IProgress<(string Stage, double Fraction)>? progress = null, Dataset? validation = null, bool measureLatency = true,
        OriginalRun? original = null) =>
        Measure(originalPath, compressedPath, policy, cancellation, progress, validation, measureLatency, original, DeployedSize.StreamedLimit);

    /// <param name="oneAtATimeAbove">
    /// Originals larger than this many bytes are run one model at a time (tests lower it to exercise that path on a
    /// small model).
    /// </param>
    internal static GateMeasurements Measure(string originalPath, string compressedPath, CompressionPolicy policy,
        CancellationToken cancellation, IProgress<(string Stage, double Fraction)>? progress, Dataset? validation, bool measureLatency,
        OriginalRun? original, long oneAtATimeAbove)
    {
        var originalBytes = OnnxModel.FileSizeWithExternalData(originalPath);
        // The two models' compressed sizes are independent single-threaded streams (minutes for a model of a few GB):
        // measured side by side.
        var sizes = new CompressedSizes[2];
        try
        {
            Parallel.Invoke(
                () => sizes[0] = DeployedSize.OfModel(originalPath),
                // The original's size picks the codec settings for both, so a large model and its candidate compare like for like.
                () => sizes[1] = DeployedSize.OfModel(compressedPath, originalBytes));
        }
        catch (AggregateException e) { System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerExceptions[0]); }
        var measurements = new GateMeasurements
        {
            OriginalBytes = originalBytes,
            CompressedBytes = OnnxModel.FileSizeWithExternalData(compressedPath),
            OriginalSizes = sizes[0],
            CompressedSizes = sizes[1],
            BatchSize = policy.Execution.BatchSize,
            LatencyRounds = policy.Get<GateOptions>().LatencyRounds,
        };
        if (policy.Data.ValidationData is null) return measurements;

        // Models past the streamed-size limit are judged without prepacked weight copies (both sessions alike, so the
        // latency ratio compares like with like): peak memory stays near the two models' own sizes.
        var runtime = RuntimeOptions.From(policy) with { Prepacking = originalBytes <= DeployedSize.StreamedLimit };
        // Past the limit the two sessions are never held together (each maps its weights, ≈ the model's size): the
        // original runs its predictions and latency rounds and is closed before the candidate opens.
        var oneAtATime = originalBytes > oneAtATimeAbove;
        var gate = policy.Get<GateOptions>();
        // A search gates many candidates against the same original on the same data: its outputs are computed once.
        var kept = original is { Outputs: not null } && ReferenceEquals(original.Validation, validation) && validation is not null ? original : null;
        Dataset data;
        if (kept is not null) data = kept.Data!;
        else
        {
            using (var model = OnnxModel.Load(originalPath))
                data = DataCheck.Validation(validation ?? Dataset.Load(policy.Data.ValidationData), model.Graph, policy);
            if (gate.ValidationSamples is { } budget) data = data.Take(budget);
        }
        // A large model is timed one sample at a time unless told otherwise: an app's single request, and rounds
        // that take seconds rather than minutes.
        var batch = data.Batches(gate.LatencyBatchSize ?? (oneAtATime ? 1 : policy.Execution.BatchSize)).First();
        var rounds = gate.LatencyRounds;

        var originalSession = kept is null || measureLatency ? OnnxRuntimeSession.Create(originalPath, runtime) : null;
        OnnxRuntimeSession? compressed = null;
        try
        {
            if (!oneAtATime) compressed = OnnxRuntimeSession.Create(compressedPath, runtime);
            var originalNames = kept?.OutputNames ?? originalSession!.OutputNames;
            var names = gate.Outputs.Count == 0 ? originalNames : gate.Outputs;
            // One at a time, the candidate's outputs are checked once it opens (the message is the same).
            void CheckNames(IReadOnlyList<string>? compressedNames)
            {
                foreach (var name in names)
                    if (!originalNames.Contains(name) || compressedNames is not null && !compressedNames.Contains(name))
                        throw new CompressionException(DiagnosticCodes.InvalidSettingValue,
                            $"Outputs: '{name}' is not an output of {(originalNames.Contains(name) ? "the compressed" : "the")} model; its outputs are {string.Join(", ", originalNames)}", originalPath);
            }
            CheckNames(compressed?.OutputNames);
            var originalOutputs = kept?.Outputs ?? Predictions.RunAll(originalSession!, data, policy.Execution.BatchSize, names, cancellation, Report(progress, "evaluate original"));
            if (original is not null && kept is null && validation is not null)
                (original.Validation, original.Data, original.OutputNames, original.Outputs) = (validation, data, originalNames, originalOutputs);

            LatencyStats? originalLatency = null, compressedLatency = null;
            var runsPerRound = 0;
            if (oneAtATime)
            {
                if (measureLatency)
                    (originalLatency, runsPerRound) = LatencyComparison.MeasureAlone(originalSession!, batch, rounds, null, cancellation, Report(progress, "latency original"));
                originalSession?.Dispose();
                originalSession = null;
                compressed = OnnxRuntimeSession.Create(compressedPath, runtime);
                CheckNames(compressed.OutputNames);
            }
            var compressedOutputs = Predictions.RunAll(compressed!, data, policy.Execution.BatchSize, names, cancellation, Report(progress, "evaluate compressed"));
            foreach (var name in names)
                if (originalOutputs[name].Data.Length != compressedOutputs[name].Data.Length)
                    throw new CompressionException(DiagnosticCodes.UnsupportedModel, $"the compressed model's output '{name}' has shape [{string.Join(",", compressedOutputs[name].Shape)}], the original's [{string.Join(",", originalOutputs[name].Shape)}]", compressedPath);

            // Accuracy is scored on the first gated output: the labels say nothing about the others.
            ModelMetrics Score(FloatTensor outputs) => data.Labels is null
                ? new ModelMetrics(null, null, gate.TopK, data.Count)
                : new ModelMetrics(Metrics.TopK(outputs, data.Labels, 1), Metrics.TopK(outputs, data.Labels, gate.TopK), gate.TopK, data.Count);

            if (measureLatency && oneAtATime)
                compressedLatency = LatencyComparison.MeasureAlone(compressed!, batch, rounds, runsPerRound, cancellation, Report(progress, "latency compressed")).Stats;
            else if (measureLatency)
                (originalLatency, compressedLatency) = LatencyComparison.Measure(originalSession!, compressed!, batch, rounds, cancellation, Report(progress, "latency"));
            return measurements with
            {
                Original = Score(originalOutputs[names[0]]),
                Compressed = Score(compressedOutputs[names[0]]),
                Outputs = names.Select(n => Fidelity.Compare(n, originalOutputs[n], compressedOutputs[n], gate.DecisionThreshold)).ToList(),
                OriginalLatency = originalLatency,
                CompressedLatency = compressedLatency,
                LatencyOneAtATime = measureLatency && oneAtATime ? true : null,
                BatchSize = batch.Samples,
                Environment = RuntimeEnvironment.Capture(runtime),
            };
        }
        finally
        {
            originalSession?.Dispose();
            compressed?.Dispose();
        }
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
        foreach (var o in m.Outputs)
        {
            var output = $"output '{o.Name}'";
            // A NaN compares false with every threshold: non-finite values fail on their own, whatever is set.
            if (o.NonFinite > 0)
                Fail(DiagnosticCodes.NonFiniteOutput, $"non-finite:{o.Name}", o.NonFinite, 0,
                    $"{output}: {Count(o.NonFinite)} of {Count(o.Shape.Aggregate(1L, (p, d) => p * d))} values are NaN or infinite where the original's are finite");
            if (gate.MinCosine is { } cosine && cosine > -1 && !(o.Cosine >= cosine))
                Fail(DiagnosticCodes.CosineBelowMinimum, $"cosine:{o.Name}", o.Cosine, cosine,
                    $"{output}: cosine similarity with the original {Cosine(o.Cosine)} < MinCosine {Cosine(cosine)} (SNR {Decibels(o.SnrDb)}, max abs error {Magnitude(o.MaxAbsError)})");
            if (gate.MinSnrDb is { } snr && !(o.SnrDb >= snr))
                Fail(DiagnosticCodes.SnrBelowMinimum, $"snr:{o.Name}", o.SnrDb, snr,
                    $"{output}: SNR {Decibels(o.SnrDb)} < MinSnrDb {Decibels(snr)} (cosine {Cosine(o.Cosine)})");
            if (gate.MaxAbsError is { } maxError && !(o.MaxAbsError <= maxError))
                Fail(DiagnosticCodes.AbsErrorExceeded, $"max-abs-error:{o.Name}", o.MaxAbsError, maxError,
                    $"{output}: max abs error {Magnitude(o.MaxAbsError)} > MaxAbsError {Magnitude(maxError)}");
            if (gate.MinAgreement is { } agreement && o.Agreement is { } argmaxAgreement && argmaxAgreement < agreement)
                Fail(DiagnosticCodes.AgreementBelowMinimum, $"agreement:{o.Name}", argmaxAgreement, agreement,
                    $"{output}: top-1 agreement with the original {Percent(argmaxAgreement)} < MinAgreement {Percent(agreement)}");
            if (gate.MinDecisionAgreement is { } decisions && o.DecisionAgreement is { } same && same < decisions)
                Fail(DiagnosticCodes.AgreementBelowMinimum, $"decision-agreement:{o.Name}", same, decisions,
                    $"{output}: decision agreement (p > {Magnitude(o.DecisionThreshold)}) with the original {Percent(same)} < MinDecisionAgreement {Percent(decisions)}");
            if (gate.MinMaskIou is { } minIoU && o.MaskIou is { } iou && iou < minIoU)
                Fail(DiagnosticCodes.MaskIouBelowMinimum, $"mask-iou:{o.Name}", iou, minIoU,
                    $"{output}: mask IoU (p > {Magnitude(o.DecisionThreshold)}) with the original {IoU(iou)} < MinMaskIou {IoU(minIoU)} (decision agreement {Percent(o.DecisionAgreement!.Value)})");
        }
        if (gate.MaxLatencyRatio is { } ratio && m.LatencyRatio is { } measured && measured > ratio)
            Fail(DiagnosticCodes.LatencyRatioExceeded, "latency-ratio", measured, ratio,
                $"latency ratio {Ratio(measured)} > MaxLatencyRatio {Ratio(ratio)} (p50 {Milliseconds(m.CompressedLatency!.P50Ms)} vs {Milliseconds(m.OriginalLatency!.P50Ms)} at batch {m.BatchSize}" +
                (m.LatencyRatioSpread is { } spread && m.LatencyRounds > 1 ? $"; per round {RatioRange(spread.Min, spread.Max)} over {m.LatencyRounds} rounds)" : ")"));
        if (gate.MaxLatencyMs is { } ms && m.CompressedLatency is { } latency && latency.P50Ms > ms)
            Fail(DiagnosticCodes.LatencyExceeded, "latency-ms", latency.P50Ms, ms, $"latency p50 {Milliseconds(latency.P50Ms)} > MaxLatencyMs {Milliseconds(ms)} at batch {m.BatchSize}");
        var (originalSize, compressedSize) = m.Sizes(gate.SizeMeasure);
        var sizeRatio = originalSize == 0 ? double.NaN : (double)compressedSize / originalSize;
        if (gate.MaxSizeRatio is { } size && sizeRatio > size)
        {
            var measure = gate.SizeMeasure switch
            {
                SizeMeasure.Deflate => "Deflate-compressed",
                SizeMeasure.Brotli => $"Brotli-compressed ({ReportQuality(m)})",
                _ => "file",
            };
            Fail(DiagnosticCodes.SizeRatioExceeded, "size-ratio", sizeRatio, size,
                $"{measure} size ratio {Ratio(sizeRatio)} > MaxSizeRatio {Ratio(size)} ({Count(compressedSize)} vs {Count(originalSize)} bytes)");
        }
        return new GateVerdict(failures);
    }

    /// <summary>"9 interleaved rounds", or for a model too large to hold both sessions at once, rounds of one model at a time.</summary>
    public static string LatencyRoundsText(GateMeasurements m) => m.LatencyOneAtATime == true
        ? $"{m.LatencyRounds} rounds one model at a time (the original, then the compressed: the model is over {DeployedSize.StreamedLimit >> 20} MiB, so the two are not loaded together)"
        : $"{m.LatencyRounds} interleaved rounds";

    /// <summary>"quality 11", or "quality 9 vs 11" when the original was large enough to get the faster one.</summary>
    public static string ReportQuality(GateMeasurements m) => m.OriginalSizes is { } o && m.CompressedSizes is { } c && o.BrotliQuality != c.BrotliQuality
        ? $"quality {o.BrotliQuality} vs {c.BrotliQuality}" : $"quality {m.CompressedSizes?.BrotliQuality ?? DeployedSize.BrotliQuality}";

    private static IProgress<double>? Report(IProgress<(string, double)>? progress, string stage) =>
        progress is null ? null : new Passes.InlineProgress<double>(f => progress.Report((stage, f)));
}

/// <summary>
/// The original model's outputs on one validation set (the same <see cref="Dataset"/> object), kept by a search
/// across the candidates it gates: the original is run once, not once per trial.
/// </summary>
public sealed class OriginalRun
{
    internal Dataset? Validation { get; set; }
    internal Dataset? Data { get; set; }
    internal IReadOnlyList<string>? OutputNames { get; set; }
    internal IReadOnlyDictionary<string, FloatTensor>? Outputs { get; set; }
}
