using ModelCompression.Data;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Runtime;

namespace ModelCompression.Calibration;

/// <summary>
/// Runs one model (the one being compressed, or the reference it came from) over the calibration data for a pass
/// that measures layers stage by stage. Without a kept frontier every run starts at the model's inputs and computes
/// all the nodes its outputs need. With one (large models), a run starts where the runs before stopped: the values
/// computed so far that nodes not yet run still read are kept for every batch, and a run computes only the nodes
/// between them and what it is asked for. A pass over L stages then runs each node about once (O(L) forward work
/// instead of O(L²)) and ONNX Runtime holds only that segment's weights. Kept values stay valid while the nodes
/// that computed them and the initializers those read are the ones they were (a staged pass rewrites only layers
/// downstream of them); every run checks that, and starts again from the inputs when it does not hold.
/// </summary>
internal sealed class SegmentedRunner(OnnxModel model, Dataset data, RuntimeOptions runtime, int batchSize, bool keepFrontier, CancellationToken cancellation)
{
    /// <summary>Past this many bytes of kept values (all calibration samples) runs start from the inputs again, for good.</summary>
    public const long FrontierBudgetBytes = 512L << 20;

    private bool _keep = keepFrontier;
    /// <summary>Kept values by name, one array per batch.</summary>
    private Dictionary<string, NdArray[]> _frontier = new(StringComparer.Ordinal);
    /// <summary>The nodes already run, each with the initializers its inputs resolved to then.</summary>
    private readonly Dictionary<NodeProto, TensorProto?[]> _done = new(ReferenceEqualityComparer.Instance);

    /// <summary>Nodes run so far by segment runs (a test reads it: with a kept frontier each node runs once).</summary>
    internal long NodesRun { get; private set; }

    /// <summary>
    /// Runs the model over the data, handing each batch's <paramref name="values"/> (float, as ONNX Runtime
    /// returns them) to <paramref name="onBatch"/>. <paramref name="extend"/> may add nodes reading those values
    /// (and graph inputs fed per batch by <paramref name="feeds"/>); it returns the outputs handed over instead.
    /// </summary>
    /// <param name="reuse">The handed-over tensors are not kept past <paramref name="onBatch"/>: each batch's are copied into the same arrays.</param>
    public void Run(IReadOnlyList<string> values, Action<int, IReadOnlyDictionary<string, FloatTensor>> onBatch,
        Func<OnnxModel, IReadOnlyList<string>>? extend = null, Func<int, IEnumerable<NdArray>>? feeds = null, IProgress<double>? progress = null, bool reuse = false)
    {
        using var segment = Open(values, extend);
        if (reuse) segment.Buffers = new Dictionary<string, float[]>(StringComparer.Ordinal);
        var index = 0;
        var done = 0;
        foreach (var batch in data.Batches(batchSize))
        {
            cancellation.ThrowIfCancellationRequested();
            onBatch(index, segment.Run(batch, index, feeds?.Invoke(index)));
            index++;
            done += batch.Samples;
            progress?.Report((double)done / data.Count);
        }
        segment.Commit();
    }

    /// <summary>Like <see cref="Run"/> over this model and <paramref name="reference"/> side by side, batch by batch.</summary>
    public void RunPaired(SegmentedRunner reference, IReadOnlyList<string> values,
        Action<IReadOnlyDictionary<string, FloatTensor>, IReadOnlyDictionary<string, FloatTensor>> onBatch, IProgress<double>? progress = null)
    {
        using var segment = Open(values, null);
        using var referenceSegment = reference.Open(values, null);
        var index = 0;
        var done = 0;
        foreach (var batch in data.Batches(batchSize))
        {
            cancellation.ThrowIfCancellationRequested();
            onBatch(segment.Run(batch, index, null), referenceSegment.Run(batch, index, null));
            index++;
            done += batch.Samples;
            progress?.Report((double)done / data.Count);
        }
        segment.Commit();
        referenceSegment.Commit();
    }

