using Microsoft.ML.OnnxRuntime;
using ModelCompression.Graph;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.WeightSharing;
using static ModelCompression.Tests.Pruning.PruningHelpers;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.Tests.WeightSharing;

/// <summary>
/// Weight sharing on the real fixtures, run by ONNX Runtime: accuracy at 16 and 4 shared values per layer, file
/// size, exact zeros with pruning, determinism, per-layer overrides, and the decoder folding away at load.
/// </summary>
[TestClass]
public sealed class CodebookTests
{
    private static double _mlpFp32, _mlp16, _mlp4, _resNetFp32, _resNet16, _resNet4;
    private static OnnxModel _mlpShared16 = null!;
    private static CompressionContext _mlpContext16 = null!;

    [ClassInitialize]
    public static void Share(TestContext _)
    {
        using var mlp = OnnxModel.Load(Fixtures.Mlp);
        using var resNet = OnnxModel.Load(Fixtures.ResNet);
        _mlpFp32 = Fixtures.Accuracy(mlp);
        _resNetFp32 = Fixtures.Accuracy(resNet);
        (_mlpShared16, _mlpContext16) = Compress(Fixtures.Mlp, ("Codebook", "16"));
        _mlp16 = Fixtures.Accuracy(_mlpShared16);
        _mlp4 = Fixtures.Accuracy(Compress(Fixtures.Mlp, ("Codebook", "4")).Model);
        _resNet16 = Fixtures.Accuracy(Compress(Fixtures.ResNet, ("Codebook", "16")).Model);
        _resNet4 = Fixtures.Accuracy(Compress(Fixtures.ResNet, ("Codebook", "4")).Model);
        Console.WriteLine($"MLP fp32 {_mlpFp32:P2}, k=16 {_mlp16:P2}, k=4 {_mlp4:P2}; ResNet fp32 {_resNetFp32:P2}, k=16 {_resNet16:P2}, k=4 {_resNet4:P2}");
    }

    private static long SavedBytes(OnnxModel model)
    {
        var path = Path.Combine(Path.GetTempPath(), $"codebook-{Guid.NewGuid():N}.onnx");
        try
        {
            model.Save(path);
            return OnnxModel.FileSizeWithExternalData(path);
        }
        finally { File.Delete(path); }
    }

    /// <summary>The dense weight a codebook lookup writes: codebook[indices], read from the initializers.</summary>
    private static float[] Decode(OnnxModel model, string weight)
    {
        var graph = new OnnxGraph(model.Graph);
        var gather = graph.Producer(weight);
        Assert.AreEqual("Gather", gather?.OpType, weight);
        var codebook = model.ReadFloats(graph.Initializer(gather!.Input[0])!);
        return Indices(model, graph.Producer(gather.Input[1])!.Input[0]).Select(i => codebook[i]).ToArray();
    }

    /// <summary>
    /// The indices a Cast reads: a uint8 initializer, or Reshape(BitShift(BitShift(packed, [4, 0] left), 4 right))
    /// unpacked here the way the format says (index j in byte j mod B, low nibble first), independently of the pass.
    /// </summary>
    private static byte[] Indices(OnnxModel model, string value)
    {
        var graph = new OnnxGraph(model.Graph);
        if (graph.Initializer(value) is { } stored) return model.GetTensor(stored).RawBytes.ToArray();
        var reshape = graph.Producer(value)!;
        var right = graph.Producer(reshape.Input[0])!;
        var left = graph.Producer(right.Input[0])!;
        Assert.AreEqual("Reshape BitShift BitShift", $"{reshape.OpType} {right.OpType} {left.OpType}");
        var packed = model.GetTensor(graph.Initializer(left.Input[0])!).RawBytes.ToArray();
        return packed.Select(b => (byte)(b & 0x0F)).Concat(packed.Select(b => (byte)(b >> 4))).ToArray();
    }

