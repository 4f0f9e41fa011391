using ModelCompression.Diagnostics;
using ModelCompression.Graph;
using ModelCompression.Int4;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using static ModelCompression.Tests.Pruning.PruningHelpers;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.Tests.Int4;

/// <summary>
/// Quantize=int4 on the real fixtures, run by ONNX Runtime: MatMulNBits for the MLP (GPTQ vs round-to-nearest),
/// blocked int4 DequantizeLinear for the ResNet's convolutions, the stored layout decoded by the op's definition,
/// parameter counts, and determinism.
/// </summary>
[TestClass]
public sealed class Int4Tests
{
    private const int Samples = 1000;
    private static double _mlpFp32, _mlpGptq, _mlpRtn, _resNetFp32, _resNetGptq;
    private static double _gptqMse, _rtnMse;
    private static OnnxModel _gptq = null!, _rtn = null!, _resNet = null!;
    private static CompressionContext _gptqContext = null!, _resNetContext = null!;

    [ClassInitialize]
    public static void Quantize(TestContext _)
    {
        using var mlp = OnnxModel.Load(Fixtures.Mlp);
        using var resNet = OnnxModel.Load(Fixtures.ResNet);
        _mlpFp32 = Fixtures.Accuracy(mlp);
        _resNetFp32 = Fixtures.Accuracy(resNet);
        (_gptq, _gptqContext) = Compress(Fixtures.Mlp, ("Quantize", "int4"));
        _rtn = Compress(Fixtures.Mlp, ("Quantize", "int4"), ("Int4Method", "rtn")).Model;
        (_resNet, _resNetContext) = Compress(Fixtures.ResNet, ("Quantize", "int4"));
        _mlpGptq = Fixtures.Accuracy(_gptq);
        _mlpRtn = Fixtures.Accuracy(_rtn);
        _resNetGptq = Fixtures.Accuracy(_resNet);
        var reference = Fixtures.Outputs(mlp, Samples).Data;
        _gptqMse = Mse(reference, Fixtures.Outputs(_gptq, Samples).Data);
        _rtnMse = Mse(reference, Fixtures.Outputs(_rtn, Samples).Data);
        Console.WriteLine($"MLP fp32 {_mlpFp32:P2}, int4 gptq {_mlpGptq:P2} (logit MSE {_gptqMse:G4}), rtn {_mlpRtn:P2} (MSE {_rtnMse:G4}); ResNet fp32 {_resNetFp32:P2}, int4 gptq {_resNetGptq:P2}");
    }

    private static double Mse(float[] a, float[] b) => a.Zip(b, (x, y) => (double)(x - y) * (x - y)).Average();

    [TestMethod]
    public void Mlp_Gptq_Block32_DropsAtMostPointThree()
    {
        Assert.IsTrue(_mlpGptq >= _mlpFp32 - 0.003, $"int4 gptq {_mlpGptq:P2} vs fp32 {_mlpFp32:P2}");
        Assert.AreEqual(3, _gptqContext.Records.Count(r => r is { Technique: "int4", Bits: 4 } && r.Note!.StartsWith("gptq", StringComparison.Ordinal)));
    }

    [TestMethod]
    public void Mlp_GptqBeatsRoundToNearest_OnOutputError()
    {
        Assert.IsTrue(_gptqMse < 0.8 * _rtnMse, $"logit MSE vs fp32: gptq {_gptqMse:G4}, rtn {_rtnMse:G4}");
        Assert.IsTrue(_gptqContext.Records.Where(r => r.Technique == "int4").All(r => r.ReconstructionError is > 0 and < 0.05), string.Join("\n", _gptqContext.Records.Select(r => $"{r.Layer} {r.ReconstructionError}")));
    }

