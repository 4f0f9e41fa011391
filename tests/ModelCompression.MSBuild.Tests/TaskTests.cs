using System.Collections;
using System.Text.Json;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

namespace ModelCompression.MSBuild.Tests;

/// <summary>The tasks run in process against a recording build engine: fast checks of what the targets rely on.</summary>
[TestClass]
public sealed class TaskTests
{
    private static readonly string[] Owned = ["Link", "OutputPath", "TargetPath", "CopyToOutputDirectory"];
    private string _directory = null!;

    public TestContext TestContext { get; set; } = null!;

    [TestInitialize]
    public void CreateDirectory()
    {
        _directory = Path.Combine(Path.GetTempPath(), "modelcompression-task-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_directory);
    }

    [TestCleanup]
    public void DeleteDirectory() => Directory.Delete(_directory, recursive: true);

    private string File(string relativePath, string content = "x")
    {
        var path = Path.Combine(_directory, relativePath);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        System.IO.File.WriteAllText(path, content);
        return path;
    }

    private TaskItem Model(string relativePath, string targetPath, params (string Name, string Value)[] metadata)
    {
        var item = new TaskItem(File(relativePath));
        item.SetMetadata("TargetPath", targetPath);
        item.SetMetadata("_OutputFile", Path.Combine(_directory, "obj", "out", targetPath));
        foreach (var (name, value) in metadata) item.SetMetadata(name, value);
        return item;
    }

    [TestMethod]
    public void Settings_AreTheCustomMetadataVerbatim_WithoutOwnedPrivateOrEmptyOnes()
    {
        var item = Model("m.onnx", "m.onnx", ("Sparsity", "0.8"), ("Link", "x.onnx"), ("_Exec", "true"), ("MinAccuracy", ""), ("SomethingNew", "a;b"));

        var settings = ModelItems.Settings(item, ModelItems.OwnedSet(Owned));

        CollectionAssert.AreEqual(new[] { "Sparsity=0.8", "SomethingNew=a;b" }.Order().ToArray(), settings.Select(s => $"{s.Key}={s.Value}").Order().ToArray());
    }

    [TestMethod]
    public void Validate_ReportsEveryProblemAtOnce()
    {
        var engine = new RecordingEngine();
        var task = new PrepareCompressModels { BuildEngine = engine };
        var missing = new TaskItem(Path.Combine(_directory, "missing.onnx"));
        missing.SetMetadata("TargetPath", "missing.onnx");
        missing.SetMetadata("_OutputFile", Path.Combine(_directory, "obj", "missing.onnx"));
        ITaskItem[] models = [missing, Model("a.onnx", "same.onnx"), Model("b.onnx", "same.onnx"), Model("c.onnx", "../escape.onnx")];

        Assert.IsFalse(ModelItems.Validate(models, task.Log, requireReportDirectory: false));

        CollectionAssert.AreEquivalent(new[] { "CM0503", "CM0505", "CM0507" }, engine.Errors.Select(e => e.Code).ToArray());
    }

    [TestMethod]
    public void Prepare_WritesTheStampOnlyWhenSettingsChange_AndListsTheFilesSettingsName()
    {
        File("data/val.npz");
        File("testdata/set_0/input_0.pb");
        File("models/net.onnx.compress.lock.json", "{}");
        var engine = new RecordingEngine();
        PrepareCompressModels Task(string sparsity) => new()
        {
            BuildEngine = engine,
            Models = [Model("models/net.onnx", "models/net.onnx", ("Sparsity", sparsity), ("ValidationData", "data/val.npz"), ("CalibrationData", "testdata"))],
            ProjectDirectory = _directory,
            StampDirectory = Path.Combine(_directory, "obj", "stamps"),
            ReportDirectory = Path.Combine(_directory, "obj", "reports"),
            EnginePath = Path.Combine(_directory, "engine", "compress-model.dll"),
            OwnedMetadata = Owned,
        };

        var first = Task("0.5");
        Assert.IsTrue(first.Execute(), string.Join("\n", engine.Errors.Select(e => e.Message)));
        var stamp = first.PreparedModels[0].GetMetadata("_StampFile");
        var written = System.IO.File.GetLastWriteTimeUtc(stamp);
        System.IO.File.SetLastWriteTimeUtc(stamp, written.AddMinutes(-5));
        Assert.IsTrue(Task("0.5").Execute());
        Assert.AreEqual(written.AddMinutes(-5), System.IO.File.GetLastWriteTimeUtc(stamp), "an unchanged stamp was rewritten");
        Assert.IsTrue(Task("0.6").Execute());
        StringAssert.Contains(System.IO.File.ReadAllText(stamp), "Sparsity=0.6");

        var dependencies = first.PreparedModels[0].GetMetadata("_Dependencies").Split(';');
        CollectionAssert.Contains(dependencies, Path.Combine(_directory, "data", "val.npz"));
        CollectionAssert.Contains(dependencies, Path.Combine(_directory, "testdata", "set_0", "input_0.pb"));
        CollectionAssert.Contains(dependencies, stamp);
        CollectionAssert.Contains(dependencies, Path.Combine(_directory, "models", "net.onnx.compress.lock.json"), "the lock file is an input");
        Assert.AreEqual(Path.Combine(_directory, "obj", "reports", "models", "net"), first.PreparedModels[0].GetMetadata("_ReportDirectory"));
    }

    [TestMethod]
    public void CompressModels_WritesTheRequest_AndReportsAMissingOutputWithACode()
    {
        if (OperatingSystem.IsWindows()) Assert.Inconclusive("uses 'true' as the engine host");
        var engine = new RecordingEngine();
        var model = Model("models/net.onnx", "models/net.onnx", ("Quantize", "int8"), ("Link", "models/net.onnx"));
        model.SetMetadata("_ReportDirectory", Path.Combine(_directory, "obj", "reports", "models", "net"));
        var request = Path.Combine(_directory, "obj", "request.json");
        var task = new CompressModels
        {
            BuildEngine = engine,
            Models = [model],
            EnginePath = File("engine/compress-model.dll"),
            RequestFile = request,
            BaseDirectory = _directory,
            GateFailureAsWarning = true,
            OwnedMetadata = Owned,
            ToolPath = "/bin",
            ToolExe = "true",       // exits 0 without writing anything
        };

        Assert.IsFalse(task.Execute());

        CollectionAssert.AreEqual(new[] { "CM0521" }, engine.Errors.Select(e => e.Code).ToArray());
        using var json = JsonDocument.Parse(System.IO.File.ReadAllBytes(request));
        var root = json.RootElement;
        Assert.AreEqual(ModelCompression.Contracts.EngineRequest.CurrentVersion, root.GetProperty("version").GetInt32());
        Assert.IsTrue(root.GetProperty("gateFailureAsWarning").GetBoolean());
        var item = root.GetProperty("items")[0];
        Assert.AreEqual(model.GetMetadata("FullPath"), item.GetProperty("model").GetString());
        Assert.AreEqual(_directory, item.GetProperty("baseDirectory").GetString());
        Assert.AreEqual("""{"Quantize":"int8"}""", JsonSerializer.Serialize(item.GetProperty("settings")));
    }

    [TestMethod]
    public void CompressModels_MissingEngine_FailsBeforeRunningAnything()
    {
        var engine = new RecordingEngine();
        var model = Model("models/net.onnx", "models/net.onnx");
        model.SetMetadata("_ReportDirectory", Path.Combine(_directory, "reports"));
        var task = new CompressModels
        {
            BuildEngine = engine,
            Models = [model],
            EnginePath = Path.Combine(_directory, "nowhere", "compress-model.dll"),
            RequestFile = Path.Combine(_directory, "request.json"),
            BaseDirectory = _directory,
        };

        Assert.IsFalse(task.Execute());

        CollectionAssert.AreEqual(new[] { "CM0501" }, engine.Errors.Select(e => e.Code).ToArray());
        Assert.IsFalse(System.IO.File.Exists(Path.Combine(_directory, "request.json")));
    }

    [TestMethod]
    public void Escape_MakesPathsSafeInItemLists()
    {
        Assert.AreEqual("a%3bb%40c%25d", ModelItems.Escape("a;b@c%d"));
        Assert.AreEqual("/plain/path.onnx", ModelItems.Escape("/plain/path.onnx"));
    }

    private sealed class RecordingEngine : IBuildEngine
    {
        public List<BuildErrorEventArgs> Errors { get; } = [];
        public List<BuildMessageEventArgs> Messages { get; } = [];
        public bool ContinueOnError => false;
        public int LineNumberOfTaskNode => 0;
        public int ColumnNumberOfTaskNode => 0;
        public string ProjectFileOfTaskNode => "test.csproj";
        public bool BuildProjectFile(string projectFileName, string[] targetNames, IDictionary globalProperties, IDictionary targetOutputs) => false;
        public void LogCustomEvent(CustomBuildEventArgs e) { }
        public void LogErrorEvent(BuildErrorEventArgs e) => Errors.Add(e);
        public void LogMessageEvent(BuildMessageEventArgs e) => Messages.Add(e);
        public void LogWarningEvent(BuildWarningEventArgs e) { }
    }
}
