using ModelCompression.Calibration;
using Google.Protobuf;
using ModelCompression.Data;
using ModelCompression.LowRank;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Runtime;

namespace ModelCompression.Tests.LowRank;

/// <summary>
/// At full rank every factorization is exact, so ONNX Runtime must give the original outputs: this pins down the
/// rewrites themselves (layouts, pads/strides/dilations/auto_pad split between the new convs, Gemm attributes,
/// N-D MatMul inputs, the un-whitening of the activation-aware form) independently of how much truncation costs.
/// </summary>
[TestClass]
public sealed class FactorizationExactnessTests
{
    private static readonly Random Random = new(3);

    [TestMethod]
    public void Tucker2_AtFullRank_MatchesAStridedDilatedAsymmetricallyPaddedConv()
    {
        var model = ConvModel(inChannels: 6, outChannels: 8, kernel: [3, 5], input: [2, 6, 13, 11],
            Ints("strides", 2, 1), Ints("pads", 1, 2, 0, 1), Ints("dilations", 2, 1));
        AssertFullRankIsExact(model, (layer, weight) => new Tucker2Factorization(layer, () => weight), activationAware: false, expectedOps: ["Conv", "Conv", "Conv"]);
        AssertFullRankIsExact(model, (layer, weight) => new Tucker2Factorization(layer, () => weight), activationAware: true, expectedOps: ["Conv", "Conv", "Conv"]);
    }

    [TestMethod]
    public void Spatial_AtFullRank_MatchesAStridedDilatedAsymmetricallyPaddedConv()
    {
        var model = ConvModel(inChannels: 6, outChannels: 8, kernel: [3, 5], input: [2, 6, 13, 11],
            Ints("strides", 2, 3), Ints("pads", 1, 2, 0, 1), Ints("dilations", 2, 1));
        AssertFullRankIsExact(model, (layer, weight) => new SpatialFactorization(layer, () => weight), activationAware: false, expectedOps: ["Conv", "Conv"]);
        AssertFullRankIsExact(model, (layer, weight) => new SpatialFactorization(layer, () => weight), activationAware: true, expectedOps: ["Conv", "Conv"]);
    }

    [TestMethod]
    public void Spatial_AtFullRank_MatchesAConvWithAutoPadSameUpper()
    {
        var autoPad = new AttributeProto { Name = "auto_pad", Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8("SAME_UPPER") };
        var model = ConvModel(inChannels: 4, outChannels: 5, kernel: [3, 3], input: [1, 4, 10, 9], Ints("strides", 2, 2), autoPad);
        AssertFullRankIsExact(model, (layer, weight) => new SpatialFactorization(layer, () => weight), activationAware: false, expectedOps: ["Conv", "Conv"]);
    }

    [TestMethod]
    public void Svd_AtFullRank_MatchesAStridedPointwiseConv()
    {
        var model = ConvModel(inChannels: 7, outChannels: 9, kernel: [1, 1], input: [2, 7, 8, 8], Ints("strides", 2, 2));
        AssertFullRankIsExact(model, (layer, weight) => new MatrixFactorization(layer, () => weight), activationAware: true, expectedOps: ["Conv", "Conv"]);
    }

    [TestMethod]
    public void Svd_AtFullRank_MatchesAGemmWithTransBZeroAlphaAndBeta()
    {
        var graph = new GraphProto { Name = "gemm" };
        graph.Input.Add(Value("x", 4, 12));
        graph.Output.Add(Value("y", 4, 7));
        graph.Initializer.Add(Tensors.FromFloats("w", [12, 7], Gaussian(12 * 7)));
        graph.Initializer.Add(Tensors.FromFloats("c", [7], Gaussian(7)));
        var node = Node("Gemm", "gemm", ["x", "w", "c"], "y");
        node.Attribute.Add(new AttributeProto { Name = "alpha", Type = AttributeProto.Types.AttributeType.Float, F = 0.5f });
        node.Attribute.Add(new AttributeProto { Name = "beta", Type = AttributeProto.Types.AttributeType.Float, F = 2f });
        graph.Node.Add(node);
        AssertFullRankIsExact(Model(graph, [4, 12]), (layer, weight) => new MatrixFactorization(layer, () => weight), activationAware: true, expectedOps: ["MatMul", "Gemm"]);
    }

    [TestMethod]
    public void Svd_AtFullRank_MatchesAMatMulOverThreeDimensionalInput()
    {
        var graph = new GraphProto { Name = "matmul" };
        graph.Input.Add(Value("x", 3, 5, 12));
        graph.Output.Add(Value("y", 3, 5, 7));
        graph.Initializer.Add(Tensors.FromFloats("w", [12, 7], Gaussian(12 * 7)));
        graph.Node.Add(Node("MatMul", "matmul", ["x", "w"], "y"));
        AssertFullRankIsExact(Model(graph, [3, 5, 12]), (layer, weight) => new MatrixFactorization(layer, () => weight), activationAware: true, expectedOps: ["MatMul", "MatMul"]);
    }

