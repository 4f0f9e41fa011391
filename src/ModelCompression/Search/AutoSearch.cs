using System.Globalization;
using ModelCompression.Evaluation;
using ModelCompression.Policy;

namespace ModelCompression.Search;

/// <summary>What <c>Auto</c> minimizes: the size the gate measures (SizeMeasure), the latency ratio, or their product.</summary>
public enum SearchObjective { Size, Latency, SizeLatency }

/// <summary>One trial of the search, as the report shows it.</summary>
public sealed record AutoTrial(int Index, IReadOnlyList<double> Knobs, double Objective, double? SizeRatio, double? LatencyRatio, double? Accuracy, double? AccuracyDrop,
    IReadOnlyDictionary<string, double> Constraints, IReadOnlyDictionary<string, double> Targets, bool Feasible, string Layers, double Seconds)
{
    /// <summary>The full per-layer settings (<see cref="AutoSearch.Key"/>); not in the report, which has them for the chosen trial.</summary>
    [System.Text.Json.Serialization.JsonIgnore] public string Key { get; init; } = "";
}

/// <summary>
/// Auto: the gate's thresholds become the constraints of <see cref="ConstrainedBayesianSearch"/> over the knobs of
/// <see cref="AutoPolicy"/>, and the objective is minimized. Each trial is built and judged on a fixed subset of the
/// validation data (latency measured only when the objective or a constraint needs it); the caller judges the winner
/// on all of it.
/// </summary>
public static class AutoSearch
{
    /// <summary>One constraint of the search: its name, how to read it from a trial, its limit, and the uncompressed model's value.</summary>
    internal sealed record Measure(string Name, Func<GateMeasurements, double?> Value, double Limit, double Start);

    /// <summary>The gate thresholds that are set, each as "value ≤ limit".</summary>
    internal static IReadOnlyList<Measure> Constraints(GateOptions gate)
    {
        var list = new List<Measure>();
        if (gate.MaxAccuracyDrop is { } drop) list.Add(new("accuracy drop", m => m.Original?.Top1 - m.Compressed?.Top1, drop, 0));
        if (gate.MinAccuracy is { } min) list.Add(new("accuracy", m => -m.Compressed?.Top1, -min, double.NaN));
        if (gate.MinAgreement is { } agreement) list.Add(new("1 - agreement", m => Worst(m, o => o.Agreement is { } a ? 1 - a : null), 1 - agreement, 0));
        if (gate.MinCosine is { } cosine && cosine > -1) list.Add(new("1 - cosine", m => Worst(m, o => 1 - o.Cosine), 1 - cosine, 0));
        if (gate.MinSnrDb is { } snr) list.Add(new("-SNR dB", m => Worst(m, o => -o.SnrDb), -snr, double.NegativeInfinity));
        if (gate.MinDecisionAgreement is { } decisions) list.Add(new("1 - decision agreement", m => Worst(m, o => o.DecisionAgreement is { } d ? 1 - d : null), 1 - decisions, 0));
        if (gate.MinMaskIou is { } iou) list.Add(new("1 - mask IoU", m => Worst(m, o => o.MaskIou is { } v ? 1 - v : null), 1 - iou, 0));
        if (gate.MaxLatencyRatio is { } latency) list.Add(new("latency ratio", m => m.LatencyRatio, latency, 1));
        if (gate.MaxSizeRatio is { } size) list.Add(new("size ratio", m => SizeRatio(m, gate.SizeMeasure), size, 1));
        return list;
    }

    private static double? Worst(GateMeasurements m, Func<OutputFidelity, double?> value)
    {
        var values = m.Outputs.Select(value).Where(v => v is not null).Select(v => v!.Value).ToList();
        return values.Count == 0 ? null : values.Max();
    }

    internal static double SizeRatio(GateMeasurements m, SizeMeasure measure)
    {
        var (original, compressed) = m.Sizes(measure);
        return original == 0 ? double.NaN : (double)compressed / original;
    }

    /// <summary>Whether trials must time the models.</summary>
    public static bool NeedsLatency(SearchOptions options, GateOptions gate) => options.Objective != SearchObjective.Size || gate.MaxLatencyRatio is not null;

    internal static double Objective(GateMeasurements m, SearchObjective objective, SizeMeasure measure) => objective switch
    {
        SearchObjective.Size => SizeRatio(m, measure),
        SearchObjective.Latency => m.LatencyRatio ?? double.NaN,
        _ => SizeRatio(m, measure) * (m.LatencyRatio ?? double.NaN),
    };

