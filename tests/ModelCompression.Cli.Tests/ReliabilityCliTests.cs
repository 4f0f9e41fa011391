using static ModelCompression.Cli.Tests.CliRunner;

namespace ModelCompression.Cli.Tests;

/// <summary>Command lines a reliability campaign found to end in an internal error (CM0001): each is a coded error, exit 2.</summary>
[TestClass]
public sealed class ReliabilityCliTests
{
    private static void AssertCoded(CliResult result, string code, string message)
    {
        Assert.AreEqual(ReturnCode.BadInput, result.Code, result.ToString());
        StringAssert.Contains(result.Error, $"error {code}: {message}", result.ToString());
        Assert.DoesNotContain("CM0001", result.Error, result.ToString());
    }

    [TestMethod]
    [DataRow("model", "CM0002", "the model path is empty")]
    [DataRow("output", "CM0002", "--output is empty")]
    [DataRow("report-dir", "CM0002", "--report-dir is empty")]
    public void EmptyPaths_AreCM0002(string empty, string code, string message)
    {
        var dir = TempDirectory();
        var result = Run("compress", empty == "model" ? "" : Fixture("fmnist_mlp.onnx"), "-o", empty == "output" ? "" : Path.Combine(dir, "out.onnx"),
            "--report-dir", empty == "report-dir" ? "" : Path.Combine(dir, "reports"));
        AssertCoded(result, code, message);
    }

    [TestMethod]
    public void ReportFolderThatIsAFile_AndOutputFolderUnderAFile_AreCM0004_BeforeAnyPass()
    {
        var dir = TempDirectory();
        var file = Path.Combine(dir, "file");
        File.WriteAllText(file, "x");
        var result = Run("compress", Fixture("fmnist_mlp.onnx"), "-o", Path.Combine(dir, "out.onnx"), "--report-dir", file, "--sparsity", "0.5");
        AssertCoded(result, "CM0004", $"cannot create the report folder '{file}': '{file}' is a file");
        Assert.DoesNotContain("prune", result.Output, "no pass ran");

        result = Run("compress", Fixture("fmnist_mlp.onnx"), "-o", Path.Combine(file, "sub", "out.onnx"), "--report-dir", Path.Combine(dir, "reports"), "--sparsity", "0.5");
        AssertCoded(result, "CM0004", $"cannot create the output folder '{Path.Combine(file, "sub")}': '{file}' is a file");
        Assert.DoesNotContain("prune", result.Output, "no pass ran");
    }

    [TestMethod]
    [DataRow("[null]", "items[0] is null")]
    [DataRow("[{}]", "items[0].model is missing or empty")]
    [DataRow("[{\"model\": \"m.onnx\", \"output\": null}]", "items[0].output is missing or empty")]
    [DataRow("[{\"model\": \"m.onnx\", \"output\": \"o.onnx\", \"reportDirectory\": \"r\"}]", "items[0].baseDirectory is missing or empty")]
    [DataRow("[{\"model\": \"m.onnx\", \"output\": \"o.onnx\", \"reportDirectory\": \"r\", \"baseDirectory\": \".\", \"settings\": {\"Sparsity\": null}}]", "items[0].settings.Sparsity is null")]
    public void BatchRequests_WithNullFields_AreCM0002(string items, string message)
    {
        var request = Path.Combine(TempDirectory(), "request.json");
        File.WriteAllText(request, $"{{\"version\": {EngineRequest.CurrentVersion}, \"items\": {items}}}");
        AssertCoded(Run("batch", "--request", request), "CM0002", "cannot read the request: " + message);
    }

    [TestMethod]
    public void OnnxRuntimeLibrary_ThatIsNotOnnxRuntime_IsCM0130()
    {
        // In a process of its own: a failed native load poisons ONNX Runtime for the rest of the process.
        var dir = TempDirectory();
        var library = Path.Combine(dir, "libonnxruntime.so");
        File.WriteAllText(library, "not a library");
        var cli = Path.Combine(AppContext.BaseDirectory, "compress-model.dll");
        var (code, output) = Process("dotnet", $"\"{cli}\" compress \"{Fixture("fmnist_mlp.onnx")}\" -o \"{Path.Combine(dir, "out.onnx")}\" --onnx-runtime-library \"{library}\"", dir);
        Assert.AreEqual((int)ReturnCode.BadInput, code, output);
        StringAssert.Contains(output, $"error CM0130: ONNX Runtime cannot be loaded from '{library}'", output);
        Assert.DoesNotContain("CM0001", output);
    }
}
