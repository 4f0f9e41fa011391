using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Policy;
using ModelCompression.Quantization;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.HalfPrecision;

/// <summary>
/// <c>Quantize=float16|bfloat16</c>: the main graph's float32 tensors (weights, activations, Cast targets, Constant
/// values) become 16-bit floats, while the model's inputs and outputs stay float32 behind Casts (as
/// onnxconverter-common's <c>keep_io_types</c> does). An op is computed in float32, with Casts around it, when ONNX
/// Runtime has no 16-bit kernel for it on the configured provider (found by loading the converted model, not from a
/// list), or when a value it reads or writes leaves the format's range on calibration data (when given); its
/// weights are still stored in 16 bits with a Cast after them, which ONNX Runtime folds at load: half the file.
/// </summary>
public sealed class HalfPrecisionPass : ICompressionPass
{
    public string Name => "quantize-float16";
    public PassStage Stage => PassStage.Quantize;
    public IReadOnlyList<OptionsGroup> Reads => [QuantizationOptions.Group];
    public bool IsRequested(CompressionPolicy policy) => policy.AnyLayer<QuantizationOptions>(q => q.Quantize is QuantizeMode.Float16 or QuantizeMode.BFloat16);

    /// <summary>
    /// Ops kept in float32 whatever the runtime says: float inputs that are not data (Resize's scales, Range's
    /// bounds), a dtype of their own (random, EyeLike), quantized arithmetic, and the ML domain.
    /// </summary>
    private static readonly HashSet<string> KeepFloatOps = new(StringComparer.Ordinal)
    {
        "Resize", "Upsample", "Range", "NonMaxSuppression", "RoiAlign", "TopK", "CumSum",
        "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "EyeLike", "Bernoulli",
        "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul",
    };

    /// <summary>A weight smaller than this stays float32 when its op does: a Cast for a scalar saves nothing.</summary>
    private const long MinStoredElements = 16;
    /// <summary>A value underflows when more than this share of its nonzero calibration values round to zero.</summary>
    private const double UnderflowShare = 0.01;

    /// <summary>The ops 16 bits make faster (where a kernel exists); a 16-bit region needs one of them to be worth its Casts.</summary>
    private static readonly HashSet<string> MatrixOps = new(StringComparer.Ordinal)
    {
        "Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum", "LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention",
    };

    /// <summary>Why an op computes in float32: the policy, a missing kernel, a value out of range, or float32 neighbours.</summary>
    private enum Keep { No, Policy, Kernel, Range, Neighbours }

    private sealed class NodePlan(NodeProto node, DataType? requested)
    {
        public NodeProto Node { get; } = node;
        /// <summary>The 16-bit type the policy asks for, null when it asks for none.</summary>
        public DataType? Requested { get; } = requested;
        public Keep Kept { get; set; } = requested is null ? Keep.Policy : Keep.No;
        public string? Reason { get; set; }
        /// <summary>The type the op computes in: the requested one, or float32.</summary>
        public DataType Compute => Kept == Keep.No ? Requested!.Value : DataType.Float;
        /// <summary>The type its float32 weights are stored in.</summary>
        public DataType WeightStorage => Kept is Keep.No or Keep.Kernel or Keep.Neighbours && Requested is { } r ? r : DataType.Float;
    }

