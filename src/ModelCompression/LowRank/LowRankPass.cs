using System.Globalization;
using ModelCompression.Calibration;
using ModelCompression.Numerics;
using ModelCompression.Passes;
using ModelCompression.Policy;

namespace ModelCompression.LowRank;

/// <summary>
/// Low-rank factorization of constant-weight layers: Gemm/MatMul (and 1×1 Conv) by truncated SVD into two
/// nodes, k×k Conv by Tucker-2 or spatial separation (ConvDecomposition). Ranks come from Rank (ratio or absolute),
/// RankEnergy (kept spectral energy) or, for the layers neither pins, a ParameterBudget shared out by
/// <see cref="RankAllocator"/>. LowRankMethod=activation-aware takes the spectra in the metric of each layer's
/// inputs on the calibration data (running moments only), so the kept rank minimizes the output error; layers are
/// then rewritten front to back, each one refitted to the uncompressed model's outputs from the inputs the layers
/// before it now produce; the default, auto, is that whenever CalibrationData is given. Left dense, with the reason in
/// the report: the <see cref="EdgeLayers"/> (first conv, classifier head: a 10-class head at rank 0.125 keeps one
/// direction for ten logits) unless a policy-file Rank or RankEnergy names them, and a layer whose factors would not
/// save enough parameters or any multiply-adds, and every convolution while ConvDecomposition=none.
/// </summary>
public sealed class LowRankPass : ICompressionPass
{
    public string Name => "low-rank";
    public PassStage Stage => PassStage.Factorize;
    public IReadOnlyList<OptionsGroup> Reads => [LowRankOptions.Group];
    public bool IsRequested(CompressionPolicy policy) => policy.Requests<LowRankOptions>();

    private enum RankSource { Rank, Energy, Budget }

    /// <summary>One layer on its way through the pass: its factorization, effective policy, rank source and input moments.</summary>
    private sealed class Plan(LayerFactorization factorization, LowRankOptions options, RankSource source, bool activationAware)
    {
        public LayerFactorization Factorization { get; } = factorization;
        public LowRankOptions Policy { get; } = options;
        public RankSource Source { get; } = source;
        public bool ActivationAware { get; } = activationAware;
        public InputMoments? Moments { get; set; }
        public string? FallbackNote { get; set; }
        /// <summary>Position among the layers the pass looked at (graph order), for the report.</summary>
        public int Order { get; init; }
    }

