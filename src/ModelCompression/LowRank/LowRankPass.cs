using System.Globalization;
using ModelCompression.Passes;
using ModelCompression.Policy;

namespace ModelCompression.LowRank;

/// <summary>
/// Low-rank factorization of constant-weight layers: Gemm/MatMul (and 1×1 Conv) by truncated SVD into two
/// nodes, k×k Conv by Tucker-2 or spatial separation (ConvDecomposition). Ranks come from Rank (ratio or absolute),
/// RankEnergy (kept spectral energy) or, for the layers neither pins, a ParameterBudget shared out by
/// <see cref="RankAllocator"/>. LowRankMethod=activation-aware takes the spectra in the metric of each layer's
/// inputs on the calibration data (running XᵀX only), so the kept rank minimizes the output error. A layer whose
/// factors would not save enough parameters is left dense and the report says why.
/// </summary>
public sealed class LowRankPass : ICompressionPass
{
    public string Name => "low-rank";
    public PassStage Stage => PassStage.Structural;
    public bool IsRequested(CompressionPolicy policy) => policy.AnyLayer(p => p.Rank is not null || p.RankEnergy is not null || p.ParameterBudget is not null);

    private enum RankSource { Rank, Energy, Budget }

    private sealed record Plan(LayerFactorization Factorization, CompressionPolicy Policy, RankSource Source)
    {
        public bool ActivationAware => Policy.LowRankMethod == LowRankMethod.ActivationAware;
        public InputMoments? Moments { get; set; }
        public string? FallbackNote { get; set; }
    }

    public void Apply(CompressionContext context)
    {
        var plans = new List<Plan>();
        foreach (var layer in WeightedLayer.Find(context.Graph))
        {
            var policy = context.PolicyFor(layer.Node);
            if (policy.Excluded || SourceOf(policy, context.Policy) is not { } source) continue;
            if (layer.OpType == "Conv" && policy.ConvDecomposition == ConvDecomposition.None) continue;
            var weight = Array.ConvertAll(layer.ReadMatrix(context.Model), v => (double)v);
            var (factorization, reason) = Create(layer, weight, policy);
            if (factorization is null)
            {
                Skip(context, layer, reason!);
                continue;
            }
            plans.Add(new Plan(factorization, policy, source));
        }
        if (plans.Count == 0) return;

        CaptureMoments(context, plans);
        for (var i = 0; i < plans.Count; i++)
        {
            context.Cancellation.ThrowIfCancellationRequested();
            var plan = plans[i];
            var f = plan.Factorization;
            var whitening = plan.Moments is { } moments ? DenseMath.DampedCholesky(moments.Sum, moments.Features, plan.Policy.LowRankDamping) : null;
            var fixedRanks = plan.Source == RankSource.Rank ? f.Clamp(f.RanksFor(plan.Policy.Rank!.Value)) : null;
            f.Decompose(whitening, fixedRanks, Seed(context.Policy.Seed, f.Layer.Name));
            context.Progress?.Report((Name, 0.5 * (i + 1) / plans.Count));
        }

        var ranks = ChooseRanks(context.Policy, plans, out var budgetNote);
        for (var i = 0; i < plans.Count; i++)
        {
            context.Cancellation.ThrowIfCancellationRequested();
            Rewrite(context, plans[i], ranks[i], budgetNote);
            context.Progress?.Report((Name, 0.5 + 0.5 * (i + 1) / plans.Count));
        }
    }

    /// <summary>
    /// Where a layer's rank comes from. A per-layer override beats the global setting: when the effective policy
    /// carries both Rank and RankEnergy, the one that differs from the global policy is the override.
    /// </summary>
    private static RankSource? SourceOf(CompressionPolicy layer, CompressionPolicy global)
    {
        if (layer.Rank is not null && (layer.RankEnergy is null || layer.Rank != global.Rank)) return RankSource.Rank;
        if (layer.RankEnergy is not null) return RankSource.Energy;
        if (layer.ParameterBudget is not null) return RankSource.Budget;
        return null;
    }

    private static (LayerFactorization? Factorization, string? Reason) Create(WeightedLayer layer, double[] weight, CompressionPolicy policy)
    {
        if (weight.Any(v => !double.IsFinite(v))) return (null, "weight has NaN or infinite values");
        if (layer.OpType != "Conv") return (new MatrixFactorization(layer, weight), null);
        if (layer.Group != 1) return (null, $"grouped convolution (group={layer.Group}): only group=1 is decomposed");
        var kernel = layer.WeightShape[2..];
        if (kernel.All(k => k == 1)) return (new MatrixFactorization(layer, weight), null);
        if (policy.ConvDecomposition == ConvDecomposition.Tucker2) return (new Tucker2Factorization(layer, weight), null);
        if (kernel.Length != 2 || kernel[0] == 1 || kernel[1] == 1)
            return (null, $"kernel [{string.Join("x", kernel)}]: spatial separation needs a 2-D kernel larger than 1 in both directions");
        return (new SpatialFactorization(layer, weight), null);
    }

