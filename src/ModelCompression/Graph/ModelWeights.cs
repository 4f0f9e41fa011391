using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.Graph;

/// <summary>
/// One learned tensor as the model's computation reads it: <paramref name="Dims"/> (null: not known),
/// <paramref name="Elements"/> and <paramref name="NonZeros"/> of the logical tensor, stored as
/// <paramref name="StoredName"/> in <paramref name="StoredType"/> (int8 behind a DequantizeLinear, gap-coded values
/// behind a decoder, …). NonZeros is null when the storage does not tell.
/// </summary>
public sealed record ModelWeight(string Value, NodeProto Consumer, long[]? Dims, long Elements, long? NonZeros, string StoredName, DataType StoredType);

/// <summary>
/// The learned tensors of a model, whatever form compression left them in. Constant subgraphs (DequantizeLinear of
/// int8 weights, Casts of float16, compact-storage decoders, codebook lookups) are followed back to what they store by
/// the <see cref="IWeightDecoder"/>s (the format's own in <see cref="FormatDecoder"/>, each storage form's next to the
/// pass that writes it), and quantization parameters (scales, zero points) and int64 tensors (shapes, axes, indices)
/// are not weights. So a model has as many parameters after int8 quantization, compact storage or weight sharing as
/// before, and fewer only when a pass removed some.
/// </summary>
public static class ModelWeights
{
    public static long Parameters(OnnxModel model) => Find(model).Sum(w => w.Elements);

    /// <summary>Parameters and how many of them are not zero (a tensor whose storage does not tell counts as all nonzero).</summary>
    public static (long Parameters, long NonZeros) Count(OnnxModel model)
    {
        var weights = Find(model);
        return (weights.Sum(w => w.Elements), weights.Sum(w => w.NonZeros ?? w.Elements));
    }

    /// <summary>
    /// Every weight, once, in the order its first consumer runs. The bodies of If/Loop/Scan nodes are walked too (their
    /// nodes right after the node that holds them), seeing the outer graphs' weights by name as ONNX scoping does.
    /// </summary>
    public static IReadOnlyList<ModelWeight> Find(OnnxModel model)
    {
        var weights = new List<ModelWeight>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        Walk(model, model.Graph, new Dictionary<string, WeightOrigin>(StringComparer.Ordinal), weights, seen);
        return weights;
    }

    private static void Walk(OnnxModel model, GraphProto proto, Dictionary<string, WeightOrigin> outer, List<ModelWeight> weights, HashSet<string> seen)
    {
        var graph = new OnnxGraph(proto);
        var origins = new Dictionary<string, WeightOrigin>(outer, StringComparer.Ordinal);
        foreach (var tensor in proto.Initializer) origins[tensor.Name] = WeightDecoders.Stored(model, tensor);
        foreach (var sparse in proto.SparseInitializer.Where(s => s.Values is not null))
        {
            var dims = sparse.Dims.ToArray();
            origins[sparse.Values.Name] = new WeightOrigin(dims, WeightDecoders.Product(dims), Tensors.ElementCount(sparse.Values), sparse.Values.Name, (DataType)sparse.Values.DataType, null);
        }
        var graphInputs = graph.GraphInputNames.ToHashSet(StringComparer.Ordinal);
        foreach (var name in graphInputs) origins.Remove(name); // an initializer that is also an input can be overridden

        // Constant nodes (all inputs constant) are what ORT folds at load: follow them to what they store.
        var dynamicScales = new HashSet<string>(StringComparer.Ordinal);
        foreach (var node in graph.Nodes)
        {
            foreach (var a in node.Attribute)
                foreach (var body in a.G is null ? a.Graphs : a.Graphs.Prepend(a.G))
                    Walk(model, body, origins, weights, seen);
            if (node.Output.Count == 0) continue;
            if (node.OpType == "Constant" && node.Attribute.FirstOrDefault(a => a.Name == "value")?.T is { } constant)
            {
                origins[node.Output[0]] = WeightDecoders.Stored(model, constant) with { StoredName = node.Output[0] };
                continue;
            }
            var inputs = node.Input.Where(i => i.Length > 0).ToList();
            if (inputs.Count > 0 && node.Input[0].Length > 0 && inputs.All(origins.ContainsKey))
            {
                origins[node.Output[0]] = WeightDecoders.Follow(model, node, node.Input.Select(i => origins.GetValueOrDefault(i)).ToList());
                continue;
            }
            if (node.OpType == "DynamicQuantizeLinear" && node.Output.Count > 1) dynamicScales.Add(node.Output[1]);
            for (var i = 0; i < node.Input.Count; i++)
            {
                var value = node.Input[i];
                if (!origins.TryGetValue(value, out var o) || IsQuantizationParameter(node, i, dynamicScales) || o.StoredType == DataType.Int64) continue;
                if (WeightDecoders.Consumed(model, node, i, o) is { } packed) o = packed; // a layer reading a packed weight (MatMulNBits)
                if (!seen.Add(value)) continue;
                if (o.Elements is { } elements) weights.Add(new ModelWeight(value, node, o.Dims, elements, o.NonZeros, o.StoredName, o.StoredType));
            }
        }
    }

    /// <summary>Scale and zero-point inputs: of Q/DQ, of the integer matmuls, and a scale multiplied with a dynamic one.</summary>
    private static bool IsQuantizationParameter(NodeProto node, int input, HashSet<string> dynamicScales) => node.OpType switch
    {
        "QuantizeLinear" or "DequantizeLinear" => input >= 1,
        "MatMulInteger" or "ConvInteger" => input >= 2,
        "DynamicQuantizeLSTM" => input >= 8,
        "Mul" => node.Input.Any(dynamicScales.Contains),
        _ => false,
    };
}