    private Segment Open(IReadOnlyList<string> values, Func<OnnxModel, IReadOnlyList<string>>? extend)
    {
        var graph = new OnnxGraph(model.Graph);
        if (_keep && !StillValid(graph)) Reset();
        var cached = _frontier;

        // The nodes this run needs: back from the values, stopping at kept values, graph inputs and initializers.
        var needed = new HashSet<NodeProto>(ReferenceEqualityComparer.Instance);
        var pending = new Stack<string>(values);
        var visited = new HashSet<string>(StringComparer.Ordinal);
        while (pending.TryPop(out var value))
        {
            if (!visited.Add(value) || cached.ContainsKey(value) || graph.Producer(value) is not { } producer) continue;
            if (needed.Add(producer)) foreach (var input in OnnxGraph.NodeInputs(producer)) pending.Push(input);
        }

        // What runs after this one still reads: values of nodes not run yet, among the kept ones and this run's.
        var frontierOut = new List<string>();
        var carried = new List<string>();
        if (_keep)
        {
            var read = new HashSet<string>(StringComparer.Ordinal);
            foreach (var node in model.Graph.Node)
                if (!needed.Contains(node) && !_done.ContainsKey(node)) read.UnionWith(OnnxGraph.NodeInputs(node));
            carried.AddRange(cached.Keys.Where(read.Contains));
            foreach (var node in model.Graph.Node)
                if (needed.Contains(node)) frontierOut.AddRange(node.Output.Where(o => o.Length > 0 && read.Contains(o)));
        }

        var segment = model.Clone();
        var probe = segment.Graph;
        if (_keep)
        {
            // The clone lists the same nodes in the same order: keep those this run needs.
            var nodes = model.Graph.Node;
            for (var i = nodes.Count - 1; i >= 0; i--)
                if (!needed.Contains(nodes[i])) probe.Node.RemoveAt(i);
            foreach (var (name, batches) in cached) probe.Input.Add(InputOf(name, batches));
        }
        var outputs = extend?.Invoke(segment) ?? values;
        var existing = new Dictionary<string, ValueInfoProto>(StringComparer.Ordinal);
        foreach (var output in probe.Output) existing.TryAdd(output.Name, output); // duplicates are rejected at load; a probe never fails on them
        probe.Output.Clear();
        // A kept value asked for as it is needs no node: it is handed over from the kept copy.
        var fromCache = extend is null ? values.Where(cached.ContainsKey).Distinct().ToList() : [];
        var fetched = outputs.Except(fromCache).Distinct().ToList();
        foreach (var name in fetched.Concat(frontierOut).Distinct()) probe.Output.Add(existing.GetValueOrDefault(name) ?? FloatValue(name));
        var view = new OnnxGraph(probe);
        view.RemoveDeadNodes();
        if (_keep)
        {
            var read = new HashSet<string>(probe.Node.SelectMany(OnnxGraph.NodeInputs).Concat(probe.Output.Select(o => o.Name)), StringComparer.Ordinal);
            for (var i = probe.Input.Count - 1; i >= 0; i--)
                if (!read.Contains(probe.Input[i].Name)) probe.Input.RemoveAt(i);
        }
        var fed = new HashSet<string>(probe.Input.Select(i => i.Name), StringComparer.Ordinal);
        var runs = probe.Output.Count > 0 && fetched.Count + frontierOut.Count > 0;
        var session = runs ? OnnxRuntimeSession.Create(segment, runtime) : null;
        NodesRun += runs ? needed.Count : 0;
        var resolved = new Dictionary<NodeProto, TensorProto?[]>(ReferenceEqualityComparer.Instance);
        foreach (var node in needed) resolved[node] = node.Input.Select(i => graph.Initializer(i)).ToArray();
        return new Segment(this, session, fed, fetched, frontierOut, fromCache, carried, resolved);
    }

    /// <summary>Whether every node run before is still in the model, reading the same initializers.</summary>
    private bool StillValid(OnnxGraph graph)
    {
        if (_done.Count == 0) return true;
        var present = new HashSet<NodeProto>(model.Graph.Node, ReferenceEqualityComparer.Instance);
        foreach (var (node, initializers) in _done)
        {
            if (!present.Contains(node) || initializers.Length != node.Input.Count) return false;
            for (var i = 0; i < initializers.Length; i++)
                if (!ReferenceEquals(initializers[i], graph.Initializer(node.Input[i]))) return false;
        }
        return true;
    }

    private void Reset()
    {
        _frontier = new Dictionary<string, NdArray[]>(StringComparer.Ordinal);
        _done.Clear();
    }

