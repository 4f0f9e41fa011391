using ModelCompression.Onnx;
using ModelCompression.Pruning;
using static ModelCompression.Tests.Pruning.PruningHelpers;

namespace ModelCompression.Tests.Pruning;

/// <summary>Unstructured pruning of the MLP fixture: exact sparsity, patterns, exclusions, and the data-aware accuracy targets.</summary>
[TestClass]
public sealed class MlpUnstructuredPruningTests
{
    private static readonly string[] Hidden = ["/hidden.0/Gemm", "/hidden.1/Gemm"];
    private static OnnxModel _original = null!;
    private static OnnxModel _magnitude80 = null!;
    private static OnnxModel _sparseGpt80 = null!;
    private static OnnxModel _sparseGpt90 = null!;
    private static double _originalAccuracy;

    [ClassInitialize]
    public static void Prune(TestContext _)
    {
        _original = OnnxModel.Load(Fixtures.Mlp);
        _originalAccuracy = Fixtures.Accuracy(_original);
        _magnitude80 = Compress(Fixtures.Mlp, ("Sparsity", "0.8"), ("PruneMethod", "magnitude"), ("SparseStorage", "false")).Model;
        _sparseGpt80 = Compress(Fixtures.Mlp, ("Sparsity", "0.8"), ("PruneMethod", "sparsegpt"), ("SparseStorage", "false")).Model;
        _sparseGpt90 = Compress(Fixtures.Mlp, ("Sparsity", "0.9"), ("PruneMethod", "sparsegpt"), ("SparseStorage", "false")).Model;
    }

    [TestMethod]
    public void GlobalMagnitude_PrunesExactlyTheRequestedFractionWithOneThresholdOnLampScores()
    {
        var layers = Hidden.Select(n => Layer(_magnitude80, n)).ToList();
        var total = layers.Sum(l => l.Parameters);
        Assert.AreEqual((long)Math.Round(0.8 * total), layers.Sum(l => Zeros(_magnitude80, l)));
        // One threshold on the LAMP score w² / Σ_{|v|≥|w|} v² (per layer): every kept weight scores at least as high as
        // every pruned one, across layers.
        var originals = Hidden.Select(n => Layer(_original, n).ReadMatrix(_original)).ToList();
        var scores = originals.Select(LampScores).ToList();
        var pruned = layers.Select(l => l.ReadMatrix(_magnitude80)).ToList();
        var largestPruned = scores.SelectMany((w, k) => w.Where((_, i) => pruned[k][i] == 0)).Max();
        var smallestKept = scores.SelectMany((w, k) => w.Where((_, i) => pruned[k][i] != 0)).Min();
        Assert.IsTrue(largestPruned <= smallestKept * (1 + 1e-6), $"pruned scores up to {largestPruned}, kept from {smallestKept}");
    }

    /// <summary>Per weight: w² over the sum of the squares of the layer's weights with |u| ≥ |w| (equal ones included).</summary>
    private static double[] LampScores(float[] w)
    {
        var squares = w.Select(v => (double)v * v).OrderByDescending(v => v).ToArray();
        var atLeast = new Dictionary<double, double>();
        var sum = 0.0;
        for (var i = 0; i < squares.Length; i++)
        {
            sum += squares[i];
            if (i + 1 == squares.Length || squares[i + 1] != squares[i]) atLeast[squares[i]] = sum;
        }
        return w.Select(v => (double)v * v / atLeast[(double)v * v]).ToArray();
    }

    [TestMethod]
    public void GlobalMagnitude_LeavesTheClassifierHeadDense()
    {
        Assert.AreEqual(0, Zeros(_magnitude80, Layer(_magnitude80, "/out/Gemm")));
    }

    [TestMethod]
    public void LayerScope_PrunesEveryLayerToTheRequestedSparsity()
    {
        var (model, _) = Compress(Fixtures.Mlp, ("Sparsity", "0.7"), ("PruneMethod", "magnitude"), ("PruneScope", "layer"), ("SparseStorage", "false"));
        foreach (var name in Hidden)
        {
            var layer = Layer(model, name);
            Assert.AreEqual((long)Math.Round(0.7 * layer.Parameters), Zeros(model, layer), name);
        }
    }

    [TestMethod]
    public void TwoFourPattern_ZeroesTwoOfEveryFourConsecutiveInputWeights()
    {
        var (model, _) = Compress(Fixtures.Mlp, ("SparsityPattern", "2:4"), ("PruneMethod", "sparsegpt"), ("SparseStorage", "false"));
        foreach (var name in Hidden)
        {
            var layer = Layer(model, name);
            var w = layer.ReadMatrix(model);
            for (var i = 0; i < w.Length; i += 4)
                Assert.IsTrue(w.AsSpan(i, 4).Count(0f) >= 2, $"{name}: group at {i} keeps more than 2 of 4");
            Assert.AreEqual(0.5, (double)Zeros(model, layer) / layer.Parameters, 1e-3, name);
        }
    }