    [TestMethod]
    public void Mlp_EveryGemmBecomesMatMulNBits_WithItsBias_AndTheStoredLayoutDecodesToWhatOnnxRuntimeComputes()
    {
        var graph = new OnnxGraph(_gptq.Graph);
        var nodes = graph.Nodes.Where(n => n.OpType == "MatMulNBits").ToList();
        Assert.AreEqual(3, nodes.Count);
        Assert.IsFalse(graph.Nodes.Any(n => n.OpType is "Gemm" or "Add"), "Gemm's bias is the op's own bias input");
        Assert.IsTrue(_gptq.Proto.OpsetImport.Any(o => o.Domain == "com.microsoft"));

        // A float model with the weights decoded by MatMulNBits' definition must compute what ONNX Runtime does with
        // the packed form (up to accuracy_level 4's int8 activations): a wrong packing would be far off.
        using var decoded = OnnxModel.Load(Fixtures.Mlp);
        var target = new OnnxGraph(decoded.Graph);
        foreach (var node in nodes)
        {
            Assert.AreEqual(Int4Pass.AccuracyLevel, Attr(node, "accuracy_level"));
            Assert.AreEqual(32, Attr(node, "block_size"));
            Assert.AreEqual(6, node.Input.Count);
            var gemm = target.Nodes.Single(n => n.Name == node.Name);
            var weights = Decode(_gptq, graph, node);
            target.SetInitializer(Tensors.FromFloats(gemm.Input[1], new OnnxGraph(decoded.Graph).Initializer(gemm.Input[1])!.Dims.ToArray(), weights));
        }
        var expected = Fixtures.Outputs(decoded, Samples).Data;
        var actual = Fixtures.Outputs(_gptq, Samples).Data;
        var scale = expected.Max(Math.Abs);
        var worst = expected.Zip(actual, (x, y) => Math.Abs(x - y)).Max();
        Assert.IsTrue(worst < 0.05 * scale, $"largest difference {worst} (logits up to {scale})");
    }

    /// <summary>[N, K] float weights from MatMulNBits' B (N × blocks × block/2, low nibble first), scales and packed zero points.</summary>
    private static float[] Decode(OnnxModel model, OnnxGraph graph, NodeProto node)
    {
        int k = (int)Attr(node, "K"), n = (int)Attr(node, "N"), block = (int)Attr(node, "block_size");
        var blocks = (k + block - 1) / block;
        var b = model.GetTensor(graph.Initializer(node.Input[1])!).RawBytes.ToArray();
        var scales = model.ReadFloats(graph.Initializer(node.Input[2])!);
        var zeros = node.Input[3].Length > 0 ? model.GetTensor(graph.Initializer(node.Input[3])!).RawBytes.ToArray() : null;
        var w = new float[n * k];
        for (var r = 0; r < n; r++)
            for (var c = 0; c < k; c++)
            {
                var j = c / block;
                var i = (r * blocks + j) * (block / 2) + c % block / 2;
                var code = c % 2 == 0 ? b[i] & 0x0F : b[i] >> 4;
                var zp = zeros is null ? 8 : (j % 2 == 0 ? zeros[r * ((blocks + 1) / 2) + j / 2] & 0x0F : zeros[r * ((blocks + 1) / 2) + j / 2] >> 4);
                w[r * k + c] = (code - zp) * scales[r * blocks + j];
            }
        return w;
    }

    private static long Attr(NodeProto node, string name) => node.Attribute.Single(a => a.Name == name).I;

    [TestMethod]
    public void ParameterCounts_SeeThroughMatMulNBits_At4Bits()
    {
        using var original = OnnxModel.Load(Fixtures.Mlp);
        Assert.AreEqual(ModelWeights.Parameters(original), ModelWeights.Parameters(_gptq));
        var weights = ModelWeights.Find(_gptq);
        Assert.AreEqual(6, weights.Count, "three weights and three biases; scales and zero points are not parameters");
        var packed = weights.Where(w => w.StoredType == DataType.Uint4).ToList();
        Assert.AreEqual(3, packed.Count);
        Assert.AreEqual(784L * 512, packed.Single(w => w.Consumer.Name == "/hidden.0/Gemm").Elements);
        CollectionAssert.AreEqual(new long[] { 512, 784 }, packed.Single(w => w.Consumer.Name == "/hidden.0/Gemm").Dims);
    }

