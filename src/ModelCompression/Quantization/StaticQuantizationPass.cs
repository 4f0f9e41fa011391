using ModelCompression.BiasCorrection;
using ModelCompression.Calibration;
using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Passes;
using ModelCompression.Policy;

namespace ModelCompression.Quantization;

/// <summary>
/// <c>Quantize=int8</c>: static QDQ quantization. Weights become int8 per output channel (symmetric), activations
/// uint8 per tensor with ranges from calibration data (<c>CalibrationMethod</c>: minmax, percentile or entropy).
/// The graph is shaped so that ONNX Runtime's CPU provider runs every quantized node as an int8 kernel (see
/// <see cref="QdqPlan"/>); layers that would not gain, or that the policy keeps in float, stay float and say why.
/// </summary>
public sealed class StaticQuantizationPass : ICompressionPass
{
    public string Name => "quantize-int8";
    public PassStage Stage => PassStage.Quantize;
    public IReadOnlyList<OptionsGroup> Reads => [QuantizationOptions.Group, BiasCorrectionOptions.Group];
    public bool IsRequested(CompressionPolicy policy) => policy.AnyLayer<QuantizationOptions>(q => q.Quantize == QuantizeMode.Int8);

    public void Apply(CompressionContext context)
    {
        // Per-axis DequantizeLinear (per-channel weights) exists from opset 13; OpsetUpgradePass has raised the model
        // unless it could not (and said why with CM0304).
        if (context.Model.OpsetVersion() < 13)
        {
            context.Warn(DiagnosticCodes.LayerSkipped, $"int8 quantization needs opset >= 13 (per-channel DequantizeLinear); the model has opset {context.Model.OpsetVersion()}: nothing quantized");
            return;
        }
        var candidates = QdqPlan.Create(context, ranks: null);
        if (candidates.Ops.Count == 0)
        {
            RecordFloatLayers(context, candidates);
            // Weights calibration cannot reach (LSTMs, Gemm/MatMul in subgraph bodies) get the dynamic form from
            // DynamicQuantizationPass; only when there is none of those either was nothing quantized.
            var dynamic = DynamicQuantizationPass.Lstms(context.Graph).Any(l => Wants(context, l.Node))
                || WeightedLayer.FindAll(context.Graph).Any(l => Wants(context, l.Node) && DynamicQuantizationPass.Owns(QuantizeMode.Int8, l));
            if (!dynamic) context.Warn(DiagnosticCodes.NothingToCompress, "int8: no layer can be quantized");
            return;
        }

        var mode = context.Policy.Get<BiasCorrectionOptions>().BiasCorrection;
        var means = mode == BiasCorrectionMode.Off ? null : new InputMeans(candidates.Ops.Where(o => o.Layer is not null).Select(o => o.Layer!));
        var (ranges, ranks) = Calibrate(context, candidates.Tensors, means);
        var plan = QdqPlan.Create(context, ranks);
        RecordFloatLayers(context, plan);
        // auto compares the model with and without the correction against the float one: keep the original to compare with.
        var reference = mode == BiasCorrectionMode.Auto ? context.Model.Clone() : null;
        var rewriter = new QdqRewriter(context, plan, ranges, means);
        rewriter.Apply();
        var corrected = rewriter.Corrections.Count > 0 && (mode == BiasCorrectionMode.On || KeepsCorrection(context, reference!, rewriter.Corrections));
        if (!corrected)
            foreach (var c in rewriter.Corrections) context.Graph.SetInitializer(Onnx.Tensors.FromInt32s(c.Initializer, [c.Plain.Length], c.Plain));
        var notes = corrected
            ? rewriter.Corrections.ToDictionary(c => c.Layer, c => c.AddedBias ? $"; bias added for the correction (‖Δb‖ = {c.RelativeSize:0.####})" : $"; bias corrected (‖Δb‖/‖b‖ = {c.RelativeSize:0.####})", StringComparer.Ordinal)
            : [];
        foreach (var record in rewriter.Records)
            context.Record(notes.TryGetValue(record.Layer, out var note) ? record with { Note = record.Note + note } : record);
    }

