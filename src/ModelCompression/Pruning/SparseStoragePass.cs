using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Policy;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.Pruning;

/// <summary>
/// Clean-up step: every initializer that some <see cref="SparseEncoding"/> stores in fewer bytes than the dense
/// tensor (sparse forms, or float16 for floats exact in it) is replaced by the smallest one. It looks only at
/// initializers (float weights after pruning, int8 ones after quantization alike), never at how they were produced,
/// and runs after every other pass.
/// </summary>
public sealed class SparseStoragePass : ICompressionPass
{
    public string Name => "sparse-storage";
    public PassStage Stage => PassStage.Storage;
    public IReadOnlyList<OptionsGroup> Reads => [PruningOptions.Group];
    // Only pruned models have weights worth a sparse form; re-encoding a dense model would only add decoders.
    public bool IsRequested(CompressionPolicy policy) => policy.Get<PruningOptions>().SparseStorage && policy.Requests<PruningOptions>();

    private static (int[] Positions, int[] Sources, bool Transposed) Transposed(int[] positions, long rows, long count)
    {
        var (p, s) = SparseEncoding.Transposed(positions, rows, count);
        return (p, s, true);
    }

    public void Apply(CompressionContext context)
    {
        var graph = context.Graph;
        // Sparse initializers need IR 6; the decoder's operators need opset 11.
        if (context.Model.Proto.IrVersion < 6 || context.Model.OpsetVersion() < 11) return;
        var graphInputs = graph.GraphInputNames.ToHashSet(StringComparer.Ordinal);
        // The report's rows are layers: a tensor is recorded under the layer that reads it (through its
        // DequantizeLinear); scales and zero points are no layer's weights and get no row of their own.
        var owners = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
        foreach (var weight in ModelCompression.Graph.ModelWeights.Find(context.Model)) owners.TryAdd(weight.StoredName, weight.Consumer);
        var decoders = new List<NodeProto>();
        var keptDense = new List<(string Name, long Dense, long Coded)>();
        // Decoder values get short names (each is written at every use); the constants they share are added once, at
        // the end, if a chosen decoder uses them.
        var counter = 0;
        string Fresh() => graph.FreshName($"s{counter++:x}");
        var shared = new Dictionary<string, string>(StringComparer.Ordinal);
        string Shared(string key) => shared.TryGetValue(key, out var n) ? n : shared[key] = graph.FreshName($"c{shared.Count:x}");
        foreach (var dense in graph.Proto.Initializer.ToList())
        {
            if (graphInputs.Contains(dense.Name) || graph.IsGraphOutput(dense.Name)) continue;
            try
            {
                Store(dense);
            }
            finally
            {
                // Every weight is read here: its mapped pages (source or spill file) need not stay resident after,
                // and on a large model neither do the candidate forms built for it (tens of MB of garbage a weight).
                context.Model.ReleasePages(dense);
                context.ReleaseStageMemory();
            }
        }
        void Store(TensorProto dense)
        {
            var type = (DataType)dense.DataType;
            var elementSize = ElementTypes.SizeInBytes(type);
            if (elementSize == 0 || type is DataType.String or DataType.Complex64 or DataType.Complex128) return;
            var data = context.Model.GetTensor(dense);
            if (!data.HasRawBytes) return;
            var raw = data.RawBytes;
            var positions = SparseEncoding.NonZeroPositions(raw, elementSize);
            var denseSize = SparseEncoding.Framed(context.Model.InlineSize(dense));
            var count = Tensors.ElementCount(dense);
            var rowMajor = (Positions: positions, Sources: positions, Transposed: false);
            var orders = dense.Dims.Count >= 2 && dense.Dims[0] > 1
                ? [rowMajor, Transposed(positions, dense.Dims[0], count)]
                : new[] { rowMajor };
            var coded = orders.Select(o =>
                {
                    var gaps = SparseEncoding.GapCounts(o.Positions);
                    var code = GapCode.Best(gaps);
                    return (Order: o, Code: code, Bits: code.Entries(gaps) * code.Bits);
                }).MinBy(c => c.Bits);
            var gapCoded = SparseEncoding.GapCoded(dense, raw, elementSize, coded.Order.Positions, coded.Order.Sources, coded.Order.Transposed, coded.Code, Fresh, Shared);
            var candidates = new[]
            {
                SparseEncoding.Coordinates(dense, raw, elementSize, positions),
                gapCoded,
                SparseEncoding.Float16(dense, raw, Fresh),
            }.OfType<SparseEncoding>();
            var best = candidates.MinBy(c => c.Size)!;
            if (best.Size >= denseSize) return;
            if (context.LargeModel && best == gapCoded)
            {
                // Gap codes are decoded by ONNX Runtime's constant folding at session creation, through int64
                // intermediates per stored value: a 269 MB model pruned to 50 % held 2.6 GB (9.7×) in that session,
                // and peaked at 4.4 GB while it was built. A large model keeps such weights dense.
                keptDense.Add((dense.Name, denseSize, best.Size));
                return;
            }

            graph.RemoveInitializer(dense.Name);
            if (best.Sparse is not null) graph.Proto.SparseInitializer.Add(best.Sparse);
            foreach (var t in best.Initializers) graph.Proto.Initializer.Add(t);
            decoders.AddRange(best.Nodes);
            if (owners.TryGetValue(dense.Name, out var consumer))
                context.Record(new LayerRecord
                {
                    Layer = CompressionContext.LayerName(consumer), Op = consumer.OpType, Technique = Name, Shape = dense.Dims.ToArray(), Rewritten = true,
                    ParametersBefore = count, ParametersAfter = positions.Length, Sparsity = 1 - (double)positions.Length / count,
                    Note = $"'{dense.Name}' {best.Description}: {denseSize} → {best.Size} bytes",
                });
        }
        if (keptDense.Count > 0)
            context.Warn(DiagnosticCodes.LayerSkipped,
                $"sparse storage: {keptDense.Count} pruned weight(s) kept dense ({keptDense.Sum(k => k.Dense)} bytes; gap codes would take {keptDense.Sum(k => k.Coded)}): " +
                $"ONNX Runtime decodes gap codes at load through int64 intermediates, about 10× the model in memory, so a large model (over 64 MiB) stores them dense; " +
                $"first: '{keptDense[0].Name}'");
        var used = decoders.SelectMany(n => n.Input).ToHashSet(StringComparer.Ordinal);
        foreach (var (key, name) in shared.Where(p => used.Contains(p.Value)).OrderBy(p => p.Value, StringComparer.Ordinal))
            graph.Proto.Initializer.Add(SparseEncoding.SharedConstant(key, name));
        // Decoders read only initializers: ahead of every other node keeps the order topological.
        for (var i = decoders.Count - 1; i >= 0; i--) graph.Proto.Node.Insert(0, decoders[i]);
        graph.Invalidate();
    }
}
