using Microsoft.ML.OnnxRuntime;
using ModelCompression.Graph;
using ModelCompression.LowBit;
using ModelCompression.Onnx;
using ModelCompression.Passes;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.Tests.LowBit;

/// <summary>
/// Binary and ternary weights on the real fixtures, run by ONNX Runtime: accuracy with and without the least-squares
/// scales, the head in int8 by a policy file, the packed form folding back to ±α per channel at load, the parameter
/// counts seeing through it, and byte-identical output run to run.
/// </summary>
[TestClass]
public sealed class LowBitTests
{
    private static double _fp32, _ternaryPlain, _binaryPlain, _ternaryFitted, _binaryFitted;
    private static OnnxModel _ternaryHeadInt8 = null!;
    private static CompressionContext _ternaryHeadInt8Context = null!;
    private static OnnxModel _binary = null!;
    private static string _policyFile = null!;

    [ClassInitialize]
    public static void Quantize(TestContext _)
    {
        _policyFile = Path.Combine(Path.GetTempPath(), $"lowbit-policy-{Guid.NewGuid():N}.json");
        File.WriteAllText(_policyFile, """{ "layers": [ { "match": "/out/Gemm", "Quantize": "int8" } ] }""");
        using var mlp = OnnxModel.Load(Fixtures.Mlp);
        _fp32 = Fixtures.Accuracy(mlp);
        _ternaryPlain = Fixtures.Accuracy(Compress(Fixtures.Mlp, calibrated: false, ("Quantize", "ternary")).Model);
        _binary = Compress(Fixtures.Mlp, calibrated: false, ("Quantize", "binary")).Model;
        _binaryPlain = Fixtures.Accuracy(_binary);
        (_ternaryHeadInt8, _ternaryHeadInt8Context) = Compress(Fixtures.Mlp, calibrated: true, ("Quantize", "ternary"), ("PolicyFile", _policyFile));
        _ternaryFitted = Fixtures.Accuracy(_ternaryHeadInt8);
        _binaryFitted = Fixtures.Accuracy(Compress(Fixtures.Mlp, calibrated: true, ("Quantize", "binary"), ("PolicyFile", _policyFile)).Model);
        Console.WriteLine($"MLP fp32 {_fp32:P2}; ternary {_ternaryPlain:P2}, fitted + int8 head {_ternaryFitted:P2}; binary {_binaryPlain:P2}, fitted + int8 head {_binaryFitted:P2}");
    }

    [ClassCleanup]
    public static void Cleanup() => File.Delete(_policyFile);

    private static (OnnxModel Model, CompressionContext Context) Compress(string modelPath, bool calibrated, params (string Name, string Value)[] settings)
    {
        var policy = Fixtures.Policy(calibrated ? [.. settings, ("CalibrationData", "fmnist_calib.npz")] : settings);
        var model = OnnxModel.Load(modelPath);
        var context = new CompressionContext(model, policy);
        CompressionPipeline.Run(context);
        return (model, context);
    }