    /// <summary>One pass over the calibration data accumulates XᵀX for every distinct input the activation-aware layers read.</summary>
    private void CaptureMoments(CompressionContext context, List<Plan> plans)
    {
        var wanted = plans.Where(p => p.ActivationAware).ToList();
        if (wanted.Count == 0) return;
        var moments = new Dictionary<(string Value, FeatureAxis Axis), InputMoments>();
        foreach (var plan in wanted)
        {
            var key = (plan.Factorization.Layer.InputName, plan.Factorization.Axis);
            if (!moments.TryGetValue(key, out var m)) moments[key] = m = new InputMoments(plan.Factorization.InputFeatures, key.Axis);
            plan.Moments = m;
        }
        var mismatched = new HashSet<(string, FeatureAxis)>();
        var names = moments.Keys.Select(k => k.Value).Distinct().ToList();
        context.CaptureActivations(Name, names, batch =>
        {
            foreach (var (key, m) in moments)
                if (!mismatched.Contains(key) && batch.TryGetValue(key.Value, out var tensor) && !m.Add(tensor)) mismatched.Add(key);
        });
        foreach (var plan in wanted)
        {
            var key = (plan.Factorization.Layer.InputName, plan.Factorization.Axis);
            if (!mismatched.Contains(key) && plan.Moments!.Samples > 0) continue;
            plan.Moments = null;
            plan.FallbackNote = $"input '{key.InputName}' could not be captured as [.., {plan.Factorization.InputFeatures}] features: plain SVD used";
        }
    }

    private static IReadOnlyList<int[]?> ChooseRanks(CompressionPolicy global, List<Plan> plans, out string? budgetNote)
    {
        var ranks = new int[]?[plans.Count];
        var budgeted = new List<int>();
        for (var i = 0; i < plans.Count; i++)
        {
            var plan = plans[i];
            var f = plan.Factorization;
            switch (plan.Source)
            {
                case RankSource.Rank: ranks[i] = f.Clamp(f.RanksFor(plan.Policy.Rank!.Value)); break;
                case RankSource.Energy: ranks[i] = f.Clamp(f.RanksForEnergy(plan.Policy.RankEnergy!.Value)); break;
                default: budgeted.Add(i); break;
            }
        }
        budgetNote = null;
        if (budgeted.Count == 0) return ranks;
        var layers = budgeted.Select(i => plans[i].Factorization).ToList();
        var dense = layers.Sum(l => l.DenseParameters);
        var budget = (long)Math.Floor(global.ParameterBudget!.Value * dense);
        var allocated = RankAllocator.Allocate(layers, budget);
        for (var j = 0; j < budgeted.Count; j++) ranks[budgeted[j]] = allocated[j];
        var spent = layers.Select((l, j) => allocated[j] is { } r ? l.Parameters(r) : l.DenseParameters).Sum();
        budgetNote = string.Create(CultureInfo.InvariantCulture,
            $"rank from ParameterBudget {global.ParameterBudget:0.###}: {spent:N0} of {dense:N0} weights kept over {layers.Count} layers ({(double)spent / dense:0.###}{(spent > budget ? ", over budget even at rank 1" : "")})");
        return ranks;
    }

    private void Rewrite(CompressionContext context, Plan plan, int[]? ranks, string? budgetNote)
    {
        var f = plan.Factorization;
        var layer = f.Layer;
        var bias = layer.BiasName is not null ? layer.OutFeatures : 0L;
        if (ranks is null)
        {
            Skip(context, layer, $"kept dense: {budgetNote}");
            return;
        }
        var rankText = ranks.Length == 1 ? $"rank {ranks[0]}" : $"ranks (out, in) ({ranks[0]}, {ranks[1]})";
        if (!f.Saves(ranks))
        {
            Skip(context, layer, string.Create(CultureInfo.InvariantCulture,
                $"kept dense: at {rankText} the factors hold {f.Parameters(ranks):N0} weights, more than {LayerFactorization.MaxParameterFraction:0.##} of the {f.DenseParameters:N0} they replace"));
            return;
        }
        var reconstructed = f.Rewrite(context.Graph, ranks);
        var error = f.RelativeError(reconstructed, plan.Moments);
        var notes = new List<string>
        {
            rankText + " of " + string.Join(", ", f.FullRanks),
            plan.Moments is null ? "error: relative weight error ‖ΔW‖/‖W‖" : "error: relative output error on the calibration data",
        };
        if (plan.Source == RankSource.Budget && budgetNote is not null) notes.Add(budgetNote);
        if (plan.FallbackNote is not null) notes.Add(plan.FallbackNote);
        context.Record(new LayerRecord
        {
            Layer = layer.Name,
            Op = layer.OpType,
            Technique = plan.Moments is null ? f.Technique : "activation-aware " + f.Technique,
            Shape = layer.WeightShape,
            ParametersBefore = f.DenseParameters + bias,
            ParametersAfter = f.Parameters(ranks) + bias,
            Rank = ranks[0],
            ReconstructionError = error,
            Note = string.Join("; ", notes),
        });
    }

    private void Skip(CompressionContext context, WeightedLayer layer, string reason)
    {
        var bias = layer.BiasName is not null ? layer.OutFeatures : 0L;
        context.Record(new LayerRecord
        {
            Layer = layer.Name, Op = layer.OpType, Technique = Name, Shape = layer.WeightShape,
            ParametersBefore = layer.Parameters + bias, ParametersAfter = layer.Parameters + bias, Note = reason,
        });
    }

    /// <summary>A per-layer seed for the randomized SVD: the policy seed mixed with a stable (FNV-1a) hash of the layer name.</summary>
    private static int Seed(int seed, string layerName)
    {
        var hash = 2166136261u;
        foreach (var c in layerName) hash = (hash ^ c) * 16777619u;
        return (int)(hash ^ (uint)seed) & int.MaxValue;
    }
}
