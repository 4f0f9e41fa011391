using ModelCompression.Evaluation;
using ModelCompression.Policy;
using ModelCompression.Pruning;
using ModelCompression.Quantization;

namespace ModelCompression.Search;

/// <summary>Auto: a per-layer policy chosen by constrained Bayesian optimization under the gate's thresholds (see docs/auto-policy.md).</summary>
public sealed record SearchOptions : IOptions<SearchOptions>
{
    public bool Auto { get; init; }
    public SearchObjective Objective { get; init; } = SearchObjective.Size;
    public int SearchTrials { get; init; } = DefaultTrials;
    // With the three anchors first, 10 trials fit the fixtures' search in about 2 minutes on 2 cores (docs/auto-policy.md).
    public const int DefaultTrials = 10;
    public double? SearchSeconds { get; init; }
    public int SearchSamples { get; init; } = 2000;

    public static OptionsGroup<SearchOptions> Group { get; } = new OptionsGroup<SearchOptions>("Auto", 74,
        "A per-layer policy chosen for you: the gate's thresholds are the constraints, the objective is minimized.", isTechnique: false)
    {
        Conflicting = (o, p) => Conflicts(o, p),
    }
        .Add("Auto", Syntax.Bool, SettingScope.Model,
            "Choose Sparsity and Quantize per layer: per-layer sensitivities from the calibration data, then constrained Bayesian optimization (Tung & Mori, 2018) over three knobs (the overall sparsity, how its spread over the layers follows their sensitivities, and an error budget for the number format), each trial built and gated on SearchSamples validation samples, the best one gated on all of them. Needs ValidationData and at least one threshold (MinCosine counts); CalibrationData makes it data-aware. The choice is written to the lock file; later runs apply it without searching.",
            o => o.Auto, (o, v) => o with { Auto = v })
        .Add("Objective", Syntax.Enum(("size", SearchObjective.Size), ("latency", SearchObjective.Latency), ("size-latency", SearchObjective.SizeLatency)), SettingScope.Model,
            "What Auto minimizes: size (the size SizeMeasure names), latency (p50 ratio at BatchSize; every trial is timed), or size-latency (their product).",
            o => o.Objective, (o, v) => o with { Objective = v })
        .Add("SearchTrials", Syntax.Integer(1, 500), SettingScope.Model,
            "Auto: how many candidate policies are built and gated (the search's budget; the result depends only on it, the data and Seed).",
            o => o.SearchTrials, (o, v) => o with { SearchTrials = v })
        .Add("SearchSeconds", Syntax.Optional(Syntax.Number(0, 1e6, minOpen: true)), SettingScope.Model,
            "Auto: stop starting trials after this many seconds (at least one runs). A time budget makes the result depend on the machine's speed; the lock file then keeps it.",
            o => o.SearchSeconds, (o, v) => o with { SearchSeconds = v })
        .Add("SearchSamples", Syntax.Integer(1, int.MaxValue), SettingScope.Model,
            "Auto: validation samples each trial is judged on (the first ones); the chosen policy is judged on all of them.",
            o => o.SearchSamples, (o, v) => o with { SearchSamples = v });

    private static IEnumerable<string> Conflicts(SearchOptions o, CompressionPolicy policy)
    {
        if (!o.Auto) yield break;
        if (policy.Data.ValidationData is null) yield return "Auto needs ValidationData: every candidate is judged on it";
        var chosen = policy.Values.Keys.Where(s => s.Group == PruningOptions.Group && s.Name == "Sparsity" || s.Group == QuantizationOptions.Group && s.Name == "Quantize").Select(s => s.Name).ToList();
        if (chosen.Count > 0) yield return $"Auto chooses {string.Join(" and ", chosen)} per layer: remove {(chosen.Count > 1 ? "them" : "it")} or turn Auto off";
        var gate = policy.Get<GateOptions>();
        if (AutoSearch.Constraints(gate).Count == 0) yield return "Auto needs a threshold to respect (MaxAccuracyDrop, MinAgreement, MinCosine …): with none, every candidate passes";
    }
}
