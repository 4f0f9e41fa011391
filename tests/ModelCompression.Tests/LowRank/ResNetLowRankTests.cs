using ModelCompression.Onnx;

namespace ModelCompression.Tests.LowRank;

/// <summary>
/// The ResNet's 3×3 convolutions at 2× fewer conv parameters (ParameterBudget 0.5 over the convs; the 10-class fc
/// is excluded): Tucker-2, activation-aware, with ranks allocated per layer from the spectra; and spatial separation.
/// </summary>
[TestClass]
public sealed class ResNetLowRankTests
{
    private static OnnxModel _original = null!;
    private static double _fp32;
    private static Compressed _tucker = null!;
    private static Compressed _spatial = null!;

    [ClassInitialize]
    public static void Initialize(TestContext _)
    {
        _original = OnnxModel.Load(Fixtures.ResNet);
        _fp32 = Fixtures.Accuracy(_original);
        _tucker = LowRankTesting.Compress(_original, Fixtures.Policy(("ConvDecomposition", "tucker2"), ("ParameterBudget", "0.5"), ("Exclude", "/fc/Gemm"),
            ("LowRankMethod", "activation-aware"), ("CalibrationData", "fmnist_calib.npz")));
        _spatial = LowRankTesting.Compress(_original, Fixtures.Policy(("ConvDecomposition", "spatial"), ("ParameterBudget", "0.5"), ("Exclude", "/fc/Gemm")));
    }

    [ClassCleanup]
    public static void Cleanup()
    {
        _tucker.Model.Dispose();
        _spatial.Model.Dispose();
        _original.Dispose();
    }

    [TestMethod]
    public void Tucker2_HalvesTheConvWeights()
    {
        var before = ConvWeights(_original);
        var after = ConvWeights(_tucker.Model);
        Assert.IsTrue(after <= before / 2, $"{after:N0} of {before:N0} conv weights");
        Assert.IsTrue(after >= 0.45 * before, $"the budget is used: {after:N0} of {before:N0}");
    }

    [TestMethod]
    public void Tucker2_AtHalfTheConvWeights_LosesAtMostOnePoint()
    {
        var accuracy = Fixtures.Accuracy(_tucker.Model);
        Assert.IsTrue(_fp32 - accuracy <= 0.01, $"accuracy {accuracy:P2}, fp32 {_fp32:P2}");
    }

    [TestMethod]
    public void Tucker2_RewritesEachChosenConvAsReduceCoreExpandKeepingStrides()
    {
        var decomposed = _tucker.Records.Where(r => r.Technique == "activation-aware tucker2").ToList();
        Assert.IsTrue(decomposed.Count >= 2, string.Join("; ", _tucker.Records.Select(r => $"{r.Layer}: {r.Note}")));
        var nodes = _tucker.Model.Graph.Node;
        foreach (var record in decomposed)
        {
            var expand = nodes.Single(n => n.Name == record.Layer);
            var core = nodes.Single(n => n.Output.Contains(expand.Input[0]));
            var reduce = nodes.Single(n => n.Output.Contains(core.Input[0]));
            var original = _original.Graph.Node.Single(n => n.Name == record.Layer);
            CollectionAssert.AreEqual(new long[] { 1, 1 }, Attribute(expand, "kernel_shape"));
            CollectionAssert.AreEqual(new long[] { 1, 1 }, Attribute(reduce, "kernel_shape"));
            foreach (var name in new[] { "kernel_shape", "strides", "pads", "dilations" })
                CollectionAssert.AreEqual(Attribute(original, name), Attribute(core, name), $"{record.Layer} {name}");
            Assert.AreEqual(original.Input[2], expand.Input[2], "the bias stays on the expand step");
            var coreDims = LowRankTesting.Dims(_tucker.Model, core.Input[1]);
            Assert.IsTrue(coreDims[0] % 16 == 0 && coreDims[1] % 16 == 0, $"{record.Layer}: core [{string.Join(",", coreDims)}] keeps whole 16-channel blocks (the runtime's fast conv layout)");
            var factorWeights = new[] { reduce, core, expand }.Sum(n => LowRankTesting.Dims(_tucker.Model, n.Input[1]).Aggregate(1L, (a, b) => a * b));
            Assert.AreEqual(factorWeights + record.Shape![0], record.ParametersAfter, "the report counts the three factors and the bias");
            Assert.IsTrue(record.ReconstructionError is > 0 and < 1, $"{record.Layer}: error {record.ReconstructionError}");
        }
        var ranks = decomposed.Select(r => r.Rank!.Value / (double)r.Shape![0]).Distinct().Count();
        Assert.IsTrue(ranks > 1, "ranks come per layer from the budget, not one ratio");
        // Too small to gain (1 input channel): the stem is left dense, with the reason.
        StringAssert.Contains(_tucker.Record("/stem/stem.0/Conv").Note, "kept dense");
    }