    /// <summary>A graph input for a kept value: its element type, and each axis fixed where every batch agrees.</summary>
    private static ValueInfoProto InputOf(string name, NdArray[] batches)
    {
        var first = batches[0];
        var shape = new TensorShapeProto();
        for (var axis = 0; axis < first.Shape.Length; axis++)
        {
            var size = first.Shape[axis];
            shape.Dim.Add(batches.All(b => b.Shape.Length == first.Shape.Length && b.Shape[axis] == size)
                ? new TensorShapeProto.Types.Dimension { DimValue = size }
                : new TensorShapeProto.Types.Dimension { DimParam = $"{name}_axis{axis}" });
        }
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)ModelInput.ToDataType(first.ElementType), Shape = shape } } };
    }

    internal static ValueInfoProto FloatValue(string name) =>
        new() { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float } } };

    private static FloatTensor ToFloat(NdArray array) => new(array.Data switch
    {
        float[] f => f,
        double[] d => Array.ConvertAll(d, x => (float)x),
        long[] l => Array.ConvertAll(l, x => (float)x),
        int[] i => Array.ConvertAll(i, x => (float)x),
        _ => throw new InvalidOperationException($"kept value '{array.Name}' is {array.ElementType}, not a number"),
    }, array.Shape);

    /// <summary>One run's session, and the kept values it produces batch by batch.</summary>
    private sealed class Segment(SegmentedRunner runner, OnnxRuntimeSession? session, HashSet<string> fed, List<string> fetched,
        List<string> frontierOut, List<string> fromCache, List<string> carried, Dictionary<NodeProto, TensorProto?[]> resolved) : IDisposable
    {
        private readonly List<Dictionary<string, NdArray>> _produced = [];
        private readonly HashSet<string> _fetched = new(fetched, StringComparer.Ordinal);
        private bool _keepable = true;
        public Dictionary<string, float[]>? Buffers { get; set; }

        public IReadOnlyDictionary<string, FloatTensor> Run(Batch batch, int index, IEnumerable<NdArray>? extra)
        {
            var result = new Dictionary<string, FloatTensor>(StringComparer.Ordinal);
            foreach (var name in fromCache) result[name] = ToFloat(runner._frontier[name][index]);
            if (session is null) return result;
            var inputs = batch.Where(a => fed.Contains(a.Name)).ToList();
            foreach (var (name, batches) in runner._frontier)
                if (fed.Contains(name)) inputs.Add(batches[index]);
            if (extra is not null) inputs.AddRange(extra);
            // A value both asked for and kept is fetched once (asked-for values are layer inputs: float).
            var (floats, arrays) = session.Run(inputs, fetched, frontierOut.Where(n => !_fetched.Contains(n)).ToList(), Buffers);
            foreach (var (name, tensor) in floats) result[name] = tensor;
            var produced = new Dictionary<string, NdArray>(StringComparer.Ordinal);
            foreach (var name in frontierOut.Where(_fetched.Contains))
            {
                var tensor = floats[name];
                produced[name] = new NdArray(name, tensor.Shape, ArrayElementType.Float32, Buffers is null ? tensor.Data : (float[])tensor.Data.Clone());
            }
            foreach (var (name, array) in arrays)
            {
                if (array is null) _keepable = false; // a type NdArray does not hold: nothing of this run is kept
                else produced[name] = array;
            }
            _produced.Add(produced);
            return result;
        }

        /// <summary>After every batch ran: the values this run produced (and those still read) become the kept ones.</summary>
        public void Commit()
        {
            if (!runner._keep) return;
            var batches = _produced.Count;
            if (!_keepable || session is not null && frontierOut.Count > 0 && batches == 0)
            {
                runner.Reset();
                return;
            }
            var next = new Dictionary<string, NdArray[]>(StringComparer.Ordinal);
            foreach (var name in carried) next[name] = runner._frontier[name];
            foreach (var name in frontierOut) next[name] = _produced.Select(p => p[name]).ToArray();
            var bytes = next.Values.SelectMany(b => b).Sum(a => (long)a.Data.Length * NdArray.ElementSize(a.ElementType));
            if (bytes > FrontierBudgetBytes)
            {
                // Too many activations to keep for every sample: later runs start from the inputs (the old cost).
                runner._keep = false;
                runner.Reset();
                return;
            }
            runner._frontier = next;
            foreach (var (node, initializers) in resolved) runner._done[node] = initializers;
        }

        public void Dispose() => session?.Dispose();
    }
}
