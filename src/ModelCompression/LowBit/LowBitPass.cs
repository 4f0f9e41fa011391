using ModelCompression.Numerics;
using System.Globalization;
using ModelCompression.Calibration;
using ModelCompression.Diagnostics;
using ModelCompression.Passes;
using ModelCompression.Policy;
using ModelCompression.Pruning;
using ModelCompression.Quantization;

namespace ModelCompression.LowBit;

/// <summary>
/// <c>Quantize=binary|ternary</c>: each Conv/Gemm/MatMul weight (any graph) becomes a per-output-channel scale times
/// signs (<see cref="LowBitQuantizer"/>: BWN / TWN), stored packed at 1 or 2 bits a weight and expanded to float at
/// load by a constant-folded decoder (<see cref="LowBitEncoding"/>). Without retraining this costs accuracy; with
/// calibration data each channel's α (and the layer's bias) is refitted by least squares to the layer's output in the
/// model before the pass, layer by layer front to back (each stage sees the inputs the layers before now produce).
/// The edge layers (first conv, classifier head) stay as they are unless a policy-file entry sets their Quantize:
/// give them <c>Quantize=int8</c> there and the int8 pass, which runs after this one, quantizes them.
/// </summary>
public sealed class LowBitPass : ICompressionPass
{
    public string Name => "low-bit";
    // Before int8 (whose activation ranges are then calibrated on the low-bit layers' outputs) and codebook.
    public PassStage Stage => PassStage.Quantize - 1;
    public IReadOnlyList<OptionsGroup> Reads => [QuantizationOptions.Group];
    public bool IsRequested(CompressionPolicy policy) => policy.AnyLayer<QuantizationOptions>(q => q.Quantize is QuantizeMode.Binary or QuantizeMode.Ternary);

    private sealed class Target(WeightedLayer layer, LowBitWeights weights, float[] original)
    {
        public WeightedLayer Layer { get; } = layer;
        public LowBitWeights Weights { get; } = weights;
        public float[] Original { get; } = original;
        public double? OutputError { get; set; }
        public string? Fit { get; set; }
    }

    public void Apply(CompressionContext context)
    {
        var graph = context.Graph;
        var graphInputs = graph.GraphInputNames.ToHashSet(StringComparer.Ordinal);
        var targets = new List<Target>();
        foreach (var layer in WeightedLayer.FindAll(graph))
        {
            context.Cancellation.ThrowIfCancellationRequested();
            var resolved = context.Resolve<QuantizationOptions>(layer.Node);
            var mode = resolved.Options.Quantize;
            if (mode is not (QuantizeMode.Binary or QuantizeMode.Ternary)) continue; // another pass (or none) owns it
            var technique = PolicySettings.FormatEnum(mode);
            if (context.IsExcluded(layer.Node)) LeaveFloat(context, layer, technique, "excluded by policy");
            else if (EdgeLayers.RoleOf(layer) is { } role && resolved.SourceOf("Quantize").Origin != SettingOrigin.PolicyFile)
                LeaveFloat(context, layer, technique, $"{role} (a Quantize for this layer in the policy file, e.g. int8, sets it)");
            else if (graphInputs.Contains(layer.Weight.Name) || layer.Graph.GraphInputNames.Contains(layer.Weight.Name))
                LeaveFloat(context, layer, technique, "the weight is also a graph input (it can be fed at run time)");
            else
            {
                var w = layer.ReadMatrix(context.Model);
                targets.Add(new Target(layer, LowBitQuantizer.Quantize(w, layer.OutFeatures, layer.InFeatures, mode == QuantizeMode.Ternary), w));
            }
        }
        if (targets.Count == 0)
        {
            context.Warn(DiagnosticCodes.NothingToCompress, "low-bit: no Conv/Gemm/MatMul layer with a constant float weight was left to binarize or ternarize");
            return;
        }
        if (context.HasCalibration) FitOnData(context, targets);
        foreach (var target in targets) Store(context, target);
    }