    [TestMethod]
    public void ExcludedLayer_IsNotTouched()
    {
        var (model, context) = Compress(Fixtures.Mlp, ("Sparsity", "0.8"), ("PruneMethod", "magnitude"), ("Exclude", "/hidden.1/*"), ("SparseStorage", "false"));
        CollectionAssert.AreEqual(Layer(_original, "/hidden.1/Gemm").ReadMatrix(_original), Layer(model, "/hidden.1/Gemm").ReadMatrix(model));
        var hidden0 = Layer(model, "/hidden.0/Gemm");
        Assert.AreEqual((long)Math.Round(0.8 * hidden0.Parameters), Zeros(model, hidden0));
        Assert.IsFalse(context.Records.Any(r => r.Layer == "/hidden.1/Gemm"));
    }

    [TestMethod]
    public void PolicyFileOverride_GivesALayerItsOwnSparsity()
    {
        var file = Path.Combine(Path.GetTempPath(), $"prune-policy-{Guid.NewGuid():N}.json");
        File.WriteAllText(file, """{ "layers": [ { "match": "/hidden.1/*", "Sparsity": 0.5, "PruneMethod": "magnitude" } ] }""");
        try
        {
            var (model, context) = Compress(Fixtures.Mlp, ("Sparsity", "0.8"), ("PruneMethod", "sparsegpt"), ("PolicyFile", file), ("SparseStorage", "false"));
            var hidden0 = Layer(model, "/hidden.0/Gemm");
            var hidden1 = Layer(model, "/hidden.1/Gemm");
            Assert.AreEqual((long)Math.Round(0.8 * hidden0.Parameters), Zeros(model, hidden0));
            Assert.AreEqual((long)Math.Round(0.5 * hidden1.Parameters), Zeros(model, hidden1));
            StringAssert.StartsWith(context.Records.Single(r => r.Layer == "/hidden.1/Gemm").Note, "magnitude");
            StringAssert.StartsWith(context.Records.Single(r => r.Layer == "/hidden.0/Gemm").Note, "sparsegpt");
        }
        finally { File.Delete(file); }
    }

    [TestMethod]
    public void SparseGpt_HasTheSameSparsityPerLayerAndOverallAsTheGlobalThresholdAllocation()
    {
        var layers = Hidden.Select(n => Layer(_sparseGpt80, n)).ToList();
        var counts = PruningTargets.GlobalMagnitudeCounts(_original, Hidden.Select(n => Layer(_original, n)).ToList(), 0.8);
        for (var k = 0; k < layers.Count; k++) Assert.AreEqual(counts[k], Zeros(_sparseGpt80, layers[k]), Hidden[k]);
        Assert.AreEqual((long)Math.Round(0.8 * layers.Sum(l => l.Parameters)), layers.Sum(l => Zeros(_sparseGpt80, l)));
    }

    [TestMethod]
    public void SparseGpt80_ReachesTheTargetAndBeatsMagnitude()
    {
        var sparseGpt = Fixtures.Accuracy(_sparseGpt80);
        var magnitude = Fixtures.Accuracy(_magnitude80);
        Assert.IsTrue(sparseGpt >= 0.892, $"sparsegpt 80 %: {sparseGpt:P2} (fp32 {_originalAccuracy:P2})");
        Assert.IsTrue(sparseGpt > magnitude, $"sparsegpt {sparseGpt:P2} vs magnitude {magnitude:P2}");
    }

    [TestMethod]
    public void SparseGpt90_ReachesTheTarget()
    {
        var accuracy = Fixtures.Accuracy(_sparseGpt90);
        Assert.IsTrue(accuracy >= 0.87, $"sparsegpt 90 %: {accuracy:P2} (fp32 {_originalAccuracy:P2})");
        var layers = Hidden.Select(n => Layer(_sparseGpt90, n)).ToList();
        Assert.AreEqual((long)Math.Round(0.9 * layers.Sum(l => l.Parameters)), layers.Sum(l => Zeros(_sparseGpt90, l)));
    }

    [TestMethod]
    public void SparseGpt_IsDeterministic()
    {
        var again = Compress(Fixtures.Mlp, ("Sparsity", "0.8"), ("PruneMethod", "sparsegpt"), ("SparseStorage", "false")).Model;
        CollectionAssert.AreEqual(_sparseGpt80.ToBytes(), again.ToBytes());
    }
}
