using ModelCompression.Calibration;
using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Policy;

namespace ModelCompression.Pruning;

/// <summary>
/// Structured pruning: removes StructuredSparsity of the channels of every prunable <see cref="ChannelGroup"/>
/// (hidden neurons of Gemm/MatMul chains, conv filters; residual-tied channels as one group), so the graph gets
/// smaller shapes and runs faster. Channels are ranked by StructuredCriterion; each sink layer is then refit by
/// ridge least squares on calibration data to reproduce its output in the unpruned model (without calibration data,
/// L1 ranking only, the sinks just lose the input channels). Groups go in graph order, each seeing the ones before.
/// </summary>
public sealed class StructuredPruningPass : ICompressionPass
{
    public string Name => "structured-prune";
    public PassStage Stage => PassStage.Structural;
    public IReadOnlyList<OptionsGroup> Reads => [StructuredPruningOptions.Group, PruningOptions.Group];
    public bool IsRequested(CompressionPolicy policy) => policy.Requests<StructuredPruningOptions>();

    public void Apply(CompressionContext context)
    {
        var graph = context.Graph;
        var plans = new List<(ChannelGroup Group, int Keep, double Damping)>();
        var global = context.Policy.Get<StructuredPruningOptions>();
        foreach (var group in ChannelGroups.Find(context))
        {
            var sparsity = group.Sources.Select(n => context.Options<StructuredPruningOptions>(n)).Min(p => p.StructuredSparsity);
            if (sparsity <= 0) continue;
            var note = group.Blocked is { } why ? $"channels left alone: {why}"
                : group.Sources.Concat(group.Sinks).Any(context.IsExcluded) ? "channels left alone: the group includes an excluded layer"
                : null;
            var keep = KeptChannels(group.Channels, sparsity, global.StructuredChannelMultiple);
            if (note is null && keep == group.Channels) note = $"channels left alone: {sparsity:P0} of {group.Channels} rounds to none";
            if (note is not null)
            {
                foreach (var source in group.Sources) context.Record(Record(Layer(graph, source), group.Sources.Count > 1, note));
                continue;
            }
            plans.Add((group, keep, context.Options<PruningOptions>(group.Sources[0]).PruneDamping));
        }
        if (plans.Count == 0)
        {
            context.Warn(DiagnosticCodes.NothingToCompress, "structured-prune: no channel group can be pruned");
            return;
        }

        var dataAware = context.HasCalibration;
        var sinks = plans.SelectMany(p => p.Group.Sinks).Distinct().Select(n => Layer(graph, n)).ToList();
        var capture = dataAware ? new LayerCapture(context, Name) : null;
        capture?.ReportWithin(0, 0);
        var targets = capture?.Outputs(sinks);
        var criterion = global.CriterionFor(context.HasCalibration);
        var apoz = criterion == StructuredCriterion.Apoz ? AveragePercentageOfZeros(context, plans.Select(p => p.Group).ToList()) : null;
        for (var g = 0; g < plans.Count; g++)
        {
            var (group, keep, damping) = plans[g];
            context.Cancellation.ThrowIfCancellationRequested();
            capture?.ReportStage(g, plans.Count);
            var groupSinks = group.Sinks.Select(n => Layer(graph, n)).ToList();
            var stats = capture?.InputGrams(groupSinks, targets);
            var kept = Select(context, group, keep, damping, groupSinks, stats, apoz?[group]);
            Cut(context, group, kept, targets);
            for (var k = 0; k < groupSinks.Count; k++) Refit(context, groupSinks[k].Node, group.Channels, kept, stats?[k], damping);
        }
    }

    /// <summary>
    /// How many of <paramref name="channels"/> stay: (1 − sparsity)·channels rounded to the nearest multiple of
    /// <paramref name="multiple"/> (CPU kernels run channels in blocks of 8 or 16, so other counts are padded back
    /// at run time and save nothing), at least one multiple, at most all.
    /// </summary>
    internal static int KeptChannels(int channels, double sparsity, int multiple)
    {
        var keep = channels - Math.Round(sparsity * channels);
        var rounded = (int)Math.Round(keep / multiple, MidpointRounding.AwayFromZero) * multiple;
        return Math.Clamp(rounded, Math.Min(multiple, channels), channels);
    }