    [TestMethod]
    public void Mlp_IsAboutOneSixthOfTheFile()
    {
        var path = Path.Combine(Path.GetTempPath(), $"int4-{Guid.NewGuid():N}.onnx");
        try
        {
            _gptq.Save(path);
            var ratio = (double)new FileInfo(path).Length / new FileInfo(Fixtures.Mlp).Length;
            // 4 bits + a float scale and a 4-bit zero point per 32 weights: 5.1 bits of 32.
            Assert.IsTrue(ratio is > 0.14 and < 0.18, $"{ratio:P2}");
        }
        finally { File.Delete(path); }
    }

    [TestMethod]
    public void ResNet_Gptq_ConvolutionsInInt4Blocks_DropAtMostOnePoint_AtAboutOneSixthOfTheFile()
    {
        Assert.IsTrue(_resNetGptq >= _resNetFp32 - 0.01, $"int4 gptq {_resNetGptq:P2} vs fp32 {_resNetFp32:P2}");
        Assert.AreEqual(21, _resNet.OpsetVersion());
        var graph = new OnnxGraph(_resNet.Graph);
        Assert.IsFalse(graph.Nodes.Any(n => n.OpType == "DequantizeLinear"));
        var codes = _resNet.Graph.Initializer.Where(t => t.DataType == (int)DataType.Uint4 && t.Dims.Count == 3 && t.Dims[2] > 1).ToList();
        Assert.AreEqual(9, codes.Count, "one [out, blocks, 32] uint4 code tensor per convolution");
        Assert.IsTrue(codes.All(t => t.Dims[2] == 32), "block 32");
        Assert.AreEqual(1, graph.Nodes.Count(n => n.OpType == "MatMulNBits"));
        Assert.AreEqual(10, _resNetContext.Records.Count(r => r is { Technique: "int4", Bits: 4 }));
        using var original = OnnxModel.Load(Fixtures.ResNet);
        Assert.AreEqual(ModelWeights.Parameters(original), ModelWeights.Parameters(_resNet));
        Assert.AreEqual(9, ModelWeights.Find(_resNet).Count(w => w.StoredType == DataType.Uint4 && w.Consumer.OpType == "Conv"));
        var ratio = (double)_resNet.ToBytes().Length / new FileInfo(Fixtures.ResNet).Length;
        Assert.IsTrue(ratio is > 0.14 and < 0.19, $"{ratio:P2}");
    }

    [TestMethod]
    public void ResNet_TheBlockExpansion_IsFoldedAwayWhenOnnxRuntimeLoadsTheModel()
    {
        var path = Path.Combine(Path.GetTempPath(), $"int4-optimized-{Guid.NewGuid():N}.onnx");
        try
        {
            using (var options = new Microsoft.ML.OnnxRuntime.SessionOptions { GraphOptimizationLevel = Microsoft.ML.OnnxRuntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, OptimizedModelFilePath = path })
            using (new Microsoft.ML.OnnxRuntime.InferenceSession(_resNet.ToBytes(), options)) { }
            using var optimized = OnnxModel.Load(path);
            var ops = optimized.Graph.Node.Select(n => n.OpType).ToList();
            Assert.IsFalse(ops.Any(op => op is "Cast" or "Sub" or "Mul" or "Slice" or "DequantizeLinear"), string.Join(" ", ops));
        }
        finally { File.Delete(path); }
    }

