using ModelCompression.Calibration;
using ModelCompression.Data;
using ModelCompression.Diagnostics;
using ModelCompression.Numerics;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Onnx;
using ModelCompression.Passes;
using ModelCompression.Runtime;
using static ModelCompression.Pruning.NodeBuilder;

namespace ModelCompression.Pruning;

/// <summary>Layers' outputs captured batch by batch (rows × channels each) at the rows their statistics use.</summary>
internal sealed class LayerTargets(IReadOnlyList<int> channels)
{
    private readonly int[] _channels = channels.ToArray();
    public IReadOnlyList<int> Channels => _channels;
    public List<float[]>[] Batches { get; } = channels.Select(_ => new List<float[]>()).ToArray();
    /// <summary>Position in <see cref="Channels"/>/<see cref="Batches"/> by layer output name.</summary>
    public Dictionary<string, int> Index { get; } = new(StringComparer.Ordinal);

    /// <summary>Drops the channels of a layer's target that structured pruning removed from its output.</summary>
    public void KeepChannels(string layerOutput, int[] kept)
    {
        if (!Index.TryGetValue(layerOutput, out var k)) return;
        var channels = Channels[k];
        for (var b = 0; b < Batches[k].Count; b++)
        {
            var old = Batches[k][b];
            var rows = old.Length / channels;
            var narrowed = new float[rows * kept.Length];
            for (var r = 0; r < rows; r++)
                for (var j = 0; j < kept.Length; j++) narrowed[r * kept.Length + j] = old[r * channels + kept[j]];
            Batches[k][b] = narrowed;
        }
        _channels[k] = kept.Length;
    }
}

/// <summary>
/// Second moments of a layer's input X (one row per output position: im2col patches for Conv, rows for Gemm/MatMul)
/// over the calibration data, accumulated in double, with a column of ones appended: <see cref="Moments"/> is
/// [[XᵀX, Xᵀ1], [1ᵀX, n]]. Feature j of a Conv input is (channel, ky, kx) in the order of the weight's flattened
/// [in] axis, so the XᵀX block is the layer's Hessian H in its own layout.
/// </summary>
internal sealed class GramStatistics(int features, int outputs)
{
    /// <summary>Columns of X (without the ones column).</summary>
    public int Features { get; } = features;
    public int Outputs { get; } = outputs;
    /// <summary>(Features + 1)², row-major; the last row and column hold the sums of X and the row count.</summary>
    public double[] Moments { get; } = new double[(features + 1) * (features + 1)];
    /// <summary>[XᵀY; 1ᵀY] with the target Y, (Features + 1) × Outputs, row-major (empty without a target).</summary>
    public double[] Cross { get; } = new double[(features + 1) * outputs];
    /// <summary>‖Y‖² summed over rows and outputs.</summary>
    public double TargetSquaredNorm { get; set; }
    public long Rows => (long)Math.Round(Moments[^1]);

    /// <summary>‖Y − (A·x + c)‖ / ‖Y‖ over the calibration rows for A|c as [Outputs, Features + 1] (c last), from the moments alone.</summary>
    public double RelativeError(float[] affine)
    {
        var u = Features + 1;
        double cross = 0, quadratic = 0;
        var row = new double[u];
        for (var o = 0; o < Outputs; o++)
        {
            for (var j = 0; j < u; j++) row[j] = affine[o * u + j];
            for (var i = 0; i < u; i++)
            {
                if (row[i] == 0) continue;
                cross += row[i] * Cross[i * Outputs + o];
                quadratic += row[i] * DenseMath.Dot(Moments.AsSpan(i * u, u), row);
            }
        }
        return TargetSquaredNorm > 0 ? Math.Sqrt(Math.Max(0, TargetSquaredNorm - 2 * cross + quadratic) / TargetSquaredNorm) : 0;
    }

    /// <summary>The statistics of the columns <paramref name="features"/> of X only (the ones column stays last).</summary>
    public GramStatistics Select(IReadOnlyList<int> features)
    {
        var sub = new GramStatistics(features.Count, Outputs) { TargetSquaredNorm = TargetSquaredNorm };
        var index = features.Append(Features).ToArray();
        var n = index.Length;
        for (var i = 0; i < n; i++)
        {
            for (var j = 0; j < n; j++) sub.Moments[i * n + j] = Moments[index[i] * (Features + 1) + index[j]];
            Array.Copy(Cross, index[i] * Outputs, sub.Cross, i * Outputs, Outputs);
        }
        return sub;
    }

    /// <summary>The XᵀX block as a Features × Features row-major copy.</summary>
    public double[] Hessian()
    {
        var h = new double[Features * Features];
        for (var i = 0; i < Features; i++) Moments.AsSpan(i * (Features + 1), Features).CopyTo(h.AsSpan(i * Features, Features));
        return h;
    }
}