    /// <summary>The channels to keep, ascending.</summary>
    private static int[] Select(CompressionContext context, ChannelGroup group, int keep, double damping,
        List<WeightedLayer> sinks, IReadOnlyList<GramStatistics>? stats, double[]? zeros)
    {
        var remove = group.Channels - keep;
        var sources = group.Sources.Select(n => Layer(context.Graph, n)).ToList();
        var l1 = ChannelRanking.L1Scores(context.Model, sources, group.Channels);
        // Reconstruction falls back to L1 when a sink's statistics are singular or not finite.
        var removed = context.Policy.Get<StructuredPruningOptions>().CriterionFor(context.HasCalibration) switch
        {
            StructuredCriterion.Apoz => ChannelRanking.MostZerosFirst(zeros!, l1).Take(remove),
            StructuredCriterion.Reconstruction => ChannelRanking.GreedyRemoval(
                sinks.Select((s, k) => (stats![k], s.InFeatures / group.Channels)).ToList(), group.Channels, remove, damping),
            _ => null,
        } ?? ChannelRanking.Ascending(l1).Take(remove);
        var set = removed.ToHashSet();
        return Enumerable.Range(0, group.Channels).Where(c => !set.Contains(c)).ToArray();
    }

    /// <summary>Drops the removed channels from every source (rows, bias), per-channel constant and value shape of the group.</summary>
    private void Cut(CompressionContext context, ChannelGroup group, int[] kept, LayerOutputs? targets)
    {
        var graph = context.Graph;
        foreach (var node in group.Sources)
        {
            var layer = Layer(graph, node);
            var w = layer.ReadMatrix(context.Model);
            var rows = new float[kept.Length * layer.InFeatures];
            for (var r = 0; r < kept.Length; r++) w.AsSpan(kept[r] * layer.InFeatures, layer.InFeatures).CopyTo(rows.AsSpan(r * layer.InFeatures));
            LayerWeights.Write(graph, layer, rows, kept.Length, layer.InFeatures);
            if (layer.BiasName is { } bias && graph.Initializer(bias) is { } tensor && Tensors.ElementCount(tensor) > 1)
                graph.SetInitializer(SliceAxis(context.Model, tensor, tensor.Dims.Count - 1, kept));
            targets?.KeepChannels(node.Output[0], kept);
            context.Record(Record(Layer(graph, node), group.Sources.Count > 1,
                $"kept {kept.Length} of {group.Channels} output channels ({PolicySettings.FormatEnum(context.Policy.Get<StructuredPruningOptions>().CriterionFor(context.HasCalibration))})", layer.Parameters));
        }
        foreach (var constant in group.Constants)
            graph.SetInitializer(SliceAxis(context.Model, graph.Initializer(constant.Initializer)!, constant.Axis, kept));
        // Shapes recorded for the group's values are stale now; ONNX Runtime infers them again.
        var names = group.Values.Select(v => v.Name).ToHashSet(StringComparer.Ordinal);
        for (var i = graph.Proto.ValueInfo.Count - 1; i >= 0; i--)
            if (names.Contains(graph.Proto.ValueInfo[i].Name)) graph.Proto.ValueInfo.RemoveAt(i);
        graph.Invalidate();
    }

    /// <summary>
    /// Removes the sink's input channels and, with statistics, refits weights and bias to reproduce the sink's
    /// output in the unpruned model: ridge least squares toward the sink's own remaining weights.
    /// </summary>
    private void Refit(CompressionContext context, NodeProto node, int channels, int[] kept, GramStatistics? stats, double damping)
    {
        var graph = context.Graph;
        var layer = Layer(graph, node);
        var kernel = layer.InFeatures / channels;
        var features = kept.SelectMany(c => Enumerable.Range(c * kernel, kernel)).ToArray();
        var affine = stats is null ? null : AffineLayer.From(graph, layer);
        var w = affine?.ReadWeights(context.Model) ?? layer.ReadMatrix(context.Model);
        var narrowed = new float[layer.OutFeatures * features.Length];
        for (var o = 0; o < layer.OutFeatures; o++)
            for (var j = 0; j < features.Length; j++) narrowed[o * features.Length + j] = w[o * layer.InFeatures + features[j]];
        var before = layer.Parameters;
        string note;
        double? error = null;
        if (stats is null)
        {
            LayerWeights.Write(graph, layer, narrowed, layer.OutFeatures, features.Length);
            note = $"input channels {channels} → {kept.Length}, not refit (no CalibrationData)";
        }
        else
        {
            var sub = stats.Select(features);
            var bias = affine?.ReadBias(graph, context.Model);
            var prior = bias is null ? narrowed : GramStatistics.Augment(narrowed, bias, layer.OutFeatures, features.Length);
            var fitted = LeastSquares.Fit(sub, bias is not null, damping, prior) ?? prior;
            var n = bias is null ? features.Length : features.Length + 1;
            var weights = new float[layer.OutFeatures * features.Length];
            for (var o = 0; o < layer.OutFeatures; o++) fitted.AsSpan(o * n, features.Length).CopyTo(weights.AsSpan(o * features.Length));
            if (affine is null) LayerWeights.Write(graph, layer, weights, layer.OutFeatures, features.Length);
            else affine.Write(graph, weights, Enumerable.Range(0, layer.OutFeatures).Select(o => fitted[o * n + features.Length]).ToArray(), features.Length);
            error = sub.RelativeError(bias is null ? GramStatistics.Augment(weights, new float[layer.OutFeatures], layer.OutFeatures, features.Length) : fitted);
            note = $"input channels {channels} → {kept.Length}, refit by least squares; error = ‖Δy‖/‖y‖ vs the unpruned layer on {stats.Rows} calibration rows";
        }
        var after = Layer(graph, node);
        context.Record(new LayerRecord
        {
            Layer = after.Name, Op = after.OpType, Technique = Name, Shape = after.WeightShape,
            ParametersBefore = before, ParametersAfter = after.Parameters, ReconstructionError = error, Note = note,
        });
    }

