using System.Diagnostics;
using System.Globalization;
using ModelCompression.Evaluation;
using ModelCompression.LowRank;
using ModelCompression.Passes;
using ModelCompression.Policy;
using ModelCompression.Pruning;
using ModelCompression.Quantization;
using ModelCompression.WeightSharing;

namespace ModelCompression.Search;

/// <summary>One gate run of the fallback: which layers it changed, and what the gate said.</summary>
public sealed record FallbackRound(int Round, string Step, IReadOnlyList<string> Changed, bool AccuracyPassed, double? Accuracy, long CompressedBytes,
    IReadOnlyList<string> Failures, double Milliseconds);

/// <summary>A layer the fallback moved to a milder setting: from what, to what, and why it was chosen.</summary>
public sealed record RevertedLayer(string Layer, int SensitivityRank, double? ReconstructionError, string From, string To, string Reason);

/// <summary>How the per-layer settings of a run were chosen; in the report as <c>search</c>.</summary>
public sealed record SearchSummary
{
    /// <summary>fallback (rounds ran), lock (a matching lock was applied), stale-lock (a stale lock was applied as is), none (nothing to do).</summary>
    public required string Mode { get; init; }
    public string? LockFile { get; init; }
    /// <summary>written, unchanged, matched, stale: …, unreadable: …, not written (gate failed).</summary>
    public string? LockStatus { get; init; }
    /// <summary>Every gate run the fallback made, the first (the policy as given) included; none when a lock was applied.</summary>
    public IReadOnlyList<FallbackRound> Rounds { get; init; } = [];
    public IReadOnlyList<RevertedLayer> Reverted { get; init; } = [];
    /// <summary>The per-layer settings the output was made with (policy-file format entries).</summary>
    public IReadOnlyList<LayerChoice> Layers { get; init; } = [];
    public int GateRuns => Rounds.Count;
    public double Milliseconds { get; init; }
}

/// <summary>What the fallback needs from one candidate: the gate's verdict and measurements.</summary>
public sealed record TrialOutcome(GateVerdict Verdict, GateMeasurements Measurements);

/// <summary>
/// Accuracy-aware fallback. When the candidate misses an accuracy threshold, the compressed layers are ranked by
/// sensitivity (their largest reconstruction error, worst first) and the top k move to a milder rung — first a
/// milder setting of the same technique (half the sparsity, int8 instead of int4/binary/ternary, a 256-entry
/// codebook, twice the rank), then float (<c>Excluded</c>). Within a rung the smallest passing k is found by
/// bisection (assuming more reverted layers never hurts; every chosen k is a measured pass), so a rung costs
/// 1 + ⌈log₂ n⌉ gate runs. The candidate generator and the per-layer choices are shared with a future search.
/// </summary>
public static class AccuracyFallback
{
    /// <summary>Gate failures the fallback can fix: accuracy and fidelity, not size or latency (reverting only makes those worse).</summary>
    public static bool IsAccuracyFailure(GateFailure failure) => failure.Metric is not ("latency-ratio" or "latency-ms" or "size-ratio");

    public static bool AccuracyPassed(GateVerdict verdict) => !verdict.Failures.Any(IsAccuracyFailure);

    /// <summary>A layer the first run compressed, with its sensitivity and its rungs (mildest change first, float last).</summary>
    public sealed record Candidate(string Layer, double? Error, string Current, IReadOnlyList<LayerChoice> Rungs);

    /// <summary>The compressed layers, most sensitive first (largest reconstruction error; layers without one last, in pipeline order).</summary>
    public static IReadOnlyList<Candidate> Rank(IReadOnlyList<LayerRecord> records, CompressionPolicy policy)
    {
        var changed = records.Where(r => r.ReconstructionError is not null || r.Bits is not null || r.Rank is not null || r.Sparsity is > 0)
            .GroupBy(r => r.Layer, StringComparer.Ordinal)
            .Select((g, order) => (Layer: g.Key, Order: order, Error: g.Max(r => r.ReconstructionError)))
            .OrderByDescending(l => l.Error ?? double.NegativeInfinity).ThenBy(l => l.Order)
            .ToList();
        return changed.Select(l => new Candidate(l.Layer, l.Error, Current(policy, l.Layer), Rungs(policy, l.Layer))).ToList();
    }