    public void Apply(CompressionContext context)
    {
        var graph = context.Graph;
        var types = RuntimeProbe.ValueTypes(context.Model, context.ModelPath);
        bool IsFloat(string value) => value.Length > 0 && types.GetValueOrDefault(value) == DataType.Float;

        var plans = graph.Nodes.Select(n =>
        {
            var options = context.Options<QuantizationOptions>(n);
            return new NodePlan(n, HalfFormats.TypeOf(options.Quantize));
        }).ToList();
        // Values a subgraph reads from this scope keep their type: bodies are not converted.
        var readBySubgraphs = new HashSet<string>(StringComparer.Ordinal);
        foreach (var plan in plans)
        {
            var node = plan.Node;
            var hasFloat = node.Input.Any(IsFloat) || node.Output.Any(IsFloat);
            var subgraph = node.Attribute.Any(a => a.G is not null || a.Graphs.Count > 0);
            if (subgraph) foreach (var v in OnnxGraph.NodeInputs(node).Except(node.Input)) readBySubgraphs.Add(v);
            if (plan.Requested is null) continue;
            if (!hasFloat) Set(plan, Keep.Policy, null);
            else if (context.IsExcluded(node)) Set(plan, Keep.Policy, "excluded by policy");
            else if (subgraph) Set(plan, Keep.Range, "has an If/Loop/Scan body (bodies stay float32)");
            else if (node.Domain is not ("" or "ai.onnx") || KeepFloatOps.Contains(node.OpType)) Set(plan, Keep.Range, $"{node.OpType} stays float32 (float inputs that are not data, or a type of its own)");
        }
        foreach (var plan in plans.Where(p => p.Kept == Keep.No && p.Node.Output.Any(readBySubgraphs.Contains)))
            Set(plan, Keep.Range, "an If/Loop/Scan body reads its output");

        CheckRanges(context, plans, types, IsFloat);

        // Convert, load, and put back in float32 every op of a type the runtime rejects in 16 bits, and every op it
        // would silently run in float32 between Casts of its own, until it loads with none of either.
        var rejectedOps = new HashSet<string>(StringComparer.Ordinal);
        while (true)
        {
            var candidate = context.Model.Clone();
            var probeNames = new Dictionary<string, NodePlan>(StringComparer.Ordinal);
            for (var i = 0; i < plans.Count; i++)
            {
                // Unique names, so that the runtime's transformed graph can be matched to the plan.
                candidate.Graph.Node[i].Name = $"__half_probe_{i}";
                probeNames[candidate.Graph.Node[i].Name] = plans[i];
            }
            Rewrite(candidate, new OnnxGraph(candidate.Graph), plans, types);
            if (RuntimeProbe.Rejected(candidate, context.Runtime, context.ModelPath) is { } rejected)
            {
                var culprits = plans.Where(p => p.Kept == Keep.No && p.Node.OpType == rejected.OpType).ToList();
                if (culprits.Count == 0 || !rejectedOps.Add(rejected.OpType))
                    throw new CompressionException(DiagnosticCodes.RuntimeFailure, $"float16/bfloat16: ONNX Runtime cannot load the converted model: {rejected.Message}", context.ModelPath);
                foreach (var p in culprits)
                    Set(p, Keep.Kernel, $"ONNX Runtime ({context.Runtime.Provider}) has no {HalfFormats.Name(p.Requested!.Value)} kernel for {p.Node.OpType}");
                continue;
            }
            var upcast = RuntimeProbe.RunInFloat32(candidate, context.Runtime, context.ModelPath)
                .Select(probeNames.GetValueOrDefault).OfType<NodePlan>().Where(p => p.Kept == Keep.No).ToList();
            if (upcast.Count == 0) break;
            foreach (var p in upcast)
                Set(p, Keep.Kernel, $"ONNX Runtime ({context.Runtime.Provider}) would run this {p.Node.OpType} in float32 with Casts of its own around it (no {HalfFormats.Name(p.Requested!.Value)} kernel, or isolated between such ops)");
        }

        KeepIslandsFloat32(plans, IsFloat);

        var layers = WeightedLayer.FindAll(graph).Select(l => (l.Node, l.Name, l.OpType, l.WeightShape, l.Parameters, Values: context.Model.ReadFloats(l.Weight))).ToList();
        Rewrite(context.Model, graph, plans, types);
        Record(context, plans, layers);
    }