    [TestMethod]
    public void Spatial_UnderAWideHorizontalStride_DoesNotPayInMultiplyAdds()
    {
        // 16→16 channels, 3×3, stride (1, 4): at rank 16 the factors hold 1,536 of 2,304 weights, but the vertical
        // step runs at every input column, 16·(48 + 4·48) = 3,840 multiply-adds per output position against 2,304.
        var test = ConvModel(inChannels: 16, outChannels: 16, kernel: [3, 3], input: [1, 16, 8, 16], Ints("strides", 1, 4));
        using var model = OnnxModel.Parse(test.Proto.ToByteArray(), Path.GetTempPath());
        var layer = WeightedLayer.Find(new OnnxGraph(model.Graph)).Single();
        var spatial = new SpatialFactorization(layer, () => Array.ConvertAll(layer.ReadMatrix(model), v => (double)v));
        Assert.AreEqual(1536, spatial.Parameters([16]));
        StringAssert.Contains(spatial.WhyNotWorthIt([16]), "multiply-adds");
        Assert.IsNull(spatial.WhyNotWorthIt([8]), "rank 8: 8·(48 + 4·48) = 1,920 multiply-adds do pay");
    }

    private static void AssertFullRankIsExact(TestModel test, Func<WeightedLayer, double[], LayerFactorization> create, bool activationAware, string[] expectedOps)
    {
        using var original = OnnxModel.Parse(test.Proto.ToByteArray(), Path.GetTempPath());
        using var rewritten = original.Clone();
        var graph = new OnnxGraph(rewritten.Graph);
        var layer = WeightedLayer.Find(graph).Single();
        var weight = Array.ConvertAll(layer.ReadMatrix(rewritten), v => (double)v);
        var factorization = create(layer, weight);
        InputMetric? metric = null;
        if (activationAware)
        {
            // Moments of correlated inputs: the whitening and un-whitening must cancel exactly at full rank.
            var moments = new InputMoments(factorization.InputFeatures, factorization.Axis);
            Assert.IsTrue(moments.Add(new FloatTensor(Correlated(test.Input, factorization.Axis), test.Input)));
            metric = InputMetric.From(moments, 0.01);
        }
        factorization.Decompose(metric, null, seed: 0);
        var reconstructed = factorization.Rewrite(graph, factorization.FullRanks);
        CollectionAssert.AreEqual(expectedOps, rewritten.Graph.Node.Select(n => n.OpType).ToArray());
        Assert.IsTrue(factorization.RelativeError(reconstructed, null) < 1e-6, $"weight error {factorization.RelativeError(reconstructed, null)}");

        var input = new NdArray("x", test.Input, ArrayElementType.Float32, Gaussian(checked((int)test.Input.Aggregate(1L, (a, b) => a * b))));
        using var before = OnnxRuntimeSession.Create(original.ToBytes(), Fixtures.Cpu);
        using var after = OnnxRuntimeSession.Create(rewritten.ToBytes(), Fixtures.Cpu);
        var expected = before.Run([input])["y"];
        var actual = after.Run([input])["y"];
        CollectionAssert.AreEqual(expected.Shape, actual.Shape);
        var scale = expected.Data.Max(Math.Abs);
        var worst = expected.Data.Zip(actual.Data, (e, a) => Math.Abs(e - a)).Max();
        Assert.IsTrue(worst <= 1e-4 * scale, $"max |Δ| {worst} for outputs up to {scale}");
    }

    private sealed record TestModel(ModelProto Proto, long[] Input);

    private static TestModel ConvModel(int inChannels, int outChannels, long[] kernel, long[] input, params AttributeProto[] attributes)
    {
        var graph = new GraphProto { Name = "conv" };
        graph.Input.Add(Value("x", input));
        graph.Output.Add(new ValueInfoProto { Name = "y", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float } } });
        var count = outChannels * inChannels * (int)kernel.Aggregate(1L, (a, b) => a * b);
        graph.Initializer.Add(Tensors.FromFloats("w", [outChannels, inChannels, .. kernel], Gaussian(count)));
        graph.Initializer.Add(Tensors.FromFloats("b", [outChannels], Gaussian(outChannels)));
        var node = Node("Conv", "conv", ["x", "w", "b"], "y");
        node.Attribute.Add(Ints("kernel_shape", kernel));
        node.Attribute.AddRange(attributes);
        graph.Node.Add(node);
        return Model(graph, input);
    }

    private static TestModel Model(GraphProto graph, long[] input)
    {
        var model = new ModelProto { IrVersion = 8, Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        return new TestModel(model, input);
    }

    /// <summary>Samples whose features (on <paramref name="axis"/>) mix a few latent factors: a far-from-identity XᵀX.</summary>
    private static float[] Correlated(long[] shape, FeatureAxis axis)
    {
        var data = Gaussian(checked((int)shape.Aggregate(1L, (a, b) => a * b)));
        var features = (int)(axis == FeatureAxis.Channel ? shape[1] : shape[^1]);
        var inner = axis == FeatureAxis.Channel ? (int)shape.Skip(2).Aggregate(1L, (a, b) => a * b) : 1;
        var mixed = (float[])data.Clone();
        for (var start = 0; start < data.Length; start += features * inner)
            for (var f = 1; f < features; f++)
                for (var p = 0; p < inner; p++)
                    mixed[start + f * inner + p] += 3 * mixed[start + (f - 1) * inner + p];
        return mixed;
    }

    private static float[] Gaussian(int count) =>
        Enumerable.Range(0, count).Select(_ => (float)(Math.Sqrt(-2 * Math.Log(1 - Random.NextDouble())) * Math.Cos(2 * Math.PI * Random.NextDouble()))).ToArray();

    private static NodeProto Node(string op, string name, string[] inputs, string output)
    {
        var node = new NodeProto { OpType = op, Name = name };
        node.Input.AddRange(inputs);
        node.Output.Add(output);
        return node;
    }

    private static ValueInfoProto Value(string name, params long[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = shape } } };
    }

    private static AttributeProto Ints(string name, params long[] values)
    {
        var attribute = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        attribute.Ints.AddRange(values);
        return attribute;
    }
}
