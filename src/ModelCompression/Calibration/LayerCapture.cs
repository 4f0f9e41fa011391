using ModelCompression.Data;
using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Runtime;
using static ModelCompression.Pruning.NodeBuilder;

namespace ModelCompression.Calibration;

/// <summary>Which layer input a <see cref="InputMoments"/> capture reads: the value, where its features are, how many.</summary>
internal readonly record struct InputFeatures(string Value, FeatureAxis Axis, int Count);

/// <summary>
/// The one way data-aware passes measure layers on the calibration data: every capture streams the data through
/// ONNX Runtime one batch at a time and keeps only running statistics (plus, when asked, layer outputs at the rows
/// the statistics use), always on the model as it is now, so a pass that rewrites layers stage by stage
/// (<see cref="Stages"/>) measures each stage on what the stages before left. Two kinds of statistics:
/// <list type="bullet">
/// <item><see cref="InputGrams"/>: per layer, [U | Y]ᵀ[U | Y] with U the layer's input in the weight's own [in]
/// layout (im2col patches for Conv, on a sub-grid of output positions when they far outnumber the features) plus a
/// ones column, and Y an optional target (<see cref="Outputs"/>), formed inside the runtime: a copy of the model
/// gets an unfolding node per layer (a depthwise Conv with one-hot kernels and the layer's own pads/dilations, so
/// the patches are exactly the ones the layer sees, never materialized for the whole data set) and a Gemm. Only
/// these small matrices leave the runtime, and only the part of the graph the layers need runs.</item>
/// <item><see cref="InputFeatureMoments(IReadOnlyList{InputFeatures})"/>: XᵀX over the input channels (or last
/// axis) of a value, every position a sample, accumulated here in double; paired with a reference model it also
/// keeps X̂ᵀX of the same value in both and the reference's XᵀX.</item>
/// </list>
/// </summary>
internal sealed class LayerCapture(CompressionContext context, string passName)
{
    private Dataset? _data;
    /// <summary>Per layer (by output name): every how many output positions a row is taken, in each spatial axis.</summary>
    private readonly Dictionary<string, int> _steps = new(StringComparer.Ordinal);

    private SegmentedRunner? _runner;
    private (OnnxModel Model, SegmentedRunner Runner)? _referenceRunner;

    /// <summary>The calibration samples, bound to the model's inputs (which no pass changes).</summary>
    private Dataset Data => _data ??= context.RequireCalibration(passName).BindTo(ModelInput.FromGraph(context.Model.Graph));

    /// <summary>
    /// Runs the model as it is now over the data; on a large model each run goes on from where the one before
    /// stopped (<see cref="SegmentedRunner"/>), since a staged pass asks for layers front to back.
    /// </summary>
    private SegmentedRunner Runner => _runner ??= RunnerFor(context.Model);

    private SegmentedRunner ReferenceRunner(OnnxModel reference)
    {
        if (_referenceRunner is not { } r || !ReferenceEquals(r.Model, reference)) _referenceRunner = r = (reference, RunnerFor(reference));
        return r.Runner;
    }

    private SegmentedRunner RunnerFor(OnnxModel model) =>
        new(model, Data, context.Runtime, context.CaptureBatchSize, keepFrontier: context.LargeModel, context.Cancellation);

    private (double From, double To) _span = (0, 1);

    /// <summary>
    /// Where the captures from now on report their progress within the pass: a staged pass runs one or more per
    /// stage, and each run going 0 → 1 on its own would send the pass's fraction (and the time left shown from it)
    /// back to the start at every stage. From = To holds it still.
    /// </summary>
    public void ReportWithin(double from, double to) => _span = (from, to);

    /// <summary>Stage <paramref name="stage"/> of <paramref name="stages"/> (0-based) is that share of the pass.</summary>
    public void ReportStage(int stage, int stages) => ReportWithin((double)stage / stages, (stage + 1.0) / stages);

    private IProgress<double>? Progress => context.Progress is { } p ? new InlineProgress<double>(f => p.Report((passName, _span.From + f * (_span.To - _span.From)))) : null;

