using System.Text.Json;
using static ModelCompression.Cli.Tests.CliRunner;

namespace ModelCompression.Cli.Tests;

/// <summary><c>--codebook</c> end to end: an option declared only by the technique's options record.</summary>
[TestClass]
public sealed class CodebookCliTests
{
    [TestMethod]
    public void Codebook16_PassesATightGate_WritesAQuarterSizedModel_ThatInspectCountsInFull()
    {
        var dir = TempDirectory();
        var output = Path.Combine(dir, "mlp.onnx");
        var result = Run("compress", Fixture("fmnist_mlp.onnx"), "-o", output, "--codebook", "16",
            "--validation-data", Fixture("fmnist_val.npz"), "--max-accuracy-drop", "0.01", "--latency-rounds", "1");
        Assert.AreEqual(ReturnCode.Success, result.Code, result.ToString());
        StringAssert.Matches(result.Output, new System.Text.RegularExpressions.Regex(@"size 0\.1\d+x \(deflate 0\.1\d+x, brotli 0\.1\d+x\): pass"));
        // Under a quarter: the largest layer's indices are packed 4 bits per index (Brotli codes them smaller there).
        Assert.IsTrue(new FileInfo(output).Length < 0.17 * new FileInfo(Fixture("fmnist_mlp.onnx")).Length);

        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "compress-model-reports", "mlp.report.json")));
        var root = report.RootElement;
        Assert.AreEqual("16", root.GetProperty("policy").GetProperty("Codebook").GetString());
        var layers = root.GetProperty("layers").EnumerateArray().Where(l => l.GetProperty("technique").GetString() == "codebook").ToList();
        Assert.AreEqual(3, layers.Count);
        Assert.IsTrue(layers.All(l => l.GetProperty("bits").GetInt32() == 4));
        Assert.AreEqual(535_818, root.GetProperty("parametersAfter").GetInt64(), "shared weights are still parameters");

        var inspect = Run("inspect", output);
        Assert.AreEqual(ReturnCode.Success, inspect.Code, inspect.ToString());
        var hidden = inspect.Output.Split('\n').Single(l => l.Contains("hidden.0.weight", StringComparison.Ordinal));
        StringAssert.Contains(hidden, "[512x784]");
        StringAssert.Contains(hidden, "uint8");
        StringAssert.Contains(inspect.Output, "parameters: 535,818 in 6 tensors");
    }

    [TestMethod]
    public void CodebookMetadata_InTheMSBuildTasksRequest_IsASettingLikeAnyOther()
    {
        // The MSBuild task hands its items' metadata verbatim to the batch verb: the same names, the same parser.
        var dir = TempDirectory();
        var request = Path.Combine(dir, "request.json");
        EngineRequestItem[] items =
        [
            new(Fixture("fmnist_resnet.onnx"), Path.Combine(dir, "out", "resnet.onnx"), Path.Combine(dir, "reports"), AppContext.BaseDirectory, null, null,
                new Dictionary<string, string> { ["Codebook"] = "32", ["CodebookIterations"] = "500", ["ValidationData"] = "data/fmnist_val.npz", ["MaxAccuracyDrop"] = "0.01", ["LatencyRounds"] = "1" }),
        ];
        new EngineRequest(EngineRequest.CurrentVersion, false, items).Write(request);
        var result = Run("batch", "--request", request);
        Assert.AreEqual(ReturnCode.Success, result.Code, result.ToString());
        Assert.IsTrue(new FileInfo(Path.Combine(dir, "out", "resnet.onnx")).Length < 0.27 * new FileInfo(Fixture("fmnist_resnet.onnx")).Length);
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "reports", "resnet.report.json")));
        var layers = report.RootElement.GetProperty("layers").EnumerateArray().Where(l => l.GetProperty("technique").GetString() == "codebook").ToList();
        Assert.AreEqual(10, layers.Count, "nine convolutions and the head");
        Assert.IsTrue(layers.All(l => l.GetProperty("bits").GetInt32() == 5));
        Assert.AreEqual("500", report.RootElement.GetProperty("policy").GetProperty("CodebookIterations").GetString());
    }

    [TestMethod]
    [DataRow("1")]
    [DataRow("257")]
    [DataRow("sixteen")]
    public void CodebookOutOfRange_ExitsTwo_WithCM0102(string value)
    {
        var dir = TempDirectory();
        var result = Run("compress", Fixture("fmnist_mlp.onnx"), "-o", Path.Combine(dir, "o.onnx"), "--codebook", value);
        Assert.AreEqual(ReturnCode.BadInput, result.Code, result.ToString());
        StringAssert.Contains(result.Error, "CM0102");
        StringAssert.Contains(result.Error, "expected an integer in [2, 256]");
        Assert.IsFalse(File.Exists(Path.Combine(dir, "o.onnx")));
    }
}