/// <summary>
/// Computes <see cref="GramStatistics"/> inside ONNX Runtime: a copy of the model gets, per layer, an unfolding
/// node (a depthwise Conv with one-hot kernels and the layer's own pads/dilations, so the patches are exactly the
/// ones the layer sees, never materialized for the whole data set) and a Gemm that forms [U | Y]ᵀ[U | Y] per batch,
/// where U carries an extra column of ones for the sums and the row count and Y is the layer's reconstruction
/// target. Only these small matrices leave the runtime, and only the part of the graph the layers need runs.
/// </summary>
internal sealed class GramCapture
{
    private readonly CompressionContext _context;
    private readonly string _passName;
    private readonly Dataset _data;
    /// <summary>Per layer (by output name): every how many output positions a row is taken, in each spatial axis.</summary>
    private readonly Dictionary<string, int> _steps;

    private GramCapture(CompressionContext context, string passName, Dataset data, Dictionary<string, int> steps)
    {
        _context = context;
        _passName = passName;
        _data = data;
        _steps = steps;
    }

    /// <summary>
    /// Fixes, for every layer the pass will ask about, which rows its statistics use: every output position, or for
    /// convs with far more positions than features a regular sub-grid (see <see cref="RowsPerFeature"/>).
    /// </summary>
    public static GramCapture Prepare(CompressionContext context, string passName, IReadOnlyList<WeightedLayer> layers)
    {
        var data = context.RequireCalibration(passName).BindTo(ModelInput.FromGraph(context.Model.Graph));
        var convs = layers.Where(l => l.OpType == "Conv").ToList();
        var steps = layers.ToDictionary(l => l.Node.Output[0], _ => 1, StringComparer.Ordinal);
        if (convs.Count > 0)
        {
            var names = convs.Select(l => l.Node.Output[0]).ToList();
            var shapes = new Dictionary<string, long[]>(StringComparer.Ordinal);
            ActivationCapture.Run(context.Model, names, data.Take(1), context.Runtime, 1, batch =>
            {
                foreach (var name in names) shapes[name] = batch[name].Shape[2..];
            }, context.Cancellation);
            foreach (var conv in convs)
            {
                // Under auto_pad=SAME the padding depends on the stride, so a coarser stride would move the grid.
                var autoPad = conv.Node.Attribute.FirstOrDefault(a => a.Name == "auto_pad")?.S.ToStringUtf8() ?? "NOTSET";
                if (autoPad is "NOTSET" or "VALID") steps[conv.Node.Output[0]] = PositionStep(shapes[conv.Node.Output[0]], data.Count, conv.InFeatures);
            }
        }
        return new GramCapture(context, passName, data, steps);
    }

    /// <summary>
    /// Each layer's output on the current model, at exactly the rows its statistics will use, batch by batch: the
    /// targets later runs reconstruct after the layers before have changed.
    /// </summary>
    public LayerTargets CaptureTargets(IReadOnlyList<WeightedLayer> layers)
    {
        var probe = _context.Model.Clone();
        var graph = new OnnxGraph(probe.Graph);
        var outputs = new List<string>();
        foreach (var layer in layers)
        {
            var prefix = graph.FreshName($"target{outputs.Count}");
            var value = layer.Node.Output[0];
            var step = _steps[value];
            var conv = layer.OpType == "Conv";
            if (step > 1) value = Subsample(graph, value, layer.OutFeatures, layer.WeightShape.Length - 2, step, prefix + "/grid");
            outputs.Add(Rows(graph, value, conv ? layer.WeightShape.Length : 0, layer.OutFeatures, prefix + "/rows"));
        }
        KeepOnly(probe, graph, outputs);
        var targets = new LayerTargets(layers.Select(l => l.OutFeatures).ToList());
        ActivationCapture.Run(probe, outputs, _data, _context.Runtime, _context.Policy.Execution.BatchSize, batch =>
        {
            for (var k = 0; k < outputs.Count; k++) targets.Batches[k].Add(batch[outputs[k]].Data);
        }, _context.Cancellation);
        for (var k = 0; k < layers.Count; k++) targets.Index[layers[k].Node.Output[0]] = k;
        return targets;
    }