    public void Apply(CompressionContext context)
    {
        // Report rows in graph order, whatever order the layers are rewritten in.
        var rows = new SortedDictionary<int, LayerRecord>();
        var plans = new List<Plan>();
        foreach (var layer in WeightedLayer.FindAll(context.Graph))
        {
            var resolved = context.Resolve<LowRankOptions>(layer.Node);
            var policy = resolved.Options;
            if (context.IsExcluded(layer.Node) || SourceOf(resolved) is not { } source) continue;
            if (layer.Layout == WeightLayout.Convolution && policy.ConvDecomposition == ConvDecomposition.None)
            {
                rows[rows.Count + plans.Count] = Skip(layer, "kept dense: ConvDecomposition=none (tucker2 or spatial factorizes convolutions)");
                continue;
            }
            if (OpRegistry.WhyNot(layer.Node, OpTechnique.Factorize) is { } unsupported)
            {
                rows[rows.Count + plans.Count] = Skip(layer, "kept dense: " + unsupported);
                continue;
            }
            // Same rule as pruning; a Rank or RankEnergy set for the layer itself in the policy file opts it in.
            if (EdgeLayers.RoleOf(layer) is { } role
                && resolved.SourceOf("Rank").Origin != SettingOrigin.PolicyFile && resolved.SourceOf("RankEnergy").Origin != SettingOrigin.PolicyFile)
            {
                rows[rows.Count + plans.Count] = Skip(layer, $"kept dense: {role} (a Rank or RankEnergy for this layer in the policy file factorizes it)");
                continue;
            }
            // auto inside an If/Loop/Scan body means svd (activation-aware needs captures there); an explicit choice is kept.
            var activationAware = policy.MethodFor(context.HasCalibration) == LowRankMethod.ActivationAware && !(layer.InSubgraph && policy.LowRankMethod == LowRankMethod.Auto);
            if (layer.InSubgraph && activationAware)
            {
                rows[rows.Count + plans.Count] = Skip(layer, $"kept dense: {WeightedLayer.SubgraphReason} (LowRankMethod=svd factorizes it)");
                continue;
            }
            var (factorization, reason) = Create(layer, context.Model, policy);
            if (factorization is null)
            {
                rows[rows.Count + plans.Count] = Skip(layer, reason!);
                continue;
            }
            plans.Add(new Plan(factorization, policy, source, activationAware) { Order = rows.Count + plans.Count });
        }
        if (plans.Count == 0)
        {
            Finish(context, rows);
            return;
        }

        // Taken before any rewrite: the outputs every refitted layer aims at.
        var reference = plans.Any(p => p.ActivationAware) ? context.Model.Clone() : null;
        var capture = new LayerCapture(context, Name);
        // The pass reports its own fraction per layer; its captures hold it where it is.
        capture.ReportWithin(0, 0);
        var large = context.LargeModel;
        // Ranks from RankEnergy or the budget need every such layer's spectrum before any rank is chosen (in the
        // metric of its inputs when activation-aware); a fixed Rank waits for its stage. A large model keeps only
        // the spectra: each layer is decomposed again at its stage, on moments measured again there, so the pass
        // holds one stage's weights, moments and factorizations at a time, not the whole model's.
        CaptureMoments(capture, plans.Where(p => p.ActivationAware && p.Source != RankSource.Rank).ToList(), reference: null);
        for (var i = 0; i < plans.Count; i++)
        {
            context.Cancellation.ThrowIfCancellationRequested();
            if (plans[i].Source != RankSource.Rank)
            {
                Decompose(context, plans[i], fixedRanks: null);
                if (large) Release(plans[i], keepSpectra: true);
            }
            context.Progress?.Report((Name, 0.5 * (i + 1) / plans.Count));
        }

        var ranks = ChooseRanks(context.Policy.Get<LowRankOptions>(), plans, out var budgetNote);
        var stages = Stages(context.Graph, plans, ranks);
        // A layer that stays dense is done: its row needs no factors.
        for (var i = 0; i < plans.Count; i++)
        {
            if (stages[i] >= 0) continue;
            rows[plans[i].Order] = Rewrite(context, plans[i], ranks[i], budgetNote);
            Release(plans[i], keepSpectra: false);
        }
        var done = 0;
        foreach (var stage in stages.Where(s => s >= 0).Distinct().Order())
        {
            var members = Enumerable.Range(0, plans.Count).Where(i => stages[i] == stage).ToList();
            // Stage 0 reads inputs no rewrite has touched (a small model's RankEnergy/budget layers kept theirs from
            // the spectra); later stages refit to what the earlier ones left them, paired with the reference. A layer
            // whose first capture failed stays on plain SVD.
            var measured = members.Where(i => plans[i].ActivationAware && plans[i].FallbackNote is null && (stage > 0 || plans[i].Moments is null)).ToList();
            capture.ReportWithin(0.5 + 0.5 * done / plans.Count, 0.5 + 0.5 * done / plans.Count);
            CaptureMoments(capture, measured.Select(i => plans[i]).ToList(), stage == 0 ? null : reference);
            foreach (var i in members)
            {
                if ((stage > 0 && measured.Contains(i)) || plans[i].Source == RankSource.Rank) Decompose(context, plans[i], ranks[i]);
                // As for its spectrum (a large model released it): the same moments, so the same decomposition.
                else if (!plans[i].Factorization.IsDecomposed) Decompose(context, plans[i], fixedRanks: null);
            }
            foreach (var i in members)
            {
                context.Cancellation.ThrowIfCancellationRequested();
                rows[plans[i].Order] = Rewrite(context, plans[i], ranks[i], budgetNote);
                Release(plans[i], keepSpectra: false);
                if (large && i != members[^1]) DenseMath.ReleaseWorkingMemory(plans[i].Factorization.InputFeatures);
                context.Progress?.Report((Name, 0.5 + 0.5 * ++done / plans.Count));
            }
            context.ReleaseStageMemory();
        }
        Finish(context, rows);
    }