    /// <summary>
    /// A layer's rungs, mildest change first: each technique on the layer steps down its own ladder (sparsity keeps
    /// twice, then four times the weights it kept: 0.9 → 0.8 → 0.6; int4, binary and ternary → int8; a codebook →
    /// 256 entries; a rank ratio doubles), a technique whose ladder is shorter staying on its last step; float
    /// (<c>Excluded</c>) is the last rung of every layer.
    /// </summary>
    public static IReadOnlyList<LayerChoice> Rungs(CompressionPolicy policy, string layer)
    {
        var ladders = new List<(string Setting, IReadOnlyList<string> Values)>();
        var pruning = policy.For<PruningOptions>(layer).Options;
        if (policy.Requests<PruningOptions>() && pruning.Sparsity > 0 && pruning.SparsityPattern is null)
            ladders.Add(("Sparsity", SparsityLadder(pruning.Sparsity)));
        var structured = policy.For<StructuredPruningOptions>(layer).Options;
        if (policy.Requests<StructuredPruningOptions>() && structured.StructuredSparsity > 0)
            ladders.Add(("StructuredSparsity", SparsityLadder(structured.StructuredSparsity)));
        var quantize = policy.For<QuantizationOptions>(layer).Options.Quantize;
        if (quantize is QuantizeMode.Int4 or QuantizeMode.Binary or QuantizeMode.Ternary)
            ladders.Add(("Quantize", [policy.Data.CalibrationData is null ? "int8-dynamic" : "int8"]));
        if (policy.For<CodebookOptions>(layer).Options.Codebook is { } k && k < 256)
            ladders.Add(("Codebook", ["256"]));
        if (policy.For<LowRankOptions>(layer).Options.Rank is { IsRatio: true, Value: < 0.5 } rank)
            ladders.Add(("Rank", [Number(rank.Value * 2), .. rank.Value * 4 < 1 ? new[] { Number(rank.Value * 4) } : []]));
        ladders.RemoveAll(l => l.Values.Count == 0);
        var rungs = new List<LayerChoice>();
        var steps = ladders.Select(l => l.Values.Count).DefaultIfEmpty(0).Max();
        for (var r = 0; r < steps; r++)
            rungs.Add(new LayerChoice(layer, new SortedDictionary<string, string>(ladders.ToDictionary(l => l.Setting, l => l.Values[Math.Min(r, l.Values.Count - 1)]), StringComparer.Ordinal)));
        rungs.Add(new LayerChoice(layer, new SortedDictionary<string, string>(StringComparer.Ordinal) { ["Excluded"] = "true" }));
        return rungs;
    }

    /// <summary>Milder sparsities: keep twice, then four times as many weights, while at least a quarter are still pruned (0.9 → 0.8, 0.6; 0.5 → none).</summary>
    private static IReadOnlyList<string> SparsityLadder(double sparsity)
    {
        var ladder = new List<string>();
        for (var factor = 2; factor <= 4; factor *= 2)
        {
            var milder = Math.Round(1 - (1 - sparsity) * factor, 2);
            if (milder >= 0.25) ladder.Add(Number(milder));
        }
        return ladder;
    }

    private static string Current(CompressionPolicy policy, string layer)
    {
        var parts = new List<string>();
        var pruning = policy.For<PruningOptions>(layer).Options;
        if (pruning.Sparsity > 0) parts.Add($"Sparsity={Number(pruning.Sparsity)}");
        if (pruning.SparsityPattern is { } nm) parts.Add($"SparsityPattern={nm}");
        var structured = policy.For<StructuredPruningOptions>(layer).Options.StructuredSparsity;
        if (structured > 0) parts.Add($"StructuredSparsity={Number(structured)}");
        var quantize = policy.For<QuantizationOptions>(layer).Options.Quantize;
        if (quantize != QuantizeMode.None) parts.Add($"Quantize={PolicySettings.FormatEnum(quantize)}");
        if (policy.For<CodebookOptions>(layer).Options.Codebook is { } k) parts.Add($"Codebook={k}");
        if (policy.For<LowRankOptions>(layer).Options.Rank is { } rank) parts.Add($"Rank={rank}");
        return parts.Count == 0 ? "as compressed" : string.Join(", ", parts);
    }

