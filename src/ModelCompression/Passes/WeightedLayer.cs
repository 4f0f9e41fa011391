using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;

namespace ModelCompression.Passes;

/// <summary>
/// A weighted op of the <see cref="OpRegistry"/> (Conv, Gemm, MatMul) whose weight is a constant initializer, seen as a matrix W of shape [out, in]
/// (Gemm/MatMul: y = x·Wᵀ; Conv: in = in_channels/group·kh·kw, the im2col layout). Pruning, low-rank and
/// quantization all read and write weights through this one view, whatever the node's own layout.
/// </summary>
public sealed class WeightedLayer
{
    private WeightedLayer(OnnxGraph graph, NodeProto node, OpEntry entry, TensorProto weight, bool storedOutIn)
    {
        Graph = graph;
        Node = node;
        Entry = entry;
        Weight = weight;
        StoredOutIn = storedOutIn;
        var dims = weight.Dims.ToArray();
        if (entry.Layout == WeightLayout.Convolution)
        {
            OutFeatures = checked((int)dims[0]);
            InFeatures = checked((int)(dims.Skip(1).Aggregate(1L, (a, b) => a * b)));
        }
        else if (storedOutIn) { OutFeatures = checked((int)dims[0]); InFeatures = checked((int)dims[1]); }
        else { InFeatures = checked((int)dims[0]); OutFeatures = checked((int)dims[1]); }
    }

    /// <summary>The graph the node is in: the main graph, or an If/Loop/Scan body (whose weight may live in an outer graph).</summary>
    public OnnxGraph Graph { get; }
    /// <summary>Whether the node is inside an If/Loop/Scan body rather than in the main graph.</summary>
    public bool InSubgraph => Graph.Parent is not null;
    public NodeProto Node { get; }
    /// <summary>What the <see cref="OpRegistry"/> knows of the op.</summary>
    public OpEntry Entry { get; }
    public WeightLayout Layout => Entry.Layout!.Value;
    public TensorProto Weight { get; }
    public string Name => CompressionContext.LayerName(Node);
    public string OpType => Node.OpType;
    /// <summary>The activation the layer multiplies (its first input).</summary>
    public string InputName => Node.Input[0];
    public string? BiasName => Entry.BiasInput is { } b && Node.Input.Count > b && Node.Input[b].Length > 0 ? Node.Input[b] : null;
    public int OutFeatures { get; }
    public int InFeatures { get; }
    public long Parameters => (long)OutFeatures * InFeatures;
    public long[] WeightShape => Weight.Dims.ToArray();
    /// <summary>True when the tensor is laid out [out, in, …] (Conv, Gemm with transB=1); false for [in, out] (MatMul, Gemm transB=0).</summary>
    public bool StoredOutIn { get; }

    /// <summary>Conv attributes that matter to the rewrites (group; kernel is WeightShape[2..]).</summary>
    public long Group => Node.Attribute.FirstOrDefault(a => a.Name == "group")?.I ?? 1;

    /// <summary>W as a row-major [out, in] float matrix (a copy).</summary>
    public float[] ReadMatrix(OnnxModel model)
    {
        if (StoredOutIn) return model.ReadFloats(Weight);
        return Transpose(StoredFloats(model), InFeatures, OutFeatures);
    }

    /// <summary>
    /// The weight as stored, as float32 elements: a view of the memory-mapped or raw bytes when it is stored as
    /// float32 (no copy), else a converted copy.
    /// </summary>
    public ReadOnlySpan<float> StoredFloats(OnnxModel model)
    {
        var view = model.GetTensor(Weight);
        return view.HasRawBytes && view.ElementType == Onnx.Protobuf.TensorProto.Types.DataType.Float ? view.AsSpan<float>() : view.ToFloatArray();
    }

    /// <summary>
    /// Symmetric per-channel int8 codes of the weight written into <paramref name="destination"/> laid out
    /// [in, out] (<paramref name="inOut"/>) or [out, in]; read in place, transposed only when the stored layout is
    /// the other one.
    /// </summary>
    public (float[] Scales, double RelativeError) QuantizeInt8(OnnxModel model, Span<sbyte> destination, bool inOut)
    {
        var stored = StoredFloats(model);
        if (StoredOutIn == !inOut)
            return StoredOutIn
                ? Quantization.Int8Quantizer.QuantizeRows(stored, OutFeatures, InFeatures, destination)
                : Quantization.Int8Quantizer.QuantizeColumns(stored, OutFeatures, InFeatures, destination);
        var codes = new sbyte[destination.Length];
        var result = StoredOutIn
            ? Quantization.Int8Quantizer.QuantizeRows(stored, OutFeatures, InFeatures, codes)
            : Quantization.Int8Quantizer.QuantizeColumns(stored, OutFeatures, InFeatures, codes);
        if (StoredOutIn) TransposeInto<sbyte>(codes, OutFeatures, InFeatures, destination);
        else TransposeInto<sbyte>(codes, InFeatures, OutFeatures, destination);
        return result;
    }

