using ModelCompression.Data;
using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Passes;
using ModelCompression.Runtime;

namespace ModelCompression.Tests.Quantization;

/// <summary>Quantize=int8-dynamic on the real fixtures: accuracy, size, the kernels ONNX Runtime runs, convolutions left float.</summary>
[TestClass]
public sealed class DynamicQuantizationTests
{
    private static (OnnxModel Original, OnnxModel Quantized, CompressionContext Context) Compress(string path)
    {
        var original = OnnxModel.Load(path);
        var quantized = original.Clone();
        var context = new CompressionContext(quantized, Fixtures.Policy(("Quantize", "int8-dynamic")));
        CompressionPipeline.Run(context);
        return (original, quantized, context);
    }

    private static readonly Lazy<(OnnxModel Original, OnnxModel Quantized, CompressionContext Context)> Mlp = new(() => Compress(Fixtures.Mlp));

    [TestMethod]
    public void Mlp_Dynamic_IsWithinPointThreeOfFp32AndAtLeast3Point5TimesSmaller()
    {
        var (original, quantized, _) = Mlp.Value;
        var drop = Fixtures.Accuracy(original) - Fixtures.Accuracy(quantized);
        Assert.IsTrue(drop <= 0.003, $"accuracy drop {drop * 100:0.00} pt");

        var folder = Directory.CreateTempSubdirectory("quantization-tests-");
        try
        {
            var path = Path.Combine(folder.FullName, "mlp-int8-dynamic.onnx");
            quantized.Save(path);
            var ratio = (double)OnnxModel.FileSizeWithExternalData(Fixtures.Mlp) / OnnxModel.FileSizeWithExternalData(path);
            Assert.IsTrue(ratio >= 3.5, $"only {ratio:0.00}x smaller");
        }
        finally
        {
            folder.Delete(recursive: true);
        }
    }

    [TestMethod]
    public void Mlp_Dynamic_RunsEveryLayerAsDynamicQuantizeMatMul()
    {
        var quantized = Mlp.Value.Quantized;
        var batch = Fixtures.ValidationData.BindTo(ModelInput.FromGraph(quantized.Graph)).Batches(64).First();
        var ops = KernelProfiler.Profile(quantized.ToBytes(), batch, Fixtures.Cpu, runs: 3).Select(k => k.OpType).ToList();

        Assert.AreEqual(3, ops.Count(op => op == "DynamicQuantizeMatMul"), string.Join(", ", ops));
        Assert.IsFalse(ops.Any(op => op is "MatMulInteger" or "DynamicQuantizeLinear" or "Gemm" or "FusedGemm"), string.Join(", ", ops));
        Assert.IsTrue(Mlp.Value.Context.Records.All(r => r.Bits == 8 && r.ReconstructionError is > 0 and < 0.02), string.Join("\n", Mlp.Value.Context.Records));
    }

    [TestMethod]
    public void ResNet_Dynamic_QuantizesTheGemmAndLeavesConvolutionsInFloat()
    {
        var (_, quantized, context) = Compress(Fixtures.ResNet);

        Assert.IsFalse(quantized.Graph.Node.Any(n => n.OpType == "ConvInteger"));
        Assert.AreEqual(9, quantized.Graph.Node.Count(n => n.OpType == "Conv"));
        Assert.AreEqual(1, quantized.Graph.Node.Count(n => n.OpType == "MatMulInteger"));
        var convs = context.Records.Where(r => r.Op == "Conv").ToList();
        Assert.AreEqual(9, convs.Count);
        Assert.IsTrue(convs.All(r => r.Bits == 32 && r.Note!.Contains("ConvInteger")), string.Join("\n", convs));
        Assert.AreEqual(9, context.Diagnostics.Count(d => d.Code == DiagnosticCodes.LayerLeftInFloat));
        var drop = Fixtures.Accuracy(OnnxModel.Load(Fixtures.ResNet), 512) - Fixtures.Accuracy(quantized, 512);
        Assert.IsTrue(Math.Abs(drop) <= 0.003, $"accuracy change {drop * 100:0.00} pt on 512 images");
    }
}