    /// <summary>
    /// The dependency stage of each layer: 0 when no other listed layer feeds its input, else 1 + the largest stage
    /// of the nearest listed layers upstream. Layers of one stage never feed each other, so after the stages before
    /// are rewritten one capture serves a whole stage.
    /// </summary>
    public static int[] Stages(OnnxGraph graph, IReadOnlyList<WeightedLayer> layers)
    {
        var index = new Dictionary<NodeProto, int>(ReferenceEqualityComparer.Instance);
        for (var i = 0; i < layers.Count; i++) index[layers[i].Node] = i;
        var stages = Enumerable.Repeat(-1, layers.Count).ToArray();
        for (var i = 0; i < layers.Count; i++) StageOf(i);
        return stages;

        int StageOf(int i)
        {
            if (stages[i] >= 0) return stages[i];
            stages[i] = 0; // A graph is acyclic; this only keeps a malformed one from recursing forever.
            var stage = 0;
            var visited = new HashSet<string>(StringComparer.Ordinal);
            var pending = new Stack<string>([layers[i].InputName]);
            while (pending.TryPop(out var value))
            {
                if (!visited.Add(value) || graph.Producer(value) is not { } producer) continue;
                if (index.TryGetValue(producer, out var upstream)) stage = Math.Max(stage, StageOf(upstream) + 1);
                else foreach (var input in OnnxGraph.NodeInputs(producer)) pending.Push(input);
            }
            return stages[i] = stage;
        }
    }

    /// <summary>
    /// Fixes, for layers not seen before, which rows their statistics use: every output position, or for convs with
    /// far more positions than features a regular sub-grid (see <see cref="RowsPerFeature"/>). Fixed once, on the
    /// model as it is then, so a layer's outputs and its later statistics always use the same rows.
    /// </summary>
    internal void PlanRows(IReadOnlyList<WeightedLayer> layers)
    {
        var fresh = layers.Where(l => !_steps.ContainsKey(l.Node.Output[0])).ToList();
        foreach (var layer in fresh) _steps[layer.Node.Output[0]] = 1;
        var convs = fresh.Where(l => l.OpType == "Conv").ToList();
        if (convs.Count == 0) return;
        var names = convs.Select(l => l.Node.Output[0]).ToList();
        var shapes = new Dictionary<string, long[]>(StringComparer.Ordinal);
        ActivationCapture.Run(context.Model, names, Data.Take(1), context.Runtime, 1, batch =>
        {
            foreach (var name in names) shapes[name] = batch[name].Shape[2..];
        }, context.Cancellation);
        foreach (var conv in convs)
        {
            // Under auto_pad=SAME the padding depends on the stride, so a coarser stride would move the grid.
            var autoPad = conv.Node.Attribute.FirstOrDefault(a => a.Name == "auto_pad")?.S.ToStringUtf8() ?? "NOTSET";
            if (autoPad is "NOTSET" or "VALID") _steps[conv.Node.Output[0]] = PositionStep(shapes[conv.Node.Output[0]], Data.Count, conv.InFeatures);
        }
    }

    /// <summary>
    /// Each layer's output on the current model, at exactly the rows its <see cref="InputGrams"/> use, batch by
    /// batch: the targets later captures reconstruct after the layers before have changed.
    /// </summary>
    public LayerOutputs Outputs(IReadOnlyList<WeightedLayer> layers)
    {
        PlanRows(layers);
        var probe = context.Model.Clone();
        var graph = new OnnxGraph(probe.Graph);
        var outputs = AddTargetRows(graph, layers);
        KeepOnly(probe, graph, outputs);
        var targets = new LayerOutputs(layers.Select(l => l.OutFeatures).ToList());
        ActivationCapture.Run(probe, outputs, Data, context.Runtime, context.CaptureBatchSize, batch =>
        {
            for (var k = 0; k < outputs.Count; k++) targets.Batches[k].Add(batch[outputs[k]].Data);
        }, context.Cancellation);
        for (var k = 0; k < layers.Count; k++) targets.Index[layers[k].Node.Output[0]] = k;
        return targets;
    }