    /// <summary>Drops what a plan holds for its decomposition: weight, factors, whitening and input moments.</summary>
    private static void Release(Plan plan, bool keepSpectra)
    {
        plan.Factorization.Release(keepSpectra);
        plan.Moments = null;
    }

    /// <summary>Records the rows; a pass that factorized nothing says so (the defaults leave edge layers and unprofitable factorizations dense).</summary>
    private static void Finish(CompressionContext context, SortedDictionary<int, LayerRecord> rows)
    {
        foreach (var row in rows.Values) context.Record(row);
        if (!rows.Values.Any(r => r.Rank is not null))
            context.Warn(Diagnostics.DiagnosticCodes.NothingToCompress, "low-rank: no layer was factorized (the report's rows say why; k×k convolutions need ConvDecomposition)");
    }

    private static void Decompose(CompressionContext context, Plan plan, int[]? fixedRanks)
    {
        var f = plan.Factorization;
        var metric = plan.Moments is { } moments ? InputMetric.From(moments, plan.Policy.LowRankDamping) : null;
        f.Decompose(metric, fixedRanks, Seed(context.Policy.Execution.Seed, f.Layer.Name));
        // The metric's and the solver's n² arrays are garbage now: a wide layer's go back before the next one's.
        if (context.LargeModel) DenseMath.ReleaseWorkingMemory(f.InputFeatures);
    }

    /// <summary>
    /// For each plan that will be rewritten, its <see cref="LayerCapture.Stages"/> stage among the rewritten plans;
    /// −1 for a layer that stays dense. Plans of one stage never feed each other, so one calibration pass serves them all.
    /// </summary>
    private static int[] Stages(Onnx.OnnxGraph graph, List<Plan> plans, IReadOnlyList<int[]?> ranks)
    {
        var rewritten = Enumerable.Range(0, plans.Count).Where(i => ranks[i] is { } r && plans[i].Factorization.Saves(r)).ToList();
        var stageOfRewritten = LayerCapture.Stages(graph, rewritten.Select(i => plans[i].Factorization.Layer).ToList());
        var stages = Enumerable.Repeat(-1, plans.Count).ToArray();
        for (var k = 0; k < rewritten.Count; k++) stages[rewritten[k]] = stageOfRewritten[k];
        return stages;
    }

    /// <summary>
    /// Where a layer's rank comes from. A per-layer override beats the global setting: when a layer has both Rank and
    /// RankEnergy, the one set by the later policy-file entry wins.
    /// </summary>
    private static RankSource? SourceOf(Resolved<LowRankOptions> resolved)
    {
        var layer = resolved.Options;
        if (layer.Rank is not null && (layer.RankEnergy is null || resolved.SourceOf("Rank").Entry >= resolved.SourceOf("RankEnergy").Entry)) return RankSource.Rank;
        if (layer.RankEnergy is not null) return RankSource.Energy;
        if (layer.ParameterBudget is not null) return RankSource.Budget;
        return null;
    }

    private static (LayerFactorization? Factorization, string? Reason) Create(WeightedLayer layer, Onnx.OnnxModel model, LowRankOptions policy)
    {
        if (!AllFinite(layer, model)) return (null, "weight has NaN or infinite values");
        // Read in double only when the layer is decomposed (and dropped once it is rewritten).
        var weight = () =>
        {
            var matrix = Array.ConvertAll(layer.ReadMatrix(model), v => (double)v);
            model.ReleasePages(layer.Weight);
            return matrix;
        };
        if (layer.Layout != WeightLayout.Convolution) return (new MatrixFactorization(layer, weight), null);
        if (layer.Group != 1) return (null, $"grouped convolution (group={layer.Group}): only group=1 is decomposed");
        var kernel = layer.WeightShape[2..];
        if (kernel.All(k => k == 1)) return (new MatrixFactorization(layer, weight), null);
        if (policy.ConvDecomposition == ConvDecomposition.Tucker2) return (new Tucker2Factorization(layer, weight), null);
        if (kernel.Length != 2 || kernel[0] == 1 || kernel[1] == 1)
            return (null, $"kernel [{string.Join("x", kernel)}]: spatial separation needs a 2-D kernel larger than 1 in both directions");
        return (new SpatialFactorization(layer, weight), null);
    }

