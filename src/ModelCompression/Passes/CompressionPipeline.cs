using ModelCompression.Graph;
using ModelCompression.LowRank;
using ModelCompression.Policy;

namespace ModelCompression.Passes;

/// <summary>The passes in pipeline order (fold → structural → prune → quantize → clean-up). A new technique adds one line here.</summary>
public static class CompressionPipeline
{
    public static IReadOnlyList<ICompressionPass> AllPasses { get; } = new ICompressionPass[]
    {
        new FoldBatchNormPass(),
        new LowRankPass(),
        new CleanupPass(),
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