    private static string Number(double value) => value.ToString("0.###", CultureInfo.InvariantCulture);

    /// <summary>
    /// Runs the fallback after a first candidate missed an accuracy threshold. <paramref name="evaluate"/> builds and
    /// gates the policy with the given per-layer choices. Returns the choices of the last candidate that passed the
    /// accuracy thresholds (null when none did), with every round and the reverted layers.
    /// </summary>
    public static (LayerPolicy? Chosen, IReadOnlyList<FallbackRound> Rounds, IReadOnlyList<RevertedLayer> Reverted) Run(
        IReadOnlyList<Candidate> ranked, TrialOutcome first, double firstMilliseconds, Func<LayerPolicy, TrialOutcome> evaluate)
    {
        var rounds = new List<FallbackRound> { Round(0, "as given", [], first, firstMilliseconds) };
        if (ranked.Count == 0) return (null, rounds, []);
        var n = ranked.Count;
        var maxRungs = ranked.Max(c => c.Rungs.Count);
        // The top k layers at this rung; the others at the rung before (all n there failed, so none is asked to give
        // back more than that), or as given on the first rung.
        LayerPolicy Choices(int rung, int k) => new(ranked.Select((c, i) => i < k ? At(c, rung) : rung == 0 ? null : At(c, rung - 1)).OfType<LayerChoice>().ToList());
        static LayerChoice At(Candidate c, int rung) => c.Rungs[Math.Min(rung, c.Rungs.Count - 1)];

        bool Try(int rung, int k, string step)
        {
            var stopwatch = Stopwatch.StartNew();
            var outcome = evaluate(Choices(rung, k));
            rounds.Add(Round(rounds.Count, step, ranked.Take(k).Select(c => c.Layer).ToList(), outcome, stopwatch.Elapsed.TotalMilliseconds));
            return AccuracyPassed(outcome.Verdict);
        }

        for (var rung = 0; rung < maxRungs; rung++)
        {
            var name = rung == maxRungs - 1 ? "float" : $"milder {rung + 1}";
            // All n layers at this rung first: if even that fails, a smaller k cannot pass either (the next rung is tried).
            if (!Try(rung, n, $"{name}: all {n}")) continue;
            int lo = 1, hi = n; // hi passes
            while (lo < hi)
            {
                var mid = (lo + hi) / 2;
                if (Try(rung, mid, $"{name}: top {mid}")) hi = mid; else lo = mid + 1;
            }
            var chosen = Choices(rung, hi);
            var reverted = ranked.Take(hi).Select((c, i) =>
            {
                var to = At(c, rung);
                var reason = $"sensitivity rank {i + 1} of {n}" + (c.Error is { } e ? $" (reconstruction error {e.ToString("0.###", CultureInfo.InvariantCulture)})" : "")
                    + $"; the gate passed with the top {hi} at the {name} rung" + (hi > 1 ? $" and failed with the top {hi - 1}" : "") ;
                return new RevertedLayer(c.Layer, i + 1, c.Error, c.Current, to.Settings.ContainsKey("Excluded") ? "float (Excluded=true)" : to.Describe(), reason);
            }).Concat(rung == 0 ? [] : ranked.Skip(hi).Select((c, i) =>
            {
                var to = At(c, rung - 1);
                return new RevertedLayer(c.Layer, hi + i + 1, c.Error, c.Current, to.Settings.ContainsKey("Excluded") ? "float (Excluded=true)" : to.Describe(),
                    $"sensitivity rank {hi + i + 1} of {n}; held at the previous rung (milder {rung}), not its given setting: with all {n} layers only that far back the gate still failed");
            })).ToList();
            return (chosen, rounds, reverted);
        }
        return (null, rounds, []);
    }

    private static FallbackRound Round(int index, string step, IReadOnlyList<string> changed, TrialOutcome outcome, double ms) =>
        new(index, step, changed, AccuracyPassed(outcome.Verdict), outcome.Measurements.Compressed?.Top1, outcome.Measurements.CompressedBytes,
            outcome.Verdict.Failures.Select(f => $"{f.Code} {f.Message}").ToList(), ms);
}