    /// <summary>Statistics of each layer's input on the current model, with its cached target when <paramref name="targets"/> has one.</summary>
    public IReadOnlyList<GramStatistics> Run(IReadOnlyList<WeightedLayer> layers, LayerTargets? targets = null)
    {
        var probe = _context.Model.Clone();
        var graph = new OnnxGraph(probe.Graph);
        var zero = graph.FreshName("gram_zero");
        graph.SetInitializer(Tensors.Scalar(zero, 0f));
        var outputs = new List<string>();
        var feeds = new List<(string Name, int Target, int Channels)>();
        var stats = new List<GramStatistics>();
        foreach (var layer in layers)
        {
            var prefix = graph.FreshName($"gram{outputs.Count}");
            var unfolded = Unfold(graph, layer, prefix, _steps[layer.Node.Output[0]]);
            var columns = unfolded;
            var outs = 0;
            if (targets is not null && targets.Index.TryGetValue(layer.Node.Output[0], out var t))
            {
                outs = targets.Channels[t];
                var y = prefix + "/y";
                probe.Graph.Input.Add(FloatValue(y));
                feeds.Add((y, t, outs));
                columns = prefix + "/uy";
                graph.AddNode(Node("Concat", [unfolded, y], columns, Int("axis", 1)));
            }
            var gram = prefix + "/gram";
            graph.AddNode(Node("Gemm", [columns, columns, zero], gram, Int("transA", 1)));
            outputs.Add(gram);
            stats.Add(new GramStatistics(layer.InFeatures, outs));
        }
        KeepOnly(probe, graph, outputs);

        using var session = OnnxRuntimeSession.Create(probe.ToBytes(), _context.Runtime);
        var done = 0;
        var batchIndex = 0;
        foreach (var batch in _data.Batches(_context.Policy.Execution.BatchSize))
        {
            _context.Cancellation.ThrowIfCancellationRequested();
            var inputs = batch.ToList();
            foreach (var (name, t, channels) in feeds)
            {
                var y = targets!.Batches[t][batchIndex];
                inputs.Add(new NdArray(name, [y.Length / channels, channels], ArrayElementType.Float32, y));
            }
            var result = session.Run(inputs, outputs);
            for (var k = 0; k < stats.Count; k++)
            {
                var s = stats[k];
                var m = result[outputs[k]].Data;
                var width = s.Features + 1 + s.Outputs;
                if (m.Length != width * width)
                    throw new CompressionException(DiagnosticCodes.InternalError, $"{_passName}: statistics of '{layers[k].Name}' have {m.Length} values, expected {width * width}");
                Accumulate(s, m, width);
            }
            done += batch[0].Count;
            batchIndex++;
            _context.Progress?.Report((_passName, (double)done / _data.Count));
        }
        return stats;
    }

    /// <summary>Makes <paramref name="outputs"/> the probe's only outputs and drops every node they do not need.</summary>
    private static void KeepOnly(OnnxModel probe, OnnxGraph graph, IEnumerable<string> outputs)
    {
        probe.Graph.Output.Clear();
        foreach (var name in outputs) probe.Graph.Output.Add(FloatValue(name));
        graph.RemoveDeadNodes();
    }