    /// <summary>
    /// Like <see cref="Outputs(IReadOnlyList{WeightedLayer})"/> on <paramref name="reference"/> (the model before the
    /// pass changed anything, which lists the same layers), for one stage's layers: a staged pass asks for the stages
    /// front to back, so on a large model each run goes on from where the last one stopped, and only the stage's
    /// targets are held (all layers' at once: a third of a 1 GB transformer).
    /// </summary>
    public LayerOutputs Outputs(IReadOnlyList<WeightedLayer> layers, OnnxModel reference)
    {
        PlanRows(layers);
        var outputs = new List<string>();
        var targets = new LayerOutputs(layers.Select(l => l.OutFeatures).ToList());
        ReferenceRunner(reference).Run(layers.Select(l => l.Node.Output[0]).Distinct().ToList(), (_, batch) =>
        {
            for (var k = 0; k < outputs.Count; k++) targets.Batches[k].Add(batch[outputs[k]].Data);
        }, segment =>
        {
            outputs.AddRange(AddTargetRows(new OnnxGraph(segment.Graph), layers));
            return outputs;
        }, progress: Progress);
        for (var k = 0; k < layers.Count; k++) targets.Index[layers[k].Node.Output[0]] = k;
        return targets;
    }

    /// <summary>Adds, per layer, the rows of its output its statistics use (see <see cref="PlanRows"/>); returns their names.</summary>
    private List<string> AddTargetRows(OnnxGraph graph, IReadOnlyList<WeightedLayer> layers)
    {
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
        return outputs;
    }

