using ModelCompression.Onnx;
using ModelCompression.Passes;

namespace ModelCompression.Int4;

/// <summary>
/// int4 convolutions need opset 21 (the int4/uint4 types, and Cast from them). A model at opset
/// 13–20 is relabelled to 21 when every default-domain op in it (subgraphs included) has the same meaning in both
/// versions — versions 14–21 of these ops only added types, or optional inputs/attributes whose default is the old
/// behaviour (ONNX's Changelog; the version converter's CompatibleAdapter) — except the reductions, whose axes
/// attribute became an input at 18 and is moved there. Any other op (GroupNormalization changed at 21, GridSample's
/// modes at 20, …) refuses, and the convolutions stay float with the reason. Below 13 the opset converter (<see cref="Graph.OpsetConverter"/>) would
/// be needed first; it reaches 13 only for int8.
/// </summary>
internal static class Int4Opset
{
    public const long Target = 21;
    /// <summary>IR version 10 (ONNX 1.16) carries opset 21 and the 4-bit types.</summary>
    private const long IrForTarget = 10;

    private static readonly HashSet<string> LabelOnly = new(StringComparer.Ordinal)
    {
        "Abs", "Add", "And", "ArgMax", "ArgMin", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Clip", "Concat",
        "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "CumSum", "DequantizeLinear", "Div", "Dropout",
        "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "Flatten", "Floor", "GRU", "Gather", "GatherElements",
        "GatherND", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "HardSigmoid", "HardSwish",
        "Identity", "If", "InstanceNormalization", "LSTM", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log",
        "LogSoftmax", "Loop", "MatMul", "Max", "MaxPool", "Mean", "Min", "Mod", "Mul", "Neg", "Not", "Or", "PRelu", "Pad",
        "Pow", "QuantizeLinear", "RNN", "Range", "Reciprocal", "ReduceSum", "Relu", "Reshape", "Round", "Scan", "Shape", "Sigmoid",
        "Sign", "Sin", "Size", "Slice", "Softmax", "Softplus", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "Tile",
        "TopK", "Transpose", "Unsqueeze", "Where", "Xor",
    };

    /// <summary>Reductions whose axes moved from an attribute to an optional input at opset 18 (ReduceSum did at 13).</summary>
    private static readonly HashSet<string> AxesToInput = new(StringComparer.Ordinal)
    {
        "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSumSquare",
    };

    /// <summary>Raises the model to opset 21 (or leaves it when already there); the reason when it cannot, and then nothing is changed.</summary>
    public static string? Raise(OnnxModel model)
    {
        var from = model.OpsetVersion();
        if (from >= Target) return null;
        if (from < 13) return $"the model has opset {from}; int4 convolutions need opset {Target} (int4 types), reachable from 13 or later only";
        var graph = new OnnxGraph(model.Graph);
        var other = graph.SelfAndSubgraphs().SelectMany(g => g.Nodes)
            .Where(n => n.Domain is "" or "ai.onnx" && !LabelOnly.Contains(n.OpType) && !AxesToInput.Contains(n.OpType)).Select(n => n.OpType).Distinct().Order(StringComparer.Ordinal).ToList();
        if (other.Count > 0) return $"int4 convolutions need opset {Target} (int4 types), and the model's opset {from} cannot be relabelled: {string.Join(", ", other)} not known to mean the same at opset {Target}";
        foreach (var g in graph.SelfAndSubgraphs().ToList())
            foreach (var node in g.Nodes.Where(n => n.Domain is "" or "ai.onnx" && AxesToInput.Contains(n.OpType)).ToList())
            {
                // The axes attribute becomes the op-18 axes input; without one both versions reduce over every axis.
                if (node.Attribute.FirstOrDefault(a => a.Name == "axes") is not { } axes) continue;
                var tensor = Tensors.FromInt64s(g.FreshName(CompressionContext.LayerName(node) + "_axes"), [axes.Ints.Count], axes.Ints.ToArray());
                g.SetInitializer(tensor);
                node.Attribute.Remove(axes);
                while (node.Input.Count < 1) node.Input.Add("");
                node.Input.Add(tensor.Name);
            }
        foreach (var import in model.Proto.OpsetImport.Where(o => o.Domain is "" or "ai.onnx")) import.Version = Target;
        model.Proto.IrVersion = Math.Max(model.Proto.IrVersion, IrForTarget);
        return null;
    }
}
