using ModelCompression.Onnx;
using ModelCompression.Passes;

namespace ModelCompression.Tests.Pruning;

/// <summary>Runs the pipeline on a fixture and inspects the result: weights, sparsity, multiply-adds.</summary>
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
    /// Multiply-adds of one 28×28 image through the Conv, Gemm and MatMul layers: what structured pruning removes and
    /// what its speed-up comes from. Spatial sizes follow each Conv's strides, pads and dilations; other ops keep them.
    /// </summary>
    public static double MultiplyAdds(OnnxModel model)
    {
        var graph = new OnnxGraph(model.Graph);
        var spatial = new Dictionary<string, (long H, long W)> { [graph.GraphInputNames.First()] = (28, 28) };
        double total = 0;
        foreach (var node in graph.Nodes)
        {
            if (node.Input.Count == 0 || !spatial.TryGetValue(node.Input[0], out var size)) continue;
            if (node.OpType == "Conv")
            {
                var weight = graph.Initializer(node.Input[1])!;
                long Attribute(string name, int i, long fallback) => node.Attribute.FirstOrDefault(a => a.Name == name) is { } a && a.Ints.Count > i ? a.Ints[i] : fallback;
                long Out(long input, int axis) =>
                    (input + Attribute("pads", axis, 0) + Attribute("pads", axis + 2, 0) - Attribute("dilations", axis, 1) * (weight.Dims[2 + axis] - 1) - 1) / Attribute("strides", axis, 1) + 1;
                var output = (Out(size.H, 0), Out(size.W, 1));
                total += (double)Tensors.ElementCount(weight) * output.Item1 * output.Item2;
                spatial[node.Output[0]] = output;
            }
            else if (node.OpType is "Gemm" or "MatMul")
            {
                total += Tensors.ElementCount(graph.Initializer(node.Input[1])!);
                spatial[node.Output[0]] = (1, 1);
            }
            else foreach (var output in node.Output) spatial[output] = size;
        }
        return total;
    }
}
