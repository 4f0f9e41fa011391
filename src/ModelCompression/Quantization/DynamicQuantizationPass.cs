using System.Runtime.InteropServices;
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
    public bool IsRequested(CompressionPolicy policy) => policy.AnyLayer<QuantizationOptions>(q => q.Quantize is QuantizeMode.Int8Dynamic or QuantizeMode.Int8);

    /// <summary>
    /// Whether this pass quantizes the layer: every Gemm/MatMul under int8-dynamic, and under static int8 those that
    /// calibration cannot reach (inside an If/Loop/Scan body), so <c>Quantize=int8</c> still stores their weights in
    /// int8. Convolutions never (ConvInteger is slow); the static pass owns the rest.
    /// </summary>
    public static bool Owns(QuantizeMode mode, WeightedLayer layer) =>
        mode == QuantizeMode.Int8Dynamic || (mode == QuantizeMode.Int8 && layer.InSubgraph && layer.Layout != WeightLayout.Convolution);

    /// <summary>LSTMs have no QDQ form ONNX Runtime fuses: under either int8 mode they become DynamicQuantizeLSTM.</summary>
    public static bool OwnsLstm(QuantizeMode mode) => mode is QuantizeMode.Int8Dynamic or QuantizeMode.Int8;

    /// <summary>The LSTMs of every graph, with the graph that holds each.</summary>
    public static IEnumerable<(OnnxGraph Graph, NodeProto Node)> Lstms(OnnxGraph graph) =>
        graph.SelfAndSubgraphs().SelectMany(g => g.Nodes.Where(n => n.OpType == "LSTM" && n.Domain is "" or "ai.onnx").Select(n => (g, n)));

    public void Apply(CompressionContext context)
    {
        // DynamicQuantizeLinear exists from opset 11; OpsetUpgradePass has raised the model unless it could not (CM0304).
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
            if (!Owns(context.Options<QuantizationOptions>(layer.Node).Quantize, layer)) continue; // the static pass (or none) owns this layer
            if (context.IsExcluded(layer.Node)) { LeaveFloat(context, layer, "excluded by policy", warn: false); continue; }
            if (Unsupported(layer) is { } reason) { LeaveFloat(context, layer, reason, warn: true); continue; }
            Quantize(context, layer);
            quantized++;
        }
        foreach (var (graphView, lstm) in Lstms(graph).ToList())
        {
            if (!OwnsLstm(context.Options<QuantizationOptions>(lstm).Quantize) || context.IsExcluded(lstm)) continue;
            if (QuantizeLstm(context, graphView, lstm)) quantized++;
        }
        // Under static int8 this pass only takes what calibration cannot reach; the static pass speaks for the rest.
        if (quantized == 0 && context.Policy.AnyLayer<QuantizationOptions>(q => q.Quantize == QuantizeMode.Int8Dynamic))
            context.Warn(DiagnosticCodes.NothingToCompress, "int8-dynamic: no Gemm/MatMul/LSTM layer can be quantized");
    }

    /// <summary>ONNX Runtime's contrib domain, home of DynamicQuantizeLSTM.</summary>
    private const string MicrosoftDomain = "com.microsoft";

    /// <summary>
    /// An LSTM with constant float W [D, 4H, I] and R [D, 4H, H] becomes ONNX Runtime's DynamicQuantizeLSTM (the
    /// op its own dynamic quantizer writes): W and R in int8 per gate row, stored transposed as [D, I, 4H] and
    /// [D, H, 4H], the input quantized per step at run time. Bias, states and outputs are unchanged. Returns false
    /// (with the reason recorded) for an LSTM it leaves in float.
    /// </summary>
    private static bool QuantizeLstm(CompressionContext context, OnnxGraph graph, NodeProto node)
    {
        var name = CompressionContext.LayerName(node);
        var w = node.Input.Count > 2 ? graph.Initializer(node.Input[1]) : null;
        var r = node.Input.Count > 2 ? graph.Initializer(node.Input[2]) : null;
        string? reason = null;
        if (w is null || r is null || w.DataType != (int)TensorProto.Types.DataType.Float || r.DataType != (int)TensorProto.Types.DataType.Float || w.Dims.Count != 3 || r.Dims.Count != 3)
            reason = "W and R are not constant float [D, 4H, I] tensors";
        else if (graph.Root.UsesEverywhere(w.Name) != 1 || graph.Root.UsesEverywhere(r.Name) != 1)
            reason = "W or R is shared with another node";
        else if (node.Attribute.FirstOrDefault(a => a.Name == "layout")?.I is { } layout && layout != 0)
            reason = "layout=1 (DynamicQuantizeLSTM takes sequence-first inputs only)";
        var parameters = w is null || r is null ? 0 : Tensors.ElementCount(w) + Tensors.ElementCount(r);
        if (reason is not null)
        {
            context.Record(new LayerRecord { Layer = name, Op = node.OpType, Technique = "int8-dynamic", ParametersBefore = parameters, ParametersAfter = parameters, Bits = 32, Note = "left in float: " + reason });
            context.Warn(DiagnosticCodes.LayerLeftInFloat, $"int8-dynamic: layer '{name}' (LSTM) left in float: {reason}");
            return false;
        }

        var inputs = new List<string> { node.Input[0] };
        var parameterNames = new List<string>();
        double errorSquares = 0, normSquares = 0;
        foreach (var tensor in new[] { w!, r! })
        {
            var (directions, rows, cols) = ((int)tensor.Dims[0], (int)tensor.Dims[1], (int)tensor.Dims[2]);
            var values = context.Model.ReadFloats(tensor);
            var q = Int8Quantizer.QuantizePerChannel(values, directions * rows, cols);
            var transposed = new sbyte[q.Values.Length];
            for (var d = 0; d < directions; d++)
                for (var o = 0; o < rows; o++)
                    for (var i = 0; i < cols; i++)
                        transposed[(long)d * rows * cols + (long)i * rows + o] = q.Values[(long)d * rows * cols + (long)o * cols + i];
            var norm = values.Sum(v => (double)v * v);
            normSquares += norm;
            errorSquares += q.RelativeError * q.RelativeError * norm;
            var quantizedName = graph.FreshName(tensor.Name + "_quantized");
            var scaleName = graph.FreshName(tensor.Name + "_scale");
            var zeroPointName = graph.FreshName(tensor.Name + "_zero_point");
            graph.SetInitializer(Tensors.FromInt8s(quantizedName, [directions, cols, rows], transposed));
            graph.SetInitializer(Tensors.FromFloats(scaleName, [directions, rows], q.Scales));
            graph.SetInitializer(Tensors.FromInt8s(zeroPointName, [directions, rows], new sbyte[directions * rows]));
            inputs.Add(quantizedName);
            parameterNames.AddRange([scaleName, zeroPointName]);
        }
        for (var i = 3; i < 8; i++) inputs.Add(node.Input.Count > i ? node.Input[i] : "");
        inputs.AddRange(parameterNames);
        var quantized = new NodeProto { OpType = "DynamicQuantizeLSTM", Domain = MicrosoftDomain, Name = graph.FreshName(name + "_quant"), Input = { inputs }, Output = { node.Output } };
        quantized.Attribute.AddRange(node.Attribute.Where(a => a.Name != "layout").Select(a => a.Clone()));
        graph.ReplaceNode(node, quantized);
        graph.RemoveInitializer(w!.Name);
        graph.RemoveInitializer(r!.Name);
        if (!context.Model.Proto.OpsetImport.Any(o => o.Domain == MicrosoftDomain))
            context.Model.Proto.OpsetImport.Add(new OperatorSetIdProto { Domain = MicrosoftDomain, Version = 1 });

        context.Record(new LayerRecord
        {
            Layer = name, Op = node.OpType, Technique = "int8-dynamic", Shape = w.Dims.ToArray(),
            ParametersBefore = parameters, ParametersAfter = parameters, Bits = 8,
            ReconstructionError = normSquares > 0 ? Math.Sqrt(errorSquares / normSquares) : 0,
            Note = "DynamicQuantizeLSTM (ONNX Runtime): int8 W and R per gate row, input quantized per step at run time",
        });
        return true;
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
        // MatMulInteger multiplies x·B with B laid out [in, out]; the scale is per column (output). Symmetric weights
        // leave out B's zero point (the default is 0). A weight already stored [in, out] (MatMul) is quantized where it
        // lies (the memory-mapped source when it is external data), with no float copy and no transpose.
        var inOut = new byte[layer.Parameters];
        var weights = layer.QuantizeInt8(context.Model, MemoryMarshal.Cast<byte, sbyte>(inOut.AsSpan()), inOut: true);
        context.Model.ReleasePages(layer.Weight);
        var weightName = graph.FreshName(layer.Weight.Name + "_quantized");
        var weightScale = graph.FreshName(layer.Weight.Name + "_scale");
        graph.SetInitializer(Tensors.Wrap(weightName, [layer.InFeatures, layer.OutFeatures], TensorProto.Types.DataType.Int8, inOut));
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
