using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Policy;

namespace ModelCompression.Quantization;

/// <summary>What an int8 node becomes once ONNX Runtime fuses its QDQ group (the kernel it is meant to run as).</summary>
public enum QuantizedOpKind
{
    /// <summary>Conv → QLinearConv.</summary>
    Conv,
    /// <summary>Gemm → QGemm (int8 or float output).</summary>
    Gemm,
    /// <summary>MatMul → QLinearMatMul, or MatMulIntegerToFloat when its output stays float.</summary>
    MatMul,
    /// <summary>Add of two activations → QLinearAdd.</summary>
    Add,
    /// <summary>AveragePool / GlobalAveragePool → QLinearAveragePool / QLinearGlobalAveragePool.</summary>
    Pool,
    /// <summary>ReduceMean over H and W of an NCHW tensor, rewritten as GlobalAveragePool → QLinearGlobalAveragePool.</summary>
    SpatialMean,
}

/// <summary>One node of the plan, with the ReLU that its output quantization absorbs, if any.</summary>
public sealed class QuantizedOp(NodeProto node, QuantizedOpKind kind, WeightedLayer? layer)
{
    public NodeProto Node { get; } = node;
    public QuantizedOpKind Kind { get; } = kind;
    public WeightedLayer? Layer { get; } = layer;
    /// <summary>Whether a QuantizeLinear follows the node (always, except a Gemm/MatMul whose consumers all stay float).</summary>
    public bool QuantizesOutput { get; set; }
    /// <summary>A Relu right after the node, removed: a zero point of 0 makes QuantizeLinear clamp at 0 exactly like it.</summary>
    public NodeProto? FoldedRelu { get; set; }
    /// <summary>The activation tensor the node's int8 output stands for (the ReLU's output when one is folded).</summary>
    public string OutputTensor => FoldedRelu?.Output[0] ?? Node.Output[0];
}

/// <summary>A weighted layer the pass leaves in float, and why (for the report and a CM0301/CM0302 warning).</summary>
public sealed record FloatLayer(WeightedLayer Layer, string Reason, bool ByPolicy);

/// <summary>
/// Which nodes run in int8 and which activation tensors need a range. The rules follow what ONNX Runtime's CPU
/// provider fuses (its QDQ selectors): a Conv fuses into QLinearConv only with a DequantizeLinear on every input
/// (an int32 bias included) and a single QuantizeLinear as its only consumer; on x86 only with uint8 activations
/// and int8 weights. Add and average pooling fuse into QLinearAdd / QLinearGlobalAveragePool when their inputs are
/// already int8; data-movement ops (Flatten, Reshape, MaxPool …) between two int8 tensors with equal parameters
/// lose their QDQ pair and run on uint8. Everything else stays float.
/// </summary>
public sealed class QdqPlan
{
    /// <summary>Ops that move or select values without computing new ones: DQ → op → Q with the same parameters runs on uint8.</summary>
    public static readonly IReadOnlySet<string> PassThroughOps = OpRegistry.OpsFor(OpTechnique.Int8PassThrough);

    private QdqPlan(IReadOnlyList<QuantizedOp> ops, IReadOnlyList<FloatLayer> floatLayers, IReadOnlyList<string> tensors)
    {
        Ops = ops;
        FloatLayers = floatLayers;
        Tensors = tensors;
    }

    /// <summary>The int8 nodes, in graph order.</summary>
    public IReadOnlyList<QuantizedOp> Ops { get; }
    public IReadOnlyList<FloatLayer> FloatLayers { get; }
    /// <summary>
    /// Every activation tensor that gets a QuantizeLinear/DequantizeLinear pair, in graph order: what calibration
    /// measures. A plan made without ranks is a superset of the final one, so measuring its tensors is enough.
    /// </summary>
    public IReadOnlyList<string> Tensors { get; }

