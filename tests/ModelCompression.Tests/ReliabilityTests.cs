using ModelCompression.Data;
using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;

namespace ModelCompression.Tests;

/// <summary>
/// Inputs a reliability campaign found to crash the engine (an internal error) or to produce a model ONNX Runtime
/// cannot run: each must now be a coded error before any pass runs, or compress cleanly.
/// </summary>
[TestClass]
public sealed class ReliabilityTests
{
    private static string NewDirectory() => Directory.CreateTempSubdirectory("mc-reliability").FullName;

    /// <summary>The MLP fixture, edited and saved into a folder of its own.</summary>
    private static string EditedMlp(Action<OnnxModel> edit, string? directory = null)
    {
        var path = Path.Combine(directory ?? NewDirectory(), "edited.onnx");
        using var model = OnnxModel.Load(Fixtures.Mlp);
        edit(model);
        model.Save(path);
        return path;
    }

    private static CompressionException LoadFails(string path) => Assert.ThrowsExactly<CompressionException>(() => CompressionEngine.LoadChecked(path).Dispose());

    [TestMethod]
    [DataRow("duplicate initializer", "2 initializers named 'hidden.0.weight'")]
    [DataRow("duplicate output", "2 outputs named")]
    [DataRow("Gemm transB=2", "transB=2; it must be 0 or 1")]
    public void ModelsOnnxRuntimeRejects_AreInvalidAtLoad(string mutation, string message)
    {
        var path = EditedMlp(model =>
        {
            switch (mutation)
            {
                case "duplicate initializer": model.Graph.Initializer.Add(model.Graph.Initializer.First(t => t.Name == "hidden.0.weight").Clone()); break;
                case "duplicate output": model.Graph.Output.Add(model.Graph.Output[0].Clone()); break;
                case "Gemm transB=2": model.Graph.Node.First(n => n.OpType == "Gemm").Attribute.First(a => a.Name == "transB").I = 2; break;
            }
        });
        var e = LoadFails(path);
        Assert.AreEqual(DiagnosticCodes.InvalidModel, e.Code, e.Message);
        StringAssert.Contains(e.Message, message);
    }