    /// <summary>
    /// The model with each codebook weight written out dense from its decoded indices: what any stored form of the
    /// indices must compute. The lookup chain's nodes are left in place but unused (ORT drops them).
    /// </summary>
    private static OnnxModel Densified(OnnxModel model)
    {
        var copy = OnnxModel.Load(new MemoryStream(model.ToBytes()));
        var graph = new OnnxGraph(copy.Graph);
        foreach (var gather in graph.Nodes.Where(n => n.OpType == "Gather" && n.Output[0].EndsWith(".weight", StringComparison.Ordinal)).ToList())
        {
            var weight = gather.Output[0];
            var dims = ModelWeights.Find(copy).Single(w => w.Value == weight).Dims!;
            var dense = Decode(copy, weight);
            graph.RemoveNode(gather);
            graph.SetInitializer(Tensors.FromFloats(weight, dims, dense));
        }
        return copy;
    }

    [TestMethod]
    public void Codebook16_StaysWithinOnePointOfFp32_OnBothFixtures()
    {
        Assert.IsTrue(_mlp16 >= _mlpFp32 - 0.01, $"MLP: k=16 {_mlp16:P2} vs fp32 {_mlpFp32:P2}");
        Assert.IsTrue(_resNet16 >= _resNetFp32 - 0.01, $"ResNet: k=16 {_resNet16:P2} vs fp32 {_resNetFp32:P2}");
    }

    private static readonly Lazy<(OnnxModel Model, CompressionContext Context)> Nearest16 = new(() => Compress(Fixtures.Mlp, ("Codebook", "16"), ("CodebookAssignment", "nearest"), ("CodebookRate", "10")));

    /// <summary>Mean squared error of the MLP's logits against the fp32 model's on the calibration samples, and ‖mean(Δlogits)‖.</summary>
    private static (double Mse, double MeanShift) CalibrationError(OnnxModel model)
    {
        using var original = OnnxModel.Load(Fixtures.Mlp);
        var reference = ModelCompression.Evaluation.Predictions.Run(original, Fixtures.CalibrationData.Take(512), Fixtures.Cpu, 256);
        var outputs = ModelCompression.Evaluation.Predictions.Run(model, Fixtures.CalibrationData.Take(512), Fixtures.Cpu, 256);
        var classes = (int)reference.Shape[^1];
        var shift = new double[classes];
        double squared = 0;
        for (var i = 0; i < reference.Data.Length; i++)
        {
            double d = outputs.Data[i] - reference.Data[i];
            squared += d * d;
            shift[i % classes] += d;
        }
        var rows = reference.Data.Length / classes;
        return (squared / reference.Data.Length, Math.Sqrt(shift.Sum(x => x / rows * (x / rows))));
    }

    [TestMethod]
    public void WithCalibrationData_ErrorCompensatedAssignment_BeatsNearestValue_OnTheOutputs()
    {
        // Same k-means codebooks, same index prices (the rate gptq gets by default); only the assignment (and the
        // refit it allows) differs.
        var (nearest, nearestContext) = Nearest16.Value;
        var gptq = CalibrationError(_mlpShared16);
        var plain = CalibrationError(nearest);
        Console.WriteLine($"logit MSE on calibration data: gptq {gptq.Mse:G4} (mean shift {gptq.MeanShift:G4}), nearest {plain.Mse:G4} (mean shift {plain.MeanShift:G4})");
        Assert.IsTrue(gptq.Mse < 0.8 * plain.Mse, $"gptq {gptq.Mse:G4} vs nearest {plain.Mse:G4}");
        var records = _mlpContext16.Records.Where(r => r.Technique == "codebook").ToList();
        Assert.AreEqual(3, records.Count(r => r.Note!.Contains("; gptq (nearest: ", StringComparison.Ordinal)), string.Join("\n", records.Select(r => r.Note)));
        Assert.IsTrue(nearestContext.Records.Where(r => r.Technique == "codebook").All(r => r.Note!.Contains("; nearest: ", StringComparison.Ordinal)));
    }

