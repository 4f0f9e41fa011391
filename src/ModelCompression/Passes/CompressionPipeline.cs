using ModelCompression.Graph;
using ModelCompression.LowRank;
using ModelCompression.Policy;
using ModelCompression.Quantization;

namespace ModelCompression.Passes;

/// <summary>The passes in pipeline order (fold → structural → prune → quantize → clean-up). A new technique adds one line here.</summary>
public static class CompressionPipeline
{
    public static IReadOnlyList<ICompressionPass> AllPasses { get; } = new ICompressionPass[]
    {
        new FoldBatchNormPass(),
        new Pruning.StructuredPruningPass(),
        new LowRankPass(),
        new Pruning.UnstructuredPruningPass(),
        new StaticQuantizationPass(),
        new DynamicQuantizationPass(),
        new CleanupPass(),
        new Pruning.SparseStoragePass(),
    }.OrderBy(p => p.Stage).ToList();

    public static IReadOnlyList<ICompressionPass> For(CompressionPolicy policy) => AllPasses.Where(p => p.IsRequested(policy)).ToList();

    /// <summary>Runs every requested pass over the context's model, in order.</summary>
    public static void Run(CompressionContext context)
    {
        foreach (var pass in For(context.Policy))
        {
            context.Cancellation.ThrowIfCancellationRequested();
            pass.Apply(context);
            context.Graph.Invalidate();
        }
    }
}