    /// <summary>Per group, the fraction of zeros of each channel where the sinks read it, on the unpruned model (APoZ).</summary>
    private Dictionary<ChannelGroup, double[]> AveragePercentageOfZeros(CompressionContext context, List<ChannelGroup> groups)
    {
        var sinkInputs = groups.SelectMany(g => g.Sinks.Select(s => s.Input[0])).ToHashSet(StringComparer.Ordinal);
        var watched = groups.SelectMany(g => g.Values.Where(v => sinkInputs.Contains(v.Name)).Select(v => (Group: g, Value: v))).ToList();
        var zeros = watched.Select(w => new double[w.Group.Channels]).ToList();
        var totals = new double[watched.Count];
        context.CaptureActivations(Name, watched.Select(w => w.Value.Name).ToList(), batch =>
        {
            for (var k = 0; k < watched.Count; k++)
            {
                var (group, value) = watched[k];
                var tensor = batch[value.Name];
                var inner = tensor.Shape.Skip(value.Axis + 1).Aggregate(1L, (a, b) => a * b);
                var data = tensor.Data;
                for (var i = 0; i < data.Length; i++)
                    if (data[i] == 0) zeros[k][(int)(i / inner % group.Channels)]++;
                totals[k] += data.Length / (double)group.Channels;
            }
        });
        return groups.ToDictionary(g => g, g =>
        {
            var result = new double[g.Channels];
            var ks = Enumerable.Range(0, watched.Count).Where(k => watched[k].Group == g).ToList();
            foreach (var k in ks)
                for (var c = 0; c < g.Channels; c++) result[c] += zeros[k][c] / totals[k] / ks.Count;
            return result;
        });
    }

    private static TensorProto SliceAxis(OnnxModel model, TensorProto tensor, int axis, int[] kept)
    {
        var dims = tensor.Dims.ToArray();
        var data = model.ReadFloats(tensor);
        var inner = dims.Skip(axis + 1).Aggregate(1L, (a, b) => a * b);
        var outer = dims.Take(axis).Aggregate(1L, (a, b) => a * b);
        var result = new float[outer * kept.Length * inner];
        for (var o = 0; o < outer; o++)
            for (var k = 0; k < kept.Length; k++)
                Array.Copy(data, (o * dims[axis] + kept[k]) * inner, result, (o * kept.Length + k) * inner, inner);
        dims[axis] = kept.Length;
        return Tensors.FromFloats(tensor.Name, dims, result);
    }

    private LayerRecord Record(WeightedLayer layer, bool residual, string note, long? before = null) => new()
    {
        Layer = layer.Name, Op = layer.OpType, Technique = Name, Shape = layer.WeightShape,
        ParametersBefore = before ?? layer.Parameters, ParametersAfter = layer.Parameters,
        Note = residual ? note + "; residual-tied group" : note,
    };

    /// <summary>A fresh view of a layer (weights change shape as the pass goes).</summary>
    private static WeightedLayer Layer(OnnxGraph graph, NodeProto node) => WeightedLayer.Find(graph, node.OpType).First(l => ReferenceEquals(l.Node, node));
}
