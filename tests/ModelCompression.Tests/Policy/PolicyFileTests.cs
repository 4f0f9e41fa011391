using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Policy;
using ModelCompression.Pruning;
using ModelCompression.Quantization;

namespace ModelCompression.Tests.Policies;

[TestClass]
public sealed class PolicyFileTests
{
    private static string Write(string json)
    {
        var path = Path.Combine(Path.GetTempPath(), "mc-policy-" + Guid.NewGuid().ToString("N") + ".json");
        File.WriteAllText(path, json);
        return path;
    }

    [TestMethod]
    public void LayerOverrides_ApplyInOrder_ToMatchingLayersOnly()
    {
        var file = Write("""
            { "layers": [
                { "match": "/hidden*/Gemm", "Sparsity": 0.5, "Quantize": "int8-dynamic" },
                { "match": "/out/*", "Quantize": "none" },
                { "match": "/hidden.1/Gemm", "Excluded": true } ] }
            """);
        var policy = Fixtures.Policy(("Sparsity", "0.8"), ("PolicyFile", file));
        using var model = OnnxModel.Load(Fixtures.Mlp);
        var context = new CompressionContext(model, policy);
        NodeProto Node(string name) => model.Graph.Node.First(n => n.Name == name);

        Assert.AreEqual(0.5, context.Options<PruningOptions>(Node("/hidden.0/Gemm")).Sparsity);
        Assert.AreEqual(QuantizeMode.Int8Dynamic, context.Options<QuantizationOptions>(Node("/hidden.0/Gemm")).Quantize);
        Assert.AreEqual(QuantizeMode.None, context.Options<QuantizationOptions>(Node("/out/Gemm")).Quantize);
        Assert.IsTrue(context.IsExcluded(Node("/hidden.1/Gemm")));
        Assert.IsFalse(context.IsExcluded(Node("/hidden.0/Gemm")));
        Assert.AreEqual(0.8, context.Options<PruningOptions>(model.Graph.Node.First(n => n.OpType == "Flatten")).Sparsity);
        Assert.IsTrue(policy.AnyLayer<QuantizationOptions>(p => p.Quantize == QuantizeMode.Int8Dynamic), "a pass asked only by an override is still requested");
        Assert.IsTrue(policy.Requests<QuantizationOptions>(), "quantizing only some layers is a technique asked for");

        // Each value knows where it came from.
        var hidden = context.Resolve<PruningOptions>(Node("/hidden.0/Gemm"));
        Assert.AreEqual(new SettingSource(SettingOrigin.PolicyFile, 0, "/hidden*/Gemm"), hidden.SourceOf("Sparsity"));
        Assert.AreEqual(SettingSource.Default, hidden.SourceOf("PruneMethod"));
        Assert.AreEqual(SettingSource.Given, context.Resolve<PruningOptions>(Node("/out/Gemm")).SourceOf("Sparsity"));
    }

    [TestMethod]
    public void GlobalExclude_MarksMatchingLayers()
    {
        var policy = Fixtures.Policy(("Exclude", "/hidden.0/*; /out/*"));
        using var model = OnnxModel.Load(Fixtures.Mlp);
        var context = new CompressionContext(model, policy);
        CollectionAssert.AreEqual(new[] { true, false, true },
            model.Graph.Node.Where(n => n.OpType == "Gemm").Select(context.IsExcluded).ToArray());
    }

    [TestMethod]
    public void InvalidFiles_AreCM0103_NamingTheEntry()
    {
        CompressionException Fails(string json) => Assert.ThrowsExactly<CompressionException>(() => Fixtures.Policy(("PolicyFile", Write(json))));
        StringAssert.Contains(Fails("{ not json").Diagnostics[0].Message, "not valid JSON");
        StringAssert.Contains(Fails("""{ "layer": [] }""").Diagnostics[0].Message, "unknown key 'layer'");
        var e = Fails("""{ "layers": [ { "match": "*", "ValidationData": "x.npz" }, { "Sparsity": 2 }, { "match": "a", "Sparsety": 0.1 } ] }""");
        Assert.IsTrue(e.Diagnostics.All(d => d.Code == "CM0103"));
        var messages = string.Join("\n", e.Diagnostics.Select(d => d.Message));
        StringAssert.Contains(messages, "layers[0]: 'ValidationData' cannot be set per layer");
        StringAssert.Contains(messages, "layers[1]: Sparsity '2' is invalid");
        StringAssert.Contains(messages, "layers[1] needs a \"match\" glob");
        StringAssert.Contains(messages, "layers[2]: unknown setting 'Sparsety'");
        Assert.AreEqual("CM0103", Assert.ThrowsExactly<CompressionException>(() => Fixtures.Policy(("PolicyFile", "missing.json"))).Code);
    }

    [TestMethod]
    public void Globs_SpanSlashes()
    {
        Assert.IsTrue(LayerGlob.IsMatch("*/head/*", "/model/head/Gemm"));
        Assert.IsTrue(LayerGlob.IsMatch("/l?/c1/*", "/l2/c1/Conv"));
        Assert.IsFalse(LayerGlob.IsMatch("/l1/*", "/l10x"));
        Assert.IsFalse(LayerGlob.IsMatch("fc.weight", "fcXweight"), "a dot is literal");
    }
}