    /// <summary>
    /// Least-squares scales (and bias) per stage of <see cref="LayerCapture.Stages"/>: each stage is written in float
    /// before the next is measured, and the targets are every layer's outputs in the model before the pass.
    /// </summary>
    private void FitOnData(CompressionContext context, List<Target> targets)
    {
        var fitted = new List<Target>();
        foreach (var target in targets)
        {
            var layer = target.Layer;
            if (layer.InSubgraph) target.Fit = "scales from the weights alone: calibration reaches main-graph layers only";
            else if (layer.OpType == "Gemm" && AffineLayer.From(context.Graph, layer) is null) target.Fit = "scales from the weights alone: the Gemm's C is not a per-output bias";
            else fitted.Add(target);
        }
        if (fitted.Count == 0) return;
        var capture = new LayerCapture(context, Name);
        capture.ReportWithin(0, 0);
        var reference = capture.Outputs(fitted.Select(t => t.Layer).ToList());
        var stages = LayerCapture.Stages(context.Graph, fitted.Select(t => t.Layer).ToList());
        foreach (var stage in stages.Distinct().Order())
        {
            context.Cancellation.ThrowIfCancellationRequested();
            capture.ReportStage(stage, stages.Max() + 1);
            var ready = fitted.Where((_, k) => stages[k] == stage).ToList();
            var stats = capture.InputGrams(ready.Select(t => t.Layer).ToList(), reference);
            for (var k = 0; k < ready.Count; k++) FitLayer(context, ready[k], stats[k]);
        }
    }

    private static void FitLayer(CompressionContext context, Target target, GramStatistics stats)
    {
        var layer = target.Layer;
        var q = target.Weights;
        var affine = AffineLayer.From(context.Graph, layer);
        // The fit is in the layer's affine view A = alpha·W (Gemm alpha); the stored scales are W's.
        var alpha = layer.OpType == "Gemm" ? layer.Node.Attribute.FirstOrDefault(a => a.Name == "alpha")?.F ?? 1f : 1f;
        for (var o = 0; o < q.Rows; o++) q.Scales[o] *= alpha;
        var bias = LowBitQuantizer.FitScales(q, stats, affine?.ReadBias(context.Graph, context.Model));
        var dense = q.Dense();
        if (affine is not null) affine.Write(context.Graph, dense, bias!, q.Cols);
        else layer.WriteMatrix(dense);
        target.OutputError = stats.RelativeError(GramStatistics.Augment(dense, bias, q.Rows, q.Cols));
        target.Fit = affine is null
            ? $"α per channel by least squares on {stats.Rows} calibration rows"
            : $"α per channel and bias by least squares on {stats.Rows} calibration rows";
        for (var o = 0; o < q.Rows; o++) q.Scales[o] /= alpha;
    }

    private static void Store(CompressionContext context, Target target)
    {
        var layer = target.Layer;
        var q = target.Weights;
        var technique = q.Ternary ? "ternary" : "binary";
        var encoding = LowBitEncoding.Build(layer, q);
        var denseBytes = LowBitEncoding.Framed(context.Model.InlineSize(layer.Weight));
        var dense = q.Dense();
        var weightError = DenseMath.RelativeError(target.Original, dense);
        string storage;
        if (encoding.Size < denseBytes)
        {
            encoding.Apply(layer);
            storage = $"{q.Bits}-bit packed + float α per channel, decoded at load: {denseBytes} → {encoding.Size} bytes";
        }
        else
        {
            // Too small for the decoder to pay off: the same values, stored in float.
            layer.WriteMatrix(dense);
            storage = $"stored in float: the packed form would not be smaller ({denseBytes} → {encoding.Size} bytes)";
        }
        var zeros = q.Zeros();
        var errors = target.OutputError is { } output
            ? $"weight error {weightError.ToString("0.###", CultureInfo.InvariantCulture)}, output error {output.ToString("0.###", CultureInfo.InvariantCulture)} (‖Δy‖/‖y‖ vs the model before the pass)"
            : $"weight error {weightError.ToString("0.###", CultureInfo.InvariantCulture)} (‖ΔW‖/‖W‖)";
        var method = q.Ternary ? $"TWN (Δ = {LowBitQuantizer.TernaryThreshold}·mean|W| per channel)" : "sign·mean|W| per channel";
        context.Record(new LayerRecord
        {
            Layer = layer.Name, Op = layer.OpType, Technique = technique, Shape = layer.WeightShape,
            ParametersBefore = layer.Parameters, ParametersAfter = layer.Parameters - zeros,
            Sparsity = q.Ternary ? (double)zeros / layer.Parameters : null,
            Bits = q.Bits, ReconstructionError = target.OutputError ?? weightError,
            Note = $"{method}; {(target.Fit is { } fit ? fit + "; " : "")}{errors}; {storage}",
        });
    }

    private static void LeaveFloat(CompressionContext context, WeightedLayer layer, string technique, string reason) => context.Record(new LayerRecord
    {
        Layer = layer.Name, Op = layer.OpType, Technique = technique, Shape = layer.WeightShape,
        ParametersBefore = layer.Parameters, ParametersAfter = layer.Parameters, Bits = 32, Note = "left in float: " + reason,
    });
}
