using System.Globalization;
using ModelCompression.Calibration;
using ModelCompression.Passes;
using ModelCompression.Policy;

namespace ModelCompression.Search;

/// <summary>
/// The search space of <c>Auto</c>: per layer a sparsity and a number format, reached through three global knobs in
/// [0, 1] as Tung &amp; Mori do to keep the Gaussian process low-dimensional. The first is the fraction of the
/// prunable weights to remove, spread over the layers so that their estimated errors (<see cref="LayerSensitivity"/>)
/// are as equal as the levels allow (one error budget, the smallest that removes enough) or, by the third knob, as
/// the default global allocation, uniformly or by Erdős–Rényi (<see cref="Spread"/>); the second is an error budget for the number format on a log scale
/// (<see cref="QuantizationBudget"/>): each layer takes the fewest bits whose estimated error fits it. A knob moves
/// every layer the same way.
/// </summary>
internal sealed class AutoPolicy(IReadOnlyList<LayerSensitivity> layers, bool staticInt8, IReadOnlyList<float[]>? magnitudeScores = null)
{
    public IReadOnlyList<LayerSensitivity> Layers { get; } = layers;

    /// <summary>Knobs: overall sparsity, quantization error budget, how far the sparsity follows the sensitivities.</summary>
    public const int Dimensions = 3;

    /// <summary>The largest overall sparsity the first knob reaches.</summary>
    public const double MaxSparsity = 0.95;

    /// <summary>
    /// The first knob in [0, 1] as the overall sparsity, the kept fraction on a log scale (1 − 0.05^knob: 0, 0.53,
    /// 0.78, 0.89, 0.95 at 0, ¼, ½, ¾, 1), so the knob spends as much of its range on 80–95 %, where accuracy turns,
    /// as on 0–80 %.
    /// </summary>
    public static double Sparsity(double knob) => 1 - Math.Pow(1 - MaxSparsity, Math.Clamp(knob, 0, 1));

    /// <summary>The second knob in [0, 1] as a relative-error budget from 10⁻³ to 0.3 (log scale).</summary>
    public static double QuantizationBudget(double knob) => Math.Pow(10, -3 + 2.5 * Math.Clamp(knob, 0, 1));

    /// <summary>The first knob that gives <paramref name="sparsity"/> overall (the inverse of <see cref="Sparsity"/>).</summary>
    public static double SparsityKnob(double sparsity) => Math.Clamp(Math.Log(1 - Math.Clamp(sparsity, 0, MaxSparsity)) / Math.Log(1 - MaxSparsity), 0, 1);

    /// <summary>
    /// The first trials: the policies a user would try by hand, so the search starts no worse than they do — 85 % of
    /// the prunable weights (where both fixtures' best hand-made policies sit) spread as the default global allocation,
    /// as the same sparsity on every layer and by Erdős–Rényi; every layer in int8 (int4 where its estimated error is
    /// no larger). The Gaussian process then refines around whichever met the constraints.
    /// </summary>
    public IReadOnlyList<double[]> Anchors()
    {
        var int8 = Layers.Where(l => double.IsFinite(l.Int8Error)).Select(l => l.Int8Error).DefaultIfEmpty(1e-3).Max();
        // The smallest format budget in which every layer takes int8 (errors are estimates: 10 % headroom).
        var format = Math.Clamp((Math.Log10(Math.Max(int8 * 1.1, 1e-3)) + 3) / 2.5, 0, 1);
        if (!Layers.Any(l => l.Prunable)) return [[0, format, 0.5]];
        var k = SparsityKnob(0.85);
        return [[k, format, 2.0 / 3], [k, format, 1.0 / 3], [k, format, 0]];
    }

    public LayerPolicy Choose(double[] knobs)
    {
        var overall = Sparsity(knobs[0]);
        var sparsities = Spread(overall, knobs[2]);
        var quantize = QuantizationBudget(knobs[1]);
        var choices = new List<LayerChoice>();
        for (var i = 0; i < Layers.Count; i++)
        {
            var layer = Layers[i];
            var settings = new SortedDictionary<string, string>(StringComparer.Ordinal);
            if (layer.Prunable) settings["Sparsity"] = sparsities[i].ToString("0.##", CultureInfo.InvariantCulture);
            // int4 blocks hold every weight (zeros too): on a pruned layer the sparse int8 form is the smaller one.
            var format = sparsities[i] == 0 && layer.Int4 && layer.Int4Error <= quantize ? "int4"
                : layer.Int8Error <= quantize ? (staticInt8 ? "int8" : "int8-dynamic")
                : "none";
            settings["Quantize"] = format;
            choices.Add(new LayerChoice(layer.Layer, settings));
        }
        return new LayerPolicy(choices);
    }

    /// <summary>
    /// Per layer, the sparsity at <paramref name="overall"/>, spread by the third knob along four allocations: the
    /// Erdős–Rényi one (0: more sparsity on layers with more weights per input and output), the same sparsity
    /// everywhere (⅓), the default global one (⅔), the one by estimated error (1), linearly between neighbours. The
    /// estimates ignore how layers interact and none of these is best on every model (on the MLP the trials prune the
    /// wide first layer harder than the second, against the estimates), so the search decides.
    /// </summary>
    public double[] Spread(double overall, double knob)
    {
        var t = Math.Clamp(knob, 0, 1) * 3;
        var segment = Math.Min((int)t, 2);
        double[] Allocation(int k) => k switch
        {
            0 => ErdosRenyi(overall),
            1 => Layers.Select(l => l.Prunable ? overall : 0).ToArray(),
            2 => DefaultAllocation(overall),
            _ => Allocate(overall),
        };
        var (from, to, f) = (Allocation(segment), Allocation(segment + 1), t - segment);
        return from.Select((a, i) => Layers[i].Prunable ? Math.Round(((1 - f) * a + f * to[i]) * 100) / 100 : 0).ToArray();
    }

