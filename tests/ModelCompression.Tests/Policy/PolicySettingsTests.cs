using ModelCompression.Diagnostics;
using ModelCompression.LowRank;
using ModelCompression.Policy;
using ModelCompression.Pruning;
using ModelCompression.Quantization;

namespace ModelCompression.Tests.Policies;

[TestClass]
public sealed class PolicySettingsTests
{
    private static CompressionException Fails(params (string, string)[] settings) => Assert.ThrowsExactly<CompressionException>(() => Fixtures.Policy(settings));

    [TestMethod]
    public void MetadataNamesAndCliSpellings_MapToTheSameFields()
    {
        var fromMetadata = Fixtures.Policy(("Sparsity", "0.8"), ("Quantize", "int8-dynamic"), ("MaxAccuracyDrop", "0.01"), ("ValidationData", "fmnist_val.npz"), ("ExecutionProvider", "cuda:1"), ("Rank", "0.25"));
        var fromCli = Fixtures.Policy(("--sparsity", "0.8"), ("--quantize", "int8-dynamic"), ("--max-accuracy-drop", "0.01"), ("--validation-data", "fmnist_val.npz"), ("--execution-provider", "cuda:1"), ("--rank", "0.25"));
        Assert.AreEqual(fromMetadata, fromCli);
        Assert.AreEqual(0.8, fromMetadata.Get<PruningOptions>().Sparsity);
        Assert.AreEqual(QuantizeMode.Int8Dynamic, fromMetadata.Get<QuantizationOptions>().Quantize);
        Assert.AreEqual(new ExecutionProviderSpec("cuda", 1), fromMetadata.Execution.ExecutionProvider);
        Assert.AreEqual(new RankSpec(0.25, IsRatio: true), fromMetadata.Get<LowRankOptions>().Rank);
        Assert.IsTrue(Path.IsPathRooted(fromMetadata.Data.ValidationData), "paths resolve against the base directory");
        Assert.AreNotEqual(fromMetadata, Fixtures.Policy(("Sparsity", "0.7")));
        Assert.AreEqual("--max-accuracy-drop", PolicySettings.Find("MaxAccuracyDrop")!.OptionName);
    }

    [TestMethod]
    public void UnknownNames_AreCM0101_WithASuggestion_AndEveryErrorIsReported()
    {
        var e = Fails(("Sparsty", "0.5"), ("MaxLatencyRatio", "0"), ("Colour", "red"));
        CollectionAssert.AreEqual(new[] { "CM0101", "CM0102", "CM0101" }, e.Diagnostics.Select(d => d.Code).ToArray());
        StringAssert.Contains(e.Diagnostics[0].Message, "did you mean 'Sparsity'?");
        StringAssert.Contains(e.Diagnostics[1].Message, "MaxLatencyRatio '0' is invalid: out of range: expected a number in (0, 100]");
        Assert.DoesNotContain("did you mean", e.Diagnostics[2].Message);
    }

    [TestMethod]
    [DataRow("Sparsity", "1")]
    [DataRow("Sparsity", "-0.1")]
    [DataRow("Sparsity", "NaN")]
    [DataRow("BatchSize", "0")]
    [DataRow("BatchSize", "2.5")]
    [DataRow("Rank", "0")]
    [DataRow("Rank", "1.5")]
    [DataRow("SparsityPattern", "4:2")]
    [DataRow("FoldBatchNorm", "yes")]
    [DataRow("ExecutionProvider", "cuda:x")]
    [DataRow("OnnxRuntimeLibrary", "no-such-libonnxruntime.so")]
    public void OutOfRangeValues_AreCM0102(string name, string value)
    {
        var e = Fails((name, value));
        Assert.AreEqual("CM0102", e.Code);
        StringAssert.StartsWith(e.Diagnostics[0].Message, $"{name} '{value}' is invalid");
    }

    [TestMethod]
    public void ContradictorySettings_AreReported()
    {
        Assert.AreEqual("CM0124", Fails(("Quantize", "int8")).Code);
        Assert.AreEqual("CM0124", Fails(("Sparsity", "0.5"), ("PruneMethod", "sparsegpt")).Code);
        Assert.AreEqual("CM0104", Fails(("MaxLatencyRatio", "1")).Code);
        Assert.AreEqual("CM0104", Fails(("Rank", "0.5"), ("RankEnergy", "0.9")).Code);
        Assert.AreEqual("CM0104", Fails(("Sparsity", "0.6"), ("SparsityPattern", "2:4")).Code);
        Assert.AreEqual(new NmPattern(2, 4), Fixtures.Policy(("Sparsity", "0.5"), ("SparsityPattern", "2:4")).Get<PruningOptions>().SparsityPattern);
    }