    /// <summary>
    /// Plans the graph. <paramref name="ranks"/> holds the rank of measured tensors; without it every spatial
    /// ReduceMean candidate is assumed eligible (a superset plan, used to decide what to measure).
    /// </summary>
    public static QdqPlan Create(CompressionContext context, IReadOnlyDictionary<string, int>? ranks)
    {
        var graph = context.Graph;
        bool Wanted(NodeProto node) => context.Options<QuantizationOptions>(node).Quantize == QuantizeMode.Int8 && !context.IsExcluded(node);

        var ops = new Dictionary<NodeProto, QuantizedOp>(ReferenceEqualityComparer.Instance);
        var floatLayers = new List<FloatLayer>();
        foreach (var layer in WeightedLayer.Find(graph))
        {
            var quantize = context.Options<QuantizationOptions>(layer.Node).Quantize;
            var excluded = context.IsExcluded(layer.Node);
            if (quantize == QuantizeMode.Int8Dynamic && !excluded) continue; // the dynamic pass owns it
            if (excluded) { floatLayers.Add(new FloatLayer(layer, "excluded by policy", ByPolicy: true)); continue; }
            if (quantize != QuantizeMode.Int8) { floatLayers.Add(new FloatLayer(layer, $"Quantize={PolicySettings.FormatEnum(quantize)} for this layer", ByPolicy: true)); continue; }
            if ((OpRegistry.WhyNot(layer.Node, OpTechnique.StaticInt8) ?? Unsupported(graph, layer)) is { } reason) { floatLayers.Add(new FloatLayer(layer, reason, ByPolicy: false)); continue; }
            if (context.Options<QuantizationOptions>(layer.Node).KeepSlowLayersFloat && SlowerInInt8(layer) is { } slower) { floatLayers.Add(new FloatLayer(layer, slower, ByPolicy: false)); continue; }
            var kind = layer.Layout switch { WeightLayout.Convolution => QuantizedOpKind.Conv, WeightLayout.Gemm => QuantizedOpKind.Gemm, _ => QuantizedOpKind.MatMul };
            ops[layer.Node] = new QuantizedOp(layer.Node, kind, layer);
        }
        // Calibration measures main-graph values only: a layer inside an If/Loop/Scan body stays float, with the reason.
        // Its Gemm/MatMul layers get the dynamic form instead (DynamicQuantizationPass.Owns).
        foreach (var layer in WeightedLayer.FindAll(graph).Where(l => l.InSubgraph && Wanted(l.Node) && !DynamicQuantizationPass.Owns(QuantizeMode.Int8, l)))
            floatLayers.Add(new FloatLayer(layer, WeightedLayer.SubgraphReason, ByPolicy: false));

        // Grow the int8 region: an Add or pooling joins when all its inputs are already int8 (so it costs no new
        // QuantizeLinear), and a Gemm/MatMul quantizes its output when an int8 node reads it. Repeat until stable.
        bool changed;
        do
        {
            changed = false;
            foreach (var op in ops.Values)
            {
                var output = OutputAfterRelu(graph, op.Node);
                // A Gemm/MatMul followed by a Relu only fuses with a QuantizeLinear after the Relu (ORT's selector
                // rejects Gemm → Relu → float), and that quantization then does the Relu for free.
                var quantize = op.Kind is not (QuantizedOpKind.Gemm or QuantizedOpKind.MatMul) || FoldableRelu(graph, op.Node) is not null || FeedsQuantizedOp(graph, ops, output);
                if (quantize != op.QuantizesOutput) { op.QuantizesOutput = quantize; changed = true; }
            }
            var quantized = QuantizedTensors(graph, ops);
            foreach (var node in graph.Nodes)
            {
                if (ops.ContainsKey(node) || !Wanted(node)) continue;
                var kind = ActivationOpKind(graph, node, ranks);
                if (kind is null) continue;
                var inputs = node.OpType == "Add" ? node.Input.Take(2) : node.Input.Take(1);
                if (!inputs.All(i => IsQuantized(graph, quantized, i))) continue;
                ops[node] = new QuantizedOp(node, kind.Value, null) { QuantizesOutput = true };
                changed = true;
            }
        } while (changed);

        foreach (var op in ops.Values)
            if (op.QuantizesOutput && FoldableRelu(graph, op.Node) is { } relu) op.FoldedRelu = relu;

        var ordered = graph.Nodes.Where(ops.ContainsKey).Select(n => ops[n]).ToList();
        return new QdqPlan(ordered, floatLayers, CollectTensors(graph, ordered));
    }