    [TestMethod]
    public void WithCalibrationData_TheBiasesAbsorbTheMeanShift()
    {
        // The error-compensated assignment sets each Gemm's bias to b + (W − Ŵ)·E[x]: the mean of the logits moves
        // less than with the biases left as they were.
        var (nearest, _) = Nearest16.Value;
        var gptq = CalibrationError(_mlpShared16);
        var plain = CalibrationError(nearest);
        Assert.IsTrue(gptq.MeanShift < 0.5 * plain.MeanShift, $"‖mean Δlogits‖: gptq {gptq.MeanShift:G4}, nearest {plain.MeanShift:G4}");
        using var original = OnnxModel.Load(Fixtures.Mlp);
        foreach (var layer in WeightedLayer.FindAll(new OnnxGraph(original.Graph)))
        {
            var before = original.ReadFloats(new OnnxGraph(original.Graph).Initializer(layer.BiasName!)!);
            var after = _mlpShared16.ReadFloats(new OnnxGraph(_mlpShared16.Graph).Initializer(layer.BiasName!)!);
            CollectionAssert.AreNotEqual(before, after, layer.Name);
            Assert.IsTrue(_mlpContext16.Records.Single(r => r.Technique == "codebook" && r.Layer == layer.Name).Note!.Contains("bias corrected", StringComparison.Ordinal));
        }
    }

    [TestMethod]
    public void Codebook4_IsMeasurablyWorseThan16()
    {
        Assert.IsTrue(_mlp4 < _mlp16 - 0.005, $"MLP: k=4 {_mlp4:P2} vs k=16 {_mlp16:P2}");
        Assert.IsTrue(_resNet4 < _resNet16 - 0.005, $"ResNet: k=4 {_resNet4:P2} vs k=16 {_resNet16:P2}");
    }

    [TestMethod]
    public void Codebook16_StoresEveryLayerAsUint8Indices_AboutAQuarterOfTheFile()
    {
        var fp32 = new FileInfo(Fixtures.Mlp).Length;
        var bytes = SavedBytes(_mlpShared16);
        Assert.IsTrue(bytes < 0.26 * fp32, $"{bytes} bytes = {100.0 * bytes / fp32:0.00} % of {fp32}");
        var records = _mlpContext16.Records.Where(r => r.Technique == "codebook").ToList();
        Assert.AreEqual(3, records.Count);
        foreach (var r in records)
        {
            Assert.AreEqual(4, r.Bits, r.Layer);
            Assert.IsTrue(r.ReconstructionError is > 0 and < 0.15, $"{r.Layer}: {r.ReconstructionError}");
        }
        foreach (var layer in new[] { "hidden.0.weight", "hidden.1.weight", "out.weight" })
            Assert.IsTrue(Decode(_mlpShared16, layer).Distinct().Count() <= 16, layer);
    }

    [TestMethod]
    public void ParameterCounts_FollowTheLookup_StoredAsUint8()
    {
        using var original = OnnxModel.Load(Fixtures.Mlp);
        var before = ModelWeights.Find(original);
        var after = ModelWeights.Find(_mlpShared16);
        Assert.AreEqual(ModelWeights.Parameters(original), ModelWeights.Parameters(_mlpShared16));
        foreach (var (b, a) in before.Zip(after))
        {
            Assert.AreEqual(b.Value, a.Value);
            CollectionAssert.AreEqual(b.Dims, a.Dims, a.Value);
            Assert.AreEqual(b.NonZeros, a.NonZeros, a.Value);
        }
        Assert.AreEqual(3, after.Count(w => w.StoredType == DataType.Uint8), "the three weights; biases stay float");
    }