    /// <summary>Whether every weight is finite, checked on the stored floats before any expensive work.</summary>
    private static bool AllFinite(WeightedLayer layer, Onnx.OnnxModel model)
    {
        var floats = model.ReadFloats(layer.Weight);
        model.ReleasePages(layer.Weight);
        foreach (var v in floats)
            if (!float.IsFinite(v)) return false;
        return true;
    }

    /// <summary>
    /// One pass over the calibration data accumulates the moments of every distinct input these layers read — of
    /// the current model alone, or paired with the same values in <paramref name="reference"/> (whose own moments
    /// the same run measures).
    /// </summary>
    private static void CaptureMoments(LayerCapture capture, List<Plan> plans, Onnx.OnnxModel? reference)
    {
        if (plans.Count == 0) return;
        var inputs = plans.Select(p => new InputFeatures(p.Factorization.Layer.InputName, p.Factorization.Axis, p.Factorization.InputFeatures)).ToList();
        var captured = reference is null ? capture.InputFeatureMoments(inputs) : capture.InputFeatureMoments(inputs, reference);
        for (var i = 0; i < plans.Count; i++)
        {
            if (captured[i] is { } moments)
            {
                plans[i].Moments = moments;
                continue;
            }
            // A refit that cannot be captured keeps the moments it had, if any; without moments, plain SVD.
            if (plans[i].Moments is not null) continue;
            plans[i].FallbackNote = $"input '{inputs[i].Value}' could not be captured as [.., {inputs[i].Count}] features: plain SVD used";
        }
    }

    private static IReadOnlyList<int[]?> ChooseRanks(LowRankOptions global, List<Plan> plans, out string? budgetNote)
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

    private LayerRecord Rewrite(CompressionContext context, Plan plan, int[]? ranks, string? budgetNote)
    {
        var f = plan.Factorization;
        var layer = f.Layer;
        var bias = layer.BiasName is not null ? layer.OutFeatures : 0L;
        if (ranks is null) return Skip(layer, $"kept dense: {budgetNote}");
        var rankText = ranks.Length == 1 ? $"rank {ranks[0]}" : $"ranks (out, in) ({ranks[0]}, {ranks[1]})";
        if (f.WhyNotWorthIt(ranks) is { } reason) return Skip(layer, $"kept dense: at {rankText} {reason}");
        var reconstructed = f.Rewrite(f.Layer.Graph, ranks);
        var error = f.RelativeError(reconstructed, plan.Moments);
        var notes = new List<string>
        {
            rankText + " of " + string.Join(", ", f.FullRanks),
            plan.Moments is null ? "error: relative weight error ‖ΔW‖/‖W‖"
                : plan.Moments.IsPaired ? "error: relative output error on the calibration data against the uncompressed model (refitted after upstream layers, whose error it includes)"
                : "error: relative output error on the calibration data",
        };
        if (plan.Source == RankSource.Budget && budgetNote is not null) notes.Add(budgetNote);
        if (plan.FallbackNote is not null) notes.Add(plan.FallbackNote);
        return new LayerRecord
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
        };
    }

    private LayerRecord Skip(WeightedLayer layer, string reason)
    {
        var bias = layer.BiasName is not null ? layer.OutFeatures : 0L;
        return new LayerRecord
        {
            Layer = layer.Name, Op = layer.OpType, Technique = Name, Shape = layer.WeightShape,
            ParametersBefore = layer.Parameters + bias, ParametersAfter = layer.Parameters + bias, Note = reason,
        };
    }

    /// <summary>A per-layer seed for the randomized SVD: the policy seed mixed with a stable (FNV-1a) hash of the layer name.</summary>
    private static int Seed(int seed, string layerName)
    {
        var hash = 2166136261u;
        foreach (var c in layerName) hash = (hash ^ c) * 16777619u;
        return (int)(hash ^ (uint)seed) & int.MaxValue;
    }
}
