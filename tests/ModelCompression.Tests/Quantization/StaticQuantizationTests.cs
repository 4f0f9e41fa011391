using ModelCompression.Data;
using ModelCompression.Diagnostics;
using ModelCompression.Evaluation;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Policy;
using ModelCompression.Runtime;

namespace ModelCompression.Tests.Quantization;

/// <summary>Quantize=int8 on the real fixtures, checked through ONNX Runtime: accuracy, the kernels it runs, the graph.</summary>
[TestClass]
public sealed class StaticQuantizationTests
{
    private const double AllowedDrop = 0.003;

    private sealed record Result(OnnxModel Original, OnnxModel Quantized, CompressionContext Context, double OriginalAccuracy, double QuantizedAccuracy);

    private static Result Compress(string path, params (string Name, string Value)[] settings)
    {
        var original = OnnxModel.Load(path);
        var quantized = original.Clone();
        var context = new CompressionContext(quantized, Fixtures.Policy([("Quantize", "int8"), ("CalibrationData", Fixtures.Calibration), .. settings]));
        CompressionPipeline.Run(context);
        return new Result(original, quantized, context, Fixtures.Accuracy(original), Fixtures.Accuracy(quantized));
    }

    private static readonly Lazy<Result> ResNet = new(() => Compress(Fixtures.ResNet));
    private static readonly Lazy<Result> Mlp = new(() => Compress(Fixtures.Mlp));

    private static IReadOnlyList<NdArray> Batch(OnnxModel model) =>
        Fixtures.ValidationData.BindTo(ModelInput.FromGraph(model.Graph)).Batches(64).First();

    private static void AssertWithinAllowedDrop(Result result, string what)
    {
        var drop = result.OriginalAccuracy - result.QuantizedAccuracy;
        Assert.IsTrue(drop <= AllowedDrop, $"{what}: fp32 {result.OriginalAccuracy:P2}, int8 {result.QuantizedAccuracy:P2} (drop {drop * 100:0.00} pt > 0.3 pt)");
    }

    [TestMethod]
    public void ResNet_Int8_IsWithinPointThreeOfFp32Accuracy() => AssertWithinAllowedDrop(ResNet.Value, "resnet minmax");

    [TestMethod]
    public void ResNet_Int8_EveryConvButTheStemRunsAsAnInt8Kernel()
    {
        var kernels = KernelProfiler.Profile(ResNet.Value.Quantized.ToBytes(), Batch(ResNet.Value.Quantized), Fixtures.Cpu, runs: 3);
        var ops = kernels.Select(k => k.OpType).ToList();

        // The stem conv over the 1-channel image stays float (its int8 kernel is slower); the other eight run in int8.
        Assert.AreEqual(8, ops.Count(op => op == "QLinearConv"), string.Join(", ", ops));
        Assert.AreEqual(1, ops.Count(op => op is "Conv" or "FusedConv" or "ConvInteger"), $"float convolutions: {string.Join(", ", ops)}");
        Assert.AreEqual(3, ops.Count(op => op == "QLinearAdd"), string.Join(", ", ops));
        // Into NHWC after the stem's output is quantized (once for the main path, once more around the first residual
        // Add, which reads that output too) and out of it before the classifier: the float stem costs two small
        // transposes, less than its int8 kernel would (measured 4.6× its float time).
        Assert.IsTrue(ops.Count(op => op == "Transpose") <= 4, string.Join(", ", ops));
        // Weights are int8 constants fused into the kernels, never dequantized per run.
        Assert.IsTrue(ops.Count(op => op == "DequantizeLinear") <= 1, string.Join(", ", ops));
    }

