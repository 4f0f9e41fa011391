using ModelCompression.Graph;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;

namespace ModelCompression.Tests.Passes;

/// <summary>Op-type knowledge and storage decoders are registered: what is not registered is left alone, with a reason.</summary>
[TestClass]
public sealed class OpRegistryTests
{
    [TestMethod]
    public void AnOpOutsideTheRegistry_IsNoLayer_AndEveryTechniqueSaysWhy()
    {
        using var model = OnnxModel.Load(Fixtures.Mlp);
        var graph = new OnnxGraph(model.Graph);
        Assert.AreEqual(3, WeightedLayer.Find(graph).Count);
        var gemm = graph.Nodes.First(n => n.OpType == "Gemm");
        gemm.OpType = "FusedGemm";
        gemm.Domain = "com.microsoft";
        graph.Invalidate();

        Assert.AreEqual(2, WeightedLayer.Find(graph).Count, "a node the registry does not know has no weight to compress");
        foreach (var technique in new[] { OpTechnique.StaticInt8, OpTechnique.DynamicInt8, OpTechnique.Prune, OpTechnique.Factorize, OpTechnique.Codebook })
            StringAssert.Contains(OpRegistry.WhyNot(gemm, technique), "FusedGemm");
    }

    [TestMethod]
    public void RegisteredOps_CarryTheirWeightInput_AndTheReasonATechniqueSkipsThem()
    {
        var conv = new NodeProto { OpType = "Conv" };
        var matMul = new NodeProto { OpType = "MatMul" };
        Assert.IsNull(OpRegistry.WhyNot(conv, OpTechnique.StaticInt8));
        StringAssert.Contains(OpRegistry.WhyNot(conv, OpTechnique.DynamicInt8), "ConvInteger");
        Assert.IsNull(OpRegistry.WhyNot(matMul, OpTechnique.DynamicInt8));
        Assert.AreEqual(1, OpRegistry.For(matMul)!.WeightInput);
        Assert.IsNull(OpRegistry.For(matMul)!.BiasInput);
        Assert.IsNull(OpRegistry.For(new NodeProto { OpType = "Conv", Domain = "com.example" }), "ops of other domains are not the ONNX ones");
    }

    [TestMethod]
    public void StorageDecoders_AreFoundNextToThePassesThatWriteThem()
    {
        var namespaces = WeightDecoders.All.Select(d => d.GetType().Namespace).ToHashSet();
        CollectionAssert.IsSubsetOf(new[] { "ModelCompression.Graph", "ModelCompression.Pruning", "ModelCompression.WeightSharing" }, namespaces.ToArray());
    }
}
