using ModelCompression.Policy;

namespace ModelCompression.Passes;

/// <summary>Every pass in the engine, found by reflection, in pipeline order (stage, then name).</summary>
public static class CompressionPipeline
{
    public static IReadOnlyList<ICompressionPass> AllPasses { get; } = typeof(CompressionPipeline).Assembly.GetTypes()
        .Where(t => t is { IsClass: true, IsAbstract: false } && typeof(ICompressionPass).IsAssignableFrom(t) && t.GetConstructor(Type.EmptyTypes) is not null)
        .Select(t => (ICompressionPass)Activator.CreateInstance(t)!)
        .OrderBy(p => p.Stage).ThenBy(p => p.Name, StringComparer.Ordinal)
        .ToList();

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
