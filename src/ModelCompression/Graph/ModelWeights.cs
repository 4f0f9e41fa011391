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
/// int8 weights, Casts of float16, compact-storage decoders, codebook lookups) are followed back to what they store,
/// and quantization parameters (scales, zero points) and int64 tensors (shapes, axes, indices) are not weights. So a
/// model has as many parameters after int8 quantization, compact storage or weight sharing as before, and fewer only
/// when a pass removed some.
/// </summary>
public static class ModelWeights
{
    /// <summary>Ops whose output holds the same elements as input 0 (reordered, reshaped or re-typed).</summary>
    private static readonly HashSet<string> SameElements = new(StringComparer.Ordinal)
    {
        "DequantizeLinear", "Cast", "Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten",
    };

    public static long Parameters(OnnxModel model) => Find(model).Sum(w => w.Elements);

    /// <summary>Parameters and how many of them are not zero (a tensor whose storage does not tell counts as all nonzero).</summary>
    public static (long Parameters, long NonZeros) Count(OnnxModel model)
    {
        var weights = Find(model);
        return (weights.Sum(w => w.Elements), weights.Sum(w => w.NonZeros ?? w.Elements));
    }

    /// <summary>Every weight, once, in the order its first consumer runs.</summary>
    public static IReadOnlyList<ModelWeight> Find(OnnxModel model)
    {
        var graph = new OnnxGraph(model.Graph);
        var origins = new Dictionary<string, Origin>(StringComparer.Ordinal);
        foreach (var tensor in model.Graph.Initializer) origins[tensor.Name] = Stored(model, tensor);
        foreach (var sparse in model.Graph.SparseInitializer.Where(s => s.Values is not null))
        {
            var dims = sparse.Dims.ToArray();
            origins[sparse.Values.Name] = new Origin(dims, Product(dims), Tensors.ElementCount(sparse.Values), sparse.Values.Name, (DataType)sparse.Values.DataType, null);
        }
        var graphInputs = graph.GraphInputNames.ToHashSet(StringComparer.Ordinal);
        foreach (var name in graphInputs) origins.Remove(name); // an initializer that is also an input can be overridden

        // Constant nodes (all inputs constant) are what ORT folds at load: follow them to what they store.
        var dynamicScales = new HashSet<string>(StringComparer.Ordinal);
        var weights = new List<ModelWeight>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var node in graph.Nodes)
        {
            if (node.Output.Count == 0) continue;
            if (node.OpType == "Constant" && node.Attribute.FirstOrDefault(a => a.Name == "value")?.T is { } constant)
            {
                origins[node.Output[0]] = Stored(model, constant) with { StoredName = node.Output[0] };
                continue;
            }
            var inputs = node.Input.Where(i => i.Length > 0).ToList();
            if (inputs.Count > 0 && node.Input[0].Length > 0 && inputs.All(origins.ContainsKey))
            {
                origins[node.Output[0]] = Follow(model, node, origins);
                continue;
            }
            if (node.OpType == "DynamicQuantizeLinear" && node.Output.Count > 1) dynamicScales.Add(node.Output[1]);
            for (var i = 0; i < node.Input.Count; i++)
            {
                var value = node.Input[i];
                if (!origins.TryGetValue(value, out var o) || IsQuantizationParameter(node, i, dynamicScales) || o.StoredType == DataType.Int64 || !seen.Add(value)) continue;
                if (o.Elements is { } elements) weights.Add(new ModelWeight(value, node, o.Dims, elements, o.NonZeros, o.StoredName, o.StoredType));
            }
        }
        return weights;
    }

    /// <summary>Scale and zero-point inputs: of Q/DQ, of the integer matmuls, and a scale multiplied with a dynamic one.</summary>
    private static bool IsQuantizationParameter(NodeProto node, int input, HashSet<string> dynamicScales) => node.OpType switch
    {
        "QuantizeLinear" or "DequantizeLinear" => input >= 1,
        "MatMulInteger" or "ConvInteger" => input >= 2,
        "Mul" => node.Input.Any(dynamicScales.Contains),
        _ => false,
    };

    /// <summary>What a constant node's output stores; unknown elements when it is an intermediate no weight is read from.</summary>
    private static Origin Follow(OnnxModel model, NodeProto node, Dictionary<string, Origin> origins)
    {
        Origin? Input(int i) => i < node.Input.Count && origins.TryGetValue(node.Input[i], out var o) ? o : null;
        var first = Input(0)! with { Tensor = null };
        switch (node.OpType)
        {
            case "Reshape" when Input(1)?.Tensor is { } shape && Int64s(shape) is { } dims && dims.All(d => d > 0):
                return first with { Dims = dims };
            case "Transpose" when first.Dims is not null:
                var perm = node.Attribute.FirstOrDefault(a => a.Name == "perm")?.Ints.ToArray() ?? Enumerable.Range(0, first.Dims.Length).Reverse().Select(i => (long)i).ToArray();
                var valid = perm.Length == first.Dims.Length && perm.Order().SequenceEqual(Enumerable.Range(0, perm.Length).Select(i => (long)i));
                return first with { Dims = valid ? perm.Select(p => first.Dims[p]).ToArray() : null };
            case "DequantizeLinear" when Input(2) is { } zeroPoint && zeroPoint.NonZeros != 0:
                return first with { NonZeros = null }; // a nonzero zero point: stored zeros are not zeros of the weight
            case "DequantizeLinear" or "Cast" or "Identity":
                return first;
            case var op when SameElements.Contains(op):
                return first with { Dims = null };
            case "ConstantOfShape" when Input(0)!.Tensor is { } shape && Int64s(shape) is { } dims && dims.All(d => d >= 0):
                return new Origin(dims, Product(dims), 0, first.StoredName, first.StoredType, null);
            case "ScatterND" when Input(2) is { } updates:
                // Compact storage: the data is a zero tensor of the full shape, the updates the stored values.
                return first with { NonZeros = updates.NonZeros, StoredName = updates.StoredName, StoredType = updates.StoredType };
            case "Gather" when Input(0) is { Dims.Length: 1 } table && Input(1) is { Dims: { } dims, Elements: { } elements } indices:
                // A lookup in a 1-D table (a codebook): the indices' shape, stored as the indices. Its zeros are the
                // indices of the table's zero entries, which the indices' own zeros tell when entry 0 is the only one.
                var nonZeros = table.NonZeros == table.Elements ? elements
                    : table.NonZeros == table.Elements - 1 && table.Tensor is { } values && FirstIsZero(model, values) ? indices.NonZeros : null;
                return new Origin(dims, elements, nonZeros, indices.StoredName, indices.StoredType, null);
            case "Gather":
                // A decoder reading its stored values: no shape of interest, but where the values live.
                return first with { Dims = null, Elements = null };
            default:
                return new Origin(null, null, null, first.StoredName, first.StoredType, null);
        }
    }

    private static Origin Stored(OnnxModel model, TensorProto tensor)
    {
        var dims = tensor.Dims.ToArray();
        return new Origin(dims, Product(dims), NonZeros(model, tensor), tensor.Name, (DataType)tensor.DataType, tensor);
    }

    private static long Product(long[] dims) => dims.Aggregate(1L, (a, b) => a * b);

    private static long[]? Int64s(TensorProto tensor) =>
        (DataType)tensor.DataType == DataType.Int64 && tensor.Dims.Count <= 1 && tensor.RawData.Length > 0
            ? System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(tensor.RawData.Span).ToArray()
            : (DataType)tensor.DataType == DataType.Int64 && tensor.Int64Data.Count > 0 ? tensor.Int64Data.ToArray() : null;

    private static bool FirstIsZero(OnnxModel model, TensorProto tensor)
    {
        var size = ElementTypes.SizeInBytes((DataType)tensor.DataType);
        var data = model.GetTensor(tensor);
        return size > 0 && data.HasRawBytes && data.RawBytes.Length >= size && data.RawBytes[..size].IndexOfAnyExcept((byte)0) < 0;
    }

    private static long? NonZeros(OnnxModel model, TensorProto tensor)
    {
        var size = ElementTypes.SizeInBytes((DataType)tensor.DataType);
        var data = model.GetTensor(tensor);
        if (size == 0 || !data.HasRawBytes || (DataType)tensor.DataType is DataType.String) return null;
        var raw = data.RawBytes;
        long count = 0;
        for (var i = 0; i + size <= raw.Length; i += size)
            if (raw.Slice(i, size).IndexOfAnyExcept((byte)0) >= 0) count++;
        return count;
    }

    /// <summary>Dims, elements and nonzeros (null: not known), and where the elements are stored; Tensor: the initializer itself, if it is one.</summary>
    private sealed record Origin(long[]? Dims, long? Elements, long? NonZeros, string StoredName, DataType StoredType, TensorProto? Tensor);
}
