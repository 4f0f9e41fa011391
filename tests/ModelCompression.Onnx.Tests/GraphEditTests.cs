using ModelCompression.Onnx.Protobuf;
using static ModelCompression.Onnx.Tests.OnnxTestSupport;

namespace ModelCompression.Onnx.Tests;

[TestClass]
public sealed class GraphEditTests
{
    [TestMethod]
    public void BypassingAnInsertedIdentity_KeepsOutputsBitIdentical()
    {
        var expected = Run(Mlp);
        using var model = OnnxModel.Load(Mlp);
        var graph = new OnnxGraph(model.Graph);
        var relu = graph.Nodes.First(n => n.OpType == "Relu");
        var identity = new NodeProto { OpType = "Identity", Name = graph.FreshName("extra_identity"), Input = { relu.Output[0] }, Output = { graph.FreshName("identity_out") } };
        graph.InsertAfter(relu, identity);
        foreach (var consumer in graph.Consumers(relu.Output[0]).Where(c => c != identity).ToList())
            for (var i = 0; i < consumer.Input.Count; i++) if (consumer.Input[i] == relu.Output[0]) consumer.Input[i] = identity.Output[0];
        graph.Invalidate();
        AssertBitIdentical(expected, Run(model.ToBytes()));
        var count = graph.Nodes.Count;

        graph.Bypass(identity);
        Assert.HasCount(count - 1, graph.Nodes);
        Assert.IsFalse(graph.Nodes.Any(n => n.OpType == "Identity"));
        AssertBitIdentical(expected, Run(model.ToBytes()));
    }

    [TestMethod]
    public void RemovingTheLastNodeBeforeTheOutput_RewiresTheGraphOutput()
    {
        using var model = OnnxModel.Load(Mlp);
        var graph = new OnnxGraph(model.Graph);
        var last = graph.Producer(model.Graph.Output[0].Name)!;
        // Append Identity after the last Gemm so that it produces the graph output, then remove it again.
        var mid = graph.FreshName("pre_logits");
        graph.RenameValue(last.Output[0], mid);
        graph.AddNode(new NodeProto { OpType = "Identity", Input = { mid }, Output = { model.Graph.Output[0].Name } });
        var expected = Run(Mlp);
        graph.Bypass(graph.Nodes.Last());
        Assert.AreEqual(model.Graph.Output[0].Name, graph.Nodes.Last().Output[0], "the producer was renamed back to the graph output");
        AssertBitIdentical(expected, Run(model.ToBytes()));
    }

    [TestMethod]
    public void TopologicalSort_OfAShuffledGraph_RestoresARunnableOrder()
    {
        var expected = Run(ResNet);
        using var model = OnnxModel.Load(ResNet);
        var nodes = model.Graph.Node.ToList();
        var shuffled = nodes.OrderBy(n => new Random(OnnxGraph.Describe(n).Length * 7919).Next()).Reverse().ToList();
        model.Graph.Node.Clear();
        model.Graph.Node.AddRange(shuffled);
        var graph = new OnnxGraph(model.Graph);
        Assert.ThrowsExactly<OnnxFormatException>(() => graph.ValidateOrder());

        graph.TopologicalSort();
        graph.ValidateOrder();
        AssertBitIdentical(expected, Run(model.ToBytes()));
    }

    [TestMethod]
    public void RemoveDeadNodes_DropsUnusedBranchesAndInitializers()
    {
        var expected = Run(ResNet);
        using var model = OnnxModel.Load(ResNet);
        var graph = new OnnxGraph(model.Graph);
        var conv = graph.Nodes.First(n => n.OpType == "Conv");
        var deadWeight = Tensors.FromFloats(graph.FreshName("dead_weight"), [1], [2f]);
        graph.SetInitializer(deadWeight);
        var deadMul = new NodeProto { OpType = "Mul", Input = { conv.Output[0], deadWeight.Name }, Output = { graph.FreshName("dead_out") } };
        var deadRelu = new NodeProto { OpType = "Relu", Input = { deadMul.Output[0] }, Output = { graph.FreshName("dead_relu") } };
        graph.InsertAfter(conv, deadMul);
        graph.InsertAfter(deadMul, deadRelu);
        graph.SetInitializer(Tensors.FromFloats(graph.FreshName("unused"), [3], [1f, 2f, 3f]));
        var before = (nodes: graph.Nodes.Count, initializers: model.Graph.Initializer.Count);

        Assert.AreEqual(2, graph.RemoveDeadNodes());
        Assert.HasCount(before.nodes - 2, graph.Nodes);
        Assert.HasCount(before.initializers - 2, model.Graph.Initializer);
        Assert.IsNull(graph.Initializer(deadWeight.Name));
        AssertBitIdentical(expected, Run(model.ToBytes()));
    }

    [TestMethod]
    public void GraphView_AnswersProducersConsumersShapesAndOpsets()
    {
        using var model = OnnxModel.Load(ResNet);
        var graph = new OnnxGraph(model.Graph);
        var input = model.Graph.Input[0].Name;
        Assert.IsTrue(graph.Consumers(input).All(n => n.OpType == "Conv"));
        var firstConv = graph.Consumers(input)[0];
        Assert.AreSame(firstConv, graph.Producer(firstConv.Output[0]));
        Assert.IsNotNull(graph.Initializer(firstConv.Input[1]));
        CollectionAssert.AreEqual(new long?[] { null, 1, 28, 28 }, graph.Shape(input));
        Assert.AreEqual(17, model.OpsetVersion());
        var name = graph.FreshName(firstConv.Output[0]);
        Assert.AreNotEqual(firstConv.Output[0], name);
    }
}
