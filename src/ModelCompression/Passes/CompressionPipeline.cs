using ModelCompression.Diagnostics;
using System.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Policy;
using ModelCompression.Reporting;

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
            context.ReleaseStageMemory();
        }
        WarnHighErrors(context);
    }

    /// <summary>
    /// Runs the requested passes on a copy of <paramref name="source"/>, starting from the longest prefix of them that
    /// <paramref name="cache"/> holds (its records and diagnostics replayed) and caching each result after it.
    /// The caller owns the returned context's model. Cached passes appear in <paramref name="timings"/> as cached.
    /// </summary>
    public static CompressionContext Run(OnnxModel source, CompressionPolicy policy, string modelPath, PassCache? cache, List<StepTiming> timings,
        CancellationToken cancellation, IProgress<(string Stage, double Fraction)>? progress, Data.Dataset? calibration = null, bool largeModel = false, string? spillPathPrefix = null)
    {
        var passes = For(policy);
        var keys = cache is null ? [] : PassCache.Keys(source, modelPath, policy, passes);
        var cached = cache?.LongestCachedPrefix(keys) ?? -1;
        CompressionContext context;
        if (cached >= 0)
        {
            var (model, steps) = cache!.Load(keys[cached]);
            context = new CompressionContext(model, policy, modelPath, cancellation) { Progress = progress, CalibrationData = calibration, LargeModel = largeModel, SpillPathPrefix = spillPathPrefix };
            context.Replay(steps);
            for (var i = 0; i <= cached; i++) timings.Add(new StepTiming(passes[i].Name, 0, Cached: true));
        }
        else context = new CompressionContext(source.Clone(), policy, modelPath, cancellation) { Progress = progress, CalibrationData = calibration, LargeModel = largeModel, SpillPathPrefix = spillPathPrefix };

        var step = new Stopwatch();
        try
        {
            for (var i = cached + 1; i < passes.Count; i++)
            {
                cancellation.ThrowIfCancellationRequested();
                step.Restart();
                progress?.Report((passes[i].Name, 0));
                passes[i].Apply(context);
                context.Graph.Invalidate();
                context.ReleaseStageMemory();
                timings.Add(new StepTiming(passes[i].Name, step.Elapsed.TotalMilliseconds));
                cache?.Store(keys[i], context.Model, new CachedSteps([.. context.Records], [.. context.Diagnostics]));
            }
        }
        catch
        {
            // The caller never gets this model: its spill file (and mapped pages) go now, not at process exit (an
            // MSBuild node lives on).
            context.Model.Dispose();
            throw;
        }
        cache?.Trim();
        WarnHighErrors(context);
        return context;
    }

    /// <summary>One warning naming every layer whose change lost half its signal or more (worst first), so such a layer stands out before the gate runs.</summary>
    private static void WarnHighErrors(CompressionContext context)
    {
        var high = context.Records.Where(r => r.HasHighError).OrderByDescending(r => r.ReconstructionError ?? double.PositiveInfinity).ToList();
        if (high.Count == 0) return;
        var named = string.Join(", ", high.Take(5).Select(r => $"{r.Layer} ({r.Technique}) {Evaluation.MetricFormat.Error(r.ReconstructionError)}"));
        var more = high.Count > 5 ? $" and {high.Count - 5} more" : "";
        context.Warn(DiagnosticCodes.HighLayerError,
            $"{high.Count} layer change(s) with relative error ≥ {LayerRecord.HighError}: {named}{more}; the gate decides, but these layers are the first to exclude or treat more gently");
    }
}
