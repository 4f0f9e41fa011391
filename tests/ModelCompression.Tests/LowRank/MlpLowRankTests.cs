using ModelCompression.Evaluation;
using ModelCompression.Onnx;
using ModelCompression.Runtime;

namespace ModelCompression.Tests.LowRank;

/// <summary>
/// The MLP (784-512-256-10) with each hidden Linear at 25 % and 12.5 % of full rank. The 10-class output layer is
/// excluded: at 25 % of its rank of 10 it would keep 2 directions for 10 logits (measured: ~20 % accuracy).
/// </summary>
[TestClass]
public sealed class MlpLowRankTests
{
    private static readonly (string, string)[] ActivationAware = [("LowRankMethod", "activation-aware"), ("CalibrationData", "fmnist_calib.npz"), ("Exclude", "/out/Gemm")];

    private static OnnxModel _original = null!;
    private static FloatTensor _reference = null!;
    private static Compressed _quarter = null!;
    private static Compressed _eighth = null!;
    private static Compressed _eighthPlain = null!;

    [ClassInitialize]
    public static void Initialize(TestContext _)
    {
        _original = OnnxModel.Load(Fixtures.Mlp);
        _reference = Fixtures.Outputs(_original, int.MaxValue);
        _quarter = LowRankTesting.Compress(_original, Fixtures.Policy([("Rank", "0.25"), .. ActivationAware]));
        _eighth = LowRankTesting.Compress(_original, Fixtures.Policy([("Rank", "0.125"), .. ActivationAware]));
        _eighthPlain = LowRankTesting.Compress(_original, Fixtures.Policy(("Rank", "0.125"), ("Exclude", "/out/Gemm")));
    }

    [ClassCleanup]
    public static void Cleanup()
    {
        foreach (var c in new[] { _quarter, _eighth, _eighthPlain }) c.Model.Dispose();
        _original.Dispose();
    }

    [TestMethod]
    public void QuarterRank_ActivationAware_KeepsAtLeast90_1PercentAccuracy()
    {
        var accuracy = Fixtures.Accuracy(_quarter.Model);
        Assert.IsTrue(accuracy >= 0.901, $"accuracy {accuracy:P2} (fp32 {Fixtures.Accuracy(_original):P2})");
    }

    [TestMethod]
    public void EighthRank_ActivationAware_KeepsAtLeast89_9PercentAccuracy()
    {
        var accuracy = Fixtures.Accuracy(_eighth.Model);
        Assert.IsTrue(accuracy >= 0.899, $"accuracy {accuracy:P2} (fp32 {Fixtures.Accuracy(_original):P2})");
    }

    [TestMethod]
    public void EighthRank_ActivationAware_TracksTheOriginalLogitsCloserThanPlainSvd()
    {
        var aware = Fixtures.Outputs(_eighth.Model, int.MaxValue);
        var plain = Fixtures.Outputs(_eighthPlain.Model, int.MaxValue);
        var awareError = LowRankTesting.RelativeMse(_reference, aware);
        var plainError = LowRankTesting.RelativeMse(_reference, plain);
        Assert.IsTrue(awareError < 0.75 * plainError, $"relative MSE of the logits: activation-aware {awareError:0.00000}, plain {plainError:0.00000}");
        Assert.IsTrue(Metrics.Agreement(_reference, aware) >= Metrics.Agreement(_reference, plain),
            $"agreement: activation-aware {Metrics.Agreement(_reference, aware):P2}, plain {Metrics.Agreement(_reference, plain):P2}");
    }

    [TestMethod]
    public void QuarterRank_ReplacesEachHiddenGemmByAReduceMatMulAndAnExpandGemm()
    {
        var model = _quarter.Model;
        CollectionAssert.AreEqual(new long[] { 784, 128 }, LowRankTesting.Dims(model, "hidden.0.weight.lowrank_reduce"));
        CollectionAssert.AreEqual(new long[] { 512, 128 }, LowRankTesting.Dims(model, "hidden.0.weight.lowrank_expand"));
        CollectionAssert.AreEqual(new long[] { 512, 64 }, LowRankTesting.Dims(model, "hidden.1.weight.lowrank_reduce"));
        CollectionAssert.AreEqual(new long[] { 256, 64 }, LowRankTesting.Dims(model, "hidden.1.weight.lowrank_expand"));
        Assert.IsFalse(model.Graph.Initializer.Any(t => t.Name is "hidden.0.weight" or "hidden.1.weight"), "the dense weights are gone");
        CollectionAssert.AreEqual(new long[] { 10, 256 }, LowRankTesting.Dims(model, "out.weight"), "the excluded head is untouched");
        var ops = model.Graph.Node.Select(n => n.OpType).ToList();
        CollectionAssert.AreEqual(new[] { "Flatten", "MatMul", "Gemm", "Relu", "MatMul", "Gemm", "Relu", "Gemm" }, ops);

        var first = _quarter.Record("/hidden.0/Gemm");
        Assert.AreEqual(128, first.Rank);
        Assert.AreEqual(128L * (784 + 512) + 512, first.ParametersAfter);
        Assert.AreEqual(784L * 512 + 512, first.ParametersBefore);
        Assert.AreEqual(64, _quarter.Record("/hidden.1/Gemm").Rank);
        Assert.IsTrue(_quarter.Records.All(r => r.ReconstructionError is > 0 and < 1 && r.Note!.Contains("output error")), string.Join("; ", _quarter.Records.Select(r => $"{r.Layer} {r.ReconstructionError} {r.Note}")));
        Assert.IsFalse(_quarter.Records.Any(r => r.Layer == "/out/Gemm"));
    }