    /// <summary>The model as ONNX Runtime optimizes it at load (the decoders folded into plain initializers).</summary>
    private static OnnxModel Optimized(OnnxModel model)
    {
        var path = Path.Combine(Path.GetTempPath(), $"lowbit-optimized-{Guid.NewGuid():N}.onnx");
        try
        {
            using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_EXTENDED, OptimizedModelFilePath = path })
            using (new InferenceSession(model.ToBytes(), options)) { }
            return OnnxModel.Load(path);
        }
        finally { File.Delete(path); }
    }

    private static double Agreement(OnnxModel a, OnnxModel b)
    {
        var x = Fixtures.Outputs(a, 1000);
        var y = Fixtures.Outputs(b, 1000);
        var classes = (int)x.Shape[^1];
        var rows = x.Data.Length / classes;
        var same = 0;
        for (var r = 0; r < rows; r++)
            if (ArgMax(x.Data.AsSpan(r * classes, classes)) == ArgMax(y.Data.AsSpan(r * classes, classes))) same++;
        return (double)same / rows;
    }

    private static int ArgMax(ReadOnlySpan<float> v)
    {
        var best = 0;
        for (var i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }

    [TestMethod]
    public void TernaryWithFittedScales_AndInt8Head_ReachesEightyPercent_AndAgreesWithTheOriginal()
    {
        Assert.IsTrue(_ternaryFitted >= 0.80, $"ternary {_ternaryFitted:P2} (fp32 {_fp32:P2})");
        using var original = OnnxModel.Load(Fixtures.Mlp);
        var agreement = Agreement(original, _ternaryHeadInt8);
        Assert.IsTrue(agreement >= 0.85, $"top-1 agreement with the original {agreement:P2}");
    }

    [TestMethod]
    public void FittedScales_BeatTheWeightOnlyOnes_AndTernaryBeatsBinary()
    {
        Assert.IsTrue(_ternaryFitted > _ternaryPlain, $"ternary fitted {_ternaryFitted:P2} vs plain {_ternaryPlain:P2}");
        Assert.IsTrue(_binaryFitted > _binaryPlain + 0.05, $"binary fitted {_binaryFitted:P2} vs plain {_binaryPlain:P2}");
        Assert.IsTrue(_ternaryPlain > _binaryPlain, $"ternary {_ternaryPlain:P2} vs binary {_binaryPlain:P2}");
        Assert.IsTrue(_ternaryPlain < _fp32, "without retraining some accuracy is lost");
    }

    [TestMethod]
    public void PolicyFileHead_IsInt8_TheHiddenLayersTernary_WithErrorsRecorded()
    {
        var graph = new OnnxGraph(_ternaryHeadInt8.Graph);
        var head = graph.Nodes.Single(n => n.OpType == "Gemm" && n.Name == "/out/Gemm");
        Assert.AreEqual("DequantizeLinear", graph.Producer(head.Input[1])?.OpType, "the head's weight is int8");
        var records = _ternaryHeadInt8Context.Records.Where(r => r.Technique == "ternary").ToDictionary(r => r.Layer);
        Assert.AreEqual(2, records.Count, string.Join("\n", _ternaryHeadInt8Context.Records.Select(r => $"{r.Technique} {r.Layer} {r.Note}")));
        foreach (var r in records.Values)
        {
            Assert.AreEqual(2, r.Bits);
            Assert.IsTrue(r.ReconstructionError is > 0 and < 0.6, $"{r.Layer}: output error {r.ReconstructionError}");
            StringAssert.Contains(r.Note, "least squares");
            StringAssert.Contains(r.Note, "weight error");
            Assert.IsTrue(r.Sparsity is > 0.2 and < 0.8, $"{r.Layer}: {r.Sparsity} of the weights below the threshold");
        }
    }

    [TestMethod]
    public void ByDefault_TheHeadStaysFloat_WithTheReason()
    {
        var (model, context) = Compress(Fixtures.Mlp, calibrated: false, ("Quantize", "ternary"));
        var head = context.Records.Single(r => r.Layer == "/out/Gemm" && r.Technique == "ternary");
        StringAssert.Contains(head.Note, "classifier head");
        Assert.IsNotNull(new OnnxGraph(model.Graph).Initializer("out.weight"));
        Assert.IsNull(new OnnxGraph(model.Graph).Initializer("hidden.0.weight"), "the hidden weights are stored packed");
    }

    [TestMethod]
    public void PackedWeights_FoldAtLoad_IntoPlusMinusAlphaPerChannel()
    {
        foreach (var (model, ternary) in new[] { (_ternaryHeadInt8, true), (_binary, false) })
        {
            using var optimized = Optimized(model);
            var ops = optimized.Graph.Node.Select(n => n.OpType).ToList();
            Assert.IsFalse(ops.Any(op => op is "BitShift" or "Gather" or "Slice"), string.Join(" ", ops));
            // The first hidden layer's folded weight, [512, 784] or as ORT laid it out for its kernel ([784, 512]).
            var weight = optimized.Graph.Initializer.SingleOrDefault(t => Tensors.ElementCount(t) == 512L * 784);
            Assert.IsNotNull(weight, "the decoded weight is a plain initializer after folding");
            var w = optimized.ReadFloats(weight!);
            var outFirst = weight!.Dims[0] == 512;
            float At(int o, int i) => outFirst ? w[o * 784 + i] : w[i * 512 + o];
            for (var r = 0; r < 512; r++)
            {
                var row = Enumerable.Range(0, 784).Select(i => At(r, i)).ToArray();
                var magnitudes = row.Select(MathF.Abs).Where(x => x != 0).Distinct().ToList();
                Assert.AreEqual(1, magnitudes.Count, $"row {r}: one α");
                var zeros = row.Count(x => x == 0);
                if (ternary) Assert.IsTrue(zeros > 0, $"row {r}: ternary has zeros");
                else Assert.AreEqual(0, zeros, $"row {r}: binary has none");
            }
        }
    }

    [TestMethod]
    public void ParameterCounts_SeeThroughThePackedForm()
    {
        using var original = OnnxModel.Load(Fixtures.Mlp);
        Assert.AreEqual(ModelWeights.Parameters(original), ModelWeights.Parameters(_binary));
        var after = ModelWeights.Find(_binary).ToDictionary(w => w.Value);
        foreach (var name in new[] { "hidden.0.weight", "hidden.1.weight" })
        {
            Assert.AreEqual(DataType.Uint8, after[name].StoredType, name);
            CollectionAssert.AreEqual(ModelWeights.Find(original).Single(w => w.Value == name).Dims, after[name].Dims, name);
            Assert.AreEqual(after[name].Elements, after[name].NonZeros, "binary weights are all nonzero");
        }
        Assert.AreEqual(DataType.Float, after["out.weight"].StoredType);

        // A ternary weight's zeros are counted through the packed codes, as the pass recorded them.
        var ternary = ModelWeights.Find(_ternaryHeadInt8).Single(w => w.Value == "hidden.0.weight");
        var sparsity = _ternaryHeadInt8Context.Records.Single(r => r.Technique == "ternary" && r.Layer == "/hidden.0/Gemm").Sparsity!.Value;
        Assert.AreEqual(784L * 512, ternary.Elements);
        Assert.AreEqual(sparsity, 1 - (double)ternary.NonZeros!.Value / ternary.Elements, 1e-9);
    }

    [TestMethod]
    public void TheFileShrinks_ToUnderATenthForTernary_AndAboutAFifteenthForBinary()
    {
        var fp32 = new FileInfo(Fixtures.Mlp).Length;
        Assert.IsTrue(_ternaryHeadInt8.ToBytes().Length < 0.1 * fp32, $"{_ternaryHeadInt8.ToBytes().Length} of {fp32}");
        Assert.IsTrue(_binary.ToBytes().Length < 0.06 * fp32, $"{_binary.ToBytes().Length} of {fp32}");
    }

    [TestMethod]
    public void WholePipeline_IsByteIdenticalRunToRun()
    {
        var again = Compress(Fixtures.Mlp, calibrated: true, ("Quantize", "ternary"), ("PolicyFile", _policyFile)).Model;
        CollectionAssert.AreEqual(_ternaryHeadInt8.ToBytes(), again.ToBytes());
        (string, string)[] resNet = [("Quantize", "binary")];
        CollectionAssert.AreEqual(Compress(Fixtures.ResNet, false, resNet).Model.ToBytes(), Compress(Fixtures.ResNet, false, resNet).Model.ToBytes());
    }

    [TestMethod]
    public void ResNetTernaryWithFittedScales_LoadsAndKeepsMostOfItsAccuracy()
    {
        using var original = OnnxModel.Load(Fixtures.ResNet);
        var (model, context) = Compress(Fixtures.ResNet, calibrated: true, ("Quantize", "ternary"));
        var convs = context.Records.Where(r => r.Technique == "ternary" && r.Bits == 2).ToList();
        Assert.IsTrue(convs.Count >= 8, string.Join("\n", context.Records.Select(r => $"{r.Technique} {r.Layer} {r.Note}")));
        StringAssert.Contains(context.Records.Single(r => r.Technique == "ternary" && r.Note!.Contains("first conv", StringComparison.Ordinal)).Note, "left in float");
        var accuracy = Fixtures.Accuracy(model);
        Assert.IsTrue(accuracy >= 0.85, $"ResNet ternary {accuracy:P2} vs fp32 {Fixtures.Accuracy(original):P2}");
    }
}

