using System.Text.Json;
using ModelCompression.Reporting;
using static ModelCompression.Cli.Tests.CliRunner;

namespace ModelCompression.Cli.Tests;

[TestClass]
public sealed class CompressCommandTests
{
    [TestMethod]
    public void ImpossibleThreshold_ExitsOne_WithTheCode_AndWritesNoOutputButTheCandidateAndReports()
    {
        var dir = TempDirectory();
        var output = Path.Combine(dir, "out", "mlp.onnx");
        var reports = Path.Combine(dir, "reports");
        var result = Run("compress", Fixture("fmnist_mlp.onnx"), "-o", output, "--report-dir", reports,
            "--validation-data", Fixture("fmnist_val.npz"), "--min-accuracy", "0.999", "--latency-rounds", "2");

        Assert.AreEqual(ReturnCode.GateFailed, result.Code, result.ToString());
        StringAssert.Matches(result.Error, new System.Text.RegularExpressions.Regex(@"fmnist_mlp\.onnx: error CM0201: accuracy \d+\.\d\d % < MinAccuracy 99\.90 % \(original \d+\.\d\d %\)"));
        Assert.IsFalse(File.Exists(output), "a failing model never reaches the output path");
        // The candidate and reports are named after the output (mlp.onnx), not the model.
        CollectionAssert.AreEquivalent(new[] { "mlp.candidate.onnx", "mlp.report.json", "mlp.report.md", "mlp.report.html" },
            Directory.GetFiles(reports).Select(Path.GetFileName).ToArray(), "the candidate stays next to its reports; no temporary file is left");
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(reports, "mlp.report.json")));
        Assert.AreEqual(CompressionReport.CurrentSchemaVersion, json.RootElement.GetProperty("schemaVersion").GetInt32());
        Assert.AreEqual("CM0201", json.RootElement.GetProperty("verdict").GetProperty("failures")[0].GetProperty("code").GetString());
        Assert.AreEqual(Path.Combine(reports, "mlp.candidate.onnx"), json.RootElement.GetProperty("candidate").GetString());
        StringAssert.Contains(File.ReadAllText(Path.Combine(reports, "mlp.report.md")), "CM0201");
    }

    [TestMethod]
    public void GateFailureAsWarning_WritesTheOutput_AndExitsZero()
    {
        var dir = TempDirectory();
        var output = Path.Combine(dir, "mlp.onnx");
        var result = Run("compress", Fixture("fmnist_mlp.onnx"), "-o", output, "--validation-data", Fixture("fmnist_val.npz"),
            "--min-accuracy", "0.999", "--latency-rounds", "1", "--gate-failure-as-warning");
        Assert.AreEqual(ReturnCode.Success, result.Code, result.ToString());
        StringAssert.Contains(result.Error, "warning CM0201");
        Assert.IsTrue(File.Exists(output));
    }

    [TestMethod]
    public void PassingGate_WritesTheOutputAndASummaryLine()
    {
        var dir = TempDirectory();
        var output = Path.Combine(dir, "mlp.onnx");
        var result = Run("compress", Fixture("fmnist_mlp.onnx"), "-o", output, "--validation-data", Fixture("fmnist_val.npz"),
            "--max-accuracy-drop", "0.0", "--latency-rounds", "2", "--benchmark");
        Assert.AreEqual(ReturnCode.Success, result.Code, result.ToString());
        StringAssert.Matches(result.Output, new System.Text.RegularExpressions.Regex(@"fmnist_mlp\.onnx -> .*mlp\.onnx: accuracy \d+\.\d\d % -> \d+\.\d\d % \([+-]?\d+\.\d\d pt\), latency \d+\.\d{3}x, size 1\.000x \(deflate 1\.000x, brotli 1\.000x\): pass"));
        StringAssert.Contains(result.Output, "gate time:");
        StringAssert.Contains(result.Output, "latency ratio:");
        Assert.IsTrue(File.Exists(output));
    }

    [TestMethod]
    [DataRow(new[] { "--sparsity", "1.5" }, "CM0102", "Sparsity '1.5' is invalid: out of range")]
    [DataRow(new[] { "--quantize", "int3" }, "CM0102", "expected one of none, int8, int8-dynamic")]
    [DataRow(new[] { "--quantize", "int8" }, "CM0124", "needs CalibrationData")]
    [DataRow(new[] { "--min-accuracy", "0.9" }, "CM0104", "need ValidationData")]
    [DataRow(new[] { "--execution-provider", "tpu" }, "CM0102", "expected cpu, cuda or cuda:N")]
    [DataRow(new[] { "--no-such-option", "1" }, "CM0101", "unknown option '--no-such-option' for 'compress'")]
    public void BadOptions_ExitTwo_WithACode(string[] extra, string code, string message)
    {
        var dir = TempDirectory();
        var result = Run(["compress", Fixture("fmnist_mlp.onnx"), "-o", Path.Combine(dir, "o.onnx"), .. extra]);
        Assert.AreEqual(ReturnCode.BadInput, result.Code, result.ToString());
        StringAssert.Contains(result.Error, code);
        StringAssert.Contains(result.Error, message);
        Assert.DoesNotContain("   at ", result.Error, "no stack trace");
        Assert.IsFalse(File.Exists(Path.Combine(dir, "o.onnx")));
    }

    [TestMethod]
    [DataRow(new[] { "compress", "MODEL", "-o", "OUT", "--sparsty", "0.5" }, "unknown option '--sparsty' for 'compress' (did you mean '--sparsity'?)")]
    [DataRow(new[] { "compress", "--sparsty", "0.5", "MODEL", "-o", "OUT" }, "unknown option '--sparsty' for 'compress' (did you mean '--sparsity'?)")]
    [DataRow(new[] { "compress", "MODEL", "-o", "OUT", "--Max-Acuracy-Drop=0.01" }, "unknown option '--Max-Acuracy-Drop' for 'compress' (did you mean '--max-accuracy-drop'?)")]
    [DataRow(new[] { "compress", "MODEL", "-o", "OUT", "--reprot-dir", "r" }, "unknown option '--reprot-dir' for 'compress' (did you mean '--report-dir'?)")]
    [DataRow(new[] { "evaluate", "MODEL", "MODEL", "--validation-data", "VAL", "--min-agrement", "0.9" }, "unknown option '--min-agrement' for 'evaluate' (did you mean '--min-agreement'?)")]
    [DataRow(new[] { "evaluate", "MODEL", "MODEL", "--validation-data", "VAL", "--sparsity", "0.5" }, "unknown option '--sparsity' for 'evaluate'")]
    [DataRow(new[] { "batch", "--requets", "r.json" }, "unknown option '--requets' for 'batch' (did you mean '--request'?)")]
    public void UnknownOption_IsCM0101_WithTheClosestOptionOfTheVerb(string[] args, string message)
    {
        var dir = TempDirectory();
        var result = Run(args.Select(a => a switch
        {
            "MODEL" => Fixture("fmnist_mlp.onnx"), "VAL" => Fixture("fmnist_val.npz"), "OUT" => Path.Combine(dir, "o.onnx"), _ => a,
        }).ToArray());
        Assert.AreEqual(ReturnCode.BadInput, result.Code, result.ToString());
        StringAssert.Contains(result.Error, "error CM0101: " + message, result.ToString());
        // The typo is the one error: not also its value or the model path it pushed out of place.
        Assert.DoesNotContain("Unrecognized", result.Error, result.ToString());
        if (!message.Contains("did you mean", StringComparison.Ordinal)) Assert.DoesNotContain("did you mean", result.Error);
        Assert.IsFalse(File.Exists(Path.Combine(dir, "o.onnx")));
    }

    [TestMethod]
    public void CorruptModel_ExitsTwo_WithCM0111_AndNoStackTrace()
    {
        var dir = TempDirectory();
        var bytes = File.ReadAllBytes(Fixture("fmnist_mlp.onnx"));
        var corrupt = Path.Combine(dir, "corrupt.onnx");
        File.WriteAllBytes(corrupt, bytes[..1000]);
        var result = Run("compress", corrupt, "-o", Path.Combine(dir, "o.onnx"));
        Assert.AreEqual(ReturnCode.BadInput, result.Code, result.ToString());
        StringAssert.Contains(result.Error, "corrupt.onnx: error CM0111:");
        Assert.DoesNotContain("   at ", result.Error);
    }

    [TestMethod]
    public void NaNWeights_ExitTwo_WithCM0112_NamingTheTensor()
    {
        var dir = TempDirectory();
        var path = Path.Combine(dir, "nan.onnx");
        using (var model = Onnx.OnnxModel.Load(Fixture("fmnist_mlp.onnx")))
        {
            var weight = model.Graph.Initializer.First(t => t.Dims.Count == 2);
            var values = model.ReadFloats(weight);
            values[3] = float.NaN;
            model.Graph.Initializer[model.Graph.Initializer.IndexOf(weight)] = Onnx.Tensors.FromFloats(weight.Name, weight.Dims.ToArray(), values);
            model.Save(path);
        }
        var before = File.ReadAllBytes(path);
        var result = Run("compress", path, "-o", Path.Combine(dir, "o.onnx"));
        Assert.AreEqual(ReturnCode.BadInput, result.Code, result.ToString());
        StringAssert.Contains(result.Error, "CM0112");
        StringAssert.Contains(result.Error, "NaN at element 3");
        CollectionAssert.AreEqual(before, File.ReadAllBytes(path), "the source model is never modified");
    }

    [TestMethod]
    public void MismatchedData_NamesTheKeyAndBothShapes()
    {
        var dir = TempDirectory();
        var npz = Path.Combine(dir, "wrong.npz");
        using (var zip = System.IO.Compression.ZipFile.Open(npz, System.IO.Compression.ZipArchiveMode.Create))
        using (var stream = zip.CreateEntry("image.npy").Open())
        {
            var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 14, 14), }";
            header = header.PadRight(118) + "\n";
            stream.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0]);
            stream.Write(BitConverter.GetBytes((ushort)header.Length));
            stream.Write(System.Text.Encoding.ASCII.GetBytes(header));
            stream.Write(new byte[2 * 14 * 14 * 4]);
        }
        var result = Run("compress", Fixture("fmnist_mlp.onnx"), "-o", Path.Combine(dir, "o.onnx"), "--validation-data", npz, "--min-agreement", "0.9");
        Assert.AreEqual(ReturnCode.BadInput, result.Code, result.ToString());
        StringAssert.Contains(result.Error, "CM0122");
        StringAssert.Contains(result.Error, "'image' has shape [2,1,14,14] but model input 'image' expects [?,1,28,28]");
    }

    [TestMethod]
    public void BadValidationData_FailsBeforeAnyPass_AndLeavesNothing()
    {
        // The slow policy (SparseGPT + int8 on the ResNet: tens of seconds) never starts: labels 10 and 11 are not
        // classes of a 10-class model.
        var dir = TempDirectory();
        var bad = Path.Combine(dir, "val.npz");
        using (var zip = System.IO.Compression.ZipFile.Open(bad, System.IO.Compression.ZipArchiveMode.Create))
        {
            using (var images = zip.CreateEntry("image.npy").Open()) WriteNpy(images, "<f4", "(2, 1, 28, 28)", new byte[2 * 28 * 28 * 4]);
            using (var labels = zip.CreateEntry("labels.npy").Open()) WriteNpy(labels, "<i8", "(2,)", [.. BitConverter.GetBytes(10L), .. BitConverter.GetBytes(11L)]);
        }
        var result = Run("compress", Fixture("fmnist_resnet.onnx"), "-o", Path.Combine(dir, "out", "r.onnx"), "--sparsity", "0.8", "--quantize", "int8",
            "--calibration-data", Fixture("fmnist_calib.npz"), "--validation-data", bad, "--max-accuracy-drop", "0.01");
        Assert.AreEqual(ReturnCode.BadInput, result.Code, result.ToString());
        StringAssert.Contains(result.Error, $"{bad}: error CM0122: the labels hold class id 11 (sample 1) but model output");
        Assert.DoesNotContain("prune", result.Output, "no pass started");
        CollectionAssert.AreEqual(new[] { bad }, Directory.GetFileSystemEntries(dir), "no output, report or candidate");
    }

    private static void WriteNpy(Stream stream, string descr, string shape, byte[] data)
    {
        var header = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}".PadRight(117) + "\n";
        stream.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0]);
        stream.Write(BitConverter.GetBytes((ushort)header.Length));
        stream.Write(System.Text.Encoding.ASCII.GetBytes(header));
        stream.Write(data);
    }

    [TestMethod]
    public void CudaOnTheCpuRuntime_IsCM0130_NeverASilentCpuFallback()
    {
        var dir = TempDirectory();
        var output = Path.Combine(dir, "o.onnx");
        var result = Run("compress", Fixture("fmnist_mlp.onnx"), "-o", output, "--execution-provider", "cuda:0", "--validation-data", Fixture("fmnist_val.npz"), "--min-agreement", "0.9");
        Assert.AreEqual(ReturnCode.BadInput, result.Code, result.ToString());
        StringAssert.Contains(result.Error, "error CM0130: the CUDA execution provider (device 0) cannot be loaded");
        StringAssert.Contains(result.Error, "CPUExecutionProvider");
        Assert.IsFalse(File.Exists(output));
    }

    [TestMethod]
    public void MissingData_IsCM0120()
    {
        var dir = TempDirectory();
        var result = Run("compress", Fixture("fmnist_mlp.onnx"), "-o", Path.Combine(dir, "o.onnx"), "--validation-data", Path.Combine(dir, "nope.npz"), "--min-agreement", "0.9");
        Assert.AreEqual(ReturnCode.BadInput, result.Code, result.ToString());
        StringAssert.Contains(result.Error, "CM0120");
    }

    [TestMethod]
    public void OutputEqualToTheSource_IsRefused()
    {
        var dir = TempDirectory();
        var path = Path.Combine(dir, "m.onnx");
        File.Copy(Fixture("fmnist_mlp.onnx"), path);
        var result = Run("compress", path, "-o", path);
        Assert.AreEqual(ReturnCode.BadInput, result.Code, result.ToString());
        StringAssert.Contains(result.Error, "never overwritten");
        CollectionAssert.AreEqual(File.ReadAllBytes(Fixture("fmnist_mlp.onnx")), File.ReadAllBytes(path));
    }
}
