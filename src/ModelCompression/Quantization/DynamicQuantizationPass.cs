using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Policy;

namespace ModelCompression.Quantization;

/// <summary>
/// <c>Quantize=int8-dynamic</c>: Gemm and MatMul weights stored as int8 per output channel; activations quantized
/// at run time (per tensor, per batch), so no calibration data is needed. Each layer becomes
/// DynamicQuantizeLinear → MatMulInteger → Cast → Mul(input scale × weight scales) → Add(bias): plain ONNX that
/// ONNX Runtime fuses into a single DynamicQuantizeMatMul kernel. Convolutions stay float: ConvInteger, their
/// dynamic form, runs several times slower than a float Conv in ONNX Runtime (use <c>Quantize=int8</c> for them).
/// </summary>
public sealed class DynamicQuantizationPass : ICompressionPass
{
    public string Name => "quantize-int8-dynamic";
    public PassStage Stage => PassStage.Quantize;
    public IReadOnlyList<OptionsGroup> Reads => [QuantizationOptions.Group];
    public bool IsRequested(CompressionPolicy policy) => policy.AnyLayer<QuantizationOptions>(q => q.Quantize == QuantizeMode.Int8Dynamic);

    public void Apply(CompressionContext context)
    {
        // DynamicQuantizeLinear exists from opset 11; the model's opset is not ours to change.
        if (context.Model.OpsetVersion() < 11)
        {
            context.Warn(DiagnosticCodes.LayerSkipped, $"int8-dynamic quantization needs opset >= 11 (DynamicQuantizeLinear); the model has opset {context.Model.OpsetVersion()}: nothing quantized");
            return;
        }
        var graph = context.Graph;
        var quantized = 0;
        // Subgraph layers too: the rewrite is local to the layer's graph, whose outer initializers it reads by name.
        foreach (var layer in WeightedLayer.FindAll(graph))
        {
            if (context.Options<QuantizationOptions>(layer.Node).Quantize != QuantizeMode.Int8Dynamic) continue; // the static pass (or none) owns this layer
            if (context.IsExcluded(layer.Node)) { LeaveFloat(context, layer, "excluded by policy", warn: false); continue; }
            if (Unsupported(layer) is { } reason) { LeaveFloat(context, layer, reason, warn: true); continue; }
            Quantize(context, layer);
            quantized++;
        }
        if (quantized == 0) context.Warn(DiagnosticCodes.NothingToCompress, "int8-dynamic: no Gemm/MatMul layer can be quantized");
    }

    private static string? Unsupported(WeightedLayer layer)
    {
        if (OpRegistry.WhyNot(layer.Node, OpTechnique.DynamicInt8) is { } reason) return reason;
        if (layer.Layout != WeightLayout.Gemm) return null;
        var alpha = layer.Node.Attribute.FirstOrDefault(a => a.Name == "alpha")?.F ?? 1f;
        var beta = layer.Node.Attribute.FirstOrDefault(a => a.Name == "beta")?.F ?? 1f;
        // A bias of any broadcastable shape stays correct as an Add; ORT folds the Add in when it is a constant [N].
        return alpha != 1f || (layer.BiasName is not null && beta != 1f) ? $"Gemm with alpha={alpha}, beta={beta}" : null;
    }

    private static void Quantize(CompressionContext context, WeightedLayer layer)
    {
        var graph = layer.Graph;
        var node = layer.Node;
        var name = layer.Name;
        var weights = Int8Quantizer.QuantizePerChannel(layer.ReadMatrix(context.Model), layer.OutFeatures, layer.InFeatures);

        // MatMulInteger multiplies x·B with B laid out [in, out]; the scale is per column (output). Symmetric weights
        // leave out B's zero point (the default is 0).
        var inOut = new sbyte[weights.Values.Length];
        for (var o = 0; o < layer.OutFeatures; o++)
            for (var i = 0; i < layer.InFeatures; i++)
                inOut[i * layer.OutFeatures + o] = weights.Values[o * layer.InFeatures + i];
        var weightName = graph.FreshName(layer.Weight.Name + "_quantized");
        var weightScale = graph.FreshName(layer.Weight.Name + "_scale");
        graph.SetInitializer(Tensors.FromInt8s(weightName, [layer.InFeatures, layer.OutFeatures], inOut));
        graph.SetInitializer(Tensors.FromFloats(weightScale, [layer.OutFeatures], weights.Scales));

        string Value(string suffix) => graph.FreshName($"{name}_{suffix}");
        NodeProto Node(string op, string suffix, IEnumerable<string> inputs, IEnumerable<string> outputs) =>
            new() { OpType = op, Name = graph.FreshName($"{name}_{suffix}"), Input = { inputs }, Output = { outputs } };

        var output = node.Output[0];
        var (xq, xScale, xZeroPoint) = (Value("input_quantized"), Value("input_scale"), Value("input_zero_point"));
        var (product, productFloat, scale) = (Value("int32"), Value("int32_float"), Value("output_scale"));
        var scaled = layer.BiasName is null ? output : Value("without_bias");
        var nodes = new List<NodeProto>
        {
            Node("DynamicQuantizeLinear", "DynamicQuantizeLinear", [layer.InputName], [xq, xScale, xZeroPoint]),
            Node("MatMulInteger", "MatMulInteger", [xq, weightName, xZeroPoint], [product]),
            Node("Cast", "Cast", [product], [productFloat]),
            Node("Mul", "scales", [xScale, weightScale], [scale]),
            Node("Mul", "rescale", [productFloat, scale], [scaled]),
        };
        nodes[2].Attribute.Add(new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = (int)TensorProto.Types.DataType.Float });
        if (layer.BiasName is { } bias) nodes.Add(Node("Add", "bias", [scaled, bias], [output]));
        graph.ReplaceNode(node, [.. nodes]);
        graph.RemoveInitializer(layer.Weight.Name);

        context.Record(new LayerRecord
        {
            Layer = name, Op = layer.OpType, Technique = "int8-dynamic", Shape = layer.WeightShape,
            ParametersBefore = layer.Parameters, ParametersAfter = layer.Parameters, Bits = 8, ReconstructionError = weights.RelativeError,
            Note = "DynamicQuantizeMatMul: int8 per-channel weights, uint8 activations quantized per batch at run time",
        });
    }

    private static void LeaveFloat(CompressionContext context, WeightedLayer layer, string reason, bool warn)
    {
        context.Record(new LayerRecord
        {
            Layer = layer.Name, Op = layer.OpType, Technique = "int8-dynamic", Shape = layer.WeightShape,
            ParametersBefore = layer.Parameters, ParametersAfter = layer.Parameters, Bits = 32, Note = "left in float: " + reason,
        });
        if (warn) context.Warn(DiagnosticCodes.LayerLeftInFloat, $"int8-dynamic: layer '{layer.Name}' ({layer.OpType}) left in float: {reason}");
    }
}