    [TestMethod]
    public void TheLookup_IsFoldedAwayWhenOnnxRuntimeLoadsTheModel()
    {
        var path = Path.Combine(Path.GetTempPath(), $"codebook-optimized-{Guid.NewGuid():N}.onnx");
        try
        {
            using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_EXTENDED, OptimizedModelFilePath = path })
            using (new InferenceSession(_mlpShared16.ToBytes(), options)) { }
            using var optimized = OnnxModel.Load(path);
            var ops = optimized.Graph.Node.Select(n => n.OpType).ToList();
            Assert.IsFalse(ops.Any(op => op is "Gather" or "Cast" or "BitShift"), string.Join(" ", ops));
        }
        finally { File.Delete(path); }
    }

    [TestMethod]
    public void WithPruning_ExactZerosStayZero_AndNoOtherWeightBecomesZero()
    {
        (string, string)[] prune = [("Sparsity", "0.8"), ("PruneMethod", "magnitude"), ("PruneScope", "layer"), ("SparseStorage", "false")];
        var pruned = Compress(Fixtures.Mlp, prune).Model;
        var (shared, context) = Compress(Fixtures.Mlp, [.. prune, ("Codebook", "16")]);
        foreach (var layer in new[] { "hidden.0.weight", "hidden.1.weight" })
        {
            var before = pruned.ReadFloats(new OnnxGraph(pruned.Graph).Initializer(layer)!);
            var after = Decode(shared, layer);
            Assert.IsTrue(before.Count(x => x == 0) > 0.7 * before.Length, layer);
            for (var i = 0; i < before.Length; i++)
                Assert.AreEqual(before[i] == 0, after[i] == 0, $"{layer}[{i}]: {before[i]} → {after[i]}");
        }
        StringAssert.Contains(context.Records.First(r => r.Technique == "codebook" && r.Layer == "/hidden.0/Gemm").Note, "zeros kept exact as entry 0");
        var accuracy = Fixtures.Accuracy(shared);
        Assert.IsTrue(accuracy >= Fixtures.Accuracy(pruned) - 0.01, $"pruned + k=16 {accuracy:P2}");
    }

    [TestMethod]
    public void WithPruningAndStorage_TheIndicesAreStoredSparse_AndTheCountsStillSeeThrough()
    {
        (string, string)[] settings = [("Sparsity", "0.8"), ("PruneMethod", "magnitude"), ("PruneScope", "layer"), ("Codebook", "16")];
        var (stored, context) = Compress(Fixtures.Mlp, settings);
        var (dense, _) = Compress(Fixtures.Mlp, [.. settings, ("SparseStorage", "false")]);
        Assert.IsTrue(context.Records.Any(r => r.Technique == "sparse-storage" && r.Note?.Contains("codebook_indices", StringComparison.Ordinal) == true),
            string.Join("\n", context.Records.Select(r => $"{r.Technique} {r.Layer}")));
        CollectionAssert.AreEqual(Fixtures.Outputs(dense, 512).Data, Fixtures.Outputs(stored, 512).Data);
        var fp32 = new FileInfo(Fixtures.Mlp).Length;
        // The dense run packs its indices in 4 bits where Brotli codes them smaller; storage still saves more than a third.
        Assert.IsTrue(SavedBytes(stored) < 0.65 * SavedBytes(dense), $"{SavedBytes(stored)} vs {SavedBytes(dense)} bytes (fp32 {fp32})");
        var hidden = ModelWeights.Find(stored).Single(w => w.Value == "hidden.0.weight");
        Assert.AreEqual(784L * 512, hidden.Elements);
        Assert.AreEqual(0.2, (double)hidden.NonZeros! / hidden.Elements, 0.01);
    }

    [TestMethod]
    public void PackedFourBitIndices_RunInOnnxRuntime_WithTheOutputsOfTheDenseLookup()
    {
        // Dense layers with 16 values: each layer keeps the form Brotli codes smaller, and says which.
        var records = _mlpContext16.Records.Where(r => r.Technique == "codebook").ToList();
        Assert.IsTrue(records.All(r => r.Note!.Contains("Brotli uint8 ", StringComparison.Ordinal) && r.Note.Contains(" vs packed 4-bit ", StringComparison.Ordinal)),
            string.Join("\n", records.Select(r => r.Note)));
        var packed = records.Where(r => r.Note!.Contains("; packed 4-bit indices", StringComparison.Ordinal)).ToList();
        Assert.IsTrue(packed.Count > 0, "some layer of the dense MLP packs its indices: " + string.Join("\n", records.Select(r => r.Note)));
        Assert.IsTrue(_mlpShared16.Graph.Node.Any(n => n.OpType == "BitShift"));
        // Bit for bit what the uint8 form computes: the dense weights decoded from the stored indices.
        CollectionAssert.AreEqual(Fixtures.Outputs(Densified(_mlpShared16), 512).Data, Fixtures.Outputs(_mlpShared16, 512).Data);
        // Four bits per index in the file, and the counts still see through the unpacking.
        var hidden = ModelWeights.Find(_mlpShared16).Single(w => w.Value == "hidden.0.weight");
        Assert.AreEqual(784L * 512, hidden.Elements);
        CollectionAssert.AreEqual(new long[] { 512, 784 }, hidden.Dims);
    }

    [TestMethod]
    public void WithPruningAndStorage_IndicesStayUint8_SoStorageCanSkipTheZeros()
    {
        var (_, context) = Compress(Fixtures.Mlp, ("Sparsity", "0.8"), ("PruneMethod", "magnitude"), ("PruneScope", "layer"), ("Codebook", "16"));
        var hidden = context.Records.First(r => r.Technique == "codebook" && r.Layer == "/hidden.0/Gemm").Note!;
        StringAssert.Contains(hidden, "uint8 indices + float codebook (kept uint8 for sparse storage)");
    }

    [TestMethod]
    public void WholePipeline_IsByteIdenticalRunToRun()
    {
        (string, string)[] settings = [("Codebook", "16"), ("Sparsity", "0.5"), ("PruneMethod", "magnitude")];
        CollectionAssert.AreEqual(Compress(Fixtures.ResNet, settings).Model.ToBytes(), Compress(Fixtures.ResNet, settings).Model.ToBytes());
        CollectionAssert.AreEqual(Compress(Fixtures.Mlp, ("Codebook", "16")).Model.ToBytes(), _mlpShared16.ToBytes());
    }

    [TestMethod]
    public void PolicyFileOverride_GivesOneLayerItsOwnCodebook_AndExcludesAnother()
    {
        var file = Path.Combine(Path.GetTempPath(), $"codebook-policy-{Guid.NewGuid():N}.json");
        File.WriteAllText(file, """
            { "layers": [
                { "match": "/hidden.0/*", "Codebook": 4 },
                { "match": "/out/*", "Excluded": true } ] }
            """);
        try
        {
            var (model, context) = Compress(Fixtures.Mlp, ("Codebook", "32"), ("PolicyFile", file));
            var records = context.Records.Where(r => r.Technique == "codebook").ToDictionary(r => r.Layer);
            Assert.AreEqual(2, records["/hidden.0/Gemm"].Bits);
            Assert.AreEqual(5, records["/hidden.1/Gemm"].Bits);
            StringAssert.Contains(records["/out/Gemm"].Note, "excluded by policy");
            Assert.AreEqual(4, Decode(model, "hidden.0.weight").Distinct().Count());
            // Entropy-constrained clustering (CodebookRate) may leave entries no weight is worth paying for.
            var distinct = Decode(model, "hidden.1.weight").Distinct().Count();
            Assert.IsTrue(distinct is > 16 and <= 32, $"{distinct} shared values");
            Assert.IsNotNull(new OnnxGraph(model.Graph).Initializer("out.weight"), "the excluded head stays a float initializer");

            // A policy file alone can ask for the technique, for the layers it names.
            var (only, onlyContext) = Compress(Fixtures.Mlp, ("PolicyFile", file));
            Assert.AreEqual(1, onlyContext.Records.Count(r => r.Technique == "codebook" && r.Bits == 2));
            Assert.AreEqual(2, new OnnxGraph(only.Graph).Nodes.Count(n => n.OpType == "Gemm" && new OnnxGraph(only.Graph).Initializer(n.Input[1]) is not null));
        }
        finally { File.Delete(file); }
    }

    [TestMethod]
    public void LayersQuantizedToInt8_AreLeftAsTheyAre_WithTheReason()
    {
        var (model, context) = Compress(Fixtures.Mlp, ("Quantize", "int8"), ("Codebook", "16"));
        var records = context.Records.Where(r => r.Technique == "codebook").ToList();
        Assert.AreEqual(3, records.Count);
        Assert.IsTrue(records.All(r => r.Note!.Contains("already quantized", StringComparison.Ordinal)), string.Join("\n", records.Select(r => r.Note)));
        Assert.IsFalse(model.Graph.Node.Any(n => n.OpType == "Gather"));
        Assert.IsTrue(context.Diagnostics.Any(d => d.Code == "CM0303"), "nothing was shared: say so");
    }

    [TestMethod]
    public void DynamicInt8AndCodebook_Compose_ConvolutionsShareValues()
    {
        // int8-dynamic leaves convolutions float (ConvInteger is slow); the codebook then shrinks them.
        var (model, context) = Compress(Fixtures.ResNet, ("Quantize", "int8-dynamic"), ("Codebook", "16"));
        var shared = context.Records.Where(r => r.Technique == "codebook" && r.Bits == 4).ToList();
        Assert.AreEqual(9, shared.Count(r => r.Op == "Conv"), string.Join("\n", context.Records.Select(r => $"{r.Technique} {r.Layer} {r.Note}")));
        Assert.IsTrue(Fixtures.Accuracy(model) >= _resNetFp32 - 0.015, $"{Fixtures.Accuracy(model):P2} vs fp32 {_resNetFp32:P2}");
    }
}

