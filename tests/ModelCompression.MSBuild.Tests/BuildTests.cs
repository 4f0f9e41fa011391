namespace ModelCompression.MSBuild.Tests;

/// <summary>
/// Issue 5's acceptance cases, each on a fresh temporary project that references the freshly packed package and
/// runs the real engine (dotnet build/clean/publish processes). The MLP fixture with dynamic int8 on 64 validation
/// images keeps every engine run to about a second.
/// </summary>
[TestClass]
public sealed class BuildTests
{
    private const string Model = "models/net.onnx";
    private const string ValidationData = "data/val.npz";

    public TestContext TestContext { get; set; } = null!;

    /// <summary>A project with the MLP and the small validation set, and one CompressModel item with <paramref name="metadata"/>.</summary>
    private TestProject MlpProject(string metadata, string properties = "", string? name = null) =>
        TestProject.Create(name ?? TestContext.TestName!)
            .WithFixture("fmnist_mlp.onnx", Model)
            .WithFixture("fmnist_val_small_uncompressed.npz", ValidationData)
            .WithProject($"""<CompressModel Include="{Model}" {metadata} />""", properties);

    private const string Passing = """Quantize="int8-dynamic" ValidationData="data/val.npz" MaxAccuracyDrop="0.05" """;

    // (a)
    [TestMethod]
    public void Build_PassingItem_WritesCompressedModelSmallerThanOriginal()
    {
        var project = MlpProject(Passing);
        var original = File.ReadAllBytes(project.PathOf(Model));

        var build = project.Run("build");

        Assert.AreEqual(0, build.ExitCode, build.ToString());
        var output = Path.Combine(project.OutputDirectory, "models", "net.onnx");
        Assert.IsTrue(File.Exists(output), $"no compressed model at {output}\n{build}");
        Assert.IsLessThan(original.Length, new FileInfo(output).Length, "the compressed model is not smaller than the original");
        CollectionAssert.AreEqual(original, File.ReadAllBytes(project.PathOf(Model)), "the source model was modified");
        StringAssert.Contains(build.Output, ": pass", "the gate's summary line is missing at normal verbosity");
        Assert.IsTrue(Directory.EnumerateFiles(Path.Combine(project.IntermediateDirectory, "reports", "models", "net"), "*.report.json").Any(), "no report under obj/");
    }

    // (b)
    [TestMethod]
    public void Build_MissedThreshold_FailsWithCodeAndModelPath()
    {
        var project = MlpProject("""Quantize="int8-dynamic" ValidationData="data/val.npz" MinAccuracy="0.999" """);

        var build = project.Run("build");

        Assert.AreNotEqual(0, build.ExitCode, build.ToString());
        var errors = build.ErrorLines("CM0201");
        Assert.IsNotEmpty(errors, $"no CM0201 error line\n{build}");
        StringAssert.StartsWith(errors[0].Trim().TrimStart('1', '>'), project.PathOf(Model) + " : error CM0201:", "the error line does not name the model file");
        Assert.IsFalse(File.Exists(Path.Combine(project.OutputDirectory, "models", "net.onnx")), "a model that failed the gate reached the output folder");
    }

    // (c)
    [TestMethod]
    public void Build_NothingChanged_SkipsTheEngine()
    {
        var project = MlpProject(Passing);
        var first = project.Run("build");
        Assert.AreEqual(0, first.ExitCode, first.ToString());
        Assert.IsTrue(first.RanEngine, "the first build did not run the engine");
        var output = Path.Combine(project.OutputDirectory, "models", "net.onnx");
        var compressed = Path.Combine(project.IntermediateDirectory, "out", "models", "net.onnx");
        var outputTime = File.GetLastWriteTimeUtc(output);
        var compressedTime = File.GetLastWriteTimeUtc(compressed);

        var second = project.Run("build");

        Assert.AreEqual(0, second.ExitCode, second.ToString());
        Assert.IsTrue(second.SkippedUpToDate("_CompressModel_GatherStale"), "the up-to-date check did not skip the model");
        Assert.IsFalse(second.RanEngine, "the engine ran although nothing changed");
        Assert.AreEqual(outputTime, File.GetLastWriteTimeUtc(output), "the output model was rewritten");
        Assert.AreEqual(compressedTime, File.GetLastWriteTimeUtc(compressed), "the compressed model under obj/ was rewritten");
    }