    [TestMethod]
    public void Symmetric_LeavesZeroPointsOut_AndKeepsAccuracy()
    {
        var (model, _) = Compress(Fixtures.Mlp, ("Quantize", "int4"), ("Int4Symmetric", "true"), ("Int4BlockSize", "64"));
        var nodes = model.Graph.Node.Where(n => n.OpType == "MatMulNBits").ToList();
        Assert.AreEqual(3, nodes.Count);
        Assert.IsTrue(nodes.All(n => n.Input[3].Length == 0 && Attr(n, "block_size") == 64));
        var accuracy = Fixtures.Accuracy(model);
        Assert.IsTrue(accuracy >= _mlpFp32 - 0.01, $"symmetric block 64 {accuracy:P2} vs fp32 {_mlpFp32:P2}");
    }

    [TestMethod]
    public void WithoutCalibrationData_AutoIsRoundToNearest()
    {
        using var model = OnnxModel.Load(Fixtures.Mlp);
        var context = new CompressionContext(model, Fixtures.Policy(("Quantize", "int4")));
        CompressionPipeline.Run(context);
        var records = context.Records.Where(r => r.Technique == "int4").ToList();
        Assert.AreEqual(3, records.Count);
        Assert.IsTrue(records.All(r => r.Note!.StartsWith("rtn", StringComparison.Ordinal)), string.Join("\n", records.Select(r => r.Note)));
        CollectionAssert.AreEqual(Fixtures.Outputs(_rtn).Data, Fixtures.Outputs(model).Data, "explicit rtn with data and auto without data compute the same");
    }

    [TestMethod]
    public void Settings_BlockSizeIsAPowerOfTwo_AndGptqNeedsData()
    {
        foreach (var bad in new[] { "8", "24", "512" })
            Assert.AreEqual(DiagnosticCodes.InvalidSettingValue, Assert.ThrowsExactly<CompressionException>(() => Fixtures.Policy(("Int4BlockSize", bad))).Code, bad);
        Assert.AreEqual(128, Fixtures.Policy(("Int4BlockSize", "128")).Get<Int4Options>().Int4BlockSize);
        Assert.AreEqual("CM0124", Assert.ThrowsExactly<CompressionException>(() => Fixtures.Policy(("Quantize", "int4"), ("Int4Method", "gptq"))).Code);
    }

    [TestMethod]
    public void MatMulWeightsStoredInOut_GetTheSameBlocksAsTheGemmForm_AndOnnxRuntimeComputesTheSame()
    {
        // The MLP as MatMul over [in, out] weights plus a bias Add: quantized in that layout (no transpose), its
        // blocks must be the bytes the [out, in] Gemm form gets (784 inputs end in a partial block; 10 outputs are
        // fewer than a vector), for both grids.
        foreach (var symmetric in new[] { "false", "true" })
        {
            using var gemm = OnnxModel.Load(Fixtures.Mlp);
            using var matMul = OnnxModel.Load(Fixtures.Mlp);
            var graph = new OnnxGraph(matMul.Graph);
            foreach (var node in graph.Nodes.Where(n => n.OpType == "Gemm").ToList())
            {
                var layer = WeightedLayer.Find(graph, "Gemm").Single(l => ReferenceEquals(l.Node, node));
                var w = layer.ReadMatrix(matMul);
                graph.SetInitializer(Tensors.FromFloats(layer.Weight.Name, [layer.InFeatures, layer.OutFeatures], WeightedLayer.Transpose(w, layer.OutFeatures, layer.InFeatures)));
                var product = graph.FreshName(node.Output[0] + "_product");
                graph.ReplaceNode(node,
                    new NodeProto { OpType = "MatMul", Name = node.Name, Input = { node.Input[0], node.Input[1] }, Output = { product } },
                    new NodeProto { OpType = "Add", Name = node.Name + "_bias", Input = { product, node.Input[2] }, Output = { node.Output[0] } });
            }
            (string, string)[] settings = [("Quantize", "int4"), ("Int4Symmetric", symmetric)];
            CompressionPipeline.Run(new CompressionContext(gemm, Fixtures.Policy(settings)));
            CompressionPipeline.Run(new CompressionContext(matMul, Fixtures.Policy(settings)));
            var (g, m) = (new OnnxGraph(gemm.Graph), new OnnxGraph(matMul.Graph));
            var nodes = m.Nodes.Where(n => n.OpType == "MatMulNBits").ToList();
            Assert.AreEqual(3, nodes.Count);
            foreach (var node in nodes)
            {
                var expected = g.Nodes.Single(n => n.Name == node.Name);
                for (var i = 1; i <= 3; i++)
                {
                    // B, scales, zero points (absent when symmetric; the Gemm form pads its inputs up to the bias).
                    var (name, expectedName) = (i < node.Input.Count ? node.Input[i] : "", i < expected.Input.Count ? expected.Input[i] : "");
                    Assert.AreEqual(expectedName.Length == 0, name.Length == 0);
                    if (name.Length == 0) continue;
                    CollectionAssert.AreEqual(gemm.GetTensor(g.Initializer(expectedName)!).RawBytes.ToArray(), matMul.GetTensor(m.Initializer(name)!).RawBytes.ToArray(), $"{node.Name} input {i}, symmetric {symmetric}");
                }
            }
            CollectionAssert.AreEqual(Fixtures.Outputs(gemm, 64).Data, Fixtures.Outputs(matMul, 64).Data, $"symmetric {symmetric}");
        }
    }

