using Microsoft.ML.OnnxRuntime;
using ModelCompression.Graph;
using ModelCompression.Onnx;
using ModelCompression.Passes;
using ModelCompression.WeightSharing;
using static ModelCompression.Tests.Pruning.PruningHelpers;

namespace ModelCompression.Tests.WeightSharing;

/// <summary>
/// The codebook's variants on the real fixtures, run by ONNX Runtime: activation-weighted k-means against plain
/// k-means (output error), product quantization (vectors of inputs) and residual codebooks (weight error, accuracy),
/// their parameter counts through the decoders, the lookups folding away at load, and determinism.
/// </summary>
[TestClass]
public sealed class CodebookMethodTests
{
    private static double _mlpFp32, _resNetFp32;
    private static float[] _mlpOutputs = null!;

    [ClassInitialize]
    public static void Measure(TestContext _)
    {
        using var mlp = OnnxModel.Load(Fixtures.Mlp);
        using var resNet = OnnxModel.Load(Fixtures.ResNet);
        _mlpFp32 = Fixtures.Accuracy(mlp);
        _resNetFp32 = Fixtures.Accuracy(resNet);
        _mlpOutputs = Fixtures.Outputs(mlp, 512).Data;
    }

    private static double OutputMse(OnnxModel model)
    {
        var outputs = Fixtures.Outputs(model, 512).Data;
        return outputs.Select((y, i) => Math.Pow(y - _mlpOutputs[i], 2)).Average();
    }

    /// <summary>
    /// A policy file that asks for the codebook on the MLP's two small layers only (hidden.1, 512×256, and the head),
    /// so a test that compresses several times stays quick; hidden.0 (784×512) stays float.
    /// </summary>
    private static string SmallLayers(string settings) => Only(["/hidden.1/*", "/out/*"], settings);

    /// <summary>A policy file that gives <paramref name="settings"/> to the layers <paramref name="matches"/> name, and nothing to the others.</summary>
    private static string Only(string[] matches, string settings)
    {
        var file = Path.Combine(Path.GetTempPath(), $"codebook-small-{Guid.NewGuid():N}.json");
        File.WriteAllText(file, $$"""{ "layers": [ {{string.Join(", ", matches.Select(m => $$"""{ "match": "{{m}}", {{settings}} }"""))}} ] }""");
        return file;
    }

    private static Dictionary<string, LayerRecord> Records(CompressionContext context) =>
        context.Records.Where(r => r.Technique == "codebook").ToDictionary(r => r.Layer);

    [TestMethod]
    public void ActivationWeighting_BeatsUnweighted_OnTheMlpsOutputError()
    {
        foreach (var k in new[] { 4, 8 })
        {
            // Nearest-value assignment on both sides: the weighting shapes the k-means fit itself.
            var weightedFile = SmallLayers($"\"Codebook\": {k}, \"CodebookAssignment\": \"nearest\", \"CodebookWeighting\": \"activation\"");
            var plainFile = SmallLayers($"\"Codebook\": {k}, \"CodebookAssignment\": \"nearest\"");
            var (weighted, context) = Compress(Fixtures.Mlp, ("PolicyFile", weightedFile));
            var (plain, _) = Compress(Fixtures.Mlp, ("PolicyFile", plainFile));
            File.Delete(weightedFile);
            File.Delete(plainFile);
            double w = OutputMse(weighted), p = OutputMse(plain);
            Console.WriteLine($"k={k}: output MSE weighted {w:G4} vs unweighted {p:G4}; accuracy {Fixtures.Accuracy(weighted):P2} vs {Fixtures.Accuracy(plain):P2}");
            Assert.IsTrue(w < p, $"k={k}: weighted {w} vs unweighted {p}");
            Assert.AreEqual(2, Records(context).Count);
            Assert.IsTrue(Records(context).Values.All(r => r.Note!.Contains("weighted by input E[x²] on ", StringComparison.Ordinal)),
                string.Join("\n", Records(context).Values.Select(r => r.Note)));
        }
    }

    [TestMethod]
    public void Weighting_IsOffByDefault_EvenWithCalibrationData_AndActivationWithoutItIsACodedError()
    {
        // The helper passes the calibration data: the fit must still be unweighted unless asked.
        var file = SmallLayers("\"Codebook\": 8");
        var (_, withData) = Compress(Fixtures.Mlp, ("PolicyFile", file));
        File.Delete(file);
        Assert.AreEqual(2, Records(withData).Count);
        Assert.IsTrue(Records(withData).Values.All(r => !r.Note!.Contains("E[x²]", StringComparison.Ordinal)),
            string.Join("\n", Records(withData).Values.Select(r => r.Note)));

        // Found while the settings are read, before any model is loaded.
        var error = Assert.ThrowsExactly<Diagnostics.CompressionException>(() => Fixtures.Policy(("Codebook", "8"), ("CodebookWeighting", "activation")));
        StringAssert.Contains(error.Message, "CodebookWeighting=activation needs CalibrationData");
    }

