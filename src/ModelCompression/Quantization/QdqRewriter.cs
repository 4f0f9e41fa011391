using System.Runtime.InteropServices;
using ModelCompression.BiasCorrection;
using ModelCompression.Calibration;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;

namespace ModelCompression.Quantization;

/// <summary>
/// Turns a <see cref="QdqPlan"/> into a QDQ graph: QuantizeLinear → DequantizeLinear pairs on the planned
/// activations (uint8), DequantizeLinear on int8 per-channel weights and int32 biases, folded ReLUs removed and
/// spatial ReduceMeans rewritten as GlobalAveragePool. The float semantics of the graph stay those of the int8
/// model, so any runtime gives the same numbers; ONNX Runtime fuses each group into its int8 kernel.
/// With <c>means</c> (the layers' mean inputs) every weighted layer's bias is also computed bias-corrected
/// (<see cref="BiasCorrector"/>) and stored so; <see cref="Corrections"/> keeps both int32 forms, so the caller can
/// measure the model with and without and put the plain ones back. Records are held in <see cref="Records"/> until then.
/// </summary>
internal sealed class QdqRewriter(CompressionContext context, QdqPlan plan, IReadOnlyDictionary<string, ActivationRange> ranges, InputMeans? means = null)
{
    /// <summary>One layer's int32 bias in both forms, and ‖Δb‖/‖b‖.</summary>
    public sealed record Correction(string Layer, string Initializer, int[] Corrected, int[] Plain, double RelativeSize, bool AddedBias);

    public List<Correction> Corrections { get; } = [];
    /// <summary>The per-layer records, in order, for the caller to record once it knows whether the correction stays.</summary>
    public List<LayerRecord> Records { get; } = [];

    private readonly OnnxGraph _graph = context.Graph;
    private readonly Dictionary<string, ActivationQuantization> _parameters = new(StringComparer.Ordinal);
    /// <summary>Activations that carry a Q/DQ pair, mapped to the name int8 consumers read (the DequantizeLinear output).</summary>
    private readonly Dictionary<string, string> _dequantized = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ActivationRange> _ranges = new(ranges, StringComparer.Ordinal);
    private readonly HashSet<string> _planned = plan.Tensors.ToHashSet(StringComparer.Ordinal);

    public void Apply()
    {
        foreach (var op in plan.Ops.Where(o => o.Kind == QuantizedOpKind.SpatialMean)) RewriteAsGlobalAveragePool(op.Node);
        var opNodes = plan.Ops.Select(o => o.Node).ToHashSet<NodeProto>(ReferenceEqualityComparer.Instance);

        // Outputs first: an int8 node's output is renamed and re-quantized, so consumers keep reading the same name.
        foreach (var op in plan.Ops.Where(o => o.QuantizesOutput)) QuantizeOutput(op);
        foreach (var op in plan.Ops)
        {
            for (var i = 0; i < QdqPlan.QuantizedInputCount(op); i++)
                op.Node.Input[i] = QuantizeActivation(op.Node.Input[i], opNodes);
            if (op.Layer is not null) QuantizeWeights(op);
            else Record(op);
        }
        _graph.TopologicalSort();
    }

