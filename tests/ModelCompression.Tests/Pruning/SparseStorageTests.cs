using Microsoft.ML.OnnxRuntime;
using ModelCompression.Onnx;
using ModelCompression.Passes;
using ModelCompression.Pruning;
using static ModelCompression.Tests.Pruning.PruningHelpers;

namespace ModelCompression.Tests.Pruning;

/// <summary>Sparse storage: smaller files that ONNX Runtime loads back to bit-identical outputs, fp32 and int8 weights alike.</summary>
[TestClass]
public sealed class SparseStorageTests
{
    private static long _fp32Bytes;
    private static OnnxModel _dense80 = null!;
    private static OnnxModel _stored80 = null!;
    private static CompressionContext _storage80 = null!;
    private static OnnxModel _denseInt8 = null!;
    private static OnnxModel _storedInt8 = null!;

    [ClassInitialize]
    public static void Store(TestContext _)
    {
        _fp32Bytes = new FileInfo(Fixtures.Mlp).Length;
        _dense80 = Compress(Fixtures.Mlp, ("Sparsity", "0.8"), ("PruneMethod", "sparsegpt"), ("SparseStorage", "false")).Model;
        (_stored80, _storage80) = StoreSparse(_dense80);
        // The product's int8: static QDQ, calibrated; storage then has int8 weights, scales and biases to pack.
        _denseInt8 = Compress(Fixtures.Mlp, ("Sparsity", "0.8"), ("PruneMethod", "sparsegpt"), ("Quantize", "int8"), ("SparseStorage", "false")).Model;
        _storedInt8 = StoreSparse(_denseInt8).Model;
    }

    private static (OnnxModel Model, CompressionContext Context) StoreSparse(OnnxModel dense)
    {
        var model = dense.Clone();
        var context = new CompressionContext(model, Fixtures.Policy());
        new SparseStoragePass().Apply(context);
        return (model, context);
    }

    private static long SavedBytes(OnnxModel model)
    {
        var path = Path.Combine(Path.GetTempPath(), $"sparse-storage-{Guid.NewGuid():N}.onnx");
        try
        {
            model.Save(path);
            return OnnxModel.FileSizeWithExternalData(path);
        }
        finally { File.Delete(path); }
    }

    [TestMethod]
    public void Fp32_80PercentSparse_IsSmallerOnDiskAndBitIdenticalInOnnxRuntime()
    {
        Assert.IsTrue(SavedBytes(_stored80) < 0.3 * _fp32Bytes, $"{SavedBytes(_stored80)} bytes of {_fp32Bytes}");
        CollectionAssert.AreEqual(Fixtures.Outputs(_dense80, 512).Data, Fixtures.Outputs(_stored80, 512).Data);
        Assert.AreEqual(2, _storage80.Records.Count, "both pruned hidden layers are stored sparse; the dense head is not");
    }

    [TestMethod]
    public void Int8_80PercentSparse_TakesAtMost8PercentOfTheFp32FileAndIsBitIdentical()
    {
        var bytes = SavedBytes(_storedInt8);
        Assert.IsTrue(bytes <= 0.08 * _fp32Bytes, $"{bytes} bytes = {100.0 * bytes / _fp32Bytes:0.00} % of {_fp32Bytes}");
        CollectionAssert.AreEqual(Fixtures.Outputs(_denseInt8, 512).Data, Fixtures.Outputs(_storedInt8, 512).Data);
    }

    [TestMethod]
    public void Int8_80PercentSparse_StillRunsAsQGemmAfterTheDecodersFold()
    {
        var batch = Fixtures.ValidationData.BindTo(ModelCompression.Data.ModelInput.FromGraph(_storedInt8.Graph)).Batches(64).First();
        var ops = ModelCompression.Runtime.KernelProfiler.Profile(_storedInt8.ToBytes(), batch, Fixtures.Cpu, runs: 3).Select(k => k.OpType).ToList();
        Assert.AreEqual(3, ops.Count(op => op == "QGemm"), string.Join(", ", ops));
        Assert.IsFalse(ops.Any(op => op is "Gemm" or "DequantizeLinear" or "Cast" or "ScatterND"), string.Join(", ", ops));
    }

