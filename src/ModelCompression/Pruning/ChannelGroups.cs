using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;

namespace ModelCompression.Pruning;

/// <summary>A value whose channel axis belongs to a group: its rank and which axis holds the channels.</summary>
internal sealed record ChannelValue(string Name, int Rank, int Axis);

/// <summary>A per-channel constant (BatchNormalization parameter, bias or scale of an elementwise op) sliced with the group.</summary>
internal sealed record ChannelConstant(string Initializer, int Axis);

/// <summary>
/// Channels that must be kept or removed together: the output channels of every source layer, all values derived
/// from them channel by channel (activations, pooling, BatchNormalization, per-channel arithmetic, and residual
/// Add/Mul joins, which tie the channels of their operands into one group), and the input channels of every sink
/// layer that reads them. A group is prunable when nothing else reads its values (no Concat, Reshape, graph output
/// or channel-mixing op): then removing channel c means dropping row c of every source, entry c of every per-channel
/// constant, and input channel c of every sink. Groups joined through Concat are left alone.
/// </summary>
internal sealed class ChannelGroup
{
    public required int Channels { get; init; }
    public List<NodeProto> Sources { get; } = [];
    public List<NodeProto> Sinks { get; } = [];
    public List<ChannelValue> Values { get; } = [];
    public List<ChannelConstant> Constants { get; } = [];
    /// <summary>Why the group cannot be pruned, or null.</summary>
    public string? Blocked { get; set; }
}

internal static class ChannelGroups
{
    private static readonly HashSet<string> Elementwise = new(StringComparer.Ordinal)
    {
        "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish", "Softplus",
        "Softsign", "Gelu", "Mish", "Erf", "Abs", "Neg", "Exp", "Sqrt", "Reciprocal", "Identity", "Dropout", "Cast",
    };

    private static readonly HashSet<string> Binary = new(StringComparer.Ordinal) { "Add", "Sub", "Mul", "Div", "Max", "Min", "PRelu" };

    private static readonly HashSet<string> SpatialPools = new(StringComparer.Ordinal)
    {
        "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
    };