    /// <summary>Statistics of each layer's input on the current model, with its captured output as the target when <paramref name="targets"/> has one.</summary>
    public IReadOnlyList<GramStatistics> InputGrams(IReadOnlyList<WeightedLayer> layers, LayerOutputs? targets = null)
    {
        PlanRows(layers);
        var outputs = new List<string>();
        var feeds = new List<(string Name, int Target, int Channels)>();
        var stats = new List<GramStatistics>();
        IReadOnlyList<string> Extend(OnnxModel probe)
        {
            var graph = new OnnxGraph(probe.Graph);
            var zero = graph.FreshName("gram_zero");
            graph.SetInitializer(Tensors.Scalar(zero, 0f));
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
                    probe.Graph.Input.Add(SegmentedRunner.FloatValue(y));
                    feeds.Add((y, t, outs));
                    columns = prefix + "/uy";
                    graph.AddNode(Node("Concat", [unfolded, y], columns, Int("axis", 1)));
                }
                var gram = prefix + "/gram";
                graph.AddNode(Node("Gemm", [columns, columns, zero], gram, Int("transA", 1)));
                outputs.Add(gram);
                stats.Add(new GramStatistics(layer.InFeatures, outs));
            }
            return outputs;
        }
        IEnumerable<NdArray> Feeds(int batchIndex) => feeds.Select(f =>
        {
            var y = targets!.Batches[f.Target][batchIndex];
            return new NdArray(f.Name, [y.Length / f.Channels, f.Channels], ArrayElementType.Float32, y);
        });
        Runner.Run(layers.Select(l => l.InputName).Distinct().ToList(), (_, result) =>
        {
            for (var k = 0; k < stats.Count; k++)
            {
                var s = stats[k];
                var m = result[outputs[k]].Data;
                var width = s.Features + 1 + s.Outputs;
                if (m.Length != width * width)
                    throw new CompressionException(DiagnosticCodes.InternalError, $"{passName}: statistics of '{layers[k].Name}' have {m.Length} values, expected {width * width}");
                Accumulate(s, m, width);
            }
        }, Extend, Feeds, Progress, reuse: true);
        return stats;
    }

    /// <summary>
    /// XᵀX of each input on the current model, in one pass over the data (inputs that share a value and axis share
    /// one result); null for an input whose captured shape does not carry its features where expected.
    /// </summary>
    public IReadOnlyList<InputMoments?> InputFeatureMoments(IReadOnlyList<InputFeatures> inputs) => CaptureMoments(inputs, null);

    /// <summary>
    /// Like <see cref="InputFeatureMoments(IReadOnlyList{InputFeatures})"/>, each input paired with the same value in
    /// <paramref name="reference"/> (e.g. the model before the pass changed anything): the results also hold X̂ᵀX
    /// and the reference's own XᵀX, all three from the same run.
    /// </summary>
    public IReadOnlyList<InputMoments?> InputFeatureMoments(IReadOnlyList<InputFeatures> inputs, OnnxModel reference) =>
        CaptureMoments(inputs, reference);

    private IReadOnlyList<InputMoments?> CaptureMoments(IReadOnlyList<InputFeatures> inputs, OnnxModel? reference)
    {
        if (inputs.Count == 0) return [];
        var moments = new Dictionary<(string Value, FeatureAxis Axis), InputMoments>();
        var chosen = new InputMoments[inputs.Count];
        for (var i = 0; i < inputs.Count; i++)
        {
            var key = (inputs[i].Value, inputs[i].Axis);
            if (!moments.TryGetValue(key, out var m)) moments[key] = m = new InputMoments(inputs[i].Count, key.Axis, paired: reference is not null);
            chosen[i] = m;
        }
        var mismatched = new HashSet<(string, FeatureAxis)>();
        var names = moments.Keys.Select(k => k.Value).Distinct().ToList();
        if (reference is null)
        {
            Runner.Run(names, (_, batch) =>
            {
                foreach (var (key, m) in moments)
                    if (!mismatched.Contains(key) && !m.Add(batch[key.Value])) mismatched.Add(key);
            }, progress: Progress);
        }
        else
        {
            Runner.RunPaired(ReferenceRunner(reference), names, (batch, referenceBatch) =>
            {
                foreach (var (key, m) in moments)
                    if (!mismatched.Contains(key) && !m.Add(batch[key.Value], referenceBatch[key.Value])) mismatched.Add(key);
            }, Progress);
        }
        return inputs.Select((input, i) => mismatched.Contains((input.Value, input.Axis)) || chosen[i].Samples == 0 ? null : chosen[i]).ToList();
    }

    /// <summary>Makes <paramref name="outputs"/> the probe's only outputs and drops every node they do not need.</summary>
    private static void KeepOnly(OnnxModel probe, OnnxGraph graph, IEnumerable<string> outputs)
    {
        probe.Graph.Output.Clear();
        foreach (var name in outputs) probe.Graph.Output.Add(SegmentedRunner.FloatValue(name));
        graph.RemoveDeadNodes();
    }

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

    /// <summary>Output positions a conv's statistics keep along each spatial axis, at least (where the map has them).</summary>
    private const int MinPositions = 4;

    /// <summary>
    /// The spatial subsampling step k (in every spatial axis) for a conv's output positions: the largest k that still
    /// leaves RowsPerFeature rows per feature. Neighbouring patches overlap and carry nearly the same second moments,
    /// so a coarser grid estimates H as well at a fraction of the cost (XᵀX costs rows · features²). The step keeps
    /// <see cref="MinPositions"/> positions along the shortest axis, which also ends the search on small maps (a 1×1
    /// output, as after global pooling, keeps its one position).
    /// </summary>
    private static int PositionStep(long[] spatialShape, int samples, int features)
    {
        // At least MinPositions positions along every axis: a conv over few features (a stem) would otherwise be
        // sampled at one corner of every image only, which says nothing of the rest (mostly padding there).
        var maxStep = spatialShape.DefaultIfEmpty(1).Min() / MinPositions;
        var step = 1;
        while (step < maxStep && Rows(spatialShape, step + 1) * samples >= (long)RowsPerFeature * features) step++;
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
        // Gemm/MatMul: [rows, in] (or [..., in]) with a ones column appended, X·0 + 1 (which, like the layer, turns
        // a non-finite input into a non-finite statistic instead of hiding it).
        var flat = Rows(graph, x, channelsFirstRank: 0, features, prefix + "/x");
        graph.SetInitializer(Tensors.FromFloats(prefix + "/zero", [features, 1], new float[features]));
        graph.SetInitializer(Tensors.FromFloats(prefix + "/one", [1], [1f]));
        graph.AddNode(Node("Gemm", [flat, prefix + "/zero", prefix + "/one"], prefix + "/ones"));
        graph.AddNode(Node("Concat", [flat, prefix + "/ones"], u, Int("axis", 1)));
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
