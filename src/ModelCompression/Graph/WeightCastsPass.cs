using ModelCompression.Passes;
using ModelCompression.Policy;

namespace ModelCompression.Graph;

/// <summary>
/// A weight stored in float16 (or bfloat16, double) and cast to float32 for its layer becomes a float32 initializer,
/// so the techniques can compress it (<see cref="WeightChains"/>). Only when a technique is asked for: folded and left
/// alone, the weight would take twice the bytes.
/// </summary>
public sealed class WeightCastsPass : ICompressionPass
{
    public string Name => "weight-casts";
    public PassStage Stage => PassStage.Normalize;
    public IReadOnlyList<OptionsGroup> Reads => [];
    public bool IsRequested(CompressionPolicy policy) => policy.HasTechnique;

    public void Apply(CompressionContext context)
    {
        foreach (var graph in context.Graph.SelfAndSubgraphs().ToList()) WeightChains.Fold(context.Model, graph, castsToo: true);
    }
}