    [TestMethod]
    public void SparseInt8_WholePipeline_IsByteIdenticalRunToRun()
    {
        (string, string)[] settings = [("Sparsity", "0.8"), ("PruneMethod", "sparsegpt"), ("Quantize", "int8")];
        var first = Compress(Fixtures.Mlp, settings).Model;
        var second = Compress(Fixtures.Mlp, settings).Model;
        CollectionAssert.AreEqual(first.ToBytes(), second.ToBytes());
        CollectionAssert.AreEqual(_storedInt8.ToBytes(), first.ToBytes(), "storage in the pipeline equals storage applied after it");
    }

    [TestMethod]
    public void Int8WeightScales_AreStoredAsExactFloat16()
    {
        var scales = _storedInt8.Graph.Initializer.Where(t => t.DataType == (int)Onnx.Protobuf.TensorProto.Types.DataType.Float16).ToList();
        Assert.AreEqual(2, scales.Count, "the two pruned hidden layers' per-channel scales (the 10-channel head's are too small to gain)");
        Assert.AreEqual(2, _storedInt8.Graph.Node.Count(n => n.OpType == "Cast" && n.Output[0].EndsWith("weight_scale", StringComparison.Ordinal)));
    }

    [TestMethod]
    public void Decoders_AreFoldedAwayWhenOnnxRuntimeLoadsTheModel()
    {
        var path = Path.Combine(Path.GetTempPath(), $"sparse-storage-optimized-{Guid.NewGuid():N}.onnx");
        try
        {
            using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_EXTENDED, OptimizedModelFilePath = path })
            using (new InferenceSession(_stored80.ToBytes(), options)) { }
            using var optimized = OnnxModel.Load(path);
            var ops = optimized.Graph.Node.Select(n => n.OpType).ToList();
            Assert.IsFalse(ops.Any(op => op is "ScatterND" or "CumSum" or "BitShift" or "Gather"), string.Join(" ", ops));
        }
        finally { File.Delete(path); }
    }

    [TestMethod]
    public void VerySparseSmallTensor_IsStoredAsACooSparseInitializer()
    {
        var model = OnnxModel.Load(Fixtures.Mlp);
        var graph = new OnnxGraph(model.Graph);
        var head = graph.Initializer("out.weight")!;
        var w = model.ReadFloats(head);
        for (var i = 0; i < w.Length; i++) if (i % 97 != 0) w[i] = 0;
        graph.SetInitializer(Tensors.FromFloats("out.weight", head.Dims.ToArray(), w));
        var (stored, _) = StoreSparse(model);
        var sparse = stored.Graph.SparseInitializer.Single();
        Assert.AreEqual("out.weight", sparse.Values.Name);
        Assert.AreEqual((int)Onnx.Protobuf.TensorProto.Types.DataType.Int64, sparse.Indices.DataType, "the ONNX checker accepts int64 indices only");
        CollectionAssert.AreEqual(Fixtures.Outputs(model, 256).Data, Fixtures.Outputs(stored, 256).Data);
    }

    [TestMethod]
    public void LargeModel_KeepsWeightsDenseThatGapCodesWouldStore_AndSaysSo()
    {
        // ONNX Runtime folds gap codes at load through int64 intermediates (≈ 10× the model in memory): a large
        // model keeps those weights dense, with a CM0302 warning; the exact float16 scales still go.
        var model = _denseInt8.Clone();
        var context = new CompressionContext(model, Fixtures.Policy()) { LargeModel = true };
        new SparseStoragePass().Apply(context);
        Assert.IsFalse(model.Graph.Node.Any(n => n.OpType == "ScatterND"), "no gap-code decoders");
        Assert.IsTrue(_storedInt8.Graph.Node.Any(n => n.OpType == "ScatterND"), "the same model not large has them");
        var warning = context.Diagnostics.Single(d => d.Code == Diagnostics.DiagnosticCodes.LayerSkipped);
        StringAssert.Contains(warning.Message, "kept dense");
        Assert.IsTrue(model.Graph.Initializer.Any(t => t.DataType == (int)Onnx.Protobuf.TensorProto.Types.DataType.Float16), "float16 scales are not decoded by folding int64s");
        CollectionAssert.AreEqual(Fixtures.Outputs(_denseInt8, 256).Data, Fixtures.Outputs(model, 256).Data);
    }

    [TestMethod]
    public void DenseModel_IsLeftAsItIs()
    {
        using var model = OnnxModel.Load(Fixtures.Mlp);
        var (stored, context) = StoreSparse(model);
        Assert.AreEqual(0, context.Records.Count);
        CollectionAssert.AreEqual(model.ToBytes(), stored.ToBytes());
    }
}
