using System.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Passes;
using ModelCompression.Policy;
using ModelCompression.Runtime;

namespace ModelCompression.Tests.LowRank;

/// <summary>A model run through the pipeline, with its report rows and the time the pipeline took.</summary>
internal sealed record Compressed(OnnxModel Model, IReadOnlyList<LayerRecord> Records, TimeSpan Time)
{
    public LayerRecord Record(string layer) => Records.Single(r => r.Layer == layer);
}

internal static class LowRankTesting
{
    /// <summary>Compresses a copy of <paramref name="source"/> the way the front ends do (whole pipeline).</summary>
    public static Compressed Compress(OnnxModel source, CompressionPolicy policy)
    {
        var model = source.Clone();
        var context = new CompressionContext(model, policy);
        var watch = Stopwatch.StartNew();
        CompressionPipeline.Run(context);
        return new Compressed(model, context.Records, watch.Elapsed);
    }

    /// <summary>Mean squared difference of the outputs relative to the mean square of the reference outputs.</summary>
    public static double RelativeMse(FloatTensor reference, FloatTensor candidate) =>
        ModelCompression.Evaluation.Metrics.MeanSquaredError(reference, candidate) / reference.Data.Average(x => (double)x * x);

    public static long[] Dims(OnnxModel model, string initializer) =>
        model.Graph.Initializer.Single(t => t.Name == initializer).Dims.ToArray();

    /// <summary>Float weights of the model's initializers with at least two dimensions (matrices and kernels).</summary>
    public static long WeightCount(OnnxModel model) =>
        model.Graph.Initializer.Where(t => t.Dims.Count >= 2).Sum(t => t.Dims.Aggregate(1L, (a, b) => a * b));
}
