using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Policy;

namespace ModelCompression.Pruning;

/// <summary>One layer to prune unstructured: its options, the method that runs, and exactly how many weights become zero (or an N:M pattern).</summary>
internal sealed record PruningTarget(WeightedLayer Layer, PruningOptions Options, PruneMethod Method, long PruneCount, NmPattern? Pattern, string? Note = null)
{
    public double Sparsity => (double)PruneCount / Layer.Parameters;
}

/// <summary>
/// Chooses the layers unstructured pruning touches and the sparsity of each. Prunable: Conv, Gemm and MatMul with a
/// constant float weight of their own. Left dense by default (PruneEdgeLayers=true prunes them): the
/// <see cref="EdgeLayers"/>, the first conv and the classifier head. With PruneScope=global one threshold over the weights' scale-free LAMP scores sets the counts, at most 98 % per layer (layers with
/// their own Sparsity override, or an N:M pattern, keep theirs); with PruneScope=layer every layer gets the same.
/// </summary>
internal static class PruningTargets
{
    public static (List<PruningTarget> Targets, List<LayerRecord> Skipped) Plan(CompressionContext context, string technique)
    {
        var graph = context.Graph;
        var targets = new List<PruningTarget>();
        var skipped = new List<LayerRecord>();
        var pooled = new List<(WeightedLayer Layer, PruningOptions Options, PruneMethod Method, string? Note)>();
        var global = context.Policy.Get<PruningOptions>();
        foreach (var layer in WeightedLayer.FindAll(graph))
        {
            var resolved = context.Resolve<PruningOptions>(layer.Node);
            var options = resolved.Options;
            if (context.IsExcluded(layer.Node) || !PruningOptions.Group.Active!(options)) continue;
            if (OpRegistry.WhyNot(layer.Node, OpTechnique.Prune) is { } unsupported)
            {
                skipped.Add(Skip(layer, technique, "left dense: " + unsupported));
                continue;
            }
            if (!options.PruneEdgeLayers && EdgeLayers.RoleOf(layer) is { } role)
            {
                skipped.Add(Skip(layer, technique, $"left dense: {role} (PruneEdgeLayers=true prunes it)"));
                continue;
            }
            var method = options.MethodFor(context.HasCalibration);
            string? note = null;
            if (layer.InSubgraph && method == PruneMethod.SparseGpt)
            {
                // auto means "the best method that can run here": inside a body that is magnitude.
                if (options.PruneMethod != PruneMethod.Auto)
                {
                    skipped.Add(Skip(layer, technique, $"left dense: {WeightedLayer.SubgraphReason} (PruneMethod=magnitude prunes it)"));
                    continue;
                }
                method = PruneMethod.Magnitude;
                note = $"pruned by magnitude (PruneMethod=auto): {WeightedLayer.SubgraphReason}";
            }
            if (options.SparsityPattern is { } pattern)
            {
                targets.Add(new PruningTarget(layer, options, method, NmCount(layer, pattern), pattern, note));
                continue;
            }
            // A layer's own Sparsity (a policy-file entry) is its own; the rest share the global threshold.
            if (options.PruneScope == PruneScope.Layer || resolved.SourceOf("Sparsity").Origin == SettingOrigin.PolicyFile)
                targets.Add(new PruningTarget(layer, options, method, (long)Math.Round(options.Sparsity * layer.Parameters), null, note));
            else pooled.Add((layer, options, method, note));
        }
        if (pooled.Count > 0)
        {
            var counts = GlobalMagnitudeCounts(context.Model, pooled.Select(p => p.Layer).ToList(), global.Sparsity);
            for (var i = 0; i < pooled.Count; i++) targets.Add(new PruningTarget(pooled[i].Layer, pooled[i].Options, pooled[i].Method, counts[i], null, pooled[i].Note));
        }
        // Graph order (subgraph nodes after the node that holds them), so data-aware pruning sees upstream layers first.
        var order = WeightedLayer.ExecutionOrder(graph);
        targets.Sort((a, b) => order[a.Layer.Node].CompareTo(order[b.Layer.Node]));
        return (targets, skipped);
    }

    public static LayerRecord Skip(WeightedLayer layer, string technique, string note) => new()
    {
        Layer = layer.Name, Op = layer.OpType, Technique = technique, Shape = layer.WeightShape,
        ParametersBefore = layer.Parameters, ParametersAfter = layer.Parameters, Note = note,
    };

    private static long NmCount(WeightedLayer layer, NmPattern pattern)
    {
        var full = layer.InFeatures / pattern.M;
        var tail = layer.InFeatures % pattern.M;
        return (long)layer.OutFeatures * (full * pattern.N + pattern.N * tail / pattern.M);
    }