    /// <summary>
    /// BiasCorrection=auto: whether the corrected model's outputs are strictly closer (MSE over the float outputs, on
    /// calibration data) to the float model's than the uncorrected one's. Deterministic: same data, same runs; a tie keeps it off.
    /// </summary>
    private static bool KeepsCorrection(CompressionContext context, Onnx.OnnxModel reference, IReadOnlyList<QdqRewriter.Correction> corrections)
    {
        var outputs = context.Model.Graph.Output.Where(o => o.Type?.TensorType?.ElemType == (int)Onnx.Protobuf.TensorProto.Types.DataType.Float).Select(o => o.Name).ToList();
        if (outputs.Count == 0) return false;
        double Mse()
        {
            double sum = 0;
            long count = 0;
            context.CapturePairedActivations("bias-correction", reference, outputs, (batch, original) =>
            {
                foreach (var name in outputs)
                {
                    var (a, b) = (batch[name].Data, original[name].Data);
                    for (var k = 0; k < a.Length; k++) { var d = (double)a[k] - b[k]; sum += d * d; }
                    count += a.Length;
                }
            });
            return count > 0 ? sum / count : 0;
        }
        var with = Mse();
        foreach (var c in corrections) context.Graph.SetInitializer(Onnx.Tensors.FromInt32s(c.Initializer, [c.Plain.Length], c.Plain));
        var without = Mse();
        foreach (var c in corrections) context.Graph.SetInitializer(Onnx.Tensors.FromInt32s(c.Initializer, [c.Corrected.Length], c.Corrected));
        return with < without;
    }

    /// <summary>
    /// Runs the calibration data through the model once, feeding every tensor's values to its own calibrator batch by
    /// batch (memory: one batch plus fixed-size statistics per tensor). Returns each tensor's range and rank.
    /// </summary>
    public static (Dictionary<string, ActivationRange> Ranges, Dictionary<string, int> Ranks) Calibrate(CompressionContext context, IReadOnlyList<string> tensors, InputMeans? means = null)
    {
        // Model inputs (and reshapes of them) are raw data, not activations with a tail: clipping them cuts signal
        // (entropy clips Fashion-MNIST images at their background level), so they keep their observed range.
        var calibrators = tensors.ToDictionary(t => t,
            t => IsModelInput(context.Graph, t) ? new MinMaxCalibrator() : ActivationCalibrator.Create(context.Policy.Get<QuantizationOptions>().CalibrationMethod, context.Policy.Get<QuantizationOptions>().CalibrationPercentile),
            StringComparer.Ordinal);
        var ranks = new Dictionary<string, int>(StringComparer.Ordinal);
        context.CaptureActivations("quantize-int8", tensors, batch =>
        {
            foreach (var (name, tensor) in batch)
            {
                calibrators[name].Collect(tensor.Data);
                ranks[name] = tensor.Shape.Length;
                means?.Add(name, tensor);
            }
        });
        return (calibrators.ToDictionary(p => p.Key, p => p.Value.ComputeRange(), StringComparer.Ordinal), ranks);
    }

    private static bool Wants(CompressionContext context, Onnx.Protobuf.NodeProto node) =>
        context.Options<QuantizationOptions>(node).Quantize == QuantizeMode.Int8 && !context.IsExcluded(node);

    private static bool IsModelInput(OnnxGraph graph, string tensor) =>
        graph.GraphInputNames.Contains(tensor) ||
        (graph.Producer(tensor) is { } producer && QdqPlan.PassThroughOps.Contains(producer.OpType) && producer.Output[0] == tensor && IsModelInput(graph, producer.Input[0]));

    private static void RecordFloatLayers(CompressionContext context, QdqPlan plan)
    {
        foreach (var (layer, reason, byPolicy) in plan.FloatLayers)
        {
            context.Record(new LayerRecord
            {
                Layer = layer.Name, Op = layer.OpType, Technique = "int8", Shape = layer.WeightShape,
                ParametersBefore = layer.Parameters, ParametersAfter = layer.Parameters, Bits = 32, Note = "left in float: " + reason,
            });
        }
        // One warning per reason: a MobileNet has dozens of depthwise convolutions left in float for the same one.
        foreach (var group in plan.FloatLayers.Where(f => !f.ByPolicy).GroupBy(f => f.Reason))
        {
            var layers = group.Select(f => $"'{f.Layer.Name}' ({f.Layer.OpType})").ToList();
            var named = layers.Count <= 5 ? string.Join(", ", layers) : string.Join(", ", layers.Take(5)) + $" and {layers.Count - 5} more";
            context.Warn(DiagnosticCodes.LayerLeftInFloat, $"int8: {(layers.Count == 1 ? "layer" : $"{layers.Count} layers")} {named} left in float: {group.Key}");
        }
    }
}