    /// <summary>
    /// Per layer, the Erdős–Rényi sparsity (Mocanu et al. 2018; Evci et al., RigL, 2020): each layer keeps a share of
    /// its weights proportional to (rows + columns)/(rows · columns), scaled so that <paramref name="overall"/> of the
    /// prunable weights go; no layer past <see cref="MaxSparsity"/>. Wide layers lose more, narrow ones less.
    /// </summary>
    public double[] ErdosRenyi(double overall)
    {
        var result = new double[Layers.Count];
        var prunable = Enumerable.Range(0, Layers.Count).Where(i => Layers[i].Prunable).ToList();
        var total = prunable.Sum(i => (double)Layers[i].Parameters);
        if (overall <= 0 || total == 0) return result;
        double Score(LayerSensitivity l) => l.Rows > 0 && l.Cols > 0 ? (double)(l.Rows + l.Cols) / ((double)l.Rows * l.Cols) : 1 / Math.Sqrt(l.Parameters);
        double Density(LayerSensitivity l, double c) => Math.Clamp(c * Score(l), 1 - MaxSparsity, 1);
        double Removed(double c) => prunable.Sum(i => (1 - Density(Layers[i], c)) * Layers[i].Parameters);
        // Bisection over the scale on a log scale: the largest that still removes enough.
        double lo = -12, hi = 12;
        for (var step = 0; step < 80; step++)
        {
            var mid = (lo + hi) / 2;
            if (Removed(Math.Pow(10, mid)) >= Math.Min(overall, MaxSparsity) * total - 1e-9) lo = mid; else hi = mid;
        }
        foreach (var i in prunable) result[i] = 1 - Density(Layers[i], Math.Pow(10, lo));
        return result;
    }

    /// <summary>
    /// Per layer, the sparsity <c>PruneScope=global</c> gives (one threshold over the weights' LAMP scores, see
    /// <see cref="Pruning.PruningTargets"/>); without the scores, the same sparsity on every prunable layer.
    /// </summary>
    public double[] DefaultAllocation(double overall)
    {
        if (magnitudeScores is null || overall <= 0) return Layers.Select(l => l.Prunable ? overall : 0).ToArray();
        var prunable = Enumerable.Range(0, Layers.Count).Where(i => Layers[i].Prunable).ToList();
        var counts = Pruning.PruningTargets.ThresholdCounts(prunable.Select(i => magnitudeScores[i]).ToList(), overall, Math.Max(Pruning.PruningTargets.MaxLayerSparsity, overall));
        var result = new double[Layers.Count];
        for (var k = 0; k < prunable.Count; k++) result[prunable[k]] = (double)counts[k] / Layers[prunable[k]].Parameters;
        return result;
    }

    /// <summary>Per layer, the sparsity within the smallest common error budget that removes at least <paramref name="overall"/> of the prunable weights.</summary>
    public double[] Allocate(double overall)
    {
        var total = Layers.Where(l => l.Prunable).Sum(l => (double)l.Parameters);
        double Removed(double budget) => Layers.Where(l => l.Prunable).Sum(l => l.SparsityWithin(budget) * l.Parameters);
        if (overall <= 0 || total == 0) return new double[Layers.Count];
        // Bisection over the budget on a log scale; errors are relative, so 10⁻⁶ … 10 spans every useful budget.
        double lo = -6, hi = 1;
        for (var step = 0; step < 60; step++)
        {
            var mid = (lo + hi) / 2;
            if (Removed(Math.Pow(10, mid)) >= overall * total) hi = mid; else lo = mid;
        }
        var chosen = Math.Pow(10, hi);
        return Layers.Select(l => l.SparsityWithin(chosen)).ToArray();
    }

    /// <summary>
    /// The sensitivities of every layer a search may change (top-level Conv/Gemm/MatMul with a constant weight, not
    /// excluded), on the model as the graph passes left it; with calibration data from one capture of their input Gram
    /// matrices, else from the weights alone. Edge layers (first conv, classifier head) are quantized but not pruned,
    /// as the pruning defaults do.
    /// </summary>
    public static AutoPolicy Measure(CompressionContext context)
    {
        var layers = WeightedLayer.FindAll(context.Graph)
            .Where(l => !l.InSubgraph && !context.IsExcluded(l.Node))
            .Where(l => OpRegistry.WhyNot(l.Node, OpTechnique.StaticInt8) is null || OpRegistry.WhyNot(l.Node, OpTechnique.Prune) is null)
            .ToList();
        IReadOnlyList<GramStatistics>? grams = context.HasCalibration && layers.Count > 0 ? new LayerCapture(context, "auto").InputGrams(layers) : null;
        var measured = new List<LayerSensitivity>();
        var scores = new List<float[]>();
        for (var i = 0; i < layers.Count; i++)
        {
            var layer = layers[i];
            var prunable = OpRegistry.WhyNot(layer.Node, OpTechnique.Prune) is null && EdgeLayers.RoleOf(layer) is null
                && (layer.Layout != WeightLayout.Convolution || layer.Group == 1);
            var int4 = layer.Layout != WeightLayout.Convolution || layer.Group == 1;
            var weights = layer.ReadMatrix(context.Model);
            measured.Add(LayerSensitivity.Measure(layer.Name, weights, layer.OutFeatures, layer.InFeatures, grams?[i].Hessian(), prunable, int4));
            scores.Add(prunable ? Pruning.PruningTargets.Lamp(weights) : []);
        }
        return new AutoPolicy(measured, context.HasCalibration, scores);
    }
}
