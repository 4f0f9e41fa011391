using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using ModelCompression.Graph;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.Tests.Graph;

/// <summary>
/// Weights stored as Constant nodes (paddle2onnx writes every weight so) are weights like initializers: the real
/// PP-OCR orientation classifier (opset 9, 133,665 weights in Constant nodes) through the passes.
/// </summary>
[TestClass]
public sealed class ConstantWeightsTests
{
    private static string Classifier => Fixtures.PathOf("ppocr_cls_v2.onnx");
    private const int Samples = 4;

    /// <summary>Deterministic inputs in the model's normalized range [-1, 1], [Samples, 3, 48, 192].</summary>
    private static float[] Inputs()
    {
        var random = new Random(12);
        return Enumerable.Range(0, Samples * 3 * 48 * 192).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
    }

    /// <summary>The model's output [Samples, 2] through ONNX Runtime.</summary>
    private static float[] Run(OnnxModel model)
    {
        using var session = new InferenceSession(model.ToBytes());
        var input = new DenseTensor<float>(Inputs(), [Samples, 3, 48, 192]);
        using var results = session.Run([NamedOnnxValue.CreateFromTensor(session.InputMetadata.Keys.Single(), input)]);
        return results.First().AsEnumerable<float>().ToArray();
    }

    private static (OnnxModel Model, CompressionContext Context) Compress(params (string Name, string Value)[] settings)
    {
        var model = OnnxModel.Load(Classifier);
        var context = new CompressionContext(model, Fixtures.Policy(settings));
        CompressionPipeline.Run(context);
        return (model, context);
    }

    private static int FloatConstants(OnnxModel model) =>
        model.Graph.Node.Count(n => n.OpType == "Constant" && n.Attribute.Any(a => a.Name == "value" && a.T.DataType == (int)DataType.Float));

    [TestMethod]
    public void ConstantWeights_BecomeInitializers_WithBitExactOutputs()
    {
        using var original = OnnxModel.Load(Classifier);
        Assert.IsEmpty(WeightedLayer.Find(new OnnxGraph(original.Graph)), "as stored, no pass sees a weight");
        var parameters = ModelWeights.Parameters(original);

        using var model = original.Clone();
        new ConstantWeightsPass().Apply(new CompressionContext(model, new Policy.CompressionPolicy()));

        Assert.AreEqual(0, FloatConstants(model));
        var layers = WeightedLayer.Find(new OnnxGraph(model.Graph));
        Assert.AreEqual(53, layers.Count(l => l.OpType == "Conv"));
        Assert.AreEqual(1, layers.Count(l => l.OpType == "MatMul"));
        Assert.AreEqual(parameters, ModelWeights.Parameters(model), "the same weights, stored differently");
        CollectionAssert.AreEqual(Run(original), Run(model));
    }

    [TestMethod]
    public void Sparsity_PrunesTheConvolutionsOfAConstantWeightModel()
    {
        using var original = OnnxModel.Load(Classifier);
        var (before, nonZerosBefore) = ModelWeights.Count(original);
        var (model, context) = Compress(("Sparsity", "0.5"), ("PruneMethod", "magnitude"));
        using var _ = model;

        var pruned = context.Records.Where(r => r.Technique == "prune" && r.Sparsity > 0).ToList();
        Assert.IsGreaterThan(40, pruned.Count, string.Join(", ", context.Records.Select(r => $"{r.Layer}:{r.Technique}:{r.Sparsity}")));
        var (after, nonZerosAfter) = ModelWeights.Count(model);
        Assert.IsLessThan(before, after + 1, "BatchNorm folding removes parameters, pruning keeps the count");
        Assert.IsLessThan(0.7 * nonZerosBefore, (double)nonZerosAfter, $"nonzeros {nonZerosBefore} → {nonZerosAfter}");
        var outputs = Run(model);
        Assert.IsTrue(outputs.All(float.IsFinite));
        Assert.IsTrue(outputs.Chunk(2).All(p => Math.Abs(p.Sum() - 1) < 1e-4), "still a softmax over two classes");
    }

    [TestMethod]
    public void FoldBatchNorm_FoldsIntoConstantWeightConvolutions_WithTheSameOutputs()
    {
        using var original = OnnxModel.Load(Classifier);
        var (model, context) = Compress(("FoldBatchNorm", "true"));
        using var _ = model;
        Assert.AreEqual(35, context.Records.Count(r => r.Technique == "fold-batchnorm"));
        Assert.IsFalse(model.Graph.Node.Any(n => n.OpType == "BatchNormalization"));
        var worst = Run(original).Zip(Run(model)).Max(p => Math.Abs(p.First - p.Second));
        Assert.IsLessThan(1e-4, worst);
    }

    [TestMethod]
    public void SharedConstantWeight_IsLeftUnpruned_TheOtherLayerIsPruned()
    {
        // x → MatMul(W) → MatMul(W) → MatMul(V) → y: W is read by two layers, so no single layer's pass may rewrite it.
        var random = new Random(3);
        TensorProto Weight(string name) => Tensors.FromFloats(name, [8, 8], Enumerable.Range(0, 64).Select(_ => (float)random.NextDouble() - 0.5f).ToArray());
        NodeProto Constant(string output, TensorProto value) => new()
        {
            OpType = "Constant", Name = output + "_const", Output = { output },
            Attribute = { new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = value } },
        };
        NodeProto MatMul(string name, string a, string b, string y) => new() { OpType = "MatMul", Name = name, Input = { a, b }, Output = { y } };
        ValueInfoProto Value(string name) => new()
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)DataType.Float, Shape = new TensorShapeProto { Dim = { new TensorShapeProto.Types.Dimension { DimParam = "N" }, new TensorShapeProto.Types.Dimension { DimValue = 8 } } } } },
        };
        var proto = new ModelProto
        {
            IrVersion = 8, OpsetImport = { new OperatorSetIdProto { Domain = "", Version = 13 } },
            Graph = new GraphProto
            {
                Name = "shared", Input = { Value("x") }, Output = { Value("y") },
                Node = { Constant("W", Weight("w")), Constant("V", Weight("v")), MatMul("first", "x", "W", "a"), MatMul("second", "a", "W", "b"), MatMul("third", "b", "V", "y") },
            },
        };
        using var model = OnnxModel.Parse(Google.Protobuf.MessageExtensions.ToByteArray(proto), AppContext.BaseDirectory);
        var context = new CompressionContext(model, Fixtures.Policy(("Sparsity", "0.5"), ("PruneMethod", "magnitude"), ("PruneEdgeLayers", "true"), ("FoldBatchNorm", "false")));
        CompressionPipeline.Run(context);

        var graph = new OnnxGraph(model.Graph);
        Assert.AreEqual(64, model.ReadFloats(graph.Initializer("W")!).Count(x => x != 0), "the shared weight is untouched");
        Assert.AreEqual(32, model.ReadFloats(graph.Initializer("V")!).Count(x => x != 0), "the weight of one layer is pruned");
        CollectionAssert.AreEqual(new[] { "third" }, context.Records.Where(r => r.Technique == "prune").Select(r => r.Layer).ToArray());
        using var session = new InferenceSession(model.ToBytes()); // still a valid model
    }
}