    /// <summary>
    /// Runs the search; <paramref name="evaluate"/> builds and measures one per-layer policy on the search subset.
    /// Returns every trial and the feasible ones best first (at most <paramref name="keep"/>), as per-layer policies.
    /// </summary>
    internal static (IReadOnlyList<AutoTrial> Trials, IReadOnlyList<LayerPolicy> Ranked, AutoTrial? Closest) Run(AutoPolicy space, GateOptions gate, SearchOptions options, int seed,
        Func<LayerPolicy, GateMeasurements> evaluate, CancellationToken cancellation, int keep = 3)
    {
        var measures = Constraints(gate);
        var constraints = measures.Select(c => new SearchConstraint(c.Name, c.Limit, c.Start)).ToList();
        var log = new List<AutoTrial>();
        var policies = new List<LayerPolicy>();
        var measured = new Dictionary<string, GateMeasurements>(StringComparer.Ordinal);
        var started = DateTime.UtcNow;
        var result = ConstrainedBayesianSearch.Run(AutoPolicy.Dimensions, constraints, options.SearchTrials,
            options.SearchSeconds is { } s ? TimeSpan.FromSeconds(s) : null, seed, knobs =>
            {
                var layers = space.Choose(knobs);
                policies.Add(layers);
                // Nearby knobs often give the same per-layer settings: built and measured once.
                var key = Key(layers);
                if (!measured.TryGetValue(key, out var m)) measured[key] = m = evaluate(layers);
                var values = measures.Select(c => c.Value(m) ?? double.NaN).ToList();
                var objective = Objective(m, options.Objective, gate.SizeMeasure);
                var t = log.Count;
                var targets = constraints.Select(c => ConstrainedBayesianSearch.Target(c, t, options.SearchTrials)).ToList();
                log.Add(new AutoTrial(t, knobs, objective, SizeRatio(m, gate.SizeMeasure), m.LatencyRatio, m.Compressed?.Top1, m.Original?.Top1 - m.Compressed?.Top1,
                    measures.Select((c, k) => (c.Name, values[k])).ToDictionary(x => x.Name, x => x.Item2),
                    measures.Select((c, k) => (c.Name, targets[k])).ToDictionary(x => x.Name, x => x.Item2),
                    double.IsFinite(objective) && values.Select((v, k) => double.IsFinite(v) && v <= measures[k].Limit + ConstrainedBayesianSearch.Tolerance).All(x => x),
                    Summarize(layers), (DateTime.UtcNow - started).TotalSeconds) { Key = key });
                return new Observation(objective, values);
            }, cancellation, space.Anchors());
        var ranked = result.Trials.Where(t => t.Feasible).OrderBy(t => t.Outcome.Objective).ThenBy(t => t.Index)
            .Select(t => policies[t.Index]).Distinct().Take(keep).ToList();
        // Nothing met every limit: the trial that came closest (smallest total relative violation) is what the gate sees.
        var closest = ranked.Count > 0 ? null : log.OrderBy(t => Violation(t, measures)).ThenBy(t => t.Index).FirstOrDefault();
        if (closest is not null) ranked = [policies[closest.Index]];
        return (log, ranked, closest);
    }

    private static double Violation(AutoTrial t, IReadOnlyList<Measure> measures) =>
        measures.Sum(c => t.Constraints[c.Name] is var v && double.IsFinite(v) ? Math.Max(0, v - c.Limit) / Math.Max(Math.Abs(c.Limit), 1e-3) : 1e6);

    /// <summary>The full text of a per-layer policy: equal text, equal candidate.</summary>
    internal static string Key(LayerPolicy layers) => string.Join("\n", layers.Layers.Select(l => $"{l.Layer}: {l.Describe()}"));

    /// <summary>A short text of a per-layer policy: how many layers got each setting.</summary>
    public static string Summarize(LayerPolicy layers) => string.Join("; ", layers.Layers
        .GroupBy(l => l.Describe(), StringComparer.Ordinal).OrderByDescending(g => g.Count()).ThenBy(g => g.Key, StringComparer.Ordinal)
        .Select(g => $"{g.Count()}× {g.Key}"));

    internal static string Describe(AutoTrial t) =>
        $"trial {t.Index + 1}: objective {Number(t.Objective)}, " + string.Join(", ", t.Constraints.Select(c => $"{c.Key} {Number(c.Value)}"));

    private static string Number(double v) => v.ToString("0.####", CultureInfo.InvariantCulture);
}
