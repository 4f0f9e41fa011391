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
        var rows = valuesByRow.ToList();
        var measured = new (CompressedSizes Sizes, double Entropy)?[rows.Count];
        // Rows are independent, so they are compressed in parallel (Brotli is the report's slowest step on a large
        // model: about 12 MB/s at its streamed quality); a few rows at a time bound the bytes held together.
        try
        {
            Parallel.For(0, rows.Count, ReportParallelism, i => measured[i] = MeasureRow(model, rows[i].Value, producers, tensors, large));
        }
        // The exception a row would have thrown alone (a coded error stays coded).
        catch (AggregateException e) { System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerExceptions[0]); }
        var result = new Dictionary<string, (CompressedSizes, double)>(StringComparer.Ordinal);
        for (var i = 0; i < rows.Count; i++)
            if (measured[i] is { } m) result[rows[i].Key] = m;
        return result;
    }

    /// <summary>The row's tensors (followed back through the nodes that decode them), measured; null when it has none.</summary>
    private static (CompressedSizes Sizes, double Entropy)? MeasureRow(OnnxModel model, List<string> values,
        Dictionary<string, NodeProto> producers, Dictionary<string, List<TensorProto>> tensors, bool large)
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
        return parts.Count == 0 ? null : Measure(model, parts, large);
    }

    private static readonly ParallelOptions ReportParallelism = new() { MaxDegreeOfParallelism = Math.Min(Environment.ProcessorCount, 4) };

    /// <summary>One row's tensors, copied once into one buffer: compressed together, their entropy summed per tensor.</summary>
    private static (CompressedSizes Sizes, double Entropy) Measure(OnnxModel model, List<TensorProto> parts, bool large)
    {
        var pieces = new List<(int Offset, int Length, int ElementSize)>(parts.Count);
        var serializedForms = new List<byte[]?>(parts.Count);
        long total = 0;
        foreach (var p in parts)
        {
            var data = model.GetTensor(p);
            // Typed fields are measured in their serialized form.
            var serialized = data.HasRawBytes ? null : p.ToByteArray();
            var length = serialized?.Length ?? data.RawBytes.Length;
            pieces.Add(((int)total, length, serialized is null ? Math.Max(1, ElementTypes.SizeInBytes((TensorProto.Types.DataType)p.DataType)) : 1));
            serializedForms.Add(serialized);
            total += length;
        }
        var all = new byte[total];
        for (var i = 0; i < parts.Count; i++)
        {
            var target = all.AsSpan(pieces[i].Offset, pieces[i].Length);
            if (serializedForms[i] is { } serialized) serialized.CopyTo(target);
            else model.GetTensor(parts[i]).RawBytes.CopyTo(target);
            model.ReleasePages(parts[i]);
        }
        var entropy = 0.0;
        foreach (var (offset, length, elementSize) in pieces) entropy += DeployedSize.EntropyBytes(all.AsSpan(offset, length), elementSize);
        return (large ? DeployedSize.OfStreamedSettings(all) : DeployedSize.Of(all), entropy);
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
}