/// <summary>The k-means itself, on values whose answer is known.</summary>
[TestClass]
public sealed class ScalarKMeansTests
{
    [TestMethod]
    public void TwoSeparatedGroups_GetTheirMeans()
    {
        float[] w = [-1.1f, -0.9f, -1.0f, 2.0f, 2.2f, 1.8f, 2.0f];
        var result = ScalarKMeans.Fit(w, 2, 20, keepZero: false);
        Assert.AreEqual(2, result.Values.Length);
        Assert.AreEqual(-1.0f, result.Values[0], 1e-6f);
        Assert.AreEqual(2.0f, result.Values[1], 1e-6f);
        CollectionAssert.AreEqual(new byte[] { 0, 0, 0, 1, 1, 1, 1 }, result.Indices);
        Assert.IsTrue(result.Converged);
    }

    [TestMethod]
    public void FewerDistinctValuesThanEntries_AreReproducedExactly_WithOnlyTheEntriesUsed()
    {
        float[] w = [0.5f, -0.25f, 0.5f, 3f, -0.25f, 3f, 3f];
        var result = ScalarKMeans.Fit(w, 16, 100, keepZero: false);
        CollectionAssert.AreEqual(new[] { -0.25f, 0.5f, 3f }, result.Values);
        CollectionAssert.AreEqual(w, result.Indices.Select(i => result.Values[i]).ToArray());
    }