    /// <summary>Why ONNX Runtime could not fuse this layer into an int8 kernel, or null when it can.</summary>
    private static string? Unsupported(OnnxGraph graph, WeightedLayer layer)
    {
        var node = layer.Node;
        if (layer.BiasName is { } bias)
        {
            var tensor = graph.Initializer(bias);
            if (tensor is null || tensor.DataType != (int)TensorProto.Types.DataType.Float) return "its bias is not a constant float tensor (an int32 bias is needed for the int8 kernel)";
            if (tensor.Dims.Count != 1 || tensor.Dims[0] != layer.OutFeatures) return $"its bias has shape [{string.Join(",", tensor.Dims)}], not [{layer.OutFeatures}]";
        }
        if (layer.Layout == WeightLayout.Gemm)
        {
            var alpha = node.Attribute.FirstOrDefault(a => a.Name == "alpha")?.F ?? 1f;
            var beta = node.Attribute.FirstOrDefault(a => a.Name == "beta")?.F ?? 1f;
            if (alpha != 1f || (layer.BiasName is not null && beta != 1f)) return $"Gemm with alpha={alpha}, beta={beta} (QGemm needs 1)";
        }
        return null;
    }

    /// <summary>
    /// Why ONNX Runtime's CPU int8 kernel for this conv is slower than its float kernel, or null. Measured per node
    /// with ONNX Runtime's profiler (1.31, x86-64 with AVX-512 VNNI, batch 8) on the PP-OCR detector and classifier:
    /// uint8 depthwise convolutions ran 1.2–1.9× the float time for 3×3 kernels and up to 10× for 5×5 ones on small
    /// maps (the float path runs them in the blocked NCHWc layout), and the first convolution over the 3-channel
    /// image ran 1.9×; dense convolutions ran 0.25–0.5×. A depthwise conv left in float usually costs no extra
    /// quantize/dequantize either, as the activations around it (HardSwish) stay float anyway.
    /// </summary>
    internal static string? SlowerInInt8(WeightedLayer layer)
    {
        if (layer.Layout != WeightLayout.Convolution) return null;
        var inputsPerGroup = layer.WeightShape[1];
        if (layer.Group > 1 && inputsPerGroup == 1) return "depthwise convolution: ONNX Runtime's int8 depthwise kernel runs slower than its float one (KeepSlowLayersFloat=false quantizes it)";
        if (layer.Group == 1 && inputsPerGroup <= 4 && layer.Graph.Root.GraphInputNames.Contains(layer.InputName))
            return $"first convolution over {inputsPerGroup} input channel(s): its int8 kernel runs about 2× slower than the float one (KeepSlowLayersFloat=false quantizes it)";
        return null;
    }

    /// <summary>What a non-weighted node becomes in int8, or null when it stays float.</summary>
    private static QuantizedOpKind? ActivationOpKind(OnnxGraph graph, NodeProto node, IReadOnlyDictionary<string, int>? ranks)
    {
        if (!OpRegistry.Handles(node, OpTechnique.StaticInt8) || node.Input.Count == 0 || node.Output.Count == 0) return null;
        switch (node.OpType)
        {
            case "Add" when node.Input.Count == 2 && node.Input.All(i => graph.Initializer(i) is null):
                return QuantizedOpKind.Add;
            case "GlobalAveragePool":
            case "AveragePool":
                return QuantizedOpKind.Pool;
            case "ReduceMean" when IsSpatialMean(graph, node, ranks):
                return QuantizedOpKind.SpatialMean;
            default:
                return null;
        }
    }

    /// <summary>ReduceMean over exactly axes 2 and 3 of a 4-D tensor (global average pooling of NCHW).</summary>
    internal static bool IsSpatialMean(OnnxGraph graph, NodeProto node, IReadOnlyDictionary<string, int>? ranks)
    {
        var axes = ReduceAxes(graph, node);
        if (axes is null) return false;
        if (ranks is null) return axes.Length == 2; // superset while ranks are unknown
        if (!ranks.TryGetValue(node.Input[0], out var rank) || rank != 4) return false;
        var normalized = axes.Select(a => a < 0 ? a + rank : a).Order().ToArray();
        return normalized is [2, 3];
    }

