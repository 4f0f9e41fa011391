using ModelCompression.Data;
using ModelCompression.Evaluation;
using ModelCompression.Onnx;
using ModelCompression.Runtime;

namespace ModelCompression.Tests.LowRank;

/// <summary>
/// Low rank as a user writes it, Rank and CalibrationData and nothing else: LowRankMethod=auto runs the
/// activation-aware form, and the classifier head stays dense (the MLP's 10-class head at 0.125 would keep rank 1:
/// 20.5 % accuracy, against 90.85 % in fp32).
/// </summary>
[TestClass]
public sealed class LowRankDefaultsTests
{
    [TestMethod]
    public void Mlp_EighthRank_WithDefaults_StaysWithinOnePointOfFp32()
    {
        using var original = OnnxModel.Load(Fixtures.Mlp);
        var result = LowRankTesting.Compress(original, Fixtures.Policy(("Rank", "0.125"), ("CalibrationData", "fmnist_calib.npz")));
        using var model = result.Model;
        double fp32 = Fixtures.Accuracy(original), accuracy = Fixtures.Accuracy(model);
        Assert.IsTrue(fp32 - accuracy <= 0.01, $"accuracy {accuracy:P2} vs fp32 {fp32:P2}");
        Assert.AreEqual("activation-aware svd", result.Record("/hidden.0/Gemm").Technique);
        Assert.AreEqual(64, result.Record("/hidden.0/Gemm").Rank);
        var head = result.Record("/out/Gemm");
        Assert.IsNull(head.Rank);
        StringAssert.Contains(head.Note, "classifier head");
        CollectionAssert.AreEqual(new long[] { 10, 256 }, LowRankTesting.Dims(model, "out.weight"));
    }

    [TestMethod]
    public void Mlp_HeadWithItsOwnRankInThePolicyFile_IsFactorized()
    {
        var file = Path.Combine(Path.GetTempPath(), $"lowrank-head-{Guid.NewGuid():N}.json");
        File.WriteAllText(file, """{ "layers": [ { "match": "/out/*", "Rank": "0.5" } ] }""");
        try
        {
            using var original = OnnxModel.Load(Fixtures.Mlp);
            var result = LowRankTesting.Compress(original, Fixtures.Policy(("Rank", "0.125"), ("PolicyFile", file)));
            using var model = result.Model;
            Assert.AreEqual(5, result.Record("/out/Gemm").Rank);
            Assert.AreEqual("svd", result.Record("/out/Gemm").Technique, "auto without CalibrationData is plain SVD");
            Assert.IsFalse(model.Graph.Initializer.Any(t => t.Name == "out.weight"));
        }
        finally { File.Delete(file); }
    }

    [TestMethod]
    public void ResNet_HalfRank_WithDefaults_FactorizesNothingAndWarns()
    {
        // k×k convolutions need ConvDecomposition, and the one Gemm is the classifier head.
        using var model = OnnxModel.Load(Fixtures.ResNet);
        var context = new ModelCompression.Passes.CompressionContext(model, Fixtures.Policy(("Rank", "0.5"), ("CalibrationData", "fmnist_calib.npz")));
        ModelCompression.Passes.CompressionPipeline.Run(context);
        var warning = context.Diagnostics.Single(d => d.Code == ModelCompression.Diagnostics.DiagnosticCodes.NothingToCompress);
        StringAssert.Contains(warning.Message, "ConvDecomposition");
        StringAssert.Contains(context.Records.Single(r => r.Layer == "/fc/Gemm").Note, "classifier head");
    }

    /// <summary>
    /// The transformer's weights are random, so it has no accuracy: its fp32 top-1 is the label. Random logits are
    /// often near ties, and a tie flips on any change, so the 1-point bound applies where fp32 decides: a top-1
    /// margin of at least a tenth of the logits' RMS (85 % of the samples; 65 % agreement before the defaults changed).
    /// </summary>
    [TestMethod]
    public void Transformer_HalfRank_WithDefaults_KeepsFp32DecisionsWithinOnePoint()
    {
        var folder = Path.Combine(Path.GetTempPath(), $"lowrank-defaults-{Guid.NewGuid():N}");
        try
        {
            var calibration = TinyTransformer.WriteData(Path.Combine(folder, "calibration"), samples: 256, sampleSeed: 1);
            var validation = Dataset.Load(TinyTransformer.WriteData(Path.Combine(folder, "validation"), samples: 512, sampleSeed: 2));
            using var original = TinyTransformer.Build();
            var result = LowRankTesting.Compress(original, Fixtures.Policy(("Rank", "0.5"), ("CalibrationData", calibration)));
            using var model = result.Model;
            var reference = Predictions.Run(original, validation, Fixtures.Cpu, 128);
            var outputs = Predictions.Run(model, validation, Fixtures.Cpu, 128);

            var rms = Math.Sqrt(reference.Data.Average(v => (double)v * v));
            var decided = Enumerable.Range(0, reference.Rows).Where(i => Margin(reference, i) >= 0.1 * rms).ToList();
            var kept = decided.Count(i => Top1(reference, i) == Top1(outputs, i)) / (double)decided.Count;
            var summary = $"agreement {kept:P2} on {decided.Count} decided samples, {Metrics.Agreement(reference, outputs):P2} on all; relative MSE {LowRankTesting.RelativeMse(reference, outputs):0.00000}";
            Assert.IsTrue(decided.Count >= 0.8 * reference.Rows, summary);
            Assert.IsTrue(kept >= 0.99, summary);
            Assert.IsTrue(LowRankTesting.RelativeMse(reference, outputs) < 0.005, summary);
            // 64×64 projections at rank 32 would hold as many weights as they replace: they stay dense, like the head.
            foreach (var layer in new[] { "ffn_up", "ffn_down" }) Assert.AreEqual("activation-aware svd", result.Record(layer).Technique);
            foreach (var layer in new[] { "q_proj", TinyTransformer.HeadName }) Assert.IsNull(result.Record(layer).Rank);
            StringAssert.Contains(result.Record(TinyTransformer.HeadName).Note, "classifier head");
        }
        finally { Directory.Delete(folder, recursive: true); }
    }

    private static int Top1(FloatTensor t, int row)
    {
        var span = t.Data.AsSpan(row * t.RowLength, t.RowLength);
        var best = 0;
        for (var c = 1; c < span.Length; c++) if (span[c] > span[best]) best = c;
        return best;
    }

    private static double Margin(FloatTensor t, int row)
    {
        var sorted = t.Data.AsSpan(row * t.RowLength, t.RowLength).ToArray().OrderDescending().ToArray();
        return sorted[0] - sorted[1];
    }
}