    [TestMethod]
    public void PruneMethodAuto_IsSparseGptWithCalibrationData_ElseMagnitude()
    {
        static PruneMethod Runs(CompressionPolicy p) => p.Get<PruningOptions>().MethodFor(p.Data.CalibrationData is not null);
        Assert.AreEqual(PruneMethod.Auto, new CompressionPolicy().Get<PruningOptions>().PruneMethod);
        Assert.AreEqual(PruneMethod.Magnitude, Runs(Fixtures.Policy(("Sparsity", "0.8"))));
        Assert.AreEqual(PruneMethod.SparseGpt, Runs(Fixtures.Policy(("Sparsity", "0.8"), ("CalibrationData", "fmnist_calib.npz"))));
        Assert.AreEqual(PruneMethod.Magnitude, Runs(Fixtures.Policy(("Sparsity", "0.8"), ("CalibrationData", "fmnist_calib.npz"), ("PruneMethod", "magnitude"))));
        Assert.AreEqual("auto (sparsegpt)", CompressionEngine.Describe(Fixtures.Policy(("Sparsity", "0.8"), ("CalibrationData", "fmnist_calib.npz")))["PruneMethod"]);
        Assert.IsFalse(CompressionEngine.Describe(Fixtures.Policy(("CalibrationData", "fmnist_calib.npz"))).ContainsKey("PruneMethod"), "a technique not asked for is not described");
    }

    [TestMethod]
    public void LowRankMethodAuto_IsActivationAwareWithCalibrationData_ElseSvd()
    {
        static LowRankMethod Runs(CompressionPolicy p) => p.Get<LowRankOptions>().MethodFor(p.Data.CalibrationData is not null);
        Assert.AreEqual(LowRankMethod.Auto, new CompressionPolicy().Get<LowRankOptions>().LowRankMethod);
        Assert.AreEqual(LowRankMethod.Svd, Runs(Fixtures.Policy(("Rank", "0.5"))));
        Assert.AreEqual(LowRankMethod.ActivationAware, Runs(Fixtures.Policy(("Rank", "0.5"), ("CalibrationData", "fmnist_calib.npz"))));
        Assert.AreEqual(LowRankMethod.Svd, Runs(Fixtures.Policy(("Rank", "0.5"), ("CalibrationData", "fmnist_calib.npz"), ("LowRankMethod", "svd"))));
        Assert.AreEqual("auto (activation-aware)", CompressionEngine.Describe(Fixtures.Policy(("Rank", "0.5"), ("CalibrationData", "fmnist_calib.npz")))["LowRankMethod"]);
        Assert.AreEqual("auto (svd)", CompressionEngine.Describe(Fixtures.Policy(("Rank", "0.5")))["LowRankMethod"]);
    }

    [TestMethod]
    public void StructuredCriterionAuto_IsReconstructionWithCalibrationData_ElseL1()
    {
        static StructuredCriterion Runs(CompressionPolicy p) => p.Get<StructuredPruningOptions>().CriterionFor(p.Data.CalibrationData is not null);
        Assert.AreEqual(StructuredCriterion.Auto, new CompressionPolicy().Get<StructuredPruningOptions>().StructuredCriterion);
        Assert.AreEqual(StructuredCriterion.L1, Runs(Fixtures.Policy(("StructuredSparsity", "0.5"))));
        Assert.AreEqual(StructuredCriterion.Reconstruction, Runs(Fixtures.Policy(("StructuredSparsity", "0.5"), ("CalibrationData", "fmnist_calib.npz"))));
        Assert.AreEqual(StructuredCriterion.L1, Runs(Fixtures.Policy(("StructuredSparsity", "0.5"), ("CalibrationData", "fmnist_calib.npz"), ("StructuredCriterion", "l1"))));
        Assert.AreEqual("auto (reconstruction)", CompressionEngine.Describe(Fixtures.Policy(("StructuredSparsity", "0.5"), ("CalibrationData", "fmnist_calib.npz")))["StructuredCriterion"]);
        Assert.AreEqual("CM0124", Fails(("StructuredSparsity", "0.5"), ("StructuredCriterion", "apoz")).Code);
    }

    [TestMethod]
    public void RankText_IsARatioOrAnAbsoluteRank()
    {
        Assert.AreEqual(new RankSpec(64, IsRatio: false), Fixtures.Policy(("Rank", "64")).Get<LowRankOptions>().Rank);
        Assert.AreEqual(new RankSpec(1, IsRatio: true), Fixtures.Policy(("Rank", "1")).Get<LowRankOptions>().Rank);
        Assert.AreEqual(16, new RankSpec(0.125, true).Resolve(128));
        Assert.AreEqual(10, new RankSpec(64, false).Resolve(10));
    }

    [TestMethod]
    public void EmptyValues_MeanNotSet()
    {
        Assert.AreEqual(new CompressionPolicy(), Fixtures.Policy(("Sparsity", ""), ("Quantize", " ")));
    }
}
