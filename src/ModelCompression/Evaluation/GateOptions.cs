using ModelCompression.Policy;

namespace ModelCompression.Evaluation;

/// <summary>Which size MaxSizeRatio compares: as stored, or as shipped inside a Deflate (zip) or Brotli container.</summary>
public enum SizeMeasure { File, Deflate, Brotli }

/// <summary>The gate's thresholds (null = not checked) and how it measures.</summary>
public sealed record GateOptions : IOptions<GateOptions>
{
    public double? MinAccuracy { get; init; }
    public double? MaxAccuracyDrop { get; init; }
    public double? MinAgreement { get; init; }
    public double? MaxLatencyRatio { get; init; }
    public double? MaxLatencyMs { get; init; }
    public double? MaxSizeRatio { get; init; }
    public SizeMeasure SizeMeasure { get; init; } = SizeMeasure.File;
    /// <summary>
    /// The fidelity floor that holds by default: a model whose outputs collapsed (zeros, a constant, noise) scores
    /// well below it, while the shipped int8 and 50 % pruned samples score above 0.99.
    /// </summary>
    public double? MinCosine { get; init; } = DefaultMinCosine;
    public const double DefaultMinCosine = 0.9;
    public double? MinSnrDb { get; init; }
    public double? MaxAbsError { get; init; }
    public double? MinDecisionAgreement { get; init; }
    /// <summary>
    /// Off by default: how much IoU a mask may lose depends on the task (thin text lines lose more at their borders
    /// than large blobs), and the default MinCosine already fails a collapsed map.
    /// </summary>
    public double? MinMaskIou { get; init; }
    /// <summary>Where a probability turns "on" for decision agreement and mask IoU; 0.5 unless the model's own post-processing uses another (a text detector: 0.3).</summary>
    public double DecisionThreshold { get; init; } = 0.5;
    /// <summary>The outputs to compare (empty: all); the first is the one scored against the labels.</summary>
    public IReadOnlyList<string> Outputs { get; init; } = [];
    public int TopK { get; init; } = 5;
    public int LatencyRounds { get; init; } = 9;
    /// <summary>Samples per latency run; null: BatchSize, but 1 for a model over 64 MiB (one request of an app, and a round in seconds, not minutes).</summary>
    public int? LatencyBatchSize { get; init; }
    /// <summary>The gate judges at most this many validation samples, the first ones (null: all of them).</summary>
    public int? ValidationSamples { get; init; }

    public bool HasAccuracyThreshold => MinAccuracy is not null || MaxAccuracyDrop is not null;