    [TestMethod]
    public void ResNet_Int8_RecordsEveryLayerWithBitsAndWeightError()
    {
        var records = ResNet.Value.Context.Records.Where(r => r.Technique == "int8").ToList();
        var convs = records.Where(r => r.Op == "Conv").ToList();

        Assert.AreEqual(9, convs.Count);
        // The stem conv reads the 1-channel image: its int8 kernel runs slower than float (KeepSlowLayersFloat).
        var stem = convs.Single(r => r.Layer == "/stem/stem.0/Conv");
        Assert.AreEqual(32, stem.Bits);
        StringAssert.Contains(stem.Note, "first convolution over 1 input channel(s)");
        Assert.IsTrue(convs.Except([stem]).All(r => r.Bits == 8 && r.ReconstructionError is > 0 and < 0.02), string.Join("\n", convs));
        Assert.IsTrue(records.Any(r => r.Op == "Gemm" && r.Bits == 8));
        Assert.AreEqual(3, records.Count(r => r.Op == "Add"));
        var leftInFloat = ResNet.Value.Context.Diagnostics.Where(d => d.Code == DiagnosticCodes.LayerLeftInFloat).ToList();
        Assert.AreEqual(1, leftInFloat.Count, string.Join("\n", ResNet.Value.Context.Diagnostics));
        StringAssert.Contains(leftInFloat[0].Message, "/stem/stem.0/Conv");
    }

    [TestMethod]
    public void ResNet_Int8_StoresWeightsAsInt8()
    {
        var model = ResNet.Value.Quantized;
        var floatWeights = model.Graph.Initializer.Where(t => t.DataType == (int)TensorProto.Types.DataType.Float && t.Dims.Count >= 2).ToList();
        // Only the stem conv's 288 weights stay float (KeepSlowLayersFloat).
        Assert.AreEqual(1, floatWeights.Count, string.Join(", ", floatWeights.Select(t => t.Name)));
        Assert.AreEqual(32 * 1 * 3 * 3, Tensors.ElementCount(floatWeights[0]));
        Assert.IsTrue(model.ToBytes().Length < ResNet.Value.Original.ToBytes().Length / 3.5);
    }

    [TestMethod]
    public void ResNet_Int8_TwoRunsGiveByteIdenticalModels()
    {
        var again = ResNet.Value.Original.Clone();
        CompressionPipeline.Run(new CompressionContext(again, Fixtures.Policy(("Quantize", "int8"), ("CalibrationData", Fixtures.Calibration))));

        CollectionAssert.AreEqual(ResNet.Value.Quantized.ToBytes(), again.ToBytes());
    }

    [TestMethod]
    public void Mlp_Int8_IsWithinPointThreeOfFp32Accuracy() => AssertWithinAllowedDrop(Mlp.Value, "mlp minmax");

    [TestMethod]
    [DataRow("percentile")]
    [DataRow("entropy")]
    public void Mlp_Int8_WithHistogramCalibration_IsWithinPointThreeOfFp32Accuracy(string method)
    {
        var result = Compress(Fixtures.Mlp, ("CalibrationMethod", method));
        AssertWithinAllowedDrop(result, $"mlp {method}");
        // The histogram methods clip: the model must differ from min/max calibration.
        CollectionAssert.AreNotEqual(Mlp.Value.Quantized.ToBytes(), result.Quantized.ToBytes());
    }

    [TestMethod]
    public void Mlp_Int8_EntropyCalibration_IsDeterministic()
    {
        var first = Compress(Fixtures.Mlp, ("CalibrationMethod", "entropy")).Quantized;
        var second = Compress(Fixtures.Mlp, ("CalibrationMethod", "entropy")).Quantized;
        CollectionAssert.AreEqual(first.ToBytes(), second.ToBytes());
    }

    [TestMethod]
    public void Mlp_Int8_EveryGemmRunsAsQGemm()
    {
        var kernels = KernelProfiler.Profile(Mlp.Value.Quantized.ToBytes(), Batch(Mlp.Value.Quantized), Fixtures.Cpu, runs: 3);
        var ops = kernels.Select(k => k.OpType).ToList();

        Assert.AreEqual(3, ops.Count(op => op == "QGemm"), string.Join(", ", ops));
        Assert.IsFalse(ops.Any(op => op is "Gemm" or "FusedGemm" or "DequantizeLinear" or "Relu"), string.Join(", ", ops));
    }