    /// <summary>
    /// Ops computed in 16 bits form regions, linked by the values one writes and another reads. A region without a
    /// matrix op (Conv, Gemm, MatMul …) in 16 bits — a Relu or an Add between two float32 convolutions, a Flatten
    /// after the input — stays float32: in 16 bits it would only round its values and add two Casts.
    /// </summary>
    private static void KeepIslandsFloat32(List<NodePlan> plans, Func<string, bool> isFloat)
    {
        var half = plans.Where(p => p.Kept == Keep.No).ToList();
        var index = new Dictionary<NodePlan, int>(ReferenceEqualityComparer.Instance);
        for (var k = 0; k < half.Count; k++) index[half[k]] = k;
        var parent = Enumerable.Range(0, half.Count).ToArray();
        int Find(int i) => parent[i] == i ? i : parent[i] = Find(parent[i]);
        var producer = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in half)
            foreach (var o in p.Node.Output.Where(isFloat)) producer[o] = index[p];
        foreach (var p in half)
            foreach (var i in p.Node.Input.Where(isFloat))
                if (producer.TryGetValue(i, out var from)) parent[Find(from)] = Find(index[p]);
        var heavy = half.Where(p => MatrixOps.Contains(p.Node.OpType)).Select(p => Find(index[p])).ToHashSet();
        foreach (var p in half.Where(p => !heavy.Contains(Find(index[p]))))
            Set(p, Keep.Neighbours, "no 16-bit matrix op next to it: in 16 bits it would only round values between two Casts");
    }

    private static void Set(NodePlan plan, Keep keep, string? reason)
    {
        plan.Kept = keep;
        plan.Reason = reason;
    }

    /// <summary>
    /// Keeps in float32 the ops next to a value out of the format's range: weights above its maximum always;
    /// activations, when calibration data is given, above its maximum or mostly below its smallest value.
    /// </summary>
    private static void CheckRanges(CompressionContext context, List<NodePlan> plans, Dictionary<string, DataType> types, Func<string, bool> isFloat)
    {
        var graph = context.Graph;
        var byValue = new Dictionary<string, List<NodePlan>>(StringComparer.Ordinal);
        foreach (var plan in plans.Where(p => p.Kept == Keep.No))
            foreach (var v in plan.Node.Input.Concat(plan.Node.Output).Where(isFloat).Distinct())
                (byValue.TryGetValue(v, out var list) ? list : byValue[v] = []).Add(plan);

        void Flag(string value, string why)
        {
            // The producer writes it and every consumer reads it: all of them stay float32 (a Cast would overflow).
            foreach (var plan in plans.Where(p => p.Kept is Keep.No or Keep.Kernel && (p.Node.Output.Contains(value) || p.Node.Input.Contains(value))))
                Set(plan, Keep.Range, $"'{value}' {why}");
        }

        foreach (var value in byValue.Keys.ToList())
        {
            if (graph.Initializer(value) is not { } init) continue;
            var type = byValue[value].First().Requested!.Value;
            var max = context.Model.ReadFloats(init).Select(Math.Abs).DefaultIfEmpty(0).Max();
            if (max > HalfFormats.Max(type)) Flag(value, $"holds |w| = {max:G4} > {HalfFormats.Max(type):G6}, {HalfFormats.Name(type)}'s largest value");
        }
        if (!context.HasCalibration) return;

        var activations = byValue.Keys.Where(v => graph.Initializer(v) is null).ToList();
        var stats = activations.ToDictionary(v => v, _ => (Max: 0.0, NonZero: 0L, Tiny: 0L), StringComparer.Ordinal);
        context.CaptureActivations("quantize-float16", activations, batch =>
        {
            foreach (var (name, tensor) in batch)
            {
                var type = byValue[name].First().Requested!.Value;
                var tiny = HalfFormats.Tiny(type) / 2;
                var s = stats[name];
                foreach (var x in tensor.Data)
                {
                    var a = Math.Abs((double)x);
                    if (a > s.Max || double.IsNaN(a)) s.Max = a;
                    if (a == 0) continue;
                    s.NonZero++;
                    if (a < tiny) s.Tiny++;
                }
                stats[name] = s;
            }
        });
        foreach (var (value, s) in stats)
        {
            var type = byValue[value].First().Requested!.Value;
            if (s.Max > HalfFormats.Max(type))
                Flag(value, $"reaches |x| = {s.Max:G4} on calibration data > {HalfFormats.Max(type):G6}, {HalfFormats.Name(type)}'s largest value");
            else if (s.NonZero > 0 && (double)s.Tiny / s.NonZero > UnderflowShare)
                Flag(value, $"has {100.0 * s.Tiny / s.NonZero:F1} % of its nonzero calibration values below {HalfFormats.Name(type)}'s smallest ({HalfFormats.Tiny(type):G3}): they would become 0");
        }
    }

    /// <summary>
    /// Writes the plan into <paramref name="model"/>: each float value gets the type its producer computes in (graph
    /// inputs stay float32), initializers the type of their first 16-bit reader, and a Cast (one per value and type)
    /// goes before every op that reads a value in another type than it computes in. Outputs computed in 16 bits are
    /// renamed and cast back to float32 under their own name.
    /// </summary>
    private static void Rewrite(OnnxModel model, OnnxGraph graph, List<NodePlan> plans, Dictionary<string, DataType> types)
    {
        bool IsFloat(string value) => value.Length > 0 && types.GetValueOrDefault(value) == DataType.Float;
        var byName = new Dictionary<NodeProto, NodePlan>(ReferenceEqualityComparer.Instance);
        var originals = graph.Nodes.ToList();
        for (var i = 0; i < originals.Count; i++) byName[originals[i]] = plans[i];
        var stored = new Dictionary<string, DataType>(StringComparer.Ordinal);

        // Initializers: the first reader that computes in 16 bits decides, else the first that stores its weights so.
        var outputs = graph.GraphOutputNames.ToHashSet(StringComparer.Ordinal);
        var readers = new Dictionary<string, List<NodePlan>>(StringComparer.Ordinal);
        foreach (var node in originals)
            foreach (var v in node.Input.Where(IsFloat))
                (readers.TryGetValue(v, out var list) ? list : readers[v] = []).Add(byName[node]);
        foreach (var init in graph.Proto.Initializer.ToList())
        {
            if (!IsFloat(init.Name) || outputs.Contains(init.Name) || graph.GraphInputNames.Contains(init.Name) || !readers.TryGetValue(init.Name, out var rs)) continue;
            if (rs.Any(r => r.Kept == Keep.Range)) continue;
            var type = rs.Where(r => r.Kept == Keep.No).Select(r => (DataType?)r.Compute).FirstOrDefault()
                ?? (Tensors.ElementCount(init) >= MinStoredElements ? rs.Select(r => (DataType?)r.WeightStorage).FirstOrDefault(t => t != DataType.Float) : null);
            if (type is not { } t) continue;
            graph.SetInitializer(HalfFormats.Convert(model, init, t));
            stored[init.Name] = t;
        }

        var nodes = new List<NodeProto>(originals.Count);
        var casts = new Dictionary<(string, DataType), string>();
        string CastTo(string value, DataType type)
        {
            if (casts.TryGetValue((value, type), out var name)) return name;
            name = graph.FreshName($"{value}_{HalfFormats.Name(type)}");
            nodes.Add(Cast(graph.FreshName($"{value}_to_{HalfFormats.Name(type)}"), value, name, type));
            casts[(value, type)] = name;
            return name;
        }
        foreach (var node in originals)
        {
            var plan = byName[node];
            var compute = plan.Compute;
            for (var i = 0; i < node.Input.Count; i++)
            {
                var v = node.Input[i];
                if (!IsFloat(v)) continue;
                var have = stored.GetValueOrDefault(v, DataType.Float);
                if (have != compute) node.Input[i] = CastTo(v, compute);
            }
            if (compute != DataType.Float)
            {
                foreach (var a in node.Attribute)
                {
                    if (node.OpType == "Cast" && a.Name == "to" && a.I == (int)DataType.Float) a.I = (int)compute;
                    if (node.OpType is "Constant" or "ConstantOfShape" && a.Name == "value" && a.T is { DataType: (int)DataType.Float } t)
                        a.T = HalfFormats.Convert(model, t, compute);
                }
                foreach (var o in node.Output.Where(IsFloat)) stored[o] = compute;
            }
            nodes.Add(node);
        }

        // Outputs computed in 16 bits: the producer writes a renamed value, a Cast restores the float32 output.
        foreach (var output in graph.Proto.Output)
        {
            if (stored.GetValueOrDefault(output.Name, DataType.Float) is var type && type == DataType.Float) continue;
            var renamed = graph.FreshName($"{output.Name}_{HalfFormats.Name(type)}");
            foreach (var n in nodes)
            {
                for (var i = 0; i < n.Input.Count; i++) if (n.Input[i] == output.Name) n.Input[i] = renamed;
                for (var i = 0; i < n.Output.Count; i++) if (n.Output[i] == output.Name) n.Output[i] = renamed;
            }
            stored[renamed] = type;
            stored.Remove(output.Name);
            nodes.Add(Cast(graph.FreshName($"{output.Name}_to_float32"), renamed, output.Name, DataType.Float));
        }
        graph.Proto.Node.Clear();
        graph.Proto.Node.AddRange(nodes);
        foreach (var info in graph.Proto.ValueInfo)
            if (stored.TryGetValue(info.Name, out var t) && info.Type?.TensorType is { } tensorType) tensorType.ElemType = (int)t;
        graph.Invalidate();
        graph.TopologicalSort();
    }

    private static NodeProto Cast(string name, string input, string output, DataType to)
    {
        var node = new NodeProto { OpType = "Cast", Name = name, Input = { input }, Output = { output } };
        node.Attribute.Add(new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = (int)to });
        return node;
    }

    private static void Record(CompressionContext context, List<NodePlan> plans, List<(NodeProto Node, string Name, string OpType, long[] Shape, long Parameters, float[] Values)> layers)
    {
        var byNode = new Dictionary<NodeProto, NodePlan>(ReferenceEqualityComparer.Instance);
        foreach (var p in plans) byNode[p.Node] = p;
        var weighted = new HashSet<NodeProto>(ReferenceEqualityComparer.Instance);
        foreach (var layer in layers)
        {
            // Layers inside If/Loop/Scan bodies have no plan: bodies stay float32 (their host op says so).
            if (!byNode.TryGetValue(layer.Node, out var plan) || plan.Requested is not { } requested) continue;
            weighted.Add(layer.Node);
            var storage = plan.WeightStorage;
            context.Record(new LayerRecord
            {
                Layer = layer.Name, Op = layer.OpType, Technique = HalfFormats.Name(requested), Shape = layer.Shape,
                ParametersBefore = layer.Parameters, ParametersAfter = layer.Parameters,
                Bits = storage == DataType.Float ? 32 : 16,
                ReconstructionError = storage == DataType.Float ? 0 : HalfFormats.RelativeError(layer.Values, storage),
                Note = plan.Kept switch
                {
                    Keep.No => $"weights and compute in {HalfFormats.Name(storage)}",
                    Keep.Kernel or Keep.Neighbours => $"weights stored in {HalfFormats.Name(storage)}, computed in float32: {plan.Reason}",
                    _ => "left in float32: " + plan.Reason,
                },
            });
        }
        // Other ops kept in float32 for a reason of their own (not the policy's) are listed too, with the reason.
        var kept = plans.Where(p => p.Reason is not null && p.Kept != Keep.No && !weighted.Contains(p.Node)).ToList();
        foreach (var plan in kept)
        {
            context.Record(new LayerRecord
            {
                Layer = CompressionContext.LayerName(plan.Node), Op = plan.Node.OpType, Technique = HalfFormats.Name(plan.Requested!.Value),
                Bits = 32, Note = "computed in float32: " + plan.Reason,
            });
        }
        foreach (var group in plans.Where(p => p.Reason is not null && p.Kept is Keep.Kernel or Keep.Range).GroupBy(p => p.Reason))
        {
            var names = group.Select(p => $"'{CompressionContext.LayerName(p.Node)}' ({p.Node.OpType})").ToList();
            var named = names.Count <= 5 ? string.Join(", ", names) : string.Join(", ", names.Take(5)) + $" and {names.Count - 5} more";
            context.Warn(DiagnosticCodes.LayerLeftInFloat, $"{HalfFormats.Name(group.First().Requested!.Value)}: {(names.Count == 1 ? "op" : $"{names.Count} ops")} {named} computed in float32: {group.Key}");
        }
        if (plans.All(p => p.Kept != Keep.No) && !plans.Any(p => p.WeightStorage != DataType.Float))
            context.Warn(DiagnosticCodes.NothingToCompress, "float16/bfloat16: no op or weight could be converted");
    }
}
