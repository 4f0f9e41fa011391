using ModelCompression.Onnx;
using ModelCompression.Passes;
using static ModelCompression.Tests.Pruning.PruningHelpers;

namespace ModelCompression.Tests.Pruning;

/// <summary>Data-aware unstructured pruning of the ResNet fixture: accuracy targets at 50 % and 70 %, exact sparsity, edge layers.</summary>
[TestClass]
public sealed class ResNetUnstructuredPruningTests
{
    private static OnnxModel _original = null!;
    private static OnnxModel _sparseGpt50 = null!;
    private static OnnxModel _sparseGpt70 = null!;
    private static OnnxModel _magnitude50 = null!;
    private static double _originalAccuracy;

    [ClassInitialize]
    public static void Prune(TestContext _)
    {
        _original = OnnxModel.Load(Fixtures.ResNet);
        _originalAccuracy = Fixtures.Accuracy(_original);
        _sparseGpt50 = Compress(Fixtures.ResNet, ("Sparsity", "0.5"), ("PruneMethod", "sparsegpt"), ("SparseStorage", "false")).Model;
        _sparseGpt70 = Compress(Fixtures.ResNet, ("Sparsity", "0.7"), ("PruneMethod", "sparsegpt"), ("SparseStorage", "false")).Model;
        _magnitude50 = Compress(Fixtures.ResNet, ("Sparsity", "0.5"), ("PruneMethod", "magnitude"), ("SparseStorage", "false")).Model;
    }

    private static List<WeightedLayer> Pruned(OnnxModel model) =>
        WeightedLayer.Find(new OnnxGraph(model.Graph)).Where(l => l.Name is not ("/stem/stem.0/Conv" or "/fc/Gemm")).ToList();

    [TestMethod]
    public void SparseGpt50_ReachesTheTargetAndBeatsMagnitude()
    {
        var sparseGpt = Fixtures.Accuracy(_sparseGpt50);
        var magnitude = Fixtures.Accuracy(_magnitude50);
        Assert.IsTrue(sparseGpt >= 0.93, $"sparsegpt 50 %: {sparseGpt:P2} (fp32 {_originalAccuracy:P2})");
        Assert.IsTrue(sparseGpt > magnitude, $"sparsegpt {sparseGpt:P2} vs magnitude {magnitude:P2}");
    }

    [TestMethod]
    public void SparseGpt70_ReachesTheTarget()
    {
        var accuracy = Fixtures.Accuracy(_sparseGpt70);
        Assert.IsTrue(accuracy >= 0.91, $"sparsegpt 70 %: {accuracy:P2} (fp32 {_originalAccuracy:P2})");
    }

    [TestMethod]
    public void SparseGpt_PrunesExactlyTheRequestedFractionOfTheConvWeights()
    {
        foreach (var (model, sparsity) in new[] { (_sparseGpt50, 0.5), (_sparseGpt70, 0.7) })
        {
            var layers = Pruned(model);
            Assert.AreEqual(8, layers.Count);
            Assert.AreEqual((long)Math.Round(sparsity * layers.Sum(l => l.Parameters)), layers.Sum(l => Zeros(model, l)), $"{sparsity:P0}");
        }
    }

    [TestMethod]
    public void SparseGpt_PerLayerSparsityFollowsTheMagnitudeThresholdAllocation()
    {
        var counts = ModelCompression.Pruning.PruningTargets.GlobalMagnitudeCounts(_original, Pruned(_original), 0.5);
        var layers = Pruned(_sparseGpt50);
        for (var k = 0; k < layers.Count; k++) Assert.AreEqual(counts[k], Zeros(_sparseGpt50, layers[k]), layers[k].Name);
    }

    [TestMethod]
    public void EdgeLayers_StayDenseUnlessAsked()
    {
        foreach (var name in new[] { "/stem/stem.0/Conv", "/fc/Gemm" })
            Assert.AreEqual(0, Zeros(_sparseGpt50, Layer(_sparseGpt50, name)), name);
    }
}
