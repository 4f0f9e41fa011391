using System.Globalization;
using ModelCompression.Calibration;
using ModelCompression.Passes;
using ModelCompression.Policy;

namespace ModelCompression.Search;

/// <summary>
/// The search space of <c>Auto</c>: per layer a sparsity and a number format, reached through three global knobs in
/// [0, 1] as Tung &amp; Mori do to keep the Gaussian process low-dimensional. The first is the fraction of the
/// prunable weights to remove, spread over the layers so that their estimated errors (<see cref="LayerSensitivity"/>)
/// are as equal as the levels allow (one error budget, the smallest that removes enough); the third blends that
/// allocation with the same sparsity on every layer (1: by sensitivity, 0: uniform), since the estimates ignore how
/// layers interact; the second is an error budget for the number format on a log scale
/// (<see cref="QuantizationBudget"/>): each layer takes the fewest bits whose estimated error fits it. A knob moves
/// every layer the same way.
/// </summary>
internal sealed class AutoPolicy(IReadOnlyList<LayerSensitivity> layers, bool staticInt8)
{
    public IReadOnlyList<LayerSensitivity> Layers { get; } = layers;

    /// <summary>Knobs: overall sparsity, quantization error budget, how far the sparsity follows the sensitivities.</summary>
    public const int Dimensions = 3;

    /// <summary>The largest overall sparsity the first knob reaches.</summary>
    public const double MaxSparsity = 0.95;

    /// <summary>The second knob in [0, 1] as a relative-error budget from 10⁻³ to 0.3 (log scale).</summary>
    public static double QuantizationBudget(double knob) => Math.Pow(10, -3 + 2.5 * Math.Clamp(knob, 0, 1));

    public LayerPolicy Choose(double[] knobs)
    {
        var overall = MaxSparsity * Math.Clamp(knobs[0], 0, 1);
        var bySensitivity = Allocate(overall);
        // The estimates ignore how layers interact, so the search may also lean toward the same sparsity everywhere.
        var follow = Math.Clamp(knobs[2], 0, 1);
        var sparsities = bySensitivity.Select((s, i) => Layers[i].Prunable ? Math.Round((follow * s + (1 - follow) * overall) * 20) / 20 : 0).ToArray();
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
        for (var i = 0; i < layers.Count; i++)
        {
            var layer = layers[i];
            var prunable = OpRegistry.WhyNot(layer.Node, OpTechnique.Prune) is null && EdgeLayers.RoleOf(layer) is null
                && (layer.Layout != WeightLayout.Convolution || layer.Group == 1);
            var int4 = layer.Layout != WeightLayout.Convolution || layer.Group == 1;
            measured.Add(LayerSensitivity.Measure(layer.Name, layer.ReadMatrix(context.Model), layer.OutFeatures, layer.InFeatures, grams?[i].Hessian(), prunable, int4));
        }
        return new AutoPolicy(measured, context.HasCalibration);
    }
}