    [TestMethod]
    public void RoundToNearest_InOutSweep_MatchesTheRowByRowRule_OnTiesZerosAndTails()
    {
        // Exact ties (x/scale = n + ½), equal-magnitude extremes of both signs, all-zero (±0) and subnormal blocks, a
        // partial last block and column counts that end in a scalar tail: both vectorized paths (row by row, and the
        // [in, out] sweep) must give the codes, scales and zero points of the rule computed one weight at a time in double.
        var random = new Random(7);
        foreach (var (rows, cols, block) in new[] { (300, 70, 16), (37, 64, 32), (9, 33, 32) })
        {
            var w = new float[rows * cols];
            for (var i = 0; i < w.Length; i++) w[i] = (float)(random.NextDouble() * 2 - 1);
            for (var r = 0; r < rows; r++)
            {
                var kind = r % 5;
                for (var c = 0; c < cols; c++)
                    w[r * cols + c] = kind switch
                    {
                        0 => c % block == 0 ? 15 : c % block == 1 ? 0 : (c % 15) + 0.5f, // scale 1: every other value a tie
                        1 => c % block == 0 ? -3 : c % block == 1 ? 3 : w[r * cols + c],  // −3 first, then +3
                        2 => c < block ? (c % 2 == 0 ? -0f : 0f) : c < 2 * block ? -0f : w[r * cols + c], // signed zeros: the scale's sign bit too
                        3 => c < block ? float.Epsilon * (c % 3) : w[r * cols + c],
                        _ => w[r * cols + c],
                    };
            }
            foreach (var symmetric in new[] { false, true })
            {
                var (codes, scales, zeros) = ScalarRoundToNearest(w, rows, cols, block, symmetric);
                var (rowMajor, _) = Int4Quantizer.RtnWithError(w, rows, cols, block, symmetric);
                var (inOut, _) = Int4Quantizer.RtnInOut(WeightedLayer.Transpose(w, rows, cols), rows, cols, block, symmetric);
                foreach (var (path, actual) in new[] { ("[out, in]", rowMajor), ("[in, out]", inOut) })
                {
                    var what = $"{path} [{rows}, {cols}] block {block} symmetric {symmetric}";
                    CollectionAssert.AreEqual(codes, actual.UnpackedCodes(), what);
                    CollectionAssert.AreEqual(scales.Select(BitConverter.SingleToInt32Bits).ToArray(), actual.Scales.Select(BitConverter.SingleToInt32Bits).ToArray(), "scale bits, " + what);
                    CollectionAssert.AreEqual(zeros, actual.ZeroPoints, what);
                }
            }
        }
    }