    [TestMethod]
    public void TheDataAwareAssignmentAndTheRate_OnAProductOrResidualCodebook_AreCodedErrors()
    {
        foreach (var (name, value) in new[] { ("CodebookAssignment", "gptq"), ("CodebookRate", "4") })
        {
            var error = Assert.ThrowsExactly<Diagnostics.CompressionException>(() => Fixtures.Policy(("Codebook", "16"), ("CodebookMethod", "product"), (name, value)));
            Assert.AreEqual(Diagnostics.DiagnosticCodes.ConflictingSettings, error.Code);
            StringAssert.Contains(error.Message, "scalar codebooks only");
        }
    }

    [TestMethod]
    public void Residual_HasLessWeightErrorThanScalar_AtTheSameK_AndRunsInOnnxRuntime()
    {
        // Both nearest-value, so both errors are ‖ΔW‖/‖W‖ (the data-aware assignment reports the output error).
        var scalarFile = SmallLayers("\"Codebook\": 4, \"CodebookAssignment\": \"nearest\"");
        var residualFile = SmallLayers("\"Codebook\": 4, \"CodebookMethod\": \"residual\"");
        var (scalar, scalarContext) = Compress(Fixtures.Mlp, ("PolicyFile", scalarFile));
        var (residual, residualContext) = Compress(Fixtures.Mlp, ("PolicyFile", residualFile));
        File.Delete(scalarFile);
        File.Delete(residualFile);
        var s = Records(scalarContext);
        var r = Records(residualContext);
        Assert.AreEqual(2, r.Count);
        foreach (var (layer, record) in r)
        {
            Assert.IsTrue(record.ReconstructionError < s[layer].ReconstructionError, $"{layer}: residual {record.ReconstructionError} vs scalar {s[layer].ReconstructionError}");
            Assert.AreEqual(4, record.Bits, layer);
        }
        Assert.AreEqual(2, residual.Graph.Node.Count(n => n.OpType == "Add" && n.Output[0].EndsWith(".weight", StringComparison.Ordinal)));
        double accuracyResidual = Fixtures.Accuracy(residual), accuracyScalar = Fixtures.Accuracy(scalar);
        Console.WriteLine($"MLP k=4: scalar {accuracyScalar:P2}, residual {accuracyResidual:P2}, fp32 {_mlpFp32:P2}; output MSE {OutputMse(scalar):G4} vs {OutputMse(residual):G4}");
        Assert.IsTrue(OutputMse(residual) < OutputMse(scalar));
        Assert.IsTrue(accuracyResidual >= _mlpFp32 - 0.01, $"residual k=4 {accuracyResidual:P2} vs fp32 {_mlpFp32:P2}");
        AssertCountsSeeThrough(residual, Fixtures.Mlp);
    }

    [TestMethod]
    public void Product_SharesVectorsOfInputs_RunsInOnnxRuntime_AndFoldsAway()
    {
        var (model, context) = Compress(Fixtures.Mlp, ("Codebook", "256"), ("CodebookMethod", "product"), ("CodebookSubvector", "4"), ("CodebookIterations", "25"));
        var records = Records(context);
        Assert.AreEqual(3, records.Count);
        Assert.IsTrue(records.Values.All(r => r.Note!.Contains("shared vectors of 4 inputs", StringComparison.Ordinal) && r.Bits == 2),
            string.Join("\n", records.Values.Select(r => $"{r.Bits} {r.Note}")));
        // One lookup per layer, in a [k, 4] table of shared vectors.
        var graph = new OnnxGraph(model.Graph);
        var tables = graph.Nodes.Where(n => n.OpType == "Gather").Select(n => graph.Initializer(n.Input[0])!.Dims.ToArray()).ToList();
        Assert.AreEqual(3, tables.Count);
        Assert.IsTrue(tables.All(d => d is [<= 256, 4]), string.Join(" ", tables.Select(d => string.Join("x", d))));
        var fp32 = new FileInfo(Fixtures.Mlp).Length;
        var bytes = model.ToBytes().Length;
        Assert.IsTrue(bytes < 0.08 * fp32, $"{bytes} of {fp32} bytes: one byte per 4 weights");
        var accuracy = Fixtures.Accuracy(model);
        Console.WriteLine($"MLP product d=4 k=256: {accuracy:P2} vs fp32 {_mlpFp32:P2}, {100.0 * bytes / fp32:0.00} % of the file");
        Assert.IsTrue(accuracy >= _mlpFp32 - 0.015, $"{accuracy:P2} vs fp32 {_mlpFp32:P2}");
        AssertCountsSeeThrough(model, Fixtures.Mlp);
        AssertFoldsAway(model);
    }

