using Google.Protobuf;
using ModelCompression.Evaluation;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;

namespace ModelCompression.Reporting;

/// <summary>
/// What each layer stores: the tensors its weights are decoded from (followed back through the constant nodes that
/// decode them), their bytes after Deflate and Brotli, each layer's compressed on its own, and their entropy bound.
/// </summary>
internal static class LayerStorage
{
    public static Dictionary<string, (CompressedSizes Sizes, double Entropy)> Measure(OnnxModel model, IReadOnlyDictionary<string, List<string>> valuesByRow) =>
        Measure(model, valuesByRow, DeployedSize.StreamedLimit);

    /// <param name="streamedLimit">Past this many bytes of weights the layers are compressed at the settings the whole
    /// model was (<see cref="DeployedSize.OfStreamedSettings"/>; tests lower it).</param>
    internal static Dictionary<string, (CompressedSizes Sizes, double Entropy)> Measure(OnnxModel model, IReadOnlyDictionary<string, List<string>> valuesByRow, long streamedLimit)
    {
        var large = model.Graph.Initializer.Sum(model.InlineSize) > streamedLimit;
        var producers = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
        // Tensors are indexed, not copied: each row's bytes are gathered when it is measured and dropped after, so the
        // report holds one layer's bytes at a time, not the whole model's.
        var tensors = new Dictionary<string, List<TensorProto>>(StringComparer.Ordinal);
        Index(model, model.Graph, producers, tensors);
        var result = new Dictionary<string, (CompressedSizes, double)>(StringComparer.Ordinal);
        foreach (var (row, values) in valuesByRow)
        {
            var parts = new List<TensorProto>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            var pending = new Stack<string>(values.AsEnumerable().Reverse());
            while (pending.Count > 0)
            {
                var value = pending.Pop();
                if (value.Length == 0 || !seen.Add(value)) continue;
                if (tensors.TryGetValue(value, out var stored)) parts.AddRange(stored);
                else if (producers.TryGetValue(value, out var node))
                    for (var i = node.Input.Count - 1; i >= 0; i--) pending.Push(node.Input[i]);
            }
            if (parts.Count == 0) continue;
            var bytes = parts.Select(p => Stored(model, p)).ToList();
            var all = bytes.SelectMany(p => p.Raw).ToArray();
            result[row] = (large ? DeployedSize.OfStreamedSettings(all) : DeployedSize.Of(all), bytes.Sum(p => DeployedSize.EntropyBytes(p.Raw, p.ElementSize)));
            foreach (var p in parts) model.ReleasePages(p);
        }
        return result;
    }

    /// <summary>Initializers, sparse initializers and Constant values by name, and the producer of every other value (subgraphs too).</summary>
    private static void Index(OnnxModel model, GraphProto graph, Dictionary<string, NodeProto> producers, Dictionary<string, List<TensorProto>> tensors)
    {
        foreach (var t in graph.Initializer) tensors.TryAdd(t.Name, [t]);
        foreach (var s in graph.SparseInitializer.Where(s => s.Values is not null))
            tensors.TryAdd(s.Values.Name, [s.Values, .. s.Indices is null ? [] : new[] { s.Indices }]);
        foreach (var node in graph.Node)
        {
            if (node.OpType == "Constant" && node.Output.Count > 0 && node.Attribute.FirstOrDefault(a => a.Name == "value")?.T is { } constant)
                tensors.TryAdd(node.Output[0], [constant]);
            else foreach (var output in node.Output) if (output.Length > 0) producers.TryAdd(output, node);
            foreach (var a in node.Attribute)
                foreach (var body in a.G is null ? a.Graphs : a.Graphs.Prepend(a.G)) Index(model, body, producers, tensors);
        }
    }

    /// <summary>The tensor's data bytes (typed fields: its serialized form) and its element size (1 for packed and sub-byte types).</summary>
    private static (byte[] Raw, int ElementSize) Stored(OnnxModel model, TensorProto tensor)
    {
        var data = model.GetTensor(tensor);
        var size = ElementTypes.SizeInBytes((TensorProto.Types.DataType)tensor.DataType);
        return data.HasRawBytes ? (data.RawBytes.ToArray(), Math.Max(1, size)) : (tensor.ToByteArray(), 1);
    }
}
