using ModelCompression.Onnx;
using ModelCompression.Passes;
using ModelCompression.Policy;

namespace ModelCompression.Graph;

/// <summary>Drops Identity and inference-time Dropout, removes dead nodes and unused initializers, restores topological order.</summary>
public sealed class CleanupPass : ICompressionPass
{
    public string Name => "cleanup";
    public PassStage Stage => PassStage.Cleanup;
    public IReadOnlyList<OptionsGroup> Reads => [];
    public bool IsRequested(CompressionPolicy policy) => true;

    public void Apply(CompressionContext context)
    {
        var graph = context.Graph;
        foreach (var node in graph.Nodes.Where(IsPassThrough).ToList())
        {
            if (node.Input.Count == 0 || node.Input[0].Length == 0) continue;
            graph.Bypass(node);
        }
        graph.RemoveDeadNodes();
        graph.TopologicalSort();
    }

    private static bool IsPassThrough(Onnx.Protobuf.NodeProto node) => node.OpType switch
    {
        "Identity" => true,
        // Dropout is the identity at inference unless its mask is used or training_mode is fed.
        "Dropout" => (node.Output.Count < 2 || node.Output[1].Length == 0) && (node.Input.Count < 3 || node.Input[2].Length == 0),
        _ => false,
    };
}