    /// <summary>The channel groups of the graph (in topological order of their first source); blocked ones say why.</summary>
    public static List<ChannelGroup> Find(CompressionContext context)
    {
        var graph = context.Graph;
        var layers = new Dictionary<NodeProto, WeightedLayer>(ReferenceEqualityComparer.Instance);
        foreach (var l in WeightedLayer.Find(graph).Where(l => OpRegistry.Handles(l.Node, OpTechnique.StructuredPrune))) layers[l.Node] = l;
        var parent = new List<int>();
        var groups = new List<ChannelGroup>();
        var values = new Dictionary<string, (int Group, ChannelValue Value, bool SpatialOne)>(StringComparer.Ordinal);

        int Root(int g) { while (parent[g] != g) g = parent[g] = parent[parent[g]]; return g; }
        ChannelGroup Of(int g) => groups[Root(g)];
        void Block(int g, string reason) => Of(g).Blocked ??= reason;
        void Union(int a, int b)
        {
            a = Root(a); b = Root(b);
            if (a == b) return;
            if (b < a) (a, b) = (b, a);
            parent[b] = a;
            var (ga, gb) = (groups[a], groups[b]);
            if (ga.Channels != gb.Channels) ga.Blocked ??= $"joins groups of {ga.Channels} and {gb.Channels} channels";
            ga.Blocked ??= gb.Blocked;
            ga.Sources.AddRange(gb.Sources); ga.Sinks.AddRange(gb.Sinks); ga.Values.AddRange(gb.Values); ga.Constants.AddRange(gb.Constants);
        }
        void Set(string name, int g, int rank, int axis, bool spatialOne)
        {
            values[name] = (g, new ChannelValue(name, rank, axis), spatialOne);
            Of(g).Values.Add(new ChannelValue(name, rank, axis));
        }

        var ranks = Ranks(graph);
        foreach (var node in graph.Nodes)
        {
            var inputs = node.Input.Where(i => i.Length > 0 && values.ContainsKey(i)).ToList();
            // Weighted layers: a sink for the group of their data input, a source of a new group for their output.
            if (layers.TryGetValue(node, out var layer))
            {
                if (values.TryGetValue(node.Input[0], out var input))
                {
                    var fits = layer.Layout == WeightLayout.Convolution
                        ? layer.Group == 1 && input.Value.Axis == 1 && layer.WeightShape[1] == Of(input.Group).Channels
                        : input.Value.Axis == input.Value.Rank - 1 && layer.InFeatures == Of(input.Group).Channels && (layer.Layout == WeightLayout.MatMul || input.Value.Rank == 2);
                    if (fits) Of(input.Group).Sinks.Add(node);
                    else Block(input.Group, $"'{OnnxGraph.Describe(node)}' reads the channels in another layout");
                }
                foreach (var other in node.Input.Skip(1).Where(values.ContainsKey)) Block(values[other].Group, $"'{OnnxGraph.Describe(node)}' uses the channels as a weight");
                if (layer.Layout == WeightLayout.Convolution && layer.Group != 1 || node.Output.Count != 1) continue;
                var g = groups.Count;
                parent.Add(g);
                groups.Add(new ChannelGroup { Channels = layer.OutFeatures });
                groups[g].Sources.Add(node);
                var rank = ranks.GetValueOrDefault(node.Output[0]);
                if (rank == 0) { Block(g, $"the rank of '{OnnxGraph.Describe(node)}''s output is unknown"); continue; }
                Set(node.Output[0], g, rank, layer.Layout == WeightLayout.Convolution ? 1 : rank - 1, spatialOne: false);
                continue;
            }
            if (inputs.Count == 0) continue;
            var (group, value, spatial) = values[inputs[0]];
            var constants = new List<ChannelConstant>();
            var why = Propagate(graph, node, inputs, values, out var result, constants);
            if (why is not null)
            {
                foreach (var i in inputs) Block(values[i].Group, $"'{OnnxGraph.Describe(node)}' ({node.OpType}) {why}");
                continue;
            }
            foreach (var i in inputs.Skip(1)) Union(group, values[i].Group);
            Of(group).Constants.AddRange(constants);
            var output = result ?? (value.Rank, value.Axis, spatial);
            Set(node.Output[0], group, output.Rank, output.Axis, output.SpatialOne);
        }

        foreach (var (name, entry) in values)
            if (graph.IsGraphOutput(name)) Block(entry.Group, $"'{name}' is a model output");
        return groups.Where((_, i) => Root(i) == i).Where(g => g.Sources.Count > 0).ToList();
    }