    [TestMethod]
    public void EachMethod_OnTheResNet_RunsInOnnxRuntime_WithinReachOfFp32()
    {
        // The first two stages' five 3×3 convolutions (32 and 64 channels; the whole model is in bench/Codebook).
        // Product quantization at 2 bits a weight, without fine-tuning, costs the convolutions more than the MLP
        // (measured: 90.20 % on these five, 88.40 % on all, vs 93.60 %; runs of the flat row across kernels and channels gave 76.80 %).
        foreach (var (method, k, tolerance) in new[] { ("residual", 16, 0.01), ("product", 256, 0.05) })
        {
            var file = Only(["/l1/*", "/d1/*", "/l2/*"], $"\"Codebook\": {k}, \"CodebookMethod\": \"{method}\"");
            var (model, context) = Compress(Fixtures.ResNet, ("PolicyFile", file), ("CodebookIterations", "25"));
            File.Delete(file);
            var accuracy = Fixtures.Accuracy(model);
            Console.WriteLine($"ResNet l1, d1, l2 {method} k={k}: {accuracy:P2} vs fp32 {_resNetFp32:P2}, {model.ToBytes().Length} bytes");
            Assert.IsTrue(accuracy >= _resNetFp32 - tolerance, $"{method}: {accuracy:P2} vs fp32 {_resNetFp32:P2}");
            Assert.AreEqual(5, Records(context).Count, string.Join(", ", Records(context).Keys));
            AssertCountsSeeThrough(model, Fixtures.ResNet);
            if (method == "product") AssertConvVectors(model, context, "4 input channels at one kernel position", 4, 5);
        }
    }

    [TestMethod]
    public void Product_ConvVectors_AreWholeKernels_WhenAsked()
    {
        var (model, context) = Compress(Fixtures.ResNet, ("Codebook", "16"), ("CodebookMethod", "product"), ("CodebookConvVector", "kernel"));
        AssertConvVectors(model, context, "one 3×3 kernel, 9 inputs", 9, 8);
        AssertCountsSeeThrough(model, Fixtures.ResNet);
        Assert.AreEqual(Fixtures.Outputs(model, 64).Data.Length, Fixtures.Outputs(OnnxModel.Load(Fixtures.ResNet), 64).Data.Length);
    }

    /// <summary>Every 3×3 conv shares vectors of the given shape: a [k, d] table, the note naming what a vector holds.</summary>
    private static void AssertConvVectors(OnnxModel model, CompressionContext context, string holds, int d, int count)
    {
        var convs = Records(context).Values.Where(r => r.Op == "Conv" && r.Shape is [_, > 1, 3, 3]).ToList();
        Assert.AreEqual(count, convs.Count, "3×3 convs with more than one input channel");
        Assert.IsTrue(convs.All(r => r.Note!.Contains(holds, StringComparison.Ordinal)), string.Join("\n", convs.Select(r => r.Note)));
        var graph = new OnnxGraph(model.Graph);
        var tables = graph.Nodes.Where(n => n.OpType == "Gather").Select(n => graph.Initializer(n.Input[0])!.Dims.ToArray()).ToList();
        Assert.IsTrue(tables.Count(t => t is [_, var w] && w == d) >= convs.Count, string.Join(" ", tables.Select(t => string.Join("x", t))));
    }

    [TestMethod]
    public void WithPruning_ProductAndResidualKeepEveryZeroThatTheirFormCan()
    {
        (string, string)[] prune = [("Sparsity", "0.8"), ("PruneMethod", "magnitude"), ("PruneScope", "layer"), ("SparseStorage", "false")];
        var pruned = Compress(Fixtures.Mlp, prune).Model;
        var prunedOutputs = Fixtures.Outputs(pruned, 512).Data;
        foreach (var method in new[] { "residual", "product" })
        {
            var file = SmallLayers($"\"Codebook\": 16, \"CodebookMethod\": \"{method}\"");
            var (shared, context) = Compress(Fixtures.Mlp, [.. prune, ("PolicyFile", file)]);
            File.Delete(file);
            var hidden = Records(context)["/hidden.1/Gemm"];
            // Residual keeps every zero (entry 0 in both stages); product keeps the all-zero vectors.
            Assert.IsTrue(hidden.Sparsity > (method == "residual" ? 0.79 : 0.3), $"{method}: sparsity {hidden.Sparsity}");
            // 16 shared values twice keep the pruned model's accuracy; 16 shared vectors of 4 (1 bit a weight) do not.
            if (method == "residual") Assert.IsTrue(Fixtures.Accuracy(shared) >= Fixtures.Accuracy(pruned) - 0.01, method);
            Assert.AreEqual(prunedOutputs.Length, Fixtures.Outputs(shared, 512).Data.Length);
        }
    }