    // (d)
    [TestMethod]
    public void Build_OneMetadataValueChanged_RerunsTheEngine()
    {
        // The value comes from a property, so no file changes between the builds: only the stamp can tell.
        var project = MlpProject("""Quantize="int8-dynamic" ValidationData="data/val.npz" MaxAccuracyDrop="$(Drop)" """);
        var first = project.Run("build", "-p:Drop=0.05");
        Assert.AreEqual(0, first.ExitCode, first.ToString());

        var same = project.Run("build", "-p:Drop=0.05");
        var changed = project.Run("build", "-p:Drop=0.06");

        Assert.IsFalse(same.RanEngine, "the engine ran with unchanged metadata");
        Assert.AreEqual(0, changed.ExitCode, changed.ToString());
        Assert.IsTrue(changed.RanEngine, "a changed MaxAccuracyDrop did not re-run the engine");
        StringAssert.Contains(File.ReadAllText(Path.Combine(project.IntermediateDirectory, "compressmodel.request.json")), "\"MaxAccuracyDrop\": \"0.06\"");
    }

    // (e)
    [TestMethod]
    public void Build_UnknownMetadataName_FailsWithCM0101_AtTheProjectFile()
    {
        var project = MlpProject("""Quantize="int8-dynamic" Sparsty="0.5" """);

        var build = project.Run("build");

        Assert.AreNotEqual(0, build.ExitCode, build.ToString());
        var errors = build.ErrorLines("CM0101");
        Assert.IsNotEmpty(errors, $"no CM0101 error line\n{build}");
        StringAssert.Contains(errors[0], "Sparsty");
        StringAssert.Contains(errors[0], "did you mean 'Sparsity'?");
        StringAssert.StartsWith(errors[0].Trim().TrimStart('1', '>'), project.ProjectFile + " : error CM0101:", "a metadata mistake is in the project file that defines the item");
    }

    [TestMethod]
    public void Build_AtMinimalVerbosity_SaysWhatCompressionDid()
    {
        var project = MlpProject(Passing);

        var build = project.Run("build", "-v:m");

        Assert.AreEqual(0, build.ExitCode, build.ToString());
        var summary = build.Output.Split('\n').Where(l => l.Contains("compress-model: ", StringComparison.Ordinal)).ToList();
        Assert.HasCount(1, summary, build.Output);
        StringAssert.Contains(summary[0], ": pass");
    }

