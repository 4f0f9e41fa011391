using ModelCompression.Onnx;
using ModelCompression.Passes;

namespace ModelCompression.Tests.Pruning;

/// <summary>
/// On a large model SparseGPT captures each stage's targets (the layers' outputs before the pass) when the stage comes,
/// on a copy of the model as it was, instead of every layer's up front; with the capture batch a large model uses
/// (at most 4 samples) for both, the pruned model must be the same bytes.
/// </summary>
[TestClass]
public sealed class SparseGptLargeModelTests
{
    [TestMethod]
    public void LargeModel_TargetsCapturedStageByStage_GiveTheSameModel()
    {
        var policy = Fixtures.Policy(("Sparsity", "0.5"), ("BatchSize", "4"), ("CalibrationData", "fmnist_calib.npz"), ("CalibrationSamples", "64"), ("SparseStorage", "false"));
        var (small, smallRows) = Compress(policy, large: false);
        var (large, largeRows) = Compress(policy, large: true);
        CollectionAssert.AreEqual(smallRows, largeRows);
        Assert.IsTrue(smallRows.Count(r => r.Contains("sparsegpt")) >= 2, string.Join("\n", smallRows));
        CollectionAssert.AreEqual(small, large, "model bytes");
    }

    private static (byte[] Bytes, List<string> Rows) Compress(Policy.CompressionPolicy policy, bool large)
    {
        using var model = OnnxModel.Load(Fixtures.Mlp);
        var context = new CompressionContext(model, policy) { LargeModel = large };
        CompressionPipeline.Run(context);
        return (model.ToBytes(), context.Records.Select(r => $"{r.Layer}: {r.Technique} error {r.ReconstructionError:R} ({r.Note})").ToList());
    }
}