    [TestMethod]
    public void KeepZero_PinsEntryZero_AndSharesTheRestAmongTheOthers()
    {
        float[] w = [0f, 0.001f, 0f, -0.5f, 0.6f, 0f, -0.52f, 0.58f];
        var result = ScalarKMeans.Fit(w, 3, 20, keepZero: true);
        Assert.AreEqual(0f, result.Values[0]);
        var decoded = result.Indices.Select(i => result.Values[i]).ToArray();
        for (var i = 0; i < w.Length; i++) Assert.AreEqual(w[i] == 0, decoded[i] == 0, $"[{i}] {w[i]} → {decoded[i]}");
    }

    [TestMethod]
    public void IterationCap_IsHonoured_AndSaysItDidNotSettle()
    {
        var random = new Random(7);
        var w = Enumerable.Range(0, 5000).Select(_ => (float)(random.NextDouble() * random.NextDouble() - 0.3)).ToArray();
        var capped = ScalarKMeans.Fit(w, 64, 1, keepZero: false);
        Assert.AreEqual(1, capped.Iterations);
        Assert.IsFalse(capped.Converged);
        var full = ScalarKMeans.Fit(w, 64, 100, keepZero: false);
        Assert.IsTrue(Error(w, full) < Error(w, capped), $"{Error(w, full)} vs {Error(w, capped)}");
    }

    private static double Error(float[] w, SharedWeights s) => w.Select((x, i) => Math.Pow(x - s.Values[s.Indices[i]], 2)).Sum();
}
