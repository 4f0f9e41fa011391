using ModelCompression.Policy;

namespace ModelCompression.Evaluation;

/// <summary>The gate's thresholds (null = not checked) and how it measures.</summary>
public sealed record GateOptions : IOptions<GateOptions>
{
    public double? MinAccuracy { get; init; }
    public double? MaxAccuracyDrop { get; init; }
    public double? MinAgreement { get; init; }
    public double? MaxLatencyRatio { get; init; }
    public double? MaxLatencyMs { get; init; }
    public double? MaxSizeRatio { get; init; }
    public int TopK { get; init; } = 5;
    public int LatencyRounds { get; init; } = 9;

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
            "Fail when the compressed model agrees with the original's top-1 on less than this fraction.",
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
        .Add("TopK", Syntax.Integer(1, 1000), SettingScope.Model,
            "k of the top-k accuracy reported next to top-1.",
            o => o.TopK, (o, v) => o with { TopK = v })
        .Add("LatencyRounds", Syntax.Integer(1, 1000), SettingScope.Model,
            "Interleaved original/compressed latency rounds.",
            o => o.LatencyRounds, (o, v) => o with { LatencyRounds = v });

    private static IEnumerable<string> Conflicts(GateOptions o, CompressionPolicy policy)
    {
        var thresholds = new[] { ("MinAccuracy", o.MinAccuracy), ("MaxAccuracyDrop", o.MaxAccuracyDrop), ("MinAgreement", o.MinAgreement), ("MaxLatencyRatio", o.MaxLatencyRatio), ("MaxLatencyMs", o.MaxLatencyMs) }
            .Where(t => t.Item2 is not null).Select(t => t.Item1).ToList();
        if (thresholds.Count > 0 && policy.Data.ValidationData is null)
            yield return $"{string.Join(", ", thresholds)} need ValidationData to measure against";
    }
}