    [TestMethod]
    public void NaNInAConstantNode_IsCM0112()
    {
        var path = EditedMlp(model =>
        {
            // The bias of the head as a Constant node holding one NaN.
            var bias = model.Graph.Initializer.First(t => t.Name == "out.bias");
            var values = model.ReadFloats(bias);
            values[3] = float.NaN;
            model.Graph.Initializer.Remove(bias);
            var constant = new NodeProto { OpType = "Constant", Name = "bias_const", Output = { "out.bias" } };
            constant.Attribute.Add(new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = Tensors.FromFloats("out.bias", [values.Length], values) });
            model.Graph.Node.Insert(0, constant);
        });
        var e = LoadFails(path);
        Assert.AreEqual(DiagnosticCodes.NonFiniteWeights, e.Code, e.Message);
        StringAssert.Contains(e.Message, "Constant node 'bias_const'");
    }

    [TestMethod]
    [DataRow("empty file")]
    [DataRow("link to /dev/zero")]
    public void ExternalDataThatHoldsNoBytes_IsCM0111(string form)
    {
        if (form.StartsWith("link", StringComparison.Ordinal) && OperatingSystem.IsWindows()) Assert.Inconclusive("no /dev/zero");
        var dir = NewDirectory();
        var path = Path.Combine(dir, "external.onnx");
        using (var model = OnnxModel.Load(Fixtures.Mlp)) model.Save(path, new SaveOptions { ExternalizeThreshold = 1024 });
        File.Delete(path + ".data");
        if (form == "empty file") File.WriteAllBytes(path + ".data", []);
        else File.CreateSymbolicLink(path + ".data", "/dev/zero");
        var e = LoadFails(path);
        Assert.AreEqual(DiagnosticCodes.InvalidModel, e.Code, e.Message);
    }

    [TestMethod]
    public void ZeroSizedWeight_IsNoLayerToCompress()
    {
        var path = EditedMlp(model =>
        {
            var weight = model.Graph.Initializer.First(t => t.Name == "hidden.1.weight");
            model.Graph.Initializer.Remove(weight);
            model.Graph.Initializer.Add(Tensors.FromFloats("hidden.1.weight", [0, 512], []));
        });
        using var model = CompressionEngine.LoadChecked(path);
        var layers = WeightedLayer.FindAll(new OnnxGraph(model.Graph));
        CollectionAssert.DoesNotContain(layers.Select(l => l.Weight.Name).ToList(), "hidden.1.weight");
        Assert.AreEqual(0, new Policy.RankSpec(0.5, IsRatio: true).Resolve(0), "a rank of an empty weight is 0, not an exception");
        // Compressing it is a coded error (ONNX Runtime cannot run the original), never an internal one.
        var e = Assert.ThrowsExactly<CompressionException>(() => CompressionEngine.Compress(new(path, Path.Combine(Path.GetDirectoryName(path)!, "out.onnx"), Path.GetDirectoryName(path)!,
            Fixtures.Policy(("Rank", "0.5"), ("ValidationData", "fmnist_val.npz"), ("LatencyRounds", "1")))));
        StringAssert.StartsWith(e.Code, "CM01");
    }

    [TestMethod]
    [DataRow("int8")]
    [DataRow("int8-dynamic")]
    public void HugeWeights_WithInt8_GiveACandidateOnnxRuntimeRuns(string quantize)
    {
        // Finite but near float's limit: a scale or zero point computed naively from them overflows to ±inf, and ONNX
        // Runtime then rejects the candidate (CM0131, blaming the input). Now the gate judges it like any other: the
        // original is itself extreme (outputs near 1e37), so the measured fidelity decides.
        var dir = NewDirectory();
        var path = EditedMlp(model =>
        {
            var weight = model.Graph.Initializer.First(t => t.Name == "hidden.1.weight");
            var values = model.ReadFloats(weight);
            values[0] = 3e38f;
            values[1] = -3e38f;
            model.Graph.Initializer.Remove(weight);
            model.Graph.Initializer.Add(Tensors.FromFloats(weight.Name, weight.Dims.ToArray(), values));
        }, dir);
        var result = CompressionEngine.Compress(new(path, Path.Combine(dir, "out.onnx"), dir, Fixtures.Policy(("Quantize", quantize), ("CalibrationData", "fmnist_calib.npz"),
            ("CalibrationSamples", "64"), ("ValidationData", "fmnist_val.npz"), ("LatencyRounds", "1"))) { GateFailureAsWarning = true });
        Assert.IsTrue(result.OutputWritten);
        var cosine = result.Report.Measurements.Outputs[0].Cosine;
        Assert.IsTrue(double.IsFinite(cosine), $"the candidate ran and was compared: cosine {cosine}");
    }

    [TestMethod]
    public void CalibrationData_WithoutFiniteValues_IsCM0121BeforeAnyPass()
    {
        var dir = NewDirectory();
        var npy = Path.Combine(dir, "image.npy");
        Fixtures.WriteNpy(npy, [8, 1, 28, 28], Enumerable.Repeat(float.NaN, 8 * 784).ToArray());
        using var model = OnnxModel.Load(Fixtures.Mlp);
        var e = Assert.ThrowsExactly<CompressionException>(() => DataCheck.Calibration(Dataset.Load(npy), model.Graph));
        Assert.AreEqual(DiagnosticCodes.InvalidData, e.Code);
        StringAssert.Contains(e.Message, "no finite value");

        Fixtures.WriteNpy(npy, [0, 1, 28, 28], []);
        e = Assert.ThrowsExactly<CompressionException>(() => DataCheck.Calibration(Dataset.Load(npy), model.Graph));
        StringAssert.Contains(e.Message, "no samples");
    }

    [TestMethod]
    public void ASingleNpy_FeedsTheOnlyInput_WhateverItsFileName()
    {
        var dir = NewDirectory();
        var npy = Path.Combine(dir, "calibration.npy");
        using (var zip = System.IO.Compression.ZipFile.OpenRead(Fixtures.Calibration))
        using (var entry = zip.GetEntry("image.npy")!.Open())
        using (var file = File.Create(npy))
            entry.CopyTo(file);
        var output = Path.Combine(dir, "out.onnx");
        var result = CompressionEngine.Compress(new(Fixtures.Mlp, output, dir,
            Fixtures.Policy(("Quantize", "int8"), ("CalibrationData", npy), ("CalibrationSamples", "64"), ("BiasCorrection", "off"))));
        Assert.IsTrue(result.OutputWritten, string.Join("\n", result.Diagnostics));
    }

    [TestMethod]
    public void NpyShape_ThatIsNotNumbers_IsCM0121()
    {
        var npy = Path.Combine(NewDirectory(), "x.npy");
        Fixtures.WriteNpy(npy, [2, 2], [1, 2, 3, 4]);
        var bytes = File.ReadAllBytes(npy);
        var text = System.Text.Encoding.Latin1.GetString(bytes);
        File.WriteAllBytes(npy, System.Text.Encoding.Latin1.GetBytes(text.Replace("(2, 2,)", "(2, 'a')")));
        var e = Assert.ThrowsExactly<CompressionException>(() => Dataset.Load(npy));
        Assert.AreEqual(DiagnosticCodes.InvalidData, e.Code);
        StringAssert.Contains(e.Message, "not a tuple of non-negative integers");
    }

    [TestMethod]
    public void StaleTemporaries_OfEndedProcesses_AreRemoved_OthersKept()
    {
        var dir = NewDirectory();
        var reports = Path.Combine(dir, "reports");
        Directory.CreateDirectory(reports);
        // No process has this id (ids stay far below int.MaxValue), so these are a killed run's leftovers.
        var dead = $"~{int.MaxValue}-{Guid.NewGuid():N}";
        var live = $"~{Environment.ProcessId}-{Guid.NewGuid():N}";
        string[] stale = [Path.Combine(dir, $"mlp.onnx.{dead}.tmp"), Path.Combine(dir, $"mlp.onnx.data.{dead}.tmp"),
            Path.Combine(reports, $"mlp.{dead}.candidate.onnx"), Path.Combine(reports, $"mlp.report.json.{dead}.tmp")];
        string[] kept = [Path.Combine(dir, $"mlp.onnx.{live}.tmp"), Path.Combine(reports, $"mlp.{live}.candidate.onnx"),
            Path.Combine(dir, $"other.onnx.{dead}.tmp"), Path.Combine(dir, "mlp.onnx.notes.tmp")];
        foreach (var file in stale.Concat(kept)) File.WriteAllText(file, "x");

        var result = CompressionEngine.Compress(new(Fixtures.Mlp, Path.Combine(dir, "mlp.onnx"), reports, Fixtures.Policy()));
        Assert.IsTrue(result.OutputWritten);
        foreach (var file in stale) Assert.IsFalse(File.Exists(file), file);
        foreach (var file in kept) Assert.IsTrue(File.Exists(file), file);
    }

    [TestMethod]
    public void PolicyFile_WithAByteOrderMark_IsRead_AndInvalidUtf8_IsCM0103()
    {
        var dir = NewDirectory();
        var bom = Path.Combine(dir, "bom.json");
        File.WriteAllBytes(bom, [0xEF, 0xBB, 0xBF, .. "{\"layers\": [{\"match\": \"/out/*\", \"Sparsity\": 0.5}]}"u8]);
        Assert.HasCount(1, Fixtures.Policy(("PolicyFile", bom)).LayerOverrides);

        var bad = Path.Combine(dir, "bad.json");
        File.WriteAllBytes(bad, [.. "{\"layers\": [{\"match\": \""u8, 0xFF, 0xFE, .. "\"}]}"u8]);
        var e = Assert.ThrowsExactly<CompressionException>(() => Fixtures.Policy(("PolicyFile", bad)));
        Assert.AreEqual(DiagnosticCodes.InvalidPolicyFile, e.Code);
        StringAssert.Contains(e.Message, "not valid UTF-8");
    }

    [TestMethod]
    public void OutputLock_IsHeldByOneRunAtATime()
    {
        var output = Path.Combine(NewDirectory(), "out.onnx");
        using (var first = OutputLock.Acquire([output, output + ".reports"], CancellationToken.None))
        {
            Assert.IsNull(OutputLock.TryAcquire(output), "a second run waits for the first");
            Assert.IsNull(OutputLock.TryAcquire(output + ".reports"));
            using var other = OutputLock.TryAcquire(output + ".other");
            Assert.IsNotNull(other, "another output is not held up");
        }
        using var again = OutputLock.TryAcquire(output);
        Assert.IsNotNull(again, "released when the run ends");
    }

    [TestMethod]
    public void TemporaryNames_CarryTheProcessId()
    {
        var name = Path.GetFileName(TempFiles.For("/x/out.onnx"));
        StringAssert.StartsWith(name, $"out.onnx.~{Environment.ProcessId}-");
        StringAssert.EndsWith(name, ".tmp");
    }
}
