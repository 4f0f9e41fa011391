using ModelCompression.Graph;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Runtime;

namespace ModelCompression.Tests.Graph;

[TestClass]
public sealed class GraphPassTests
{
    /// <summary>Puts an inference BatchNormalization with non-trivial statistics right after <paramref name="layer"/>.</summary>
    private static void InsertBatchNorm(OnnxModel model, string layer, int channels, int seed)
    {
        var graph = new OnnxGraph(model.Graph);
        var node = graph.Nodes.First(n => n.Name == layer);
        var random = new Random(seed);
        float[] Values(float lo, float hi) => Enumerable.Range(0, channels).Select(_ => lo + (float)random.NextDouble() * (hi - lo)).ToArray();
        var names = new[] { "gamma", "beta", "mean", "var" }.Select(n => graph.FreshName($"{layer}_bn_{n}")).ToArray();
        graph.SetInitializer(Tensors.FromFloats(names[0], [channels], Values(0.5f, 1.5f)));
        graph.SetInitializer(Tensors.FromFloats(names[1], [channels], Values(-0.2f, 0.2f)));
        graph.SetInitializer(Tensors.FromFloats(names[2], [channels], Values(-0.1f, 0.1f)));
        graph.SetInitializer(Tensors.FromFloats(names[3], [channels], Values(0.5f, 2f)));
        var output = node.Output[0];
        var pre = graph.FreshName(output + "_pre_bn");
        node.Output[0] = pre; // consumers keep reading `output`, which the BatchNormalization now produces
        graph.InsertAfter(node, new NodeProto
        {
            OpType = "BatchNormalization", Name = graph.FreshName(layer + "_bn"), Input = { pre, names[0], names[1], names[2], names[3] }, Output = { output },
            Attribute = { new AttributeProto { Name = "epsilon", F = 1e-3f, Type = AttributeProto.Types.AttributeType.Float } },
        });
    }

    private static void AssertClose(FloatTensor expected, FloatTensor actual, double tolerance)
    {
        var scale = expected.Data.Max(MathF.Abs);
        var worst = expected.Data.Zip(actual.Data).Max(p => Math.Abs(p.First - p.Second));
        Assert.IsLessThan(tolerance * scale, worst, $"max abs difference {worst} (scale {scale})");
    }

    [TestMethod]
    public void BatchNormAfterConvAndGemm_FoldsAway_WithTheSameOutputs()
    {
        using var withBn = OnnxModel.Load(Fixtures.ResNet);
        InsertBatchNorm(withBn, "/l1/c1/Conv", 32, 1);
        InsertBatchNorm(withBn, "/l3/c2/Conv", 128, 2);
        InsertBatchNorm(withBn, "/fc/Gemm", 10, 3);
        var expected = Fixtures.Outputs(withBn);
        using (var plain = OnnxModel.Load(Fixtures.ResNet))
            Assert.IsGreaterThan(1e-3, Fixtures.Outputs(plain).Data.Zip(expected.Data).Max(p => Math.Abs(p.First - p.Second)), "the inserted BatchNorms change the outputs");

        using var folded = withBn.Clone();
        var context = new CompressionContext(folded, new Policy.CompressionPolicy());
        new FoldBatchNormPass().Apply(context);
        new CleanupPass().Apply(context);

        Assert.IsFalse(folded.Graph.Node.Any(n => n.OpType == "BatchNormalization"));
        Assert.HasCount(3, context.Records);
        Assert.AreEqual(withBn.Graph.Node.Count - 3, folded.Graph.Node.Count);
        AssertClose(expected, Fixtures.Outputs(folded), 1e-5);
    }

    [TestMethod]
    public void BatchNormWhoseInputHasAnotherConsumer_IsLeftAlone()
    {
        using var model = OnnxModel.Load(Fixtures.ResNet);
        InsertBatchNorm(model, "/l1/c1/Conv", 32, 1);
        var graph = new OnnxGraph(model.Graph);
        var bn = graph.Nodes.First(n => n.OpType == "BatchNormalization");
        graph.SetInitializer(Tensors.Scalar(graph.FreshName("one"), 1f));
        // A second consumer of the conv output: folding would change what it sees.
        var extra = new NodeProto { OpType = "Mul", Input = { bn.Input[0], model.Graph.Initializer.Last().Name }, Output = { graph.FreshName("side") } };
        graph.InsertAfter(bn, extra);
        model.Graph.Output.Add(new ValueInfoProto { Name = extra.Output[0], Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } } });
        var context = new CompressionContext(model, new Policy.CompressionPolicy());
        new FoldBatchNormPass().Apply(context);
        Assert.IsTrue(model.Graph.Node.Any(n => n.OpType == "BatchNormalization"));
        Assert.IsEmpty(context.Records);
    }

    [TestMethod]
    public void Cleanup_RemovesIdentityAndInferenceDropout_BitExactly()
    {
        using var model = OnnxModel.Load(Fixtures.Mlp);
        var expected = Fixtures.Outputs(model);
        var graph = new OnnxGraph(model.Graph);
        foreach (var (relu, op) in graph.Nodes.Where(n => n.OpType == "Relu").Zip(new[] { "Identity", "Dropout" }).ToList())
        {
            var output = relu.Output[0];
            var pre = graph.FreshName(output + "_pre");
            relu.Output[0] = pre;
            graph.InsertAfter(relu, new NodeProto { OpType = op, Input = { pre }, Output = { output } });
        }
        Assert.AreEqual(2, model.Graph.Node.Count(n => n.OpType is "Identity" or "Dropout"));
        CollectionAssert.AreEqual(expected.Data, Fixtures.Outputs(model).Data, "the pass-through nodes are live");
        var nodes = model.Graph.Node.Count;
        new CleanupPass().Apply(new CompressionContext(model, new Policy.CompressionPolicy()));
        Assert.AreEqual(0, model.Graph.Node.Count(n => n.OpType is "Identity" or "Dropout"));
        Assert.AreEqual(nodes - 2, model.Graph.Node.Count);
        CollectionAssert.AreEqual(expected.Data, Fixtures.Outputs(model).Data);
    }
}