    [TestMethod]
    public void Mlp_Int8_PolicyFileOverride_KeepsTheMatchedLayerInFloat()
    {
        var folder = Directory.CreateTempSubdirectory("quantization-tests-");
        try
        {
            var policyFile = Path.Combine(folder.FullName, "policy.json");
            File.WriteAllText(policyFile, """{ "layers": [ { "match": "/hidden.1/*", "Quantize": "none" } ] }""");
            var result = Compress(Fixtures.Mlp, ("PolicyFile", policyFile));
            var graph = new OnnxGraph(result.Quantized.Graph);

            var hidden1 = graph.Nodes.Single(n => n.Name == "/hidden.1/Gemm");
            Assert.AreEqual("hidden.1.weight", hidden1.Input[1]);
            Assert.AreEqual((int)TensorProto.Types.DataType.Float, graph.Initializer("hidden.1.weight")!.DataType);
            Assert.IsNull(graph.Producer(hidden1.Input[1]), "the float layer's weight must be a plain initializer");
            foreach (var name in new[] { "/hidden.0/Gemm", "/out/Gemm" })
                Assert.AreEqual("DequantizeLinear", graph.Producer(graph.Nodes.Single(n => n.Name == name).Input[1])?.OpType, name);

            var record = result.Context.Records.Single(r => r.Layer == "/hidden.1/Gemm");
            Assert.AreEqual(32, record.Bits);
            StringAssert.Contains(record.Note, "Quantize=none");
            AssertWithinAllowedDrop(result, "mlp with /hidden.1 in float");
        }
        finally
        {
            folder.Delete(recursive: true);
        }
    }

    [TestMethod]
    public void Mlp_MixedPolicy_StaticLayersAndADynamicOverride_EachPassOwnsItsLayers()
    {
        var folder = Directory.CreateTempSubdirectory("quantization-tests-");
        try
        {
            var policyFile = Path.Combine(folder.FullName, "policy.json");
            File.WriteAllText(policyFile, """{ "layers": [ { "match": "/out/*", "Quantize": "int8-dynamic" } ] }""");
            var result = Compress(Fixtures.Mlp, ("PolicyFile", policyFile));

            var records = result.Context.Records;
            Assert.AreEqual(3, records.Count, string.Join("\n", records));
            Assert.AreEqual("int8-dynamic", records.Single(r => r.Layer == "/out/Gemm").Technique);
            Assert.IsTrue(records.All(r => r.Bits == 8), string.Join("\n", records));
            Assert.AreEqual(1, result.Quantized.Graph.Node.Count(n => n.OpType == "MatMulInteger"));
            AssertWithinAllowedDrop(result, "mlp int8 + int8-dynamic head");
        }
        finally
        {
            folder.Delete(recursive: true);
        }
    }

    [TestMethod]
    public void Int8_WithoutCalibrationData_IsACodedError()
    {
        var error = Assert.ThrowsExactly<CompressionException>(() => Fixtures.Policy(("Quantize", "int8")));
        Assert.IsTrue(error.Diagnostics.Any(d => d.Code == DiagnosticCodes.MissingCalibrationData), string.Join("\n", error.Diagnostics));
    }

    [TestMethod]
    public void ResNet_Int8_OutputsStayCloseToFp32()
    {
        var reference = Fixtures.Outputs(ResNet.Value.Original);
        var candidate = Fixtures.Outputs(ResNet.Value.Quantized);
        Assert.IsTrue(Metrics.MeanCosine(reference, candidate) > 0.99, $"cosine {Metrics.MeanCosine(reference, candidate)}");
        Assert.IsTrue(Metrics.Agreement(reference, candidate) > 0.97, $"agreement {Metrics.Agreement(reference, candidate)}");
    }
}