    [TestMethod]
    public void QuarterRank_FileIsLessThanHalfTheOriginal()
    {
        var before = _original.ToBytes().Length;
        var after = _quarter.Model.ToBytes().Length;
        Assert.IsTrue(after < 0.45 * before, $"{after:N0} of {before:N0} bytes");
    }

    [TestMethod]
    public void SameModelAndPolicy_GiveByteIdenticalModels()
    {
        var again = LowRankTesting.Compress(_original, Fixtures.Policy([("Rank", "0.125"), .. ActivationAware]));
        using var model = again.Model;
        CollectionAssert.AreEqual(_eighth.Model.ToBytes(), model.ToBytes());
    }

    [TestMethod]
    public void FactorsThatWouldNotSaveParameters_LeaveTheLayerDenseWithANote()
    {
        // Rank 200: 200·(784+512) < 0.8·784·512 factorizes; 200·(512+256) and 10·(256+10) do not save enough.
        var result = LowRankTesting.Compress(_original, Fixtures.Policy(("Rank", "200")));
        using var model = result.Model;
        Assert.AreEqual(200, result.Record("/hidden.0/Gemm").Rank);
        foreach (var layer in new[] { "/hidden.1/Gemm", "/out/Gemm" })
        {
            var record = result.Record(layer);
            Assert.IsNull(record.Rank);
            Assert.AreEqual(record.ParametersBefore, record.ParametersAfter);
            StringAssert.Contains(record.Note, "kept dense");
        }
        CollectionAssert.AreEqual(new long[] { 256, 512 }, LowRankTesting.Dims(model, "hidden.1.weight"));
        var outputs = Fixtures.Outputs(model);
        Assert.IsTrue(LowRankTesting.RelativeMse(Fixtures.Outputs(_original), outputs) < 0.01);
    }

    [TestMethod]
    public void ParameterBudget_SharesRanksOutPerLayerWithinTheBudget()
    {
        var result = LowRankTesting.Compress(_original, Fixtures.Policy(("ParameterBudget", "0.2"), ("LowRankMethod", "activation-aware"), ("CalibrationData", "fmnist_calib.npz")));
        using var model = result.Model;
        // The budget covers the layers the pass factorizes: the classifier head (10·256 weights) stays dense outside it.
        const long head = 10 * 256;
        var weightsBefore = LowRankTesting.WeightCount(_original) - head;
        var weightsAfter = LowRankTesting.WeightCount(model) - head;
        StringAssert.Contains(result.Record("/out/Gemm").Note, "classifier head");
        Assert.IsTrue(weightsAfter <= 0.2 * weightsBefore, $"{weightsAfter:N0} of {weightsBefore:N0} weights kept");
        Assert.IsTrue(weightsAfter >= 0.19 * weightsBefore, $"the budget is used: {weightsAfter:N0} of {weightsBefore:N0}");
        var first = result.Record("/hidden.0/Gemm").Rank!.Value / 512.0;
        var second = result.Record("/hidden.1/Gemm").Rank!.Value / 256.0;
        Assert.IsTrue(Math.Abs(first - second) > 0.05, $"rank ratios {first:0.###} and {second:0.###} come from the spectra, not one ratio");
        var accuracy = Fixtures.Accuracy(model);
        Assert.IsTrue(accuracy >= 0.89, $"accuracy {accuracy:P2} with 20 % of the weights");
    }

    [TestMethod]
    public void RankEnergy_KeepsTheRequestedShareOfEachSpectrum()
    {
        var result = LowRankTesting.Compress(_original, Fixtures.Policy(("RankEnergy", "0.8")));
        using var model = result.Model;
        Assert.IsNull(result.Record("/out/Gemm").Rank, "the classifier head stays dense");
        foreach (var record in result.Records.Where(r => r.Layer != "/out/Gemm"))
        {
            // Kept energy ≥ 0.8 ⇔ relative weight error ≤ √0.2.
            Assert.IsTrue(record.ReconstructionError <= Math.Sqrt(0.2) + 1e-6, $"{record.Layer}: {record.ReconstructionError}");
            Assert.IsTrue(record.Rank < Math.Min(record.Shape![0], record.Shape[1]), $"{record.Layer}: rank {record.Rank}");
        }
    }

    [TestMethod]
    public void PerLayerRankInThePolicyFile_OverridesTheGlobalRankEnergy()
    {
        var file = Path.Combine(Path.GetTempPath(), $"lowrank-policy-{Guid.NewGuid():N}.json");
        File.WriteAllText(file, """{ "layers": [ { "match": "/hidden.1/*", "Rank": "0.5" } ] }""");
        try
        {
            var result = LowRankTesting.Compress(_original, Fixtures.Policy(("RankEnergy", "0.8"), ("PolicyFile", file), ("Exclude", "/out/Gemm")));
            using var model = result.Model;
            Assert.AreEqual(128, result.Record("/hidden.1/Gemm").Rank);
            Assert.IsTrue(result.Record("/hidden.0/Gemm").ReconstructionError <= Math.Sqrt(0.2) + 1e-6);
        }
        finally { File.Delete(file); }
    }
}