    [TestMethod]
    public void Build_OnlyAThresholdChanged_ReGatesWithoutRerunningThePasses()
    {
        var project = MlpProject("""Sparsity="0.5" Quantize="int8-dynamic" ValidationData="data/val.npz" MaxAccuracyDrop="$(Drop)" """);
        var first = project.Run("build", "-p:Drop=0.05");
        Assert.AreEqual(0, first.ExitCode, first.ToString());
        var output = Path.Combine(project.OutputDirectory, "models", "net.onnx");
        var firstBytes = File.ReadAllBytes(output);

        var changed = project.Run("build", "-p:Drop=0.04");

        Assert.AreEqual(0, changed.ExitCode, changed.ToString());
        Assert.IsTrue(changed.RanEngine, "a changed threshold must re-run the gate");
        var report = Directory.EnumerateFiles(Path.Combine(project.IntermediateDirectory, "reports", "models", "net"), "*.report.json").Single();
        using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(report));
        var passes = json.RootElement.GetProperty("timings").EnumerateArray()
            .Where(t => t.GetProperty("step").GetString() is "prune" or "quantize-int8-dynamic").ToList();
        Assert.HasCount(2, passes, json.RootElement.GetProperty("timings").ToString());
        Assert.IsTrue(passes.All(t => t.TryGetProperty("cached", out var cached) && cached.GetBoolean()), "the passes ran again: " + json.RootElement.GetProperty("timings"));
        CollectionAssert.AreEqual(firstBytes, File.ReadAllBytes(output), "the re-gated model is the same model");
    }

    // (f)
    [TestMethod]
    public void Build_SeveralProjectsWithSeveralModelsInParallel_WritesEveryOutput()
    {
        var root = Path.Combine(PackageFeed.ProjectsFolder, TestContext.TestName!);
        var library = TestProject.Create(TestContext.TestName!, "Models", root)
            .WithFixture("fmnist_mlp.onnx", "models/a.onnx")
            .WithFixture("fmnist_mlp.onnx", "models/b.onnx")
            .WithFixture("fmnist_val_small_uncompressed.npz", ValidationData)
            .WithProject("""
                <CompressModel Include="models/a.onnx" Quantize="int8-dynamic" ValidationData="data/val.npz" MaxAccuracyDrop="0.05" />
                <CompressModel Include="models/b.onnx" Link="nets/b-int8.onnx" Quantize="int8-dynamic" />
                """);
        var app = TestProject.Create(TestContext.TestName!, "App", root)
            .WithFixture("fmnist_mlp.onnx", "c.onnx")
            .WithFixture("fmnist_calib.npz", "data/calib.npz")
            .WithProject("""
                <CompressModel Include="c.onnx" OutputPath="models/c.onnx" Quantize="int8" CalibrationData="data/calib.npz" />
                <ProjectReference Include="../Models/Models.csproj" />
                """);
        var tool = TestProject.Create(TestContext.TestName!, "Tool", root)
            .WithFixture("fmnist_mlp.onnx", "d.onnx")
            .WithProject("""<CompressModel Include="d.onnx" Quantize="int8-dynamic" />""");
        var solution = Path.Combine(root, "all.slnx");
        File.WriteAllText(solution, """
            <Solution>
              <Project Path="Models/Models.csproj" />
              <Project Path="App/App.csproj" />
              <Project Path="Tool/Tool.csproj" />
            </Solution>
            """);

        var build = app.RunIn(root, solution, "build", "-m");

        Assert.AreEqual(0, build.ExitCode, build.ToString());
        var original = new FileInfo(TestProject.Fixture("fmnist_mlp.onnx")).Length;
        string[] expected =
        [
            Path.Combine(library.OutputDirectory, "models", "a.onnx"),
            Path.Combine(library.OutputDirectory, "nets", "b-int8.onnx"),
            Path.Combine(app.OutputDirectory, "models", "c.onnx"),
            // Copied from the referenced project, as its content would be.
            Path.Combine(app.OutputDirectory, "models", "a.onnx"),
            Path.Combine(app.OutputDirectory, "nets", "b-int8.onnx"),
            Path.Combine(tool.OutputDirectory, "d.onnx"),
        ];
        foreach (var file in expected)
        {
            Assert.IsTrue(File.Exists(file), $"missing {file}\n{build}");
            Assert.IsLessThan(original, new FileInfo(file).Length, $"{file} is not compressed");
        }
        CollectionAssert.AreEqual(File.ReadAllBytes(Path.Combine(library.IntermediateDirectory, "out", "models", "a.onnx")), File.ReadAllBytes(expected[3]));
        Assert.IsFalse(File.Exists(Path.Combine(app.OutputDirectory, "c.onnx")), "the source path was used instead of OutputPath");
    }

    // (g)
    [TestMethod]
    public void Clean_AfterBuild_RemovesWhatTheTargetsWrote()
    {
        var project = MlpProject(Passing);
        var build = project.Run("build");
        Assert.AreEqual(0, build.ExitCode, build.ToString());
        var output = Path.Combine(project.OutputDirectory, "models", "net.onnx");
        Assert.IsTrue(File.Exists(output));

        var clean = project.Run("clean");

        Assert.AreEqual(0, clean.ExitCode, clean.ToString());
        Assert.IsFalse(File.Exists(output), "the compressed model is still in the output folder");
        Assert.IsFalse(Directory.Exists(project.IntermediateDirectory), "obj/…/compressmodel is still there");
        Assert.IsTrue(File.Exists(project.PathOf(Model)), "Clean removed the source model");
    }

    // (h)
    [TestMethod]
    public void Publish_ContainsTheCompressedModel()
    {
        var project = MlpProject(Passing);
        var publishDirectory = Path.Combine(project.Directory, "published");

        var publish = project.Run("publish", "-c", "Debug", "-o", publishDirectory);

        Assert.AreEqual(0, publish.ExitCode, publish.ToString());
        var published = Path.Combine(publishDirectory, "models", "net.onnx");
        Assert.IsTrue(File.Exists(published), $"no model in the publish folder\n{publish}");
        CollectionAssert.AreEqual(File.ReadAllBytes(Path.Combine(project.IntermediateDirectory, "out", "models", "net.onnx")), File.ReadAllBytes(published));
        Assert.IsLessThan(new FileInfo(project.PathOf(Model)).Length, new FileInfo(published).Length);
    }

    [TestMethod]
    public void Build_CompressionDisabled_CopiesTheOriginalWithoutRunningTheEngine()
    {
        var project = MlpProject(Passing, "<CompressModelEnabled>false</CompressModelEnabled>");

        var build = project.Run("build");

        Assert.AreEqual(0, build.ExitCode, build.ToString());
        Assert.IsFalse(build.RanEngine);
        CollectionAssert.AreEqual(File.ReadAllBytes(project.PathOf(Model)), File.ReadAllBytes(Path.Combine(project.OutputDirectory, "models", "net.onnx")));
    }

    [TestMethod]
    public void Build_GateFailureAsWarning_WarnsAndStillWritesTheModel()
    {
        var project = MlpProject("""Quantize="int8-dynamic" ValidationData="data/val.npz" MinAccuracy="0.999" """);

        var build = project.Run("build", "-p:CompressModelGateFailureAsWarning=true");

        Assert.AreEqual(0, build.ExitCode, build.ToString());
        Assert.IsNotEmpty(build.WarningLines("CM0201"), build.ToString());
        Assert.IsTrue(File.Exists(Path.Combine(project.OutputDirectory, "models", "net.onnx")));
    }

    [TestMethod]
    public void Build_ProjectDefaultProperty_FillsTheSettingOfEveryItem()
    {
        var project = MlpProject("""Quantize="int8-dynamic" """, "<CompressModelDefaultBatchSize>32</CompressModelDefaultBatchSize>");

        var build = project.Run("build");

        Assert.AreEqual(0, build.ExitCode, build.ToString());
        StringAssert.Contains(File.ReadAllText(Path.Combine(project.IntermediateDirectory, "compressmodel.request.json")), "\"BatchSize\": \"32\"");
    }

    [TestMethod]
    public void Build_Cancelled_KillsTheEngineAndLeavesNoOutput()
    {
        if (!OperatingSystem.IsLinux()) Assert.Inconclusive("sends SIGINT and reads /proc");
        // Many latency rounds on the ResNet keep the engine busy long enough to be cancelled mid-run.
        var project = TestProject.Create(TestContext.TestName!)
            .WithFixture("fmnist_resnet.onnx", Model)
            .WithFixture("fmnist_val.npz", ValidationData)
            .WithProject("""<CompressModel Include="models/net.onnx" Quantize="int8-dynamic" ValidationData="data/val.npz" MaxLatencyRatio="100" LatencyRounds="1000" />""");
        var restore = DotNet.Run(project.Directory, null, "restore", project.ProjectFile);
        Assert.AreEqual(0, restore.ExitCode, restore.ToString());
        var request = Path.Combine(project.IntermediateDirectory, "compressmodel.request.json");

        var build = DotNet.Start(project.Directory, null, interruptible: true, "build", project.ProjectFile, "--no-restore", "-tl:off", "-nodeReuse:false", "-v:n");
        var deadline = DateTime.UtcNow.AddMinutes(2);
        while (!File.Exists(request) && !build.Process.HasExited && DateTime.UtcNow < deadline) Thread.Sleep(100);
        Assert.IsTrue(File.Exists(request), $"the engine never started\n{build.OutputSoFar}");
        Thread.Sleep(TimeSpan.FromSeconds(2));   // let the engine load ONNX Runtime and start measuring
        Assert.IsTrue(EngineProcesses(request).Any(), $"no engine process running\n{build.OutputSoFar}");

        using (var kill = System.Diagnostics.Process.Start("kill", ["-INT", build.Process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])) kill.WaitForExit();
        var result = build.WaitForResult();

        Assert.AreNotEqual(0, result.ExitCode, result.ToString());
        Assert.IsLessThan(90, result.Elapsed.TotalSeconds, "the build did not stop promptly");
        Assert.IsFalse(EngineProcesses(request).Any(), "the engine outlived the cancelled build");
        Assert.IsFalse(File.Exists(Path.Combine(project.IntermediateDirectory, "out", "models", "net.onnx")), "a cancelled run left an output");
        Assert.IsFalse(File.Exists(Path.Combine(project.OutputDirectory, "models", "net.onnx")), "a cancelled run left an output");
    }

    /// <summary>Processes whose command line names this request file (the engine run for this project).</summary>
    private static IEnumerable<int> EngineProcesses(string request)
    {
        foreach (var directory in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(directory), out var pid)) continue;
            string commandLine;
            try { commandLine = File.ReadAllText(Path.Combine(directory, "cmdline")); }
            catch (IOException) { continue; }
            catch (UnauthorizedAccessException) { continue; }
            if (commandLine.Contains(request, StringComparison.Ordinal) && commandLine.Contains("compress-model.dll", StringComparison.Ordinal)) yield return pid;
        }
    }
}
