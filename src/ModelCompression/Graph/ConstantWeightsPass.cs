using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Policy;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.Graph;

/// <summary>
/// Weights stored as <c>Constant</c> nodes become initializers of the same name, so every later pass finds them
/// as it finds any weight (exporters such as paddle2onnx store every weight so). Lossless: consumers keep reading the
/// same value, and ONNX Runtime folds a Constant into an initializer at load anyway.
/// Only floating-point tensors move: integer constants (shapes, axes) are not weights. A Constant in an If/Loop/Scan
/// body becomes an initializer of that body (its scope is not the main graph's). A Constant that is also a graph
/// output stays a node (an initializer as graph output is not portable), and so do all of them before IR version 4,
/// where every initializer must also be a graph input (and so could be overridden by a caller).
/// Then weights computed from constants by reshaping ops are folded (<see cref="WeightChains"/>; casts: <see cref="WeightCastsPass"/>).
/// </summary>
public sealed class ConstantWeightsPass : ICompressionPass
{
    /// <summary>IR version 4 (ONNX 1.3) first allows initializers that are not graph inputs.</summary>
    private const long FirstIrWithoutInputInitializers = 4;

    public string Name => "constant-weights";
    public PassStage Stage => PassStage.Normalize;
    public IReadOnlyList<OptionsGroup> Reads => [];
    public bool IsRequested(CompressionPolicy policy) => true;

    public void Apply(CompressionContext context)
    {
        if (context.Model.Proto.IrVersion < FirstIrWithoutInputInitializers) return;
        foreach (var graph in context.Graph.SelfAndSubgraphs().ToList())
        {
            Move(graph);
            WeightChains.Fold(context.Model, graph, castsToo: false);
        }
    }

    private static void Move(OnnxGraph graph)
    {
        var moved = graph.Nodes.Where(n => IsWeight(n) && !graph.IsGraphOutput(n.Output[0]) && graph.Initializer(n.Output[0]) is null).ToList();
        if (moved.Count == 0) return;
        foreach (var node in moved)
        {
            // The tensor's own name is free-form and often differs from the value's; the value's name is what consumers read.
            var tensor = node.Attribute.First(a => a.Name == "value").T.Clone();
            tensor.Name = node.Output[0];
            graph.Proto.Initializer.Add(tensor);
        }
        var removed = moved.ToHashSet(ReferenceEqualityComparer.Instance);
        var kept = graph.Nodes.Where(n => !removed.Contains(n)).ToList();
        graph.Proto.Node.Clear();
        graph.Proto.Node.AddRange(kept);
        graph.Invalidate();
    }

    private static bool IsWeight(NodeProto node) =>
        node.OpType == "Constant" && (node.Domain ?? "") is "" or "ai.onnx" && node.Output.Count == 1 && node.Output[0].Length > 0
        && node.Attribute.FirstOrDefault(a => a.Name == "value")?.T is { } t
        && (DataType)t.DataType is DataType.Float or DataType.Float16 or DataType.Bfloat16 or DataType.Double;
}
