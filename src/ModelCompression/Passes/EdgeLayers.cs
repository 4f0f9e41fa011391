using ModelCompression.Onnx;

namespace ModelCompression.Passes;

/// <summary>
/// The edge layers pruning and low rank leave alone by default: the first conv, a <c>Conv</c> reading the model
/// input (every filter sees the raw pixels through very few input channels: a handful of weights each, a fraction of
/// a percent of the model), and the classifier head, whose output reaches a model output through single-consumer
/// ops (every weight feeds a logit directly; a 10-class head has rank 10, nothing to cut).
/// </summary>
internal static class EdgeLayers
{
    /// <summary>
    /// Why a layer is an edge layer ("first conv, …" or "classifier head, …"), or null. Inside a subgraph the model
    /// inputs are still visible by name; a subgraph's own outputs are not model outputs, so no head is found there.
    /// </summary>
    public static string? RoleOf(WeightedLayer layer)
    {
        var graph = layer.Graph;
        if (layer.Layout == WeightLayout.Convolution && graph.Root.GraphInputNames.Contains(layer.InputName) && graph.Initializer(layer.InputName) is null)
            return "first conv, reads the model input";
        var value = layer.Node.Output[0];
        for (var step = 0; step < 8; step++)
        {
            if (graph.IsGraphOutput(value)) return graph.Parent is null ? "classifier head, writes a model output" : null;
            var consumers = graph.Consumers(value);
            if (consumers.Count != 1 || OpRegistry.For(consumers[0].OpType) is { WeightInput: not null } || consumers[0].Output.Count == 0) return null;
            value = consumers[0].Output[0];
        }
        return null;
    }
}