    /// <summary>ReduceMean(axes=[2,3]) → GlobalAveragePool, followed by a Flatten when the reduced axes were dropped.</summary>
    private void RewriteAsGlobalAveragePool(NodeProto node)
    {
        var input = node.Input[0];
        var output = node.Output[0];
        var keepDims = QdqPlan.KeepDims(node);
        node.OpType = "GlobalAveragePool";
        node.Attribute.Clear();
        node.Input.Clear();
        node.Input.Add(input);
        if (keepDims) { _graph.Invalidate(); return; }
        var pooled = _graph.FreshName(output + "_pooled");
        node.Output[0] = pooled;
        _ranges[pooled] = _ranges[output]; // same values, with two unit axes more
        _graph.InsertAfter(node, new NodeProto
        {
            OpType = "Flatten", Name = _graph.FreshName(node.Name + "_flatten"), Input = { pooled }, Output = { output },
            Attribute = { new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = 1 } },
        });
    }

    /// <summary>node → Q → DQ → (old output name): the node's only consumer becomes the QuantizeLinear, as fusion requires.</summary>
    private void QuantizeOutput(QuantizedOp op)
    {
        var tensor = op.OutputTensor;
        var parameters = ParametersOf(tensor);
        string raw;
        if (op.FoldedRelu is { } relu)
        {
            raw = op.Node.Output[0];
            _graph.RemoveNode(relu);
        }
        else
        {
            raw = _graph.FreshName(tensor + "_float");
            op.Node.Output[0] = raw;
            _graph.Invalidate();
        }
        var quantized = _graph.FreshName(tensor + "_quantized");
        var (scale, zeroPoint) = AddParameters(tensor, parameters);
        _graph.InsertAfter(op.Node, QuantizeLinear(tensor, raw, scale, zeroPoint, quantized));
        _graph.InsertAfter(_graph.Producer(quantized)!, DequantizeLinear(tensor, quantized, scale, zeroPoint, tensor));
        _dequantized[tensor] = tensor;
    }

    /// <summary>
    /// The name an int8 node reads for <paramref name="tensor"/>: its DequantizeLinear output. A tensor produced in
    /// float gets a Q/DQ pair here; int8 nodes and pass-through ops leading to int8 values read the pair, other float
    /// consumers keep the float tensor.
    /// </summary>
    private string QuantizeActivation(string tensor, HashSet<NodeProto> opNodes)
    {
        if (_dequantized.TryGetValue(tensor, out var existing)) return existing;
        var parameters = ParametersOf(tensor);
        var quantized = _graph.FreshName(tensor + "_quantized");
        var dequantized = _graph.FreshName(tensor + "_dequantized");
        var (scale, zeroPoint) = AddParameters(tensor, parameters);
        var consumers = _graph.Consumers(tensor).Where(c => opNodes.Contains(c) || (IsPassThroughOf(c, tensor) && LeadsToQuantized(c.Output[0]))).ToList();
        var quantize = QuantizeLinear(tensor, tensor, scale, zeroPoint, quantized);
        var dequantize = DequantizeLinear(tensor, quantized, scale, zeroPoint, dequantized);
        if (_graph.Producer(tensor) is { } producer)
        {
            _graph.InsertAfter(producer, quantize);
            _graph.InsertAfter(quantize, dequantize);
        }
        else
        {
            _graph.Nodes.Insert(0, dequantize);
            _graph.Nodes.Insert(0, quantize);
            _graph.Invalidate();
        }
        foreach (var consumer in consumers)
            for (var i = 0; i < consumer.Input.Count; i++)
                if (consumer.Input[i] == tensor && !ReferenceEquals(consumer, quantize)) consumer.Input[i] = dequantized;
        _graph.Invalidate();
        _dequantized[tensor] = dequantized;
        _parameters[dequantized] = parameters;
        return dequantized;
    }

    /// <summary>The scale initializer of an activation an int8 node reads: input 1 of the DequantizeLinear producing it.</summary>
    private string ScaleOf(string dequantized) =>
        _graph.Producer(dequantized) is { OpType: "DequantizeLinear" } dq ? dq.Input[1] : throw new InvalidOperationException($"'{dequantized}' is not a DequantizeLinear output");

    private static bool IsPassThroughOf(NodeProto node, string tensor) => QdqPlan.PassThroughOps.Contains(node.OpType) && node.Input[0] == tensor;

    /// <summary>Whether a tensor carries (or will carry) a Q/DQ pair: an int8 input or output, or a pass-through of one.</summary>
    private bool CarriesQdq(string tensor) =>
        _planned.Contains(tensor) || _dequantized.ContainsKey(tensor) ||
        (_graph.Producer(tensor) is { } producer && IsPassThroughOf(producer, producer.Input[0]) && CarriesQdq(producer.Input[0]));

    /// <summary>Whether the tensor is quantized for an int8 node, itself or after pass-through ops.</summary>
    private bool LeadsToQuantized(string tensor) =>
        _planned.Contains(tensor) || _graph.Consumers(tensor).Any(c => IsPassThroughOf(c, tensor) && LeadsToQuantized(c.Output[0]));

    /// <summary>
    /// uint8 parameters of a tensor: from its calibrated range, or copied from the input of the pass-through op that
    /// produced it, so that ONNX Runtime sees equal parameters on both sides and runs the op on uint8.
    /// </summary>
    private ActivationQuantization ParametersOf(string tensor)
    {
        if (_parameters.TryGetValue(tensor, out var cached)) return cached;
        var producer = _graph.Producer(tensor);
        ActivationQuantization parameters;
        if (producer is not null && IsPassThroughOf(producer, producer.Input[0]) && CarriesQdq(producer.Input[0])) parameters = ParametersOf(producer.Input[0]);
        else if (_ranges.TryGetValue(tensor, out var range)) parameters = ActivationQuantization.FromRange(range);
        else throw new InvalidOperationException($"no calibrated range for '{tensor}'");
        _parameters[tensor] = parameters;
        return parameters;
    }

    private (string Scale, string ZeroPoint) AddParameters(string tensor, ActivationQuantization parameters)
    {
        var scale = _graph.FreshName(tensor + "_scale");
        var zeroPoint = _graph.FreshName(tensor + "_zero_point");
        _graph.SetInitializer(Tensors.Scalar(scale, parameters.Scale));
        _graph.SetInitializer(Tensors.FromUInt8s(zeroPoint, ReadOnlySpan<long>.Empty, [parameters.ZeroPoint]));
        return (scale, zeroPoint);
    }

    /// <summary>Replaces the weight (and bias) by int8 per-channel (int32) constants behind DequantizeLinear nodes.</summary>
    private void QuantizeWeights(QuantizedOp op)
    {
        var layer = op.Layer!;
        var node = op.Node;
        // Without bias correction the weight is quantized where it lies, in its stored layout (no float copy); bias
        // correction needs W and Ŵ as [out, in] matrices.
        var layerMeans = means?.Of(layer);
        var stored = new byte[layer.Parameters];
        float[]? delta = null;
        float[] weightScales;
        double relativeError;
        if (layerMeans is null) (weightScales, relativeError) = layer.QuantizeInt8(context.Model, MemoryMarshal.Cast<byte, sbyte>(stored.AsSpan()), inOut: !layer.StoredOutIn);
        else
        {
            var matrix = layer.ReadMatrix(context.Model);
            var weights = Int8Quantizer.QuantizePerChannel(matrix, layer.OutFeatures, layer.InFeatures);
            delta = BiasCorrector.Delta(layer, matrix, Dequantize(weights, layer.InFeatures), layerMeans);
            (weightScales, relativeError) = (weights.Scales, weights.RelativeError);
            var codes = layer.StoredOutIn ? weights.Values : TransposeBytes(weights.Values, layer.OutFeatures, layer.InFeatures);
            MemoryMarshal.AsBytes(codes.AsSpan()).CopyTo(stored);
        }
        // A Conv or Gemm without a bias gets a zero one to carry the correction (a MatMul has no bias input).
        var addedBias = false;
        if (delta is not null && layer.BiasName is null && CanAddBias(node))
        {
            addedBias = true;
            var added = _graph.FreshName(layer.Name + "_bias");
            _graph.SetInitializer(Tensors.FromFloats(added, [layer.OutFeatures], new float[layer.OutFeatures]));
            while (node.Input.Count < 3) node.Input.Add("");
            node.Input[2] = added;
            _graph.Invalidate();
        }
        context.Model.ReleasePages(layer.Weight);
        var name = layer.Weight.Name;
        var axis = layer.StoredOutIn ? 0 : 1;
        var quantizedName = _graph.FreshName(name + "_quantized");
        var scaleName = _graph.FreshName(name + "_scale");
        var zeroPointName = _graph.FreshName(name + "_zero_point");
        var dequantizedName = _graph.FreshName(name + "_dequantized");
        _graph.SetInitializer(Tensors.Wrap(quantizedName, layer.WeightShape, TensorProto.Types.DataType.Int8, stored));
        _graph.SetInitializer(Tensors.FromFloats(scaleName, [layer.OutFeatures], weightScales));
        // All zeros, yet explicit: without a weight zero point ORT's QDQ selectors leave the Gemm/Conv unfused.
        _graph.SetInitializer(Tensors.FromInt8s(zeroPointName, [layer.OutFeatures], new sbyte[layer.OutFeatures]));
        _graph.InsertBefore(node, DequantizeLinear(name, quantizedName, scaleName, zeroPointName, dequantizedName, axis));
        node.Input[1] = dequantizedName;
        _graph.RemoveInitializer(name);

        if (layer.BiasName is { } biasName)
        {
            var bias = _graph.Initializer(biasName)!;
            var biasScales = Int8Quantizer.BiasScales(ParametersOf(node.Input[0]).Scale, weightScales);
            var floats = context.Model.ReadFloats(bias);
            var quantizedBias = Int8Quantizer.QuantizeBias(floats, biasScales);
            var biasQuantizedName = _graph.FreshName(biasName + "_quantized");
            if (delta is not null)
            {
                var corrected = new float[floats.Length];
                for (var o = 0; o < corrected.Length; o++) corrected[o] = floats[o] + delta[o];
                var plain = quantizedBias;
                quantizedBias = Int8Quantizer.QuantizeBias(corrected, biasScales);
                Corrections.Add(new Correction(layer.Name, biasQuantizedName, quantizedBias, plain, BiasCorrector.RelativeSize(floats, delta), addedBias));
            }
            var biasScaleName = _graph.FreshName(biasName + "_scale");
            var biasDequantizedName = _graph.FreshName(biasName + "_dequantized");
            _graph.SetInitializer(Tensors.FromInt32s(biasQuantizedName, [layer.OutFeatures], quantizedBias));
            // The bias scale is input scale × weight scale by definition, so it is computed rather than stored: a float
            // Mul gives the same bits as BiasScales, and ORT folds it into a constant before its QDQ fusions look. No
            // zero point either: 0, the default, is the only one an int32 bias has.
            _graph.InsertBefore(node, new NodeProto
            {
                OpType = "Mul", Name = _graph.FreshName(biasName + "_scale_Mul"), Input = { ScaleOf(node.Input[0]), scaleName }, Output = { biasScaleName },
            });
            _graph.InsertBefore(node, DequantizeLinear(biasName, biasQuantizedName, biasScaleName, null, biasDequantizedName, 0));
            node.Input[2] = biasDequantizedName;
            if (_graph.Consumers(biasName).Count == 0) _graph.RemoveInitializer(biasName);
        }
        _graph.Invalidate();

        var kernel = op.Kind switch
        {
            QuantizedOpKind.Conv => "QLinearConv",
            QuantizedOpKind.Gemm => op.QuantizesOutput ? "QGemm" : "QGemm (float output)",
            _ => op.QuantizesOutput ? "QLinearMatMul" : "MatMulIntegerToFloat",
        };
        Records.Add(new LayerRecord
        {
            Layer = layer.Name, Op = layer.OpType, Technique = "int8", Shape = layer.WeightShape,
            ParametersBefore = layer.Parameters, ParametersAfter = layer.Parameters, Bits = 8,
            ReconstructionError = relativeError,
            Note = $"{kernel}: uint8 activations, int8 per-channel weights" + (op.FoldedRelu is not null ? "; Relu folded into the output quantization" : ""),
        });
    }

    private void Record(QuantizedOp op)
    {
        var kernel = op.Kind switch
        {
            QuantizedOpKind.Add => "QLinearAdd",
            QuantizedOpKind.SpatialMean => "QLinearGlobalAveragePool (ReduceMean over H, W rewritten as GlobalAveragePool)",
            _ => "QLinear" + op.Node.OpType,
        };
        Records.Add(new LayerRecord
        {
            Layer = CompressionContext.LayerName(op.Node), Op = op.Kind == QuantizedOpKind.SpatialMean ? "ReduceMean" : op.Node.OpType,
            Technique = "int8", Bits = 8,
            Note = kernel + " on uint8 activations" + (op.FoldedRelu is not null ? "; Relu folded into the output quantization" : ""),
        });
    }

    private NodeProto QuantizeLinear(string tensor, string input, string scale, string zeroPoint, string output) => new()
    {
        OpType = "QuantizeLinear", Name = _graph.FreshName(tensor + "_QuantizeLinear"), Input = { input, scale, zeroPoint }, Output = { output },
    };

    private NodeProto DequantizeLinear(string tensor, string input, string scale, string? zeroPoint, string output, int? axis = null)
    {
        var node = new NodeProto { OpType = "DequantizeLinear", Name = _graph.FreshName(tensor + "_DequantizeLinear"), Input = { input, scale }, Output = { output } };
        if (zeroPoint is not null) node.Input.Add(zeroPoint);
        if (axis is { } a) node.Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = a });
        return node;
    }

    private static float[] Dequantize(QuantizedWeight weights, int inFeatures)
    {
        var values = new float[weights.Values.Length];
        for (var k = 0; k < values.Length; k++) values[k] = weights.Values[k] * weights.Scales[k / inFeatures];
        return values;
    }

    /// <summary>Conv takes a bias as input 2; Gemm adds C times beta, so only with beta = 1.</summary>
    private static bool CanAddBias(NodeProto node) => node.OpType switch
    {
        "Conv" => true,
        "Gemm" => (node.Attribute.FirstOrDefault(a => a.Name == "beta")?.F ?? 1f) == 1f,
        _ => false,
    };

    private static sbyte[] TransposeBytes(sbyte[] m, int rows, int cols)
    {
        var t = new sbyte[m.Length];
        for (var r = 0; r < rows; r++)
            for (var c = 0; c < cols; c++)
                t[c * rows + r] = m[r * cols + c];
        return t;
    }
}