    /// <summary>The most a layer sharing the global allocation loses (unless the global Sparsity itself is higher): a layer is never emptied by the allocation.</summary>
    public const double MaxLayerSparsity = 0.98;

    /// <summary>
    /// Per-layer prune counts for PruneScope=global: one threshold over the weights' LAMP scores
    /// (<see cref="Lamp"/>), which are relative to the layer's own weights, so a layer whose weights are orders of
    /// magnitude smaller (BN folding, a downstream rescale) is not emptied for it; and each layer loses at most
    /// max(<see cref="MaxLayerSparsity"/>, sparsity) of its weights, never all. Exactly round(sparsity · total)
    /// weights in all; ties at the threshold go to earlier layers first.
    /// </summary>
    public static long[] GlobalMagnitudeCounts(OnnxModel model, IReadOnlyList<WeightedLayer> layers, double sparsity) =>
        // Each layer's scores are computed when needed and let go (with the weight's mapped pages): holding them all
        // was 4 bytes a weight, about the model's size (3.5 GB, the whole pruning run's peak, for a 3 GB model).
        StreamedThresholdCounts(layers.Count, i =>
        {
            var scores = SortedLamp(model.ReadFloats(layers[i].Weight));
            model.ReleasePages(layers[i].Weight);
            return scores;
        }, sparsity, Math.Max(MaxLayerSparsity, sparsity));

    /// <summary>Bits of a non-negative float's pattern below its bin: 2^20 patterns, an eighth of a binary octave.</summary>
    private const int BinShift = 20;
    private const uint Infinity = 0x7F800000;

    /// <summary>
    /// <see cref="ThresholdCounts"/> (the same counts) without holding every layer's scores: the scores of layer i
    /// (sorted, smallest first) come from <paramref name="sortedScores"/>, asked for twice. The first round keeps
    /// each layer's count per bin of float bit patterns and finds the bin that holds the threshold; the second keeps
    /// only the scores inside that bin, and the threshold is searched among them as before.
    /// </summary>
    internal static long[] StreamedThresholdCounts(int layerCount, Func<int, float[]> sortedScores, double sparsity, double maxLayerSparsity)
    {
        const int binCount = (int)(Infinity >> BinShift) + 1;
        var lengths = new long[layerCount];
        // cumulative[i][b]: the layer's scores whose bin is at most b.
        var cumulative = new int[layerCount][];
        for (var i = 0; i < layerCount; i++)
        {
            var scores = sortedScores(i);
            lengths[i] = scores.Length;
            var counts = new int[binCount];
            foreach (var score in scores) counts[Math.Min(BitConverter.SingleToUInt32Bits(score) >> BinShift, binCount - 1)]++;
            for (var b = 1; b < binCount; b++) counts[b] += counts[b - 1];
            cumulative[i] = counts;
        }
        var caps = lengths.Select(n => Cap(n, sparsity, maxLayerSparsity)).ToArray();
        var k = Math.Min((long)Math.Round(sparsity * lengths.Sum()), caps.Sum());
        // The threshold's bin: the first whose end has at least k capped scores at or below it (the last, infinity's, has them all).
        var bin = 0;
        while (Enumerable.Range(0, layerCount).Sum(i => Math.Min(caps[i], cumulative[i][bin])) < k) bin++;
        var first = (uint)bin << BinShift;
        var last = Math.Min(first | ((1u << BinShift) - 1), Infinity);
        var below = new long[layerCount];
        var inBin = new float[layerCount][];
        for (var i = 0; i < layerCount; i++)
        {
            var scores = sortedScores(i);
            if (scores.Length != lengths[i]) throw new InvalidOperationException($"layer {i}: {scores.Length} scores the second time, {lengths[i]} the first");
            var start = LowerBound(scores, BitConverter.UInt32BitsToSingle(first));
            below[i] = start;
            inBin[i] = scores[start..UpperBound(scores, BitConverter.UInt32BitsToSingle(last))];
        }
        // Smallest threshold t in the bin with at least k capped scores <= t (at most k - 1 lie before the bin).
        uint lo = first, hi = last;
        while (lo < hi)
        {
            var mid = lo + (hi - lo) / 2;
            var t = BitConverter.UInt32BitsToSingle(mid);
            var atMost = Enumerable.Range(0, layerCount).Sum(i => Math.Min(caps[i], below[i] + UpperBound(inBin[i], t)));
            if (atMost >= k) hi = mid; else lo = mid + 1;
        }
        var threshold = BitConverter.UInt32BitsToSingle(lo);
        var result = Enumerable.Range(0, layerCount).Select(i => Math.Min(caps[i], below[i] + LowerBound(inBin[i], threshold))).ToArray();
        var remaining = k - result.Sum();
        for (var i = 0; i < layerCount && remaining > 0; i++)
        {
            var ties = Math.Min(caps[i], below[i] + UpperBound(inBin[i], threshold)) - result[i];
            var take = Math.Min(ties, remaining);
            result[i] += take;
            remaining -= take;
        }
        return result;
    }