    /// <summary>The axes of a ReduceMean (attribute before opset 18, constant input from 18), or null when not constant.</summary>
    internal static long[]? ReduceAxes(OnnxGraph graph, NodeProto node)
    {
        if (node.Attribute.FirstOrDefault(a => a.Name == "axes") is { } attribute) return attribute.Ints.ToArray();
        if (node.Input.Count > 1 && node.Input[1].Length > 0 && graph.Initializer(node.Input[1]) is { } tensor) return Onnx.Tensors.View(tensor).ToInt64Array();
        return null; // all axes (or non-constant axes): not a spatial mean
    }

    internal static bool KeepDims(NodeProto node) => (node.Attribute.FirstOrDefault(a => a.Name == "keepdims")?.I ?? 1) != 0;

    /// <summary>The Relu that alone consumes the node's output, when the QuantizeLinear can do its job.</summary>
    private static NodeProto? FoldableRelu(OnnxGraph graph, NodeProto node)
    {
        var output = node.Output[0];
        if (graph.IsGraphOutput(output)) return null;
        var consumers = graph.Consumers(output);
        return consumers is [{ OpType: "Relu", Domain: "" or "ai.onnx" } relu] ? relu : null;
    }

    private static string OutputAfterRelu(OnnxGraph graph, NodeProto node) => FoldableRelu(graph, node)?.Output[0] ?? node.Output[0];

    /// <summary>Whether an int8 node reads the value, directly or through pass-through ops.</summary>
    private static bool FeedsQuantizedOp(OnnxGraph graph, IReadOnlyDictionary<NodeProto, QuantizedOp> ops, string value)
    {
        foreach (var consumer in graph.Consumers(value))
        {
            if (ops.ContainsKey(consumer) && consumer.Input.Take(QuantizedInputCount(ops[consumer])).Contains(value)) return true;
            if (PassThroughOps.Contains(consumer.OpType) && consumer.Input[0] == value && FeedsQuantizedOp(graph, ops, consumer.Output[0])) return true;
        }
        return false;
    }

    /// <summary>Tensors that are int8 under the current set of ops: outputs that get a QuantizeLinear, and activation inputs.</summary>
    private static HashSet<string> QuantizedTensors(OnnxGraph graph, IReadOnlyDictionary<NodeProto, QuantizedOp> ops)
    {
        var set = new HashSet<string>(StringComparer.Ordinal);
        foreach (var op in ops.Values)
        {
            if (op.QuantizesOutput) set.Add(OutputAfterRelu(graph, op.Node));
            foreach (var input in op.Node.Input.Take(QuantizedInputCount(op))) set.Add(input);
        }
        return set;
    }

    /// <summary>A value is int8 when it is in <paramref name="quantized"/> or comes from one through pass-through ops.</summary>
    private static bool IsQuantized(OnnxGraph graph, HashSet<string> quantized, string value)
    {
        if (quantized.Contains(value)) return true;
        var producer = graph.Producer(value);
        return producer is not null && PassThroughOps.Contains(producer.OpType) && producer.Output[0] == value && IsQuantized(graph, quantized, producer.Input[0]);
    }

    /// <summary>How many leading inputs of the op are activations that get quantized (the rest are weights or axes).</summary>
    internal static int QuantizedInputCount(QuantizedOp op) => op.Kind == QuantizedOpKind.Add ? 2 : 1;

    private static List<string> CollectTensors(OnnxGraph graph, IReadOnlyList<QuantizedOp> ops)
    {
        var tensors = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var op in ops)
        {
            foreach (var input in op.Node.Input.Take(QuantizedInputCount(op)))
                if (seen.Add(input)) tensors.Add(input);
            if (op.QuantizesOutput && seen.Add(op.OutputTensor)) tensors.Add(op.OutputTensor);
        }
        return tensors;
    }
}