    public static OptionsGroup<GateOptions> Group { get; } = new OptionsGroup<GateOptions>("Gate", 70,
        "Thresholds the compressed model must meet on ValidationData.", isTechnique: false)
    {
        Conflicting = (o, p) => Conflicts(o, p),
    }
        .Add("MinAccuracy", Syntax.Optional(Syntax.Number(0, 1)), SettingScope.Model,
            "Fail when the compressed model's top-1 accuracy is below this.",
            o => o.MinAccuracy, (o, v) => o with { MinAccuracy = v })
        .Add("MaxAccuracyDrop", Syntax.Optional(Syntax.Number(0, 1)), SettingScope.Model,
            "Fail when top-1 accuracy drops by more than this (0.01 = 1 point).",
            o => o.MaxAccuracyDrop, (o, v) => o with { MaxAccuracyDrop = v })
        .Add("MinAgreement", Syntax.Optional(Syntax.Number(0, 1)), SettingScope.Model,
            "Fail when, on a gated output with a class axis, the compressed model's argmax agrees with the original's at less than this fraction of positions (samples, time steps, pixels).",
            o => o.MinAgreement, (o, v) => o with { MinAgreement = v })
        .Add("MaxLatencyRatio", Syntax.Optional(Syntax.Number(0, 100, minOpen: true)), SettingScope.Model,
            "Fail when compressed p50 latency / original p50 latency exceeds this.",
            o => o.MaxLatencyRatio, (o, v) => o with { MaxLatencyRatio = v })
        .Add("MaxLatencyMs", Syntax.Optional(Syntax.Number(0, 1e6, minOpen: true)), SettingScope.Model,
            "Fail when the compressed model's p50 batch latency exceeds this many milliseconds.",
            o => o.MaxLatencyMs, (o, v) => o with { MaxLatencyMs = v })
        .Add("MaxSizeRatio", Syntax.Optional(Syntax.Number(0, 10, minOpen: true)), SettingScope.Model,
            "Fail when compressed bytes / original bytes exceeds this.",
            o => o.MaxSizeRatio, (o, v) => o with { MaxSizeRatio = v })
        .Add("SizeMeasure", Syntax.Enum(("file", SizeMeasure.File), ("deflate", SizeMeasure.Deflate), ("brotli", SizeMeasure.Brotli)), SettingScope.Model,
            "Which size MaxSizeRatio compares: file = bytes as stored; deflate = after Deflate (zip: NuGet, APK, MSIX); brotli = after Brotli at quality 11 (9 for models over 1 MiB; container layers, web). The report shows all three.",
            o => o.SizeMeasure, (o, v) => o with { SizeMeasure = v })
        .Add("MinCosine", Syntax.Optional(Syntax.Number(-1, 1)), SettingScope.Model,
            "Fail when a gated output's mean cosine similarity with the original's (per sample) is below this. On by default (0.9) so a model whose outputs collapsed never passes; -1 turns it off.",
            o => o.MinCosine, (o, v) => o with { MinCosine = v })
        .Add("MinSnrDb", Syntax.Optional(Syntax.Number(-1000, 1000)), SettingScope.Model,
            "Fail when a gated output's signal-to-noise ratio, 10·log10(Σ original² / Σ error²), is below this many dB.",
            o => o.MinSnrDb, (o, v) => o with { MinSnrDb = v })
        .Add("MaxAbsError", Syntax.Optional(Syntax.Number(0, 1e30)), SettingScope.Model,
            "Fail when any value of a gated output differs from the original's by more than this.",
            o => o.MaxAbsError, (o, v) => o with { MaxAbsError = v })
        .Add("MinDecisionAgreement", Syntax.Optional(Syntax.Number(0, 1)), SettingScope.Model,
            "Fail when, on a gated output whose values lie in [0, 1], fewer than this fraction of values fall on the same side of DecisionThreshold as the original's.",
            o => o.MinDecisionAgreement, (o, v) => o with { MinDecisionAgreement = v })
        .Add("MinMaskIou", Syntax.Optional(Syntax.Number(0, 1)), SettingScope.Model,
            "Fail when, on a gated output whose values lie in [0, 1], the intersection over union of the masks p > DecisionThreshold of original and compressed, pooled over the validation set, is below this (a detector's text or object mask).",
            o => o.MinMaskIou, (o, v) => o with { MinMaskIou = v })
        .Add("DecisionThreshold", Syntax.Number(0, 1, minOpen: true, maxOpen: true), SettingScope.Model,
            "The probability above which a value of a [0, 1] output is on, for MinDecisionAgreement and MinMaskIou (use the threshold of the model's own post-processing).",
            o => o.DecisionThreshold, (o, v) => o with { DecisionThreshold = v })
        .Add("Outputs", Syntax.Custom<IReadOnlyList<string>>("name;name",
                raw => raw.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                v => string.Join(";", v), () => new() { ["type"] = "string" }), SettingScope.Model,
            "The model outputs the gate compares (';'-separated; empty: all). The first is scored against the labels.",
            o => o.Outputs, (o, v) => o with { Outputs = v })
        .Add("TopK", Syntax.Integer(1, 1000), SettingScope.Model,
            "k of the top-k accuracy reported next to top-1.",
            o => o.TopK, (o, v) => o with { TopK = v })
        .Add("LatencyRounds", Syntax.Integer(1, 1000), SettingScope.Model,
            "Interleaved original/compressed latency rounds.",
            o => o.LatencyRounds, (o, v) => o with { LatencyRounds = v })
        .Add("LatencyBatchSize", Syntax.Optional(Syntax.Integer(1, 65536)), SettingScope.Model,
            "Samples per latency run (empty: BatchSize, but 1 for a model over 64 MiB, whose rounds at BatchSize would take minutes). The report names the batch it used.",
            o => o.LatencyBatchSize, (o, v) => o with { LatencyBatchSize = v })
        .Add("ValidationSamples", Syntax.Optional(Syntax.Integer(1, int.MaxValue)), SettingScope.Model,
            "The gate judges at most this many validation samples, the first ones (empty: all). A budget for models whose every sample takes seconds; the report gives the count judged.",
            o => o.ValidationSamples, (o, v) => o with { ValidationSamples = v });

    private static IEnumerable<string> Conflicts(GateOptions o, CompressionPolicy policy)
    {
        var thresholds = new[] { ("MinAccuracy", o.MinAccuracy), ("MaxAccuracyDrop", o.MaxAccuracyDrop), ("MinAgreement", o.MinAgreement), ("MaxLatencyRatio", o.MaxLatencyRatio), ("MaxLatencyMs", o.MaxLatencyMs),
                ("MinCosine", o.MinCosine == DefaultMinCosine ? null : o.MinCosine), ("MinSnrDb", o.MinSnrDb), ("MaxAbsError", o.MaxAbsError), ("MinDecisionAgreement", o.MinDecisionAgreement), ("MinMaskIou", o.MinMaskIou) }
            .Where(t => t.Item2 is not null).Select(t => t.Item1).ToList();
        if (thresholds.Count > 0 && policy.Data.ValidationData is null)
            yield return $"{string.Join(", ", thresholds)} need ValidationData to measure against";
    }
}
