using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Policy;
using static ModelCompression.Tests.Pruning.PruningHelpers;

namespace ModelCompression.Tests.Pruning;

/// <summary>
/// The MLP fixture rewritten as MatMul (weights stored [in, out]) followed by a bias Add, the way many exporters
/// write linear layers: both pruning passes must handle that layout and the per-channel Add constant.
/// </summary>
[TestClass]
public sealed class MatMulModelTests
{
    private static byte[] _matMulMlp = null!;
    private static double _accuracy;

    [ClassInitialize]
    public static void Rewrite(TestContext _)
    {
        using var model = OnnxModel.Load(Fixtures.Mlp);
        var graph = new OnnxGraph(model.Graph);
        foreach (var gemm in graph.Nodes.Where(n => n.OpType == "Gemm").ToList())
        {
            var layer = WeightedLayer.Find(graph, "Gemm").Single(l => ReferenceEquals(l.Node, gemm));
            var w = layer.ReadMatrix(model);
            graph.SetInitializer(Tensors.FromFloats(layer.Weight.Name, [layer.InFeatures, layer.OutFeatures], WeightedLayer.Transpose(w, layer.OutFeatures, layer.InFeatures)));
            var product = graph.FreshName(gemm.Output[0] + "_product");
            var matMul = new NodeProto { OpType = "MatMul", Name = gemm.Name };
            matMul.Input.Add(gemm.Input[0]);
            matMul.Input.Add(gemm.Input[1]);
            matMul.Output.Add(product);
            var add = new NodeProto { OpType = "Add", Name = gemm.Name + "_bias" };
            add.Input.Add(product);
            add.Input.Add(gemm.Input[2]);
            add.Output.Add(gemm.Output[0]);
            graph.ReplaceNode(gemm, matMul, add);
        }
        _matMulMlp = model.ToBytes();
        _accuracy = Fixtures.Accuracy(model);
    }

    private static OnnxModel Run(params (string Name, string Value)[] settings)
    {
        var model = OnnxModel.Parse(_matMulMlp, Path.GetDirectoryName(Fixtures.Mlp)!);
        CompressionPipeline.Run(new CompressionContext(model, Fixtures.Policy([.. settings, ("CalibrationData", "fmnist_calib.npz")])));
        return model;
    }

    [TestMethod]
    public void Structured_ShrinksInOutWeightsAndBiasAdds()
    {
        var model = Run(("StructuredSparsity", "0.5"));
        CollectionAssert.AreEqual(new long[] { 784, 256 }, Layer(model, "/hidden.0/Gemm").WeightShape);
        CollectionAssert.AreEqual(new long[] { 256, 128 }, Layer(model, "/hidden.1/Gemm").WeightShape);
        CollectionAssert.AreEqual(new long[] { 128, 10 }, Layer(model, "/out/Gemm").WeightShape);
        Assert.AreEqual(256, Tensors.ElementCount(new OnnxGraph(model.Graph).Initializer("hidden.0.bias")!));
        var accuracy = Fixtures.Accuracy(model);
        Assert.IsTrue(_accuracy - accuracy <= 0.01, $"accuracy {accuracy:P2} vs {_accuracy:P2}");
    }

    [TestMethod]
    public void SparseGpt_PrunesExactlyAndKeepsTheAccuracyTarget()
    {
        var model = Run(("Sparsity", "0.8"), ("PruneMethod", "sparsegpt"), ("SparseStorage", "false"));
        var layers = new[] { "/hidden.0/Gemm", "/hidden.1/Gemm" }.Select(n => Layer(model, n)).ToList();
        Assert.AreEqual((long)Math.Round(0.8 * layers.Sum(l => l.Parameters)), layers.Sum(l => Zeros(model, l)));
        var accuracy = Fixtures.Accuracy(model);
        Assert.IsTrue(accuracy >= 0.892, $"accuracy {accuracy:P2}");
    }
}