    /// <summary>The rule, one weight at a time in double: each block's grid from its values in order, then x/scale rounded half to even.</summary>
    private static (byte[] Codes, float[] Scales, byte[] Zeros) ScalarRoundToNearest(float[] w, int rows, int cols, int block, bool symmetric)
    {
        var blocks = (cols + block - 1) / block;
        var (codes, scales, zeros) = (new byte[rows * cols], new float[rows * blocks], new byte[rows * blocks]);
        for (var r = 0; r < rows; r++)
            for (var j = 0; j < blocks; j++)
            {
                var values = w.Skip(r * cols + j * block).Take(Math.Min(block, cols - j * block)).Select(x => (double)x).ToList();
                double lo = 0, hi = 0, extreme = 0;
                foreach (var x in values)
                {
                    (lo, hi) = (Math.Min(lo, x), Math.Max(hi, x));
                    if (Math.Abs(x) > Math.Abs(extreme)) extreme = x;
                }
                var scale = symmetric ? (float)(extreme / -8) : (float)((hi - lo) / 15);
                var zero = symmetric || scale == 0 ? (byte)8 : (byte)Math.Clamp(Math.Round(-lo / scale, MidpointRounding.ToEven), 0, 15);
                (scales[r * blocks + j], zeros[r * blocks + j]) = (scale, zero);
                for (var k = 0; k < values.Count; k++)
                    codes[r * cols + j * block + k] = scale == 0 ? zero : (byte)Math.Clamp(Math.Round(values[k] / scale, MidpointRounding.ToEven) + zero, 0, 15);
            }
        return (codes, scales, zeros);
    }

    [TestMethod]
    public void ProducedModels_AreByteIdenticalRunToRun()
    {
        CollectionAssert.AreEqual(_gptq.ToBytes(), Compress(Fixtures.Mlp, ("Quantize", "int4")).Model.ToBytes());
        (string, string)[] rtn = [("Quantize", "int4"), ("Int4Method", "rtn")];
        CollectionAssert.AreEqual(Compress(Fixtures.ResNet, rtn).Model.ToBytes(), Compress(Fixtures.ResNet, rtn).Model.ToBytes());
    }

    [TestMethod]
    public void AnOpsetThatCannotBeRaised_LeavesTheConvolutionsFloat_WithTheReason_AndStillQuantizesTheGemm()
    {
        using var model = OnnxModel.Load(Fixtures.ResNet);
        // Celu on the logits, as an extra output: an op the relabelling does not know.
        var logits = model.Graph.Output[0].Name;
        model.Graph.Node.Add(new NodeProto { OpType = "Celu", Name = "extra", Input = { logits }, Output = { "celu" } });
        model.Graph.Output.Add(new ValueInfoProto { Name = "celu", Type = model.Graph.Output[0].Type.Clone() });
        var context = new CompressionContext(model, Fixtures.Policy(("Quantize", "int4"), ("CalibrationData", "fmnist_calib.npz")));
        CompressionPipeline.Run(context);
        Assert.AreEqual(17, model.OpsetVersion());
        var records = context.Records.Where(r => r.Technique == "int4").ToList();
        Assert.AreEqual(9, records.Count(r => r.Op == "Conv" && r.Bits == 32 && r.Note!.Contains("Celu", StringComparison.Ordinal)), string.Join("\n", records.Select(r => r.Note)));
        Assert.AreEqual(1, records.Count(r => r.Op == "Gemm" && r.Bits == 4));
        Assert.AreEqual(1, context.Diagnostics.Count(d => d.Code == DiagnosticCodes.LayerLeftInFloat), "one warning per reason");
        Assert.IsTrue(Fixtures.Accuracy(model) >= _resNetFp32 - 0.01);
    }
}