    [TestMethod]
    public void Spatial_SplitsKernelsIntoVerticalAndHorizontalAndHalvesTheConvWeights()
    {
        var decomposed = _spatial.Records.Where(r => r.Technique == "spatial").ToList();
        Assert.IsTrue(decomposed.Count >= 2);
        foreach (var record in decomposed)
        {
            var horizontal = _spatial.Model.Graph.Node.Single(n => n.Name == record.Layer);
            var vertical = _spatial.Model.Graph.Node.Single(n => n.Output.Contains(horizontal.Input[0]));
            CollectionAssert.AreEqual(new long[] { 3, 1 }, Attribute(vertical, "kernel_shape"));
            CollectionAssert.AreEqual(new long[] { 1, 3 }, Attribute(horizontal, "kernel_shape"));
            var strides = Attribute(_original.Graph.Node.Single(n => n.Name == record.Layer), "strides");
            CollectionAssert.AreEqual(new[] { strides[0], 1L }, Attribute(vertical, "strides"));
            CollectionAssert.AreEqual(new[] { 1L, strides[1] }, Attribute(horizontal, "strides"));
        }
        Assert.IsTrue(ConvWeights(_spatial.Model) <= ConvWeights(_original) / 2);
        var accuracy = Fixtures.Accuracy(_spatial.Model);
        Assert.IsTrue(_fp32 - accuracy <= 0.01, $"accuracy {accuracy:P2}, fp32 {_fp32:P2}");
    }

    private static long ConvWeights(OnnxModel model) =>
        model.Graph.Initializer.Where(t => t.Dims.Count == 4).Sum(t => t.Dims.Aggregate(1L, (a, b) => a * b));

    [TestMethod]
    public void WithoutConvDecomposition_EveryConvGetsARowSayingWhyItStayedDense()
    {
        var plain = LowRankTesting.Compress(_original, Fixtures.Policy(("Rank", "0.5")));
        try
        {
            var rows = plain.Records.Where(r => r.Technique == "low-rank").ToList();
            var convs = rows.Where(r => r.Op == "Conv").ToList();
            Assert.AreEqual(9, convs.Count);
            Assert.IsTrue(convs.All(r => r.Note!.Contains("ConvDecomposition=none") && r.ParametersAfter == r.ParametersBefore), string.Join("\n", convs.Select(r => r.Layer + ": " + r.Note)));
            StringAssert.StartsWith(plain.Record("/fc/Gemm").Note, "kept dense: classifier head");
            Assert.AreEqual(10, rows.Count);
            Assert.IsTrue(plain.Records.All(r => r.Rank is null));
        }
        finally { plain.Model.Dispose(); }
    }

    private static long[] Attribute(Onnx.Protobuf.NodeProto node, string name) =>
        node.Attribute.FirstOrDefault(a => a.Name == name)?.Ints.ToArray() ?? [];
}