/// <summary>The per-channel rules themselves, on weights whose answer is known.</summary>
[TestClass]
public sealed class LowBitQuantizerTests
{
    [TestMethod]
    public void Ternary_KeepsTheWeightsAboveSevenTenthsOfTheMean_AtTheirMeanMagnitude()
    {
        // Row 0: mean |w| = 0.575, Δ = 0.4025: ±1 kept (α = 1), 0.1 and 0.2 dropped. Row 1: all zero.
        var q = LowBitQuantizer.Quantize([1f, -1f, 0.1f, 0.2f, 0f, 0f, 0f, 0f], 2, 4, ternary: true);
        CollectionAssert.AreEqual(new byte[] { 1, 2, 0, 0, 0, 0, 0, 0 }, q.Codes);
        CollectionAssert.AreEqual(new[] { 1f, 0f }, q.Scales);
        CollectionAssert.AreEqual(new[] { 1f, -1f, 0f, 0f, 0f, 0f, 0f, 0f }, q.Dense());
    }

    [TestMethod]
    public void Binary_IsTheSignTimesTheMeanMagnitude()
    {
        var q = LowBitQuantizer.Quantize([1f, -1f, 0.1f, -0.3f], 1, 4, ternary: false);
        CollectionAssert.AreEqual(new byte[] { 1, 0, 1, 0 }, q.Codes);
        Assert.AreEqual(0.6f, q.Scales[0], 1e-6f);
        CollectionAssert.AreEqual(new[] { 0.6f, -0.6f, 0.6f, -0.6f }, q.Dense());
    }
}
