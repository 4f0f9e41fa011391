using ModelCompression.Diagnostics;
using ModelCompression.Passes;

namespace ModelCompression.Tests.Data;

/// <summary>Bad data files fail before any pass runs, with coded errors naming the file, and leave nothing behind.</summary>
[TestClass]
public sealed class DataCheckTests
{
    private static string _dir = null!;

    [ClassInitialize]
    public static void Setup(TestContext _) => _dir = Directory.CreateTempSubdirectory("mc-datacheck").FullName;

    private static string File(string name, params NpzArray[] arrays) => Npz.Write(Path.Combine(_dir, Guid.NewGuid().ToString("N")[..8] + "-" + name), arrays);

    /// <summary>Compresses the ResNet with the slowest policy there is (SparseGPT + calibrated int8), recording every stage that starts.</summary>
    private static (CompressionException Error, List<string> Stages, string Output, string Reports) Fail(params (string, string)[] settings)
    {
        var run = Directory.CreateTempSubdirectory("mc-datacheck-run").FullName;
        var output = Path.Combine(run, "out.onnx");
        var reports = Path.Combine(run, "reports");
        var stages = new List<string>();
        (string, string)[] slow = [("Sparsity", "0.8"), ("PruneMethod", "sparsegpt"), ("Quantize", "int8"), ("CalibrationData", Fixtures.Calibration)];
        var policy = Fixtures.Policy([.. slow.Where(s => settings.All(o => o.Item1 != s.Item1)), .. settings]);
        var error = Assert.ThrowsExactly<CompressionException>(() =>
            CompressionEngine.Compress(new(Fixtures.ResNet, output, reports, policy), default, new InlineProgress<(string Stage, double)>(p => stages.Add(p.Stage))));
        Assert.IsFalse(Directory.Exists(reports), "no report folder, candidate or report");
        Assert.IsFalse(System.IO.File.Exists(output), "no output");
        Assert.AreEqual(0, Directory.EnumerateFileSystemEntries(run).Count(), "nothing written at all");
        return (error, stages, output, reports);
    }

    public static IEnumerable<object[]> BadValidationFiles =>
    [
        ["wrong-shape.npz", new[] { Npz.Floats("image", [4, 1, 14, 14]), Npz.Labels("labels", 0, 1, 2, 3) }, "CM0122", "'image' has shape [4,1,14,14] but model input 'image' expects [?,1,28,28]"],
        ["wrong-key.npz", new[] { Npz.Floats("pixels", [4, 1, 28, 28]), Npz.Labels("labels", 0, 1, 2, 3) }, "CM0122", "no array for model input 'image'"],
        ["wrong-dtype.npz", new[] { Npz.Doubles("image", [4, 1, 28, 28]), Npz.Labels("labels", 0, 1, 2, 3) }, "CM0122", "'image' is float64 but model input 'image' expects float32"],
        ["no-labels.npz", new[] { Npz.Floats("image", [4, 1, 28, 28]) }, "CM0123", "MaxAccuracyDrop need class ids"],
        ["label-too-big.npz", new[] { Npz.Floats("image", [4, 1, 28, 28]), Npz.Labels("labels", 0, 1, 10, 3) }, "CM0122", "class id 10 (sample 2) but model output"],
        ["negative-label.npz", new[] { Npz.Floats("image", [4, 1, 28, 28]), Npz.Labels("labels", 0, -1, 2, 3) }, "CM0121", "the labels hold -1 (sample 1)"],
        ["counts-differ.npz", new[] { Npz.Floats("image", [4, 1, 28, 28]), Npz.Labels("labels", 0, 1, 2) }, "CM0121", "disagree on the number of samples"],
        ["empty.npz", new[] { Npz.Floats("image", [0, 1, 28, 28]), Npz.Labels("labels") }, "CM0121", "holds no samples"],
    ];

    [TestMethod]
    [DynamicData(nameof(BadValidationFiles))]
    public void BadValidationFile_FailsBeforeAnyPass_WithItsCode_NamingTheFile(string name, NpzArray[] arrays, string code, string message)
    {
        var path = File(name, arrays);
        var (error, stages, _, _) = Fail(("ValidationData", path), ("MaxAccuracyDrop", "0.01"));
        Assert.AreEqual(code, error.Code, error.Message);
        StringAssert.Contains(error.Message, message);
        Assert.AreEqual(path, error.Diagnostics[0].File, "the diagnostic names the data file");
        Assert.IsEmpty(stages, $"no pass started: {string.Join(", ", stages)}");
    }

    [TestMethod]
    public void BadCalibrationAndValidationFiles_AreBothReported_EachNamingItsFile()
    {
        var calibration = File("calib.npz", Npz.Floats("img", [8, 1, 28, 28]));
        var validation = File("val.npz", Npz.Floats("image", [4, 784]), Npz.Labels("label", 0, 1, 2, 3));
        var (error, stages, _, _) = Fail(("CalibrationData", calibration), ("ValidationData", validation), ("MinAgreement", "0.9"));
        Assert.HasCount(2, error.Diagnostics, error.Message);
        Assert.AreEqual(calibration, error.Diagnostics[0].File);
        StringAssert.Contains(error.Diagnostics[0].Message, "no array for model input 'image'");
        Assert.AreEqual(validation, error.Diagnostics[1].File);
        StringAssert.Contains(error.Diagnostics[1].Message, "'image' has shape [4,784]");
        Assert.IsTrue(error.Diagnostics.All(d => d.Code == DiagnosticCodes.DataMismatch));
        Assert.IsEmpty(stages);
    }

    [TestMethod]
    public void LabelsWithoutAnAccuracyThreshold_AreStillCheckedAgainstTheClasses()
    {
        var path = File("val.npz", Npz.Floats("image", [2, 1, 28, 28]), Npz.Labels("label", 3, 12));
        var (error, _, _, _) = Fail(("ValidationData", path), ("MinAgreement", "0.9"));
        Assert.AreEqual("CM0122", error.Code);
        StringAssert.Contains(error.Message, "has 10 classes (ids 0..9)");
    }

    [TestMethod]
    public void GoodFiles_PassTheCheck_AndTheirSamplesAreUsed()
    {
        // A valid small file: the check lets it through and the gate evaluates exactly its samples.
        var images = Fixtures.ValidationData.Take(5);
        var path = File("val.npz", new NpzArray("image", [5, 1, 28, 28], "<f4", images.Inputs[0].ToFloats().SelectMany(BitConverter.GetBytes).ToArray()),
            Npz.Labels("labels", images.Labels!));
        var dir = Directory.CreateTempSubdirectory("mc-datacheck-ok").FullName;
        var result = CompressionEngine.Compress(new(Fixtures.Mlp, Path.Combine(dir, "o.onnx"), dir,
            Fixtures.Policy(("ValidationData", path), ("MaxAccuracyDrop", "1"), ("LatencyRounds", "1"))));
        Assert.AreEqual(5, result.Report.Measurements.Original!.Samples);
        Assert.IsTrue(result.OutputWritten);
    }
}
