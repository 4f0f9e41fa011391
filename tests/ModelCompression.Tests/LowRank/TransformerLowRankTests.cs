using ModelCompression.Data;
using ModelCompression.Evaluation;
using ModelCompression.Onnx;
using ModelCompression.Runtime;

namespace ModelCompression.Tests.LowRank;

/// <summary>
/// <see cref="TinyTransformer"/> with every projection (Q, K, V, output, both feed-forward MatMuls) at 25 % of full
/// rank, plain SVD against activation-aware SVD, on held-out samples from the same correlated-feature distribution.
/// </summary>
[TestClass]
public sealed class TransformerLowRankTests
{
    private static string _folder = null!;
    private static OnnxModel _original = null!;
    private static Dataset _validation = null!;
    private static FloatTensor _reference = null!;
    private static Compressed _plain = null!;
    private static Compressed _aware = null!;

    [ClassInitialize]
    public static void Initialize(TestContext _)
    {
        _folder = Path.Combine(Path.GetTempPath(), $"lowrank-transformer-{Guid.NewGuid():N}");
        var calibration = TinyTransformer.WriteData(Path.Combine(_folder, "calibration"), samples: 256, sampleSeed: 1);
        _validation = Dataset.Load(TinyTransformer.WriteData(Path.Combine(_folder, "validation"), samples: 512, sampleSeed: 2));
        _original = TinyTransformer.Build();
        _reference = Predictions.Run(_original, _validation, Fixtures.Cpu, 128);
        _plain = LowRankTesting.Compress(_original, Fixtures.Policy(("Rank", "0.25"), ("Exclude", TinyTransformer.HeadName)));
        _aware = LowRankTesting.Compress(_original, Fixtures.Policy(("Rank", "0.25"), ("Exclude", TinyTransformer.HeadName),
            ("LowRankMethod", "activation-aware"), ("CalibrationData", calibration)));
    }

    [ClassCleanup]
    public static void Cleanup()
    {
        _plain.Model.Dispose();
        _aware.Model.Dispose();
        _original.Dispose();
        Directory.Delete(_folder, recursive: true);
    }

    [TestMethod]
    public void ActivationAware_AtQuarterRank_AgreesWithTheOriginalFarMoreThanPlainSvd()
    {
        var plain = Predictions.Run(_plain.Model, _validation, Fixtures.Cpu, 128);
        var aware = Predictions.Run(_aware.Model, _validation, Fixtures.Cpu, 128);
        double plainAgreement = Metrics.Agreement(_reference, plain), awareAgreement = Metrics.Agreement(_reference, aware);
        var summary = $"agreement plain {plainAgreement:P1} / aware {awareAgreement:P1}; cosine {Metrics.MeanCosine(_reference, plain):0.0000} / {Metrics.MeanCosine(_reference, aware):0.0000}; " +
                      $"relative MSE {LowRankTesting.RelativeMse(_reference, plain):0.00000} / {LowRankTesting.RelativeMse(_reference, aware):0.00000}";
        Assert.IsTrue(awareAgreement >= 0.9, summary);
        Assert.IsTrue(awareAgreement - plainAgreement >= 0.2, summary);
        Assert.IsTrue(Metrics.MeanCosine(_reference, aware) > Metrics.MeanCosine(_reference, plain), summary);
        Assert.IsTrue(LowRankTesting.RelativeMse(_reference, aware) < 0.1 * LowRankTesting.RelativeMse(_reference, plain), summary);
    }

    [TestMethod]
    public void QuarterRank_FactorizesEveryProjectionAtRank16AndRunsInOnnxRuntime()
    {
        foreach (var compressed in new[] { _plain, _aware })
        {
            CollectionAssert.AreEquivalent(TinyTransformer.MatMulLayers, compressed.Records.Select(r => r.Layer).ToArray());
            Assert.IsTrue(compressed.Records.All(r => r.Rank == 16), string.Join("; ", compressed.Records.Select(r => $"{r.Layer} {r.Rank}")));
            var outputs = Predictions.Run(compressed.Model, _validation, Fixtures.Cpu, 128);
            CollectionAssert.AreEqual(new long[] { 512, TinyTransformer.Classes }, outputs.Shape);
        }
        Assert.AreEqual(TinyTransformer.MatMulLayers.Length * 2 + 1, _aware.Model.Graph.Node.Count(n => n.OpType == "MatMul" && n.Input.Any(i => _aware.Model.Graph.Initializer.Any(t => t.Name == i))),
            "two constant-weight MatMuls per projection, plus the head");
    }

    [TestMethod]
    public void ActivationAware_ReportsOutputErrorsFarBelowThePlainWeightErrors()
    {
        foreach (var layer in TinyTransformer.MatMulLayers)
        {
            var aware = _aware.Record(layer);
            StringAssert.Contains(aware.Note, "output error");
            StringAssert.Contains(_plain.Record(layer).Note, "weight error");
            Assert.IsTrue(aware.ReconstructionError < _plain.Record(layer).ReconstructionError, $"{layer}: {aware.ReconstructionError} vs {_plain.Record(layer).ReconstructionError}");
        }
    }
}