    [TestMethod]
    public void EveryMethod_IsByteIdenticalRunToRun()
    {
        foreach (var method in new[] { "product", "residual", "scalar" })
        {
            var file = SmallLayers($"\"Codebook\": {(method == "product" ? 64 : 8)}, \"CodebookMethod\": \"{method}\"");
            try
            {
                var (first, context) = Compress(Fixtures.Mlp, ("PolicyFile", file));
                Assert.AreEqual(2, Records(context).Count, method);
                CollectionAssert.AreEqual(first.ToBytes(), Compress(Fixtures.Mlp, ("PolicyFile", file)).Model.ToBytes(), method);
            }
            finally { File.Delete(file); }
        }
    }

    /// <summary>Reports and inspect count every original weight through the lookups, in its own shape.</summary>
    private static void AssertCountsSeeThrough(OnnxModel model, string originalPath)
    {
        using var original = OnnxModel.Load(originalPath);
        var before = ModelWeights.Find(original);
        var after = ModelWeights.Find(model);
        Assert.AreEqual(ModelWeights.Parameters(original), ModelWeights.Parameters(model));
        foreach (var b in before.Where(w => w.Dims is { Length: >= 2 }))
            CollectionAssert.AreEqual(b.Dims, after.Single(w => w.Value == b.Value).Dims, b.Value);
    }

    private static void AssertFoldsAway(OnnxModel model)
    {
        var path = Path.Combine(Path.GetTempPath(), $"codebook-method-{Guid.NewGuid():N}.onnx");
        try
        {
            using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_EXTENDED, OptimizedModelFilePath = path })
            using (new InferenceSession(model.ToBytes(), options)) { }
            using var optimized = OnnxModel.Load(path);
            var ops = optimized.Graph.Node.Select(n => n.OpType).ToList();
            Assert.IsFalse(ops.Any(op => op is "Gather" or "Cast" or "Transpose" or "Reshape" or "Add"), string.Join(" ", ops));
        }
        finally { File.Delete(path); }
    }
}

/// <summary>Product quantization's k-means on vectors whose answer is known.</summary>
[TestClass]
public sealed class ProductKMeansTests
{
    [TestMethod]
    public void TwoGroupsOfVectors_GetTheirMeans_AndZeroVectorsEntryZero()
    {
        // Rows of 4 inputs, vectors of 2: around (1, 1) and (−1, 2), plus all-zero vectors.
        float[] m = [1.1f, 0.9f, -1f, 2.1f, 0.9f, 1.1f, 0f, 0f, -1f, 1.9f, 1f, 1f];
        var result = ProductKMeans.Fit(m, 3, 4, 2, 3, 50, keepZero: true, [1, 1, 1, 1], seed: 0);
        Assert.AreEqual(2, result.Dimension);
        CollectionAssert.AreEqual(new[] { 0f, 0f }, result.Values[..2]);
        var decoded = result.Indices.SelectMany(i => result.Values.Skip(i * 2).Take(2)).ToArray();
        for (var i = 0; i < m.Length; i++) Assert.AreEqual(m[i], decoded[i], 0.11f, $"[{i}]");
        Assert.AreEqual(0, result.Indices[3], "the all-zero vector");
        Assert.IsTrue(result.Converged);
    }

    [TestMethod]
    public void Importance_WeighsTheScalarCentroids()
    {
        float[] w = [0f, 1f, 10f, 11f];
        var plain = ScalarKMeans.Fit(w, 2, 50, keepZero: false);
        var weighted = ScalarKMeans.Fit(w, 2, 50, keepZero: false, importance: [3, 1, 1, 1]);
        Assert.AreEqual(0.5f, plain.Values[0], 1e-6f);
        Assert.AreEqual(0.25f, weighted.Values[0], 1e-6f);
        Assert.AreEqual(10.5f, weighted.Values[1], 1e-6f);
    }
}
