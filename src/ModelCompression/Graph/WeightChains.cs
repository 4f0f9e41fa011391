using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.Graph;

/// <summary>
/// A weight computed from a constant by ops that only reshape or convert it — Transpose, Reshape, Flatten,
/// Squeeze/Unsqueeze, Identity, or a Cast to float32 of a float16/bfloat16/double tensor (how exporters store a
/// [in, out] weight for a [out, in] layer, or keep weights in half precision) — becomes the initializer it evaluates
/// to, so the techniques see it as the layer's weight. Only chains that end at a weight input of a layer the
/// <see cref="OpRegistry"/> knows are folded; each intermediate value must be read by the chain alone. A float16
/// weight so becomes float32 (twice the bytes) until a technique compresses it; that happens only when one is asked for.
/// </summary>
internal static class WeightChains
{
    private static readonly HashSet<string> Shaping = ["Identity", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze"];

    /// <summary>Folds every foldable chain of <paramref name="graph"/>; returns how many nodes were folded.</summary>
    public static int Fold(OnnxModel model, OnnxGraph graph, bool castsToo)
    {
        var folded = 0;
        bool changed;
        do
        {
            changed = false;
            foreach (var node in graph.Nodes.ToList())
            {
                if (!IsCandidate(graph, node, castsToo) || !EndsAtWeight(graph, node.Output[0], 0)) continue;
                if (Evaluate(model, graph, node) is not { } tensor) continue;
                tensor.Name = node.Output[0];
                graph.RemoveNode(node);
                graph.SetInitializer(tensor);
                folded++;
                changed = true;
            }
        } while (changed);
        return folded;
    }

    private static bool IsCandidate(OnnxGraph graph, NodeProto node, bool castsToo) =>
        (node.Domain ?? "") is "" or "ai.onnx" && node.Output.Count == 1 && node.Input.Count >= 1 && !graph.IsGraphOutput(node.Output[0])
        && graph.Initializer(node.Input[0]) is { } data && graph.UsesEverywhere(node.Input[0]) == 1
        && (Shaping.Contains(node.OpType) ? data.DataType == (int)DataType.Float
            : castsToo && node.OpType == "Cast" && Attribute(node, "to")?.I == (int)DataType.Float
              && (DataType)data.DataType is DataType.Float16 or DataType.Bfloat16 or DataType.Double)
        && node.Input.Skip(1).All(i => i.Length == 0 || graph.Initializer(i) is not null);

    /// <summary>Whether the value reaches a registry layer's weight input, directly or through more foldable ops.</summary>
    private static bool EndsAtWeight(OnnxGraph graph, string value, int depth)
    {
        if (depth > 8 || graph.Consumers(value) is not [var consumer]) return false;
        if (OpRegistry.For(consumer) is { WeightInput: { } w } && consumer.Input.Count > w && consumer.Input[w] == value) return true;
        return (Shaping.Contains(consumer.OpType) || consumer.OpType == "Cast") && consumer.Input[0] == value && consumer.Output.Count == 1
            && EndsAtWeight(graph, consumer.Output[0], depth + 1);
    }

    /// <summary>The node's output as a float32 tensor, or null when an attribute or shape is not as expected.</summary>
    private static TensorProto? Evaluate(OnnxModel model, OnnxGraph graph, NodeProto node)
    {
        var input = graph.Initializer(node.Input[0])!;
        var dims = input.Dims.ToArray();
        var values = model.ReadFloats(input);
        long[]? shape = node.OpType switch
        {
            "Identity" or "Cast" => dims,
            "Flatten" => FlattenShape(dims, Attribute(node, "axis")?.I ?? 1),
            "Reshape" => ReshapeShape(dims, Ints(graph, node, 1), Attribute(node, "allowzero")?.I == 1),
            "Squeeze" => SqueezeShape(dims, Axes(graph, node)),
            "Unsqueeze" => UnsqueezeShape(dims, Axes(graph, node)),
            "Transpose" => dims,
            _ => null,
        };
        if (shape is null) return null;
        if (node.OpType == "Transpose")
        {
            var perm = Attribute(node, "perm")?.Ints.ToArray() ?? Enumerable.Range(0, dims.Length).Reverse().Select(i => (long)i).ToArray();
            if (perm.Length != dims.Length || perm.Order().Select((p, i) => p != i).Any(b => b)) return null;
            (values, shape) = Transpose(values, dims, perm);
        }
        return Tensors.FromFloats(node.Output[0], shape, values);
    }

    private static long[]? FlattenShape(long[] dims, long axis)
    {
        if (axis < 0) axis += dims.Length;
        if (axis < 0 || axis > dims.Length) return null;
        return [dims.Take((int)axis).Aggregate(1L, (a, b) => a * b), dims.Skip((int)axis).Aggregate(1L, (a, b) => a * b)];
    }

    private static long[]? ReshapeShape(long[] dims, long[]? target, bool allowZero)
    {
        if (target is null) return null;
        var shape = target.Select((d, i) => d == 0 && !allowZero ? (i < dims.Length ? dims[i] : -2) : d).ToArray();
        if (shape.Any(d => d < -1) || shape.Count(d => d == -1) > 1) return null;
        var count = dims.Aggregate(1L, (a, b) => a * b);
        var known = shape.Where(d => d != -1).Aggregate(1L, (a, b) => a * b);
        if (shape.Contains(-1)) { if (known == 0 || count % known != 0) return null; shape[Array.IndexOf(shape, -1L)] = count / known; }
        return shape.Aggregate(1L, (a, b) => a * b) == count ? shape : null;
    }

    private static long[]? SqueezeShape(long[] dims, long[]? axes)
    {
        if (axes is null) return dims.Where(d => d != 1).ToArray();
        var normalized = axes.Select(a => a < 0 ? a + dims.Length : a).ToHashSet();
        if (normalized.Any(a => a < 0 || a >= dims.Length || dims[a] != 1)) return null;
        return dims.Where((_, i) => !normalized.Contains(i)).ToArray();
    }

    private static long[]? UnsqueezeShape(long[] dims, long[]? axes)
    {
        if (axes is null) return null;
        var rank = dims.Length + axes.Length;
        var normalized = axes.Select(a => a < 0 ? a + rank : a).ToHashSet();
        if (normalized.Count != axes.Length || normalized.Any(a => a < 0 || a >= rank)) return null;
        var shape = new long[rank];
        for (int i = 0, j = 0; i < rank; i++) shape[i] = normalized.Contains(i) ? 1 : dims[j++];
        return shape;
    }

    private static (float[] Values, long[] Shape) Transpose(float[] values, long[] dims, long[] perm)
    {
        var rank = dims.Length;
        var shape = perm.Select(p => dims[p]).ToArray();
        var inStrides = new long[rank];
        for (long i = rank - 1, s = 1; i >= 0; s *= dims[i], i--) inStrides[i] = s;
        var result = new float[values.Length];
        var index = new long[rank];
        for (var o = 0; o < result.Length; o++)
        {
            long source = 0;
            for (var k = 0; k < rank; k++) source += index[k] * inStrides[perm[k]];
            result[o] = values[source];
            for (var k = rank - 1; k >= 0 && ++index[k] == shape[k]; k--) index[k] = 0;
        }
        return (result, shape);
    }

    /// <summary>Squeeze/Unsqueeze axes: an attribute before opset 13, an optional constant input from 13.</summary>
    private static long[]? Axes(OnnxGraph graph, NodeProto node) =>
        Attribute(node, "axes")?.Ints.ToArray() ?? Ints(graph, node, 1);

    private static long[]? Ints(OnnxGraph graph, NodeProto node, int input) =>
        node.Input.Count > input && node.Input[input].Length > 0 && graph.Initializer(node.Input[input]) is { } t ? Tensors.View(t).ToInt64Array() : null;

    private static AttributeProto? Attribute(NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name);
}
