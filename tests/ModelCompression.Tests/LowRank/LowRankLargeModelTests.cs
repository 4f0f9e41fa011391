using ModelCompression.Onnx;
using ModelCompression.Passes;

namespace ModelCompression.Tests.LowRank;

/// <summary>
/// On a large model the pass keeps only each RankEnergy/budget layer's spectrum between rank allocation and the
/// layer's stage, then reads the weight, captures the moments and decomposes it again: the same sums, so the same
/// factors. With the capture batch a large model uses (at most 4 samples) for both, the bytes must not differ.
/// </summary>
[TestClass]
public sealed class LowRankLargeModelTests
{
    [TestMethod]
    [DataRow("ParameterBudget", "0.2", true, DisplayName = "ParameterBudget, activation-aware")]
    [DataRow("RankEnergy", "0.8", false, DisplayName = "RankEnergy, plain SVD")]
    public void LargeModel_DecomposedAgainAtItsStage_GivesTheSameModel(string setting, string value, bool activationAware)
    {
        (string, string)[] settings = activationAware
            ? [(setting, value), ("BatchSize", "4"), ("LowRankMethod", "activation-aware"), ("CalibrationData", "fmnist_calib.npz"), ("CalibrationSamples", "64")]
            : [(setting, value), ("BatchSize", "4")];
        var (smallBytes, smallRows) = Compress(Fixtures.Policy(settings), large: false);
        var (largeBytes, largeRows) = Compress(Fixtures.Policy(settings), large: true);
        CollectionAssert.AreEqual(smallRows, largeRows);
        Assert.IsTrue(smallRows.Count(r => r.Contains(" rank ")) >= 2, string.Join("\n", smallRows));
        CollectionAssert.AreEqual(smallBytes, largeBytes, "model bytes");
    }

    private static (byte[] Bytes, List<string> Rows) Compress(Policy.CompressionPolicy policy, bool large)
    {
        // The large path also spills each stage's written factors (and, after the pass, every built weight past
        // the threshold, here 1 KiB) to a spill file: the later stages read them from there.
        var spill = Directory.CreateTempSubdirectory("mc-lowrank-spill").FullName;
        using var model = OnnxModel.Load(Fixtures.Mlp);
        var context = new CompressionContext(model, policy) { LargeModel = large, SpillPathPrefix = Path.Combine(spill, "out"), SpillMinBytes = 1024 };
        CompressionPipeline.Run(context);
        var spilled = model.Graph.Initializer.Count(t => t.DataLocation == Onnx.Protobuf.TensorProto.Types.DataLocation.External);
        Assert.AreEqual(large, spilled > 0, $"{spilled} spilled tensors");
        var result = (model.ToBytes(), context.Records.Select(r => $"{r.Layer}: {r.Technique} rank {r.Rank} error {r.ReconstructionError:R} ({r.Note})").ToList());
        Directory.Delete(spill);
        return result;
    }
}
