using ModelCompression.Onnx;
using ModelCompression.Passes;
using static ModelCompression.Tests.Pruning.PruningHelpers;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.Tests.HalfPrecision;

/// <summary>
/// float16 / bfloat16 on the real fixtures, run by ONNX Runtime: accuracy, outputs against the original, file size,
/// float32 inputs and outputs, determinism, and activations out of float16's range kept in float32.
/// </summary>
[TestClass]
public sealed class HalfPrecisionTests
{
    private static long SavedBytes(OnnxModel model)
    {
        var path = Path.Combine(Path.GetTempPath(), $"half-{Guid.NewGuid():N}.onnx");
        try
        {
            model.Save(path);
            return OnnxModel.FileSizeWithExternalData(path);
        }
        finally { File.Delete(path); }
    }

    private static void AssertFloat32Io(OnnxModel model)
    {
        foreach (var value in model.Graph.Input.Concat(model.Graph.Output))
            Assert.AreEqual((int)DataType.Float, value.Type.TensorType.ElemType, value.Name);
    }

    private static double MaxAbsDifference(OnnxModel a, OnnxModel b)
    {
        var x = Fixtures.Outputs(a);
        var y = Fixtures.Outputs(b);
        Assert.AreEqual(x.Data.Length, y.Data.Length);
        return x.Data.Zip(y.Data, (p, q) => (double)Math.Abs(p - q)).Max();
    }

    [TestMethod]
    [DataRow("fmnist_mlp.onnx")]
    [DataRow("fmnist_resnet.onnx")]
    public void Float16_KeepsAccuracy_HalvesTheFile_AndKeepsFloat32Io(string fixture)
    {
        using var original = OnnxModel.Load(Fixtures.PathOf(fixture));
        var (half, context) = Compress(Fixtures.PathOf(fixture), ("Quantize", "float16"));
        using var _ = half;

        AssertFloat32Io(half);
        var weights = WeightedLayerWeights(half);
        Assert.IsTrue(weights.Count > 0 && weights.All(t => t == DataType.Float16), "every weight stored in float16");
        // Each layer computes in float16 where the runtime has a float16 kernel for it, else in float32 saying so
        // (ONNX Runtime's x64 CPU provider has none for Conv and Gemm: it would cast around them itself).
        var layers = context.Records.Where(r => r.ParametersBefore > 0).ToList();
        Assert.IsTrue(layers.Count > 0 && layers.All(r => r.Bits == 16 && r.ReconstructionError < 0.001));
        Assert.IsTrue(layers.All(r => r.Note!.Contains("weights and compute in float16") || r.Note!.Contains($"would run this {r.Op} in float32")),
            string.Join("; ", layers.Select(r => r.Note)));

        var before = Fixtures.Accuracy(original);
        var after = Fixtures.Accuracy(half);
        Console.WriteLine($"{fixture}: fp32 {before:P2}, float16 {after:P2}");
        Assert.IsTrue(before - after <= 0.0005, $"accuracy {before:P2} → {after:P2}");
        var logits = Fixtures.Outputs(original).Data.Max(Math.Abs);
        Assert.IsTrue(MaxAbsDifference(original, half) < 0.01 * Math.Max(1, logits), "outputs match the original");

        var ratio = (double)SavedBytes(half) / SavedBytes(original);
        Assert.IsTrue(ratio is > 0.45 and < 0.55, $"size ratio {ratio:F3}");
    }

    [TestMethod]
    public void BFloat16_StoresWeightsIn16Bits_AndRunsWithFloat32Io()
    {
        using var original = OnnxModel.Load(Fixtures.Mlp);
        var (half, context) = Compress(Fixtures.Mlp, ("Quantize", "bfloat16"));
        using var _ = half;

        AssertFloat32Io(half);
        Assert.IsTrue(WeightedLayerWeights(half).All(t => t == DataType.Bfloat16), "every weight stored in bfloat16");
        Assert.IsTrue(context.Records.Where(r => r.ParametersBefore > 0).All(r => r.Bits == 16 && r.ReconstructionError < 0.01));
        var before = Fixtures.Accuracy(original);
        var after = Fixtures.Accuracy(half);
        Assert.IsTrue(before - after <= 0.002, $"accuracy {before:P2} → {after:P2}");
        var ratio = (double)SavedBytes(half) / SavedBytes(original);
        Assert.IsTrue(ratio is > 0.45 and < 0.55, $"size ratio {ratio:F3}");
    }

    [TestMethod]
    [DataRow("float16")]
    [DataRow("bfloat16")]
    public void SameInput_GivesByteIdenticalModels(string mode)
    {
        var (a, _) = Compress(Fixtures.ResNet, ("Quantize", mode));
        var (b, _) = Compress(Fixtures.ResNet, ("Quantize", mode));
        using (a) using (b) CollectionAssert.AreEqual(a.ToBytes(), b.ToBytes());
    }

    /// <summary>
    /// The MLP with its first layer scaled by 10⁴ and the second by 10⁻⁴ (ReLU commutes with the scale): the same
    /// function, but hidden activations far above 65504. With calibration data those ops stay float32 and the model
    /// keeps its accuracy.
    /// </summary>
    [TestMethod]
    public void Float16_KeepsOpsWhoseActivationsOverflowInFloat32()
    {
        var path = Path.Combine(Path.GetTempPath(), $"half-scaled-{Guid.NewGuid():N}.onnx");
        try
        {
            using (var scaled = OnnxModel.Load(Fixtures.Mlp))
            {
                var graph = new OnnxGraph(scaled.Graph);
                var layers = WeightedLayer.FindAll(graph);
                void Scale(string name, float factor)
                {
                    var tensor = graph.Initializer(name)!;
                    graph.SetInitializer(Tensors.FromFloats(name, tensor.Dims.ToArray(), scaled.ReadFloats(tensor).Select(v => v * factor).ToArray()));
                }
                Scale(layers[0].Weight.Name, 1e4f);
                Scale(layers[0].BiasName!, 1e4f);
                Scale(layers[1].Weight.Name, 1e-4f);
                scaled.Save(path);
            }
            using var original = OnnxModel.Load(path);
            var (half, context) = Compress(path, ("Quantize", "float16"));
            using var _ = half;

            var first = context.Records.Single(r => r.Layer == "/hidden.0/Gemm");
            StringAssert.Contains(first.Note, "calibration data");
            Assert.AreEqual(32, first.Bits);
            Assert.IsTrue(context.Diagnostics.Any(d => d.Code == "CM0301"));
            var before = Fixtures.Accuracy(original);
            var after = Fixtures.Accuracy(half);
            Assert.IsTrue(Fixtures.Outputs(half).Data.All(float.IsFinite));
            Assert.IsTrue(before - after <= 0.0005, $"accuracy {before:P2} → {after:P2}");
        }
        finally { File.Delete(path); }
    }

    private static List<DataType> WeightedLayerWeights(OnnxModel model)
    {
        // Each layer's weight input is a Cast of a 16-bit initializer or a 16-bit initializer itself.
        var graph = new OnnxGraph(model.Graph);
        var types = new List<DataType>();
        foreach (var node in graph.Nodes.Where(n => n.OpType is "Gemm" or "Conv" or "MatMul"))
        {
            var weight = node.Input[1];
            if (graph.Producer(weight) is { OpType: "Cast" } cast) weight = cast.Input[0];
            if (graph.Initializer(weight) is { } init) types.Add((DataType)init.DataType);
        }
        return types;
    }
}
