using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Policy;

namespace ModelCompression.Graph;

/// <summary>
/// HardSwish spelled out as four elementwise ops, x·Clip(x + 3, 0, 6)/6 (paddle2onnx and older exporters write it so;
/// MobileNetV3 has one after most convolutions), becomes one op: <c>HardSwish</c> from opset 14, else
/// <c>Mul(x, HardSigmoid(x; 1/6, 1/2))</c>. ONNX Runtime fuses neither form, and each of the four ops reads and writes
/// the whole activation: on the PP-OCR classifier they are a third of the fp32 run time. In an int8 model every op
/// left in float between two int8 convolutions is also a dequantize/quantize round trip, so fewer of them matter more.
/// Mathematically exact; the rounding of x/6 + 1/2 versus (x + 3)/6 differs in the last bit.
/// </summary>
public sealed class HardSwishFusionPass : ICompressionPass
{
    public string Name => "fuse-hardswish";
    public PassStage Stage => PassStage.Fold;
    public IReadOnlyList<OptionsGroup> Reads => [GraphOptions.Group];
    public bool IsRequested(CompressionPolicy policy) => policy.Get<GraphOptions>().FuseActivations;

    public void Apply(CompressionContext context)
    {
        var graph = context.Graph;
        var opset = context.Model.OpsetVersion();
        var fused = 0;
        foreach (var add in graph.Nodes.Where(n => n.OpType == "Add" && IsDefaultDomain(n)).ToList())
        {
            if (Match(context, add) is not { } match || context.IsExcluded(add)) continue;
            var (x, nodes, output) = match;
            var name = graph.FreshName(add.Name.Length > 0 ? add.Name + "_hardswish" : "hardswish");
            NodeProto[] replacement;
            if (opset >= 14) replacement = [Node("HardSwish", name, [x], output)];
            else
            {
                var gate = graph.FreshName(name + "_gate");
                var sigmoid = Node("HardSigmoid", gate, [x], gate);
                sigmoid.Attribute.Add(new AttributeProto { Name = "alpha", Type = AttributeProto.Types.AttributeType.Float, F = 1f / 6 });
                sigmoid.Attribute.Add(new AttributeProto { Name = "beta", Type = AttributeProto.Types.AttributeType.Float, F = 0.5f });
                replacement = [sigmoid, Node("Mul", name, [x, gate], output)];
            }
            // The last op of the pattern is replaced in place (its consumers follow it); the others go.
            graph.ReplaceNode(nodes[^1], replacement);
            foreach (var node in nodes.Take(nodes.Length - 1)) graph.RemoveNode(node);
            fused++;
            context.Record(new LayerRecord
            {
                Layer = name, Op = replacement[^1].OpType, Technique = Name, Rewritten = true,
                Note = $"x·Clip(x+3, 0, 6)/6 on {x} (4 ops) as {(opset >= 14 ? "HardSwish" : "Mul(x, HardSigmoid(x)) (HardSwish needs opset 14)")}",
            });
        }
        if (fused > 0) graph.RemoveDeadNodes();
    }

    /// <summary>
    /// Add(x, 3) → Clip(0, 6) → Mul(x, ·) → Div(·, 6) (or Mul by 1/6), or the Clip divided first and then multiplied
    /// by x; every intermediate value used only inside the pattern. Returns x, the pattern's nodes in order, and the
    /// value the pattern computes.
    /// </summary>
    private static (string X, NodeProto[] Nodes, string Output)? Match(CompressionContext context, NodeProto add)
    {
        var graph = context.Graph;
        if (add.Input.Count != 2) return null;
        var x = Scalar(context, add.Input[1]) == 3f ? add.Input[0] : Scalar(context, add.Input[0]) == 3f ? add.Input[1] : null;
        if (x is null || SingleConsumer(graph, add.Output[0]) is not { OpType: "Clip" } clip || !IsDefaultDomain(clip) || !ClipsTo(context, clip, 0, 6)) return null;
        if (SingleConsumer(graph, clip.Output[0]) is not { } next || !IsDefaultDomain(next)) return null;
        if (next.OpType == "Mul" && Other(next, clip.Output[0]) == x && SingleConsumer(graph, next.Output[0]) is { } scale && DividesBySix(context, scale, next.Output[0]))
            return (x, [add, clip, next, scale], scale.Output[0]);
        if (DividesBySix(context, next, clip.Output[0]) && SingleConsumer(graph, next.Output[0]) is { OpType: "Mul" } mul && IsDefaultDomain(mul) && Other(mul, next.Output[0]) == x)
            return (x, [add, clip, next, mul], mul.Output[0]);
        return null;
    }

    /// <summary>Div(value, 6) or Mul(value, 1/6).</summary>
    private static bool DividesBySix(CompressionContext context, NodeProto node, string value) =>
        IsDefaultDomain(node) && node.Input.Count == 2 && node.Input[0] == value && Scalar(context, node.Input[1]) is { } c &&
        ((node.OpType == "Div" && c == 6f) || (node.OpType == "Mul" && MathF.Abs(c - 1f / 6) < 1e-6f));

    /// <summary>Clip bounds from attributes (before opset 11) or constant inputs.</summary>
    private static bool ClipsTo(CompressionContext context, NodeProto clip, float low, float high)
    {
        float? min = clip.Attribute.FirstOrDefault(a => a.Name == "min")?.F, max = clip.Attribute.FirstOrDefault(a => a.Name == "max")?.F;
        if (clip.Input.Count > 1 && clip.Input[1].Length > 0) min = Scalar(context, clip.Input[1]);
        if (clip.Input.Count > 2 && clip.Input[2].Length > 0) max = Scalar(context, clip.Input[2]);
        return min == low && max == high;
    }

    /// <summary>The value of a one-element float constant, or null.</summary>
    private static float? Scalar(CompressionContext context, string name) =>
        context.Graph.Initializer(name) is { DataType: (int)TensorProto.Types.DataType.Float } t && Tensors.ElementCount(t) == 1 ? context.Model.ReadFloats(t)[0] : null;

    private static NodeProto? SingleConsumer(OnnxGraph graph, string value) =>
        !graph.IsGraphOutput(value) && graph.Consumers(value) is [var only] ? only : null;

    private static string? Other(NodeProto binary, string value) =>
        binary.Input.Count != 2 ? null : binary.Input[0] == value ? binary.Input[1] : binary.Input[1] == value ? binary.Input[0] : null;

    private static bool IsDefaultDomain(NodeProto node) => (node.Domain ?? "") is "" or "ai.onnx";

    private static NodeProto Node(string op, string name, string[] inputs, string output)
    {
        var node = new NodeProto { OpType = op, Name = name };
        node.Input.AddRange(inputs);
        node.Output.Add(output);
        return node;
    }
}