    /// <summary>Writes a [out, in] matrix back as the layer's weight, in the layer's own layout, as float32 (where the weight lives: an outer graph's initializer stays there).</summary>
    public TensorProto WriteMatrix(float[] outIn)
    {
        var stored = StoredOutIn ? outIn : Transpose(outIn, OutFeatures, InFeatures);
        var tensor = Tensors.FromFloats(Weight.Name, WeightShape, stored);
        Graph.SetInitializer(tensor);
        return tensor;
    }

    public static float[] Transpose(ReadOnlySpan<float> m, int rows, int cols)
    {
        var t = new float[m.Length];
        TransposeInto(m, rows, cols, t);
        return t;
    }

    /// <summary>Transposes a row-major [rows, cols] matrix into [cols, rows], in tiles so both sides stay in cache.</summary>
    public static void TransposeInto<T>(ReadOnlySpan<T> m, int rows, int cols, Span<T> t)
    {
        const int tile = 32;
        for (var r0 = 0; r0 < rows; r0 += tile)
            for (var c0 = 0; c0 < cols; c0 += tile)
            {
                int r1 = Math.Min(rows, r0 + tile), c1 = Math.Min(cols, c0 + tile);
                for (var r = r0; r < r1; r++)
                    for (var c = c0; c < c1; c++)
                        t[c * rows + r] = m[r * cols + c];
            }
    }

    /// <summary>
    /// The layers of a graph (of the <see cref="OpRegistry"/>'s weighted ops, or of <paramref name="opTypes"/> among
    /// them) with a float constant weight used by that node alone (shared weights are left out: a change would hit
    /// every user, in any graph). MatMul weights must be 2-D; Gemm with transA is skipped. Only the graph's own
    /// nodes: <see cref="FindAll"/> also looks inside If/Loop/Scan bodies.
    /// </summary>
    public static IReadOnlyList<WeightedLayer> Find(OnnxGraph graph, params string[] opTypes)
    {
        var layers = new List<WeightedLayer>();
        foreach (var node in graph.Nodes)
        {
            if (OpRegistry.For(node) is not { WeightInput: { } w, Layout: { } layout } entry || (opTypes.Length > 0 && !opTypes.Contains(node.OpType)) || node.Input.Count <= w) continue;
            // In a subgraph the weight may be an outer graph's initializer, read by name (ONNX lexical scoping).
            var weight = graph.Initializer(node.Input[w]);
            if (weight is null || weight.DataType != (int)TensorProto.Types.DataType.Float) continue;
            if (graph.Root.UsesEverywhere(weight.Name) != 1) continue;
            if (weight.Dims.Any(d => d <= 0)) continue; // no elements: nothing to compress (and no rank to choose)
            switch (layout)
            {
                case WeightLayout.Convolution when weight.Dims.Count >= 3:
                    layers.Add(new WeightedLayer(graph, node, entry, weight, storedOutIn: true));
                    break;
                case WeightLayout.Gemm when weight.Dims.Count == 2 && Attr(node, "transA") == 0:
                    layers.Add(new WeightedLayer(graph, node, entry, weight, storedOutIn: Attr(node, "transB") == 1));
                    break;
                case WeightLayout.MatMul when weight.Dims.Count == 2:
                    layers.Add(new WeightedLayer(graph, node, entry, weight, storedOutIn: false));
                    break;
            }
        }
        return layers;
    }

    /// <summary>
    /// The layers of the graph and of every If/Loop/Scan body nested in it (any depth), in <see cref="ExecutionOrder"/>.
    /// Weight-only techniques rewrite them all in place (in the layer's own <see cref="Graph"/>); data-aware ones capture
    /// main-graph values only and leave the others as they are, with the reason in the report.
    /// </summary>
    public static IReadOnlyList<WeightedLayer> FindAll(OnnxGraph graph, params string[] opTypes)
    {
        var all = graph.SelfAndSubgraphs().SelectMany(g => Find(g, opTypes)).ToList();
        if (all.All(l => !l.InSubgraph)) return all;
        var order = ExecutionOrder(graph);
        return all.OrderBy(l => order.GetValueOrDefault(l.Node, int.MaxValue)).ToList();
    }

    /// <summary>Position of every node of the graph and its subgraphs: each subgraph's nodes come right after the node that holds it.</summary>
    public static Dictionary<NodeProto, int> ExecutionOrder(OnnxGraph graph)
    {
        var order = new Dictionary<NodeProto, int>(ReferenceEqualityComparer.Instance);
        void Walk(GraphProto g)
        {
            foreach (var node in g.Node)
            {
                order[node] = order.Count;
                foreach (var a in node.Attribute) foreach (var sub in a.G is null ? a.Graphs : a.Graphs.Prepend(a.G)) Walk(sub);
            }
        }
        Walk(graph.Proto);
        return order;
    }

    /// <summary>Why a data-aware technique leaves a subgraph layer as it is.</summary>
    public const string SubgraphReason = "inside an If/Loop/Scan subgraph: calibration captures main-graph values only";

    private static long Attr(NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name)?.I ?? 0;
}
