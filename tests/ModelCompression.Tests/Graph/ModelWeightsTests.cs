using ModelCompression.Graph;
using ModelCompression.Onnx;
using ModelCompression.Passes;
using ModelCompression.Pruning;
using static ModelCompression.Tests.Pruning.PruningHelpers;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.Tests.Graph;

/// <summary>Parameter counts see through quantization and compact storage: only passes that remove weights change them.</summary>
[TestClass]
public sealed class ModelWeightsTests
{
    private const long MlpParameters = 784L * 512 + 512 + 512L * 256 + 256 + 256L * 10 + 10;
    private const long ResNetParameters = 481_482; // 9 convs and the head, weights and biases (BatchNorm folded by the exporter)

    [TestMethod]
    public void Fp32Fixtures_CountEveryWeightAndBias()
    {
        using var mlp = OnnxModel.Load(Fixtures.Mlp);
        var weights = ModelWeights.Find(mlp);
        Assert.AreEqual(6, weights.Count);
        Assert.AreEqual(MlpParameters, ModelWeights.Parameters(mlp));
        Assert.IsTrue(weights.All(w => w.StoredType == DataType.Float && w.StoredName == w.Value && w.NonZeros == w.Elements));
        CollectionAssert.AreEqual(new long[] { 512, 784 }, weights[0].Dims);

        using var resNet = OnnxModel.Load(Fixtures.ResNet);
        Assert.AreEqual(ResNetParameters, ModelWeights.Parameters(resNet));
        Assert.AreEqual(9, ModelWeights.Find(resNet).Count(w => w.Consumer.OpType == "Conv" && w.Dims!.Length == 4));
    }

    [TestMethod]
    public void StaticInt8_KeepsTheCount_WeightsStoredInt8AndBiasesInt32()
    {
        // Every layer int8 (the stem conv too), so every weight is counted in its stored type.
        var (model, _) = Compress(Fixtures.ResNet, ("Quantize", "int8"), ("KeepSlowLayersFloat", "false"));
        var weights = ModelWeights.Find(model);
        Assert.AreEqual(ResNetParameters, weights.Sum(w => w.Elements), "scales and zero points are not parameters");
        Assert.AreEqual(10, weights.Count(w => w.StoredType == DataType.Int8), string.Join(", ", weights.Select(w => $"{w.Value}:{w.StoredType}")));
        Assert.AreEqual(10, weights.Count(w => w.StoredType == DataType.Int32));
    }

    [TestMethod]
    public void DynamicInt8_KeepsTheCount()
    {
        var (model, _) = Compress(Fixtures.Mlp, ("Quantize", "int8-dynamic"));
        Assert.AreEqual(MlpParameters, ModelWeights.Parameters(model));
        Assert.AreEqual(3, ModelWeights.Find(model).Count(w => w.StoredType == DataType.Int8));
    }

    [TestMethod]
    public void CompactStorage_ReportsTheDenseTensorsItDecodesTo()
    {
        var (dense, _) = Compress(Fixtures.Mlp, ("Sparsity", "0.8"), ("PruneMethod", "sparsegpt"), ("PruneScope", "layer"), ("Quantize", "int8"), ("SparseStorage", "false"));
        var stored = dense.Clone();
        var storage = new CompressionContext(stored, Fixtures.Policy());
        new SparseStoragePass().Apply(storage);
        Assert.IsTrue(storage.Records.Count >= 2, "the hidden layers were re-encoded");

        var before = ModelWeights.Find(dense);
        var after = ModelWeights.Find(stored);
        Assert.AreEqual(MlpParameters, after.Sum(w => w.Elements));
        foreach (var (b, a) in before.Zip(after))
        {
            Assert.AreEqual(b.Value, a.Value);
            CollectionAssert.AreEqual(b.Dims, a.Dims, a.Value);
            Assert.AreEqual(b.NonZeros, a.NonZeros, a.Value);
            Assert.AreEqual(b.StoredType, a.StoredType, a.Value);
        }
        var hidden = after.Single(w => w.Value.StartsWith("hidden.0.weight", StringComparison.Ordinal));
        Assert.AreNotEqual(hidden.Value, hidden.StoredName, "stored under the decoder's values");
        Assert.AreEqual(0.2, (double)hidden.NonZeros! / hidden.Elements, 0.005);
    }

    [TestMethod]
    public void MalformedConstantChains_AreCountedAsFarAsTheyTell_WithoutThrowing()
    {
        using var model = OnnxModel.Load(Fixtures.Mlp);
        var graph = new OnnxGraph(model.Graph);
        var gemm = graph.Nodes.First(n => n.OpType == "Gemm");
        // An opset-1 style Reshape (shape as an attribute, one input) and a Transpose with a perm of the wrong length.
        var reshape = new Onnx.Protobuf.NodeProto { OpType = "Reshape", Input = { gemm.Input[1] }, Output = { "reshaped" } };
        var transpose = new Onnx.Protobuf.NodeProto
        {
            OpType = "Transpose", Input = { "reshaped" }, Output = { "transposed" },
            Attribute = { new Onnx.Protobuf.AttributeProto { Name = "perm", Type = Onnx.Protobuf.AttributeProto.Types.AttributeType.Ints, Ints = { 0, 1, 2 } } },
        };
        graph.Proto.Node.Insert(0, transpose);
        graph.Proto.Node.Insert(0, reshape);
        gemm.Input[1] = "transposed";
        graph.Invalidate();

        var weight = ModelWeights.Find(model).Single(w => w.Value == "transposed");
        Assert.IsNull(weight.Dims);
        Assert.AreEqual(512L * 784, weight.Elements);
        Assert.AreEqual(MlpParameters, ModelWeights.Parameters(model));
    }

    [TestMethod]
    public void StructuredPruning_CountsTheSmallerLayers()
    {
        var (model, _) = Compress(Fixtures.Mlp, ("StructuredSparsity", "0.5"));
        Assert.AreEqual(784L * 256 + 256 + 256L * 128 + 128 + 128L * 10 + 10, ModelWeights.Parameters(model));
    }
}
