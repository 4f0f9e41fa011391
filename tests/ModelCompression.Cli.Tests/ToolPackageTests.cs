using static ModelCompression.Cli.Tests.CliRunner;

namespace ModelCompression.Cli.Tests;

/// <summary>The tool as a user gets it: packed, installed with <c>dotnet tool install</c> from a local feed, run as a process.</summary>
[TestClass]
public sealed class ToolPackageTests
{
    [TestMethod]
    [Timeout(600_000, CooperativeCancellation = true)]
    public void PackedTool_InstallsFromALocalFeed_AndCompressesAFixture()
    {
        var root = TempDirectory();
        var feed = Path.Combine(root, "feed");
        var tools = Path.Combine(root, "tools");
        // A unique version so no NuGet cache can serve an older build; own artifacts folder so the repo's bin/obj are untouched.
        var version = $"0.1.0-test.{DateTime.UtcNow:yyyyMMddHHmmss}";
        var project = Path.Combine(RepositoryRoot(), "src", "ModelCompression.Cli", "ModelCompression.Cli.csproj");
        var arguments = $"pack \"{project}\" -c Release -o \"{feed}\" -p:Version={version} -p:UseArtifactsOutput=true -p:ArtifactsPath=\"{Path.Combine(root, "artifacts")}\"";
        var pack = Process("dotnet", arguments, root);
        // NuGet's restore now and then fails without saying why while other test assemblies run dotnet in parallel
        // (MSB4181, NuGet/Home#13460); try again then. A real failure fails again.
        for (var attempt = 1; attempt < 3 && pack.ExitCode != 0 && pack.Output.Contains("MSB4181", StringComparison.Ordinal); attempt++)
            pack = Process("dotnet", arguments, root);
        Assert.AreEqual(0, pack.ExitCode, pack.Output);
        Assert.IsTrue(File.Exists(Path.Combine(feed, $"ModelCompression.Tool.{version}.nupkg")), pack.Output);

        var install = Process("dotnet", $"tool install ModelCompression.Tool --version {version} --tool-path \"{tools}\" --add-source \"{feed}\"", root);
        Assert.AreEqual(0, install.ExitCode, install.Output);

        var exe = Path.Combine(tools, OperatingSystem.IsWindows() ? "compress-model.exe" : "compress-model");
        var output = Path.Combine(root, "out", "mlp.onnx");
        var run = Process(exe, $"compress \"{Fixture("fmnist_mlp.onnx")}\" -o \"{output}\" --quantize int8-dynamic --validation-data \"{Fixture("fmnist_val.npz")}\" --max-accuracy-drop 0.01 --latency-rounds 2", root);
        Assert.AreEqual(0, run.ExitCode, run.Output);
        StringAssert.Contains(run.Output, ": pass");
        Assert.IsTrue(File.Exists(output), run.Output);
        Assert.IsLessThan(new FileInfo(Fixture("fmnist_mlp.onnx")).Length / 3, new FileInfo(output).Length, "int8 weights are ~4x smaller");

        var failing = Process(exe, $"compress \"{Fixture("fmnist_mlp.onnx")}\" -o \"{output}.2\" --validation-data \"{Fixture("fmnist_val.npz")}\" --min-accuracy 0.9999 --latency-rounds 1", root);
        Assert.AreEqual(1, failing.ExitCode, failing.Output);
        StringAssert.Contains(failing.Output, "error CM0201");
    }

    private static string RepositoryRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "BuildTasks.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("BuildTasks.sln not found above the test binaries");
    }
}
