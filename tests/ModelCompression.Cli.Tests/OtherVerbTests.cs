using System.Text.Json;
using static ModelCompression.Cli.Tests.CliRunner;

namespace ModelCompression.Cli.Tests;

[TestClass]
public sealed class OtherVerbTests
{
    [TestMethod]
    public void Inspect_ListsEveryWeightedLayer()
    {
        var result = Run("inspect", Fixture("fmnist_resnet.onnx"));
        Assert.AreEqual(ReturnCode.Success, result.Code, result.ToString());
        var convWeights = result.Output.Split('\n').Count(l => l.Contains(" Conv ") && System.Text.RegularExpressions.Regex.IsMatch(l, @"\[\d+x\d+x\d+x\d+\]"));
        Assert.AreEqual(9, convWeights, result.Output);
        StringAssert.Contains(result.Output, "parameters: 481,482 in 20 tensors"); // weights + biases; BatchNorm was folded by the exporter
        StringAssert.Contains(result.Output, "opset 17");
    }

    [TestMethod]
    public void Inspect_OfACompressedModel_ShowsTheDenseShapesTheirZerosAndStorage()
    {
        var dir = TempDirectory();
        var output = Path.Combine(dir, "mlp.onnx");
        var compress = Run("compress", Fixture("fmnist_mlp.onnx"), "-o", output, "--sparsity", "0.8", "--prune-scope", "layer", "--quantize", "int8",
            "--calibration-data", Fixture("fmnist_calib.npz"));
        Assert.AreEqual(ReturnCode.Success, compress.Code, compress.ToString());

        var result = Run("inspect", output);
        Assert.AreEqual(ReturnCode.Success, result.Code, result.ToString());
        var hidden = result.Output.Split('\n').Single(l => l.Contains("hidden.0.weight", StringComparison.Ordinal));
        StringAssert.Contains(hidden, "[512x784]");
        StringAssert.Contains(hidden, "401,408");
        StringAssert.Matches(hidden, new System.Text.RegularExpressions.Regex(@" 80\.\d %"));
        StringAssert.Contains(hidden, "int8");
        StringAssert.Contains(result.Output, "parameters: 535,818 in 6 tensors");

        // The report counts alike: all parameters stay (int8 and compact storage are forms of them), 80 % of the
        // hidden layers' weights are zeros.
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "compress-model-reports", "mlp.report.json")));
        Assert.AreEqual(535_818, report.RootElement.GetProperty("parametersBefore").GetInt64());
        Assert.AreEqual(535_818, report.RootElement.GetProperty("parametersAfter").GetInt64());
        var nonZeros = report.RootElement.GetProperty("nonZeroParametersAfter").GetInt64();
        Assert.IsTrue(nonZeros is > 100_000 and < 112_000, $"{nonZeros} nonzero parameters");
    }

    [TestMethod]
    public void Doctor_ReportsTheRuntimeAndProviders()
    {
        var result = Run("doctor");
        Assert.AreEqual(ReturnCode.Success, result.Code, result.ToString());
        StringAssert.Contains(result.Output, "ONNX Runtime:       1.31.1");
        StringAssert.Contains(result.Output, "CPUExecutionProvider");
    }

    [TestMethod]
    [DataRow("--onnx-runtime-library")]
    [DataRow("--onnxruntime-library")] // the spelling before it matched the OnnxRuntimeLibrary setting; still accepted
    public void Doctor_ChecksTheLibraryItIsGiven(string option)
    {
        var missing = Path.Combine(TempDirectory(), "libonnxruntime.so");
        var result = Run("doctor", option, missing);
        Assert.AreEqual(ReturnCode.BadInput, result.Code, result.ToString());
        StringAssert.Contains(result.Error, $"error CM0102: OnnxRuntimeLibrary '{missing}' does not exist");
    }

    [TestMethod]
    public void Doctor_Help_ShowsTheSettingsSpellingOnly()
    {
        var result = Run("doctor", "--help");
        Assert.AreEqual(ReturnCode.Success, result.Code, result.ToString());
        StringAssert.Contains(result.Output, "--onnx-runtime-library <path>");
        Assert.DoesNotContain("--onnxruntime-library", result.Output);
    }

    [TestMethod]
    public void Evaluate_GatesAPair_AndFailsOnAgreement()
    {
        var pass = Run("evaluate", Fixture("fmnist_mlp.onnx"), Fixture("fmnist_mlp.onnx"), "--validation-data", Fixture("fmnist_val.npz"), "--min-agreement", "1.0", "--latency-rounds", "1");
        Assert.AreEqual(ReturnCode.Success, pass.Code, pass.ToString());
        StringAssert.Contains(pass.Output, ": pass");

        var fail = Run("evaluate", Fixture("fmnist_mlp.onnx"), Fixture("fmnist_resnet.onnx"), "--validation-data", Fixture("fmnist_val.npz"), "--min-agreement", "0.99", "--latency-rounds", "1");
        Assert.AreEqual(ReturnCode.GateFailed, fail.Code, fail.ToString());
        StringAssert.Contains(fail.Error, "CM0202");
    }

    [TestMethod]
    public void Batch_ReportsEveryItemsBadMetadata_AtTheProjectFileThatDefinesIt()
    {
        var dir = TempDirectory();
        var request = Path.Combine(dir, "request.json");
        var project = Path.Combine(dir, "App.csproj");
        EngineRequestItem[] items =
        [
            new(Fixture("fmnist_mlp.onnx"), Path.Combine(dir, "a.onnx"), dir, dir, project, null, new Dictionary<string, string> { ["Sparsty"] = "0.5" }),
            new(Fixture("fmnist_resnet.onnx"), Path.Combine(dir, "b.onnx"), dir, dir, null, null, new Dictionary<string, string> { ["MaxLatencyRatio"] = "-1" }),
        ];
        new EngineRequest(EngineRequest.CurrentVersion, false, items).Write(request);
        var result = Run("batch", "--request", request);
        Assert.AreEqual(ReturnCode.BadInput, result.Code, result.ToString());
        StringAssert.Contains(result.Error, "App.csproj: error CM0101: unknown setting 'Sparsty' (did you mean 'Sparsity'?)");
        StringAssert.Contains(result.Error, "fmnist_resnet.onnx: error CM0102: MaxLatencyRatio '-1' is invalid", "without a project file, the model is named");
        Assert.IsFalse(File.Exists(Path.Combine(dir, "a.onnx")));
    }

    [TestMethod]
    public void Batch_CompressesEveryItem()
    {
        var dir = TempDirectory();
        var request = Path.Combine(dir, "request.json");
        var items = new[] { "fmnist_mlp.onnx", "fmnist_resnet.onnx" }.Select(m => new EngineRequestItem(
            Fixture(m), Path.Combine(dir, "out", m), Path.Combine(dir, "reports", m), AppContext.BaseDirectory, null, null,
            new Dictionary<string, string> { ["ValidationData"] = "data/fmnist_val.npz", ["MinAgreement"] = "1.0", ["LatencyRounds"] = "1" })).ToArray();
        new EngineRequest(EngineRequest.CurrentVersion, false, items).Write(request);
        var result = Run("batch", "--request", request);
        Assert.AreEqual(ReturnCode.Success, result.Code, result.ToString());
        Assert.IsTrue(File.Exists(Path.Combine(dir, "out", "fmnist_mlp.onnx")));
        Assert.IsTrue(File.Exists(Path.Combine(dir, "out", "fmnist_resnet.onnx")));
        var summaries = result.Output.Split('\n').Where(l => l.StartsWith(EngineOutput.SummaryPrefix, StringComparison.Ordinal)).ToList();
        Assert.AreEqual(2, summaries.Count(l => l.EndsWith(": pass", StringComparison.Ordinal)), result.Output);
    }

    [TestMethod]
    public void Batch_ItemsThatWouldShareAnOutputOrReports_FailWithCM0104BeforeCompressingAny()
    {
        var dir = TempDirectory();
        var request = Path.Combine(dir, "request.json");
        var outputs = new[] { Path.Combine(dir, "a", "net.onnx"), Path.Combine(dir, "b", "net.onnx"), Path.Combine(dir, "b", "net.onnx") };
        var items = outputs.Select(output => new EngineRequestItem(
            Fixture("fmnist_mlp.onnx"), output, Path.Combine(dir, "reports"), dir, null, null,
            new Dictionary<string, string> { ["Sparsity"] = "0.5" })).ToArray();
        new EngineRequest(EngineRequest.CurrentVersion, false, items).Write(request);
        var result = Run("batch", "--request", request);
        Assert.AreEqual(ReturnCode.BadInput, result.Code, result.ToString());
        StringAssert.Contains(result.Error, $"error CM0104: '{Fixture("fmnist_mlp.onnx")}' and '{Fixture("fmnist_mlp.onnx")}' write the same output '{outputs[1]}'");
        StringAssert.Contains(result.Error, $"error CM0104: outputs '{outputs[0]}' and '{outputs[1]}' would write the same reports '{Path.Combine(dir, "reports", "net")}.report.*'");
        Assert.IsFalse(Directory.Exists(Path.Combine(dir, "reports")), "nothing is compressed");
        Assert.IsFalse(File.Exists(outputs[0]));
    }

    [TestMethod]
    public void Batch_ItemsNamingDifferentRuntimeLibraries_FailWithCM0104BeforeLoadingEither()
    {
        var dir = TempDirectory();
        var request = Path.Combine(dir, "request.json");
        // Two distinct files: the check runs before either is loaded, so they need not be real libraries.
        var libraries = new[] { "a", "b" }.Select(n => Path.Combine(dir, $"libonnxruntime-{n}.so")).ToArray();
        foreach (var library in libraries) File.WriteAllText(library, "");
        var items = libraries.Select((library, i) => new EngineRequestItem(
            Fixture("fmnist_mlp.onnx"), Path.Combine(dir, "out", $"mlp{i}.onnx"), Path.Combine(dir, "reports"), dir, null, null,
            new Dictionary<string, string> { ["OnnxRuntimeLibrary"] = library })).ToArray();
        new EngineRequest(EngineRequest.CurrentVersion, false, items).Write(request);
        var result = Run("batch", "--request", request);
        Assert.AreEqual(ReturnCode.BadInput, result.Code, result.ToString());
        StringAssert.Contains(result.Error, "error CM0104");
        StringAssert.Contains(result.Error, libraries[0]);
        StringAssert.Contains(result.Error, libraries[1]);
        Assert.IsFalse(Directory.Exists(Path.Combine(dir, "out")), "nothing is compressed");
    }

    [TestMethod]
    public void EveryVerb_HasHelp()
    {
        foreach (var verb in new[] { "compress", "evaluate", "inspect", "doctor", "batch", "settings" })
        {
            var result = Run(verb, "--help");
            Assert.AreEqual(ReturnCode.Success, result.Code, result.ToString());
            StringAssert.Contains(result.Output, "Usage:");
        }
        StringAssert.Contains(Run("compress", "--help").Output, "--max-accuracy-drop");
    }
}