    /// <summary>The most of a layer of <paramref name="length"/> scores the threshold may take.</summary>
    private static long Cap(long length, double sparsity, double maxLayerSparsity) =>
        Math.Max(0L, maxLayerSparsity >= 1 ? length : Math.Min(length - 1L, Math.Max((long)Math.Floor(maxLayerSparsity * length), (long)Math.Ceiling(sparsity * length))));

    /// <summary>
    /// Counts from one threshold over the given per-layer scores (smallest first), each layer capped at
    /// <paramref name="maxLayerSparsity"/> of its size (and at size − 1 when the cap is below 1): the smallest t with
    /// Σ min(cap, #scores ≤ t) ≥ round(sparsity · total), then ties at t to earlier layers that still have room.
    /// </summary>
    public static long[] ThresholdCounts(IReadOnlyList<float[]> scores, double sparsity, double maxLayerSparsity, bool alreadySorted = false)
    {
        var sorted = alreadySorted ? scores : scores.Select(s => { var c = (float[])s.Clone(); Array.Sort(c); return c; }).ToList();
        var caps = sorted.Select(s => Cap(s.Length, sparsity, maxLayerSparsity)).ToArray();
        var total = sorted.Sum(s => (long)s.Length);
        var k = Math.Min((long)Math.Round(sparsity * total), caps.Sum());
        // Smallest threshold t (over float bit patterns of non-negative values, which sort like the values) with
        // at least k capped scores <= t.
        uint lo = 0, hi = Infinity;
        while (lo < hi)
        {
            var mid = lo + (hi - lo) / 2;
            var t = BitConverter.UInt32BitsToSingle(mid);
            var atMost = sorted.Select((s, i) => Math.Min(caps[i], UpperBound(s, t))).Sum();
            if (atMost >= k) hi = mid; else lo = mid + 1;
        }
        var threshold = BitConverter.UInt32BitsToSingle(lo);
        var counts = sorted.Select((s, i) => Math.Min(caps[i], LowerBound(s, threshold))).ToArray();
        var remaining = k - counts.Sum();
        for (var i = 0; i < counts.Length && remaining > 0; i++)
        {
            var ties = Math.Min(caps[i], UpperBound(sorted[i], threshold)) - counts[i];
            var take = Math.Min(ties, remaining);
            counts[i] += take;
            remaining -= take;
        }
        return counts;
    }

    /// <summary>
    /// LAMP scores (Lee et al., "Layer-adaptive sparsity for the magnitude-based pruning", 2021), in weight order: w²
    /// over the sum of the squares of the layer's weights at least as large. They grow with |w| within a layer, do not
    /// change when the layer is rescaled, and the largest weight of every layer scores 1.
    /// </summary>
    public static float[] Lamp(float[] weights)
    {
        var order = Enumerable.Range(0, weights.Length).OrderBy(i => MathF.Abs(weights[i])).ThenBy(i => i).ToArray();
        var scores = new float[weights.Length];
        var suffix = 0.0;
        for (var j = order.Length - 1; j >= 0; j--)
        {
            var w2 = (double)weights[order[j]] * weights[order[j]];
            suffix += w2;
            scores[order[j]] = suffix > 0 ? (float)(w2 / suffix) : 0;
        }
        return scores;
    }

    /// <summary>
    /// The LAMP scores of <paramref name="weights"/> in ascending order, computed in place of them: by |w| ascending,
    /// w² grows and the sum of the squares at least as large shrinks, so the scores come out sorted (the same values
    /// <see cref="Lamp"/> gives, sorted; correctly rounded division and sums keep the order).
    /// </summary>
    internal static float[] SortedLamp(float[] weights)
    {
        for (var i = 0; i < weights.Length; i++) weights[i] = MathF.Abs(weights[i]);
        Array.Sort(weights);
        var suffix = 0.0;
        for (var j = weights.Length - 1; j >= 0; j--)
        {
            var w2 = (double)weights[j] * weights[j];
            suffix += w2;
            weights[j] = suffix > 0 ? (float)(w2 / suffix) : 0;
        }
        return weights;
    }

    private static int LowerBound(float[] sorted, float value)
    {
        int lo = 0, hi = sorted.Length;
        while (lo < hi) { var mid = (lo + hi) >>> 1; if (sorted[mid] < value) lo = mid + 1; else hi = mid; }
        return lo;
    }

    private static int UpperBound(float[] sorted, float value)
    {
        int lo = 0, hi = sorted.Length;
        while (lo < hi) { var mid = (lo + hi) >>> 1; if (sorted[mid] <= value) lo = mid + 1; else hi = mid; }
        return lo;
    }
}