    private static ValueInfoProto FloatValue(string name) =>
        new() { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float } } };

    private static void Accumulate(GramStatistics s, float[] batch, int width)
    {
        var u = s.Features + 1;
        for (var i = 0; i < u; i++)
        {
            var row = batch.AsSpan(i * width, width);
            var moments = s.Moments.AsSpan(i * u, u);
            for (var j = 0; j < u; j++) moments[j] += row[j];
            var cross = s.Cross.AsSpan(i * s.Outputs, s.Outputs);
            for (var j = 0; j < s.Outputs; j++) cross[j] += row[u + j];
        }
        for (var o = 0; o < s.Outputs; o++) s.TargetSquaredNorm += batch[(u + o) * width + u + o];
    }

    /// <summary>Rows a Hessian is estimated from, per feature, before output positions are subsampled.</summary>
    internal const int RowsPerFeature = 32;

    /// <summary>
    /// The spatial subsampling step k (in every spatial axis) for a conv's output positions: the largest k that still
    /// leaves RowsPerFeature rows per feature. Neighbouring patches overlap and carry nearly the same second moments,
    /// so a coarser grid estimates H as well at a fraction of the cost (XᵀX costs rows · features²).
    /// </summary>
    private static int PositionStep(long[] spatialShape, int samples, int features)
    {
        var step = 1;
        while (Rows(spatialShape, step + 1) * samples >= (long)RowsPerFeature * features) step++;
        return step;

        static long Rows(long[] shape, int k) => shape.Aggregate(1L, (a, d) => a * ((d + k - 1) / k));
    }

    /// <summary>Adds nodes turning the layer's input into U = [patches | 1], one row per output position (every <paramref name="step"/>-th in each spatial axis for Conv); returns U's name.</summary>
    private static string Unfold(OnnxGraph graph, WeightedLayer layer, string prefix, int step)
    {
        var x = layer.InputName;
        var features = layer.InFeatures;
        var u = prefix + "/u";
        if (layer.OpType == "Conv")
        {
            // A depthwise conv (group = channels) with one one-hot kernel per (channel, kernel offset) copies each
            // patch element into its own output channel, c·K + offset: the weight's [in] order. A second conv with
            // zero kernels and bias 1 yields the ones column on the same output grid.
            var dims = layer.WeightShape;
            var channels = dims[1];
            var kernel = features / channels;
            var spatial = dims.Skip(2).ToArray();
            var onehot = new float[features * kernel];
            for (var j = 0; j < features; j++) onehot[j * kernel + j % kernel] = 1f;
            graph.SetInitializer(Tensors.FromFloats(prefix + "/onehot", [features, 1, .. spatial], onehot));
            graph.SetInitializer(Tensors.FromFloats(prefix + "/zeros", [1, channels, .. spatial], new float[features]));
            graph.SetInitializer(Tensors.FromFloats(prefix + "/one", [1], [1f]));
            var patches = Node("Conv", [x, prefix + "/onehot"], prefix + "/patches", Int("group", channels));
            var constant = Node("Conv", [x, prefix + "/zeros", prefix + "/one"], prefix + "/ones");
            // A stride of k·s visits exactly every k-th of the layer's own output positions (s: the layer's stride).
            var strides = layer.Node.Attribute.FirstOrDefault(a => a.Name == "strides")?.Ints.ToArray() ?? Enumerable.Repeat(1L, spatial.Length).ToArray();
            foreach (var conv in new[] { patches, constant })
            {
                foreach (var a in layer.Node.Attribute)
                    if (a.Name is "pads" or "dilations" or "auto_pad" or "kernel_shape") conv.Attribute.Add(a.Clone());
                conv.Attribute.Add(Ints("strides", strides.Select(s => s * step).ToArray()));
                graph.AddNode(conv);
            }
            graph.AddNode(Node("Concat", [prefix + "/patches", prefix + "/ones"], prefix + "/augmented", Int("axis", 1)));
            return Rows(graph, prefix + "/augmented", dims.Length, features + 1, u);
        }
        // Gemm/MatMul: [rows, in] (or [..., in]) times [I | 0] plus bias [0 … 0 1] appends the ones column.
        var flat = Rows(graph, x, channelsFirstRank: 0, features, prefix + "/x");
        var identity = new float[features * (features + 1)];
        for (var j = 0; j < features; j++) identity[j * (features + 1) + j] = 1f;
        var ones = new float[features + 1];
        ones[features] = 1f;
        graph.SetInitializer(Tensors.FromFloats(prefix + "/eye", [features, features + 1], identity));
        graph.SetInitializer(Tensors.FromFloats(prefix + "/ones", [features + 1], ones));
        graph.AddNode(Node("Gemm", [flat, prefix + "/eye", prefix + "/ones"], u));
        return u;
    }

    /// <summary>Every <paramref name="step"/>-th position of a [N, C, spatial…] value in each spatial axis (a strided 1×1 identity conv).</summary>
    private static string Subsample(OnnxGraph graph, string value, int channels, int spatialRank, int step, string output)
    {
        var shape = new long[2 + spatialRank];
        shape[0] = shape[1] = channels;
        for (var i = 2; i < shape.Length; i++) shape[i] = 1;
        var identity = new float[channels * channels];
        for (var c = 0; c < channels; c++) identity[c * channels + c] = 1f;
        graph.SetInitializer(Tensors.FromFloats(output + "_identity", shape, identity));
        graph.AddNode(Node("Conv", [value, output + "_identity"], output, Ints("strides", Enumerable.Repeat((long)step, spatialRank).ToArray())));
        return output;
    }

    /// <summary>Reshapes a [N, C, spatial…] value of the given rank (channels first), or a [..., C] one (rank 0), to [rows, C].</summary>
    private static string Rows(OnnxGraph graph, string value, int channelsFirstRank, int channels, string output)
    {
        var shape = output + "_shape";
        graph.SetInitializer(Tensors.FromInt64s(shape, [2], [-1, channels]));
        var source = value;
        if (channelsFirstRank > 0)
        {
            var rank = channelsFirstRank;
            var perm = new long[rank];
            perm[0] = 0;
            for (var i = 1; i < rank - 1; i++) perm[i] = i + 1;
            perm[rank - 1] = 1;
            source = output + "_nhwc";
            graph.AddNode(Node("Transpose", [value], source, Ints("perm", perm)));
        }
        graph.AddNode(Node("Reshape", [source, shape], output));
        return output;
    }
}