    /// <summary>
    /// How a channel-carrying value passes through <paramref name="node"/>: null when the node keeps channels apart
    /// (with the output's rank/axis when they change, and a per-channel constant to slice), else why it mixes them.
    /// </summary>
    private static string? Propagate(OnnxGraph graph, NodeProto node, List<string> inputs,
        Dictionary<string, (int Group, ChannelValue Value, bool SpatialOne)> values, out (int Rank, int Axis, bool SpatialOne)? result, List<ChannelConstant> constants)
    {
        result = null;
        var (_, value, spatialOne) = values[inputs[0]];
        if (node.Output.Count != 1 && node.OpType != "Dropout" || node.Output.Skip(1).Any(o => o.Length > 0)) return "has several outputs";
        if (node.Domain is not ("" or "ai.onnx")) return "is a custom op";
        if (Elementwise.Contains(node.OpType)) return inputs.Count == 1 && node.Input[0] == inputs[0] ? null : "takes the channels as a parameter";
        if (SpatialPools.Contains(node.OpType))
        {
            if (value.Axis != 1 || node.Input[0] != inputs[0]) return "pools over another axis";
            result = (value.Rank, 1, node.OpType.StartsWith("Global", StringComparison.Ordinal));
            return null;
        }
        if (node.OpType == "BatchNormalization")
        {
            if (value.Axis != 1 || inputs.Count != 1 || node.Input[0] != inputs[0]) return "normalizes another axis";
            for (var i = 1; i < node.Input.Count; i++)
            {
                if (graph.Initializer(node.Input[i]) is null) return "has non-constant parameters";
                if (graph.Consumers(node.Input[i]).Count != 1) return $"shares its parameter '{node.Input[i]}'";
                constants.Add(new ChannelConstant(node.Input[i], 0));
            }
            return null;
        }
        if (Binary.Contains(node.OpType))
        {
            if (node.Input.Count != 2) return "is not binary";
            if (inputs.Count == 2)
            {
                var other = values[inputs[1]].Value;
                return other.Rank == value.Rank && other.Axis == value.Axis ? null : "joins values of different layouts";
            }
            var operand = node.Input[0] == inputs[0] ? node.Input[1] : node.Input[0];
            if (graph.Initializer(operand) is not { } tensor) return "combines the channels with a computed value";
            var dims = tensor.Dims.ToArray();
            var at = value.Axis - (value.Rank - dims.Length);
            if (dims.Length > value.Rank) return "broadcasts the channels to a higher rank";
            for (var i = 0; i < dims.Length; i++)
                if (i != at && dims[i] != 1) return "has a constant that varies along another axis";
            if (at < 0 || dims[at] == 1) return null;
            if (graph.Consumers(operand).Count != 1) return $"shares its per-channel constant '{operand}'";
            constants.Add(new ChannelConstant(operand, at));
            return null;
        }
        if (node.OpType is "ReduceMean" or "ReduceSum" or "ReduceMax" or "ReduceMin" or "ReduceL1" or "ReduceL2")
        {
            var axes = ReduceAxes(graph, node, value.Rank);
            if (axes is null || axes.Contains(value.Axis) || axes.Contains(0)) return "reduces over the channels or unknown axes";
            var keep = (node.Attribute.FirstOrDefault(a => a.Name == "keepdims")?.I ?? 1) != 0;
            var allSpatial = axes.Count == value.Rank - 2 && value.Axis == 1;
            result = keep ? (value.Rank, value.Axis, allSpatial) : (value.Rank - axes.Count, value.Axis - axes.Count(a => a < value.Axis), allSpatial && value.Rank - axes.Count == 2);
            return null;
        }
        if (node.OpType == "Flatten")
        {
            var axis = node.Attribute.FirstOrDefault(a => a.Name == "axis")?.I ?? 1;
            if (axis != 1 || value.Axis != 1 || !spatialOne && value.Rank > 2) return "flattens the channels together with other axes";
            result = (2, 1, true);
            return null;
        }
        return "is not channel-wise";
    }

    /// <summary>
    /// The rank of every value that can be told without running the model: declared shapes, initializers, and
    /// what the common operators make of their inputs' ranks (MatMul layers need it to find their channel axis).
    /// </summary>
    private static Dictionary<string, int> Ranks(OnnxGraph graph)
    {
        var ranks = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var v in graph.Proto.Input.Concat(graph.Proto.ValueInfo))
            if (v.Type?.TensorType?.Shape is { } shape) ranks[v.Name] = shape.Dim.Count;
        foreach (var t in graph.Proto.Initializer) ranks[t.Name] = t.Dims.Count;
        foreach (var node in graph.Nodes)
        {
            if (node.Output.Count == 0) continue;
            var inputs = node.Input.Where(i => i.Length > 0).Select(i => ranks.GetValueOrDefault(i)).ToList();
            int? rank = node.OpType switch
            {
                "Flatten" or "Gemm" => 2,
                "Conv" when inputs.Count > 1 => inputs[1],
                "MatMul" or "Add" or "Sub" or "Mul" or "Div" or "Max" or "Min" or "PRelu" when inputs.All(r => r > 0) => inputs.Max(),
                "Reshape" when graph.Initializer(node.Input[1]) is { } shape => (int)Tensors.ElementCount(shape),
                _ when Elementwise.Contains(node.OpType) || SpatialPools.Contains(node.OpType) || node.OpType is "BatchNormalization" or "Softmax" or "Transpose"
                    => inputs.Count > 0 && inputs[0] > 0 ? inputs[0] : null,
                _ => null,
            };
            if (rank is { } r && !ranks.ContainsKey(node.Output[0])) ranks[node.Output[0]] = r;
        }
        return ranks;
    }

    private static List<int>? ReduceAxes(OnnxGraph graph, NodeProto node, int rank)
    {
        long[]? axes = node.Attribute.FirstOrDefault(a => a.Name == "axes")?.Ints.ToArray();
        if (axes is null && node.Input.Count > 1 && node.Input[1].Length > 0)
            axes = graph.Initializer(node.Input[1]) is { } t ? Tensors.View(t).ToInt64Array() : null;
        if (axes is null || axes.Length == 0) return null;
        return axes.Select(a => (int)(a < 0 ? a + rank : a)).ToList();
    }
}
