using System.Diagnostics;
using System.Text.RegularExpressions;
using static ModelCompression.Cli.Tests.CliRunner;

namespace ModelCompression.Cli.Tests;

/// <summary>
/// A newcomer's first try: the README's <c>sh</c> blocks, read from README.md (so a README edit is what runs) and run
/// verbatim in a copy of what a fresh clone holds, with a private home (DOTNET_CLI_HOME, HOME) so that
/// <c>dotnet tool install --global</c> installs into the temp folder. Then what the README promises: the quick start's
/// model and reports, and the installed tool (packed once, here) compressing a fixture and failing a gate.
/// </summary>
[TestClass]
public sealed class ReadmeCommandsTests
{
    /// <summary>Blocks (by first line) not run here, and why. Every other block runs, so a new one is never skipped silently.</summary>
    private static readonly Dictionary<string, string> NotRunHere = new(StringComparer.Ordinal)
    {
        ["dotnet test BuildTasks.sln"] = "the suite this test belongs to",
        ["dotnet pack src/ModelCompression.MSBuild"] = "the sample: SampleTests packs the MSBuild package once and builds and runs the sample with it",
    };

    public TestContext TestContext { get; set; } = null!;

    [TestMethod]
    [Timeout(1_200_000, CooperativeCancellation = true)]
    public void QuickStartAndToolInstall_RunVerbatim_InAFreshCopyOfTheRepository()
    {
        var root = TempDirectory();
        try
        {
            RunAndCheck(root);
        }
        finally
        {
            if (Environment.GetEnvironmentVariable("MC_KEEP_TEST_DIRS") != "1")
                try { Directory.Delete(root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    private void RunAndCheck(string root)
    {
        var repository = RepositoryRoot();
        var clone = Path.Combine(root, "repo");
        var home = Path.Combine(root, "home");
        Directory.CreateDirectory(home);
        CopyCheckout(repository, clone);
        var environment = new Dictionary<string, string>
        {
            ["HOME"] = home,
            ["DOTNET_CLI_HOME"] = home,
            // Dependencies come from the machine's package folder as they would for the user (and are not downloaded
            // again); the packages under test never go there: the tool installs into the private home's tool store.
            ["NUGET_PACKAGES"] = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } packages
                ? packages : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages"),
            ["DOTNET_NOLOGO"] = "1",
            ["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1",
            ["DOTNET_SKIP_FIRST_TIME_EXPERIENCE"] = "1",
            // No MSBuild node or build server may outlive a command (it would hold the redirected output open).
            ["MSBUILDDISABLENODEREUSE"] = "1",
            ["DOTNET_CLI_USE_MSBUILD_SERVER"] = "0",
        };

        var blocks = ShellBlocks(File.ReadAllText(Path.Combine(repository, "README.md")));
        var outputs = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var block in blocks.Where(b => !NotRunHere.ContainsKey(b[0])))
            foreach (var line in block)
                outputs[line] = RunLine(line, clone, environment);
        foreach (var skipped in NotRunHere.Keys)
            Assert.IsTrue(blocks.Any(b => b[0] == skipped), $"README has no block starting with '{skipped}' any more; update {nameof(NotRunHere)}");

        // Quick start: "writes artifacts/fmnist_resnet.int8.onnx with its reports in artifacts/compress-model-reports/ (JSON, Markdown, HTML)".
        var quickStart = outputs.Single(o => o.Key.StartsWith("dotnet run --project src/ModelCompression.Cli -- compress ", StringComparison.Ordinal));
        StringAssert.Contains(quickStart.Value, ": pass", quickStart.Value);
        var model = Path.Combine(clone, "artifacts", "fmnist_resnet.int8.onnx");
        Assert.IsTrue(File.Exists(model), quickStart.Value);
        var ratio = (double)new FileInfo(model).Length / new FileInfo(Path.Combine(clone, "samples", "data", "fmnist_resnet.onnx")).Length;
        Assert.IsTrue(ratio < 0.3, $"an int8 model is about a quarter of the float one; this one is {ratio:P1}");
        foreach (var extension in new[] { "json", "md", "html" })
            Assert.IsTrue(File.Exists(Path.Combine(clone, "artifacts", "compress-model-reports", $"fmnist_resnet.int8.report.{extension}")), extension);

        // Install: the packages land in packages/, the tool in the private home, and it runs there.
        Assert.IsTrue(outputs.Keys.Any(l => l.StartsWith("dotnet tool install --global ModelCompression.Tool", StringComparison.Ordinal)), "the README installs the tool globally");
        Assert.IsNotEmpty(Directory.GetFiles(Path.Combine(clone, "packages"), "ModelCompression.Tool.*.nupkg"));
        var tools = Path.Combine(home, ".dotnet", "tools");
        var exe = Path.Combine(tools, OperatingSystem.IsWindows() ? "compress-model.exe" : "compress-model");
        Assert.IsTrue(File.Exists(exe), $"no {exe}:\n{string.Join("\n", outputs.Values)}");
        CheckInstalledTool(exe, tools, root);
    }

    private static void CheckInstalledTool(string exe, string tools, string root)
    {
        // Only this platform's ONNX Runtime is installed (not those of every platform ONNX Runtime ships for).
        var natives = Directory.EnumerateFiles(tools, "*", SearchOption.AllDirectories)
            .Where(f => Path.GetFileName(f) is "onnxruntime.dll" or "libonnxruntime.so" or "libonnxruntime.dylib" || f.EndsWith(".aar", StringComparison.Ordinal) || f.Contains("xcframework", StringComparison.Ordinal))
            .ToList();
        Assert.HasCount(1, natives, string.Join("\n", natives));
        var installed = Directory.EnumerateFiles(tools, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        Assert.IsLessThan(100_000_000L, installed, $"installed tool: {installed:N0} bytes");

        var doctor = Process(exe, "doctor", root);
        Assert.AreEqual(0, doctor.ExitCode, doctor.Output);
        StringAssert.Contains(doctor.Output, "native library:     " + natives[0], doctor.Output);

        var output = Path.Combine(root, "out", "mlp.onnx");
        var run = Process(exe, $"compress \"{Fixture("fmnist_mlp.onnx")}\" -o \"{output}\" --quantize int8-dynamic --validation-data \"{Fixture("fmnist_val.npz")}\" --max-accuracy-drop 0.01 --latency-rounds 2", root);
        Assert.AreEqual(0, run.ExitCode, run.Output);
        StringAssert.Contains(run.Output, ": pass");
        Assert.IsTrue(File.Exists(output), run.Output);
        Assert.IsLessThan(new FileInfo(Fixture("fmnist_mlp.onnx")).Length / 3, new FileInfo(output).Length, "int8 weights are ~4x smaller");

        var failing = Process(exe, $"compress \"{Fixture("fmnist_mlp.onnx")}\" -o \"{output}.2\" --validation-data \"{Fixture("fmnist_val.npz")}\" --min-accuracy 0.9999 --latency-rounds 1", root);
        Assert.AreEqual(1, failing.ExitCode, failing.Output);
        StringAssert.Contains(failing.Output, "error CM0201");
        Assert.IsFalse(File.Exists(output + ".2"));
    }

    /// <summary>The command lines of every <c>```sh</c> block, without blank lines and <c># comments</c>.</summary>
    public static IReadOnlyList<string[]> ShellBlocks(string markdown) =>
        Regex.Matches(markdown.ReplaceLineEndings("\n"), "^```sh\n(.*?)^```", RegexOptions.Multiline | RegexOptions.Singleline)
            .Select(m => m.Groups[1].Value.Split('\n').Select(l => Regex.Replace(l, @"(^|\s)#.*$", "").Trim()).Where(l => l.Length > 0).ToArray())
            .Where(b => b.Length > 0)
            .ToList();

    private string RunLine(string line, string directory, IDictionary<string, string> environment)
    {
        // Lines run without a shell, so that they run alike everywhere: one command each.
        StringAssert.DoesNotMatch(line, new Regex(@"[|&;<>$`]"), "README sh lines must be single commands without shell syntax");
        var space = line.IndexOf(' ', StringComparison.Ordinal);
        var (file, arguments) = space < 0 ? (line, "") : (line[..space], line[(space + 1)..]);
        var watch = Stopwatch.StartNew();
        var result = Process(file, arguments, directory, environment, timeoutSeconds: 600);
        // NuGet's restore now and then fails without saying why while other test assemblies run dotnet in parallel
        // (MSB4181, NuGet/Home#13460); the same command again then. A real failure fails again.
        for (var attempt = 1; attempt < 3 && result.ExitCode != 0 && result.Output.Contains("MSB4181", StringComparison.Ordinal); attempt++)
            result = Process(file, arguments, directory, environment, timeoutSeconds: 600);
        TestContext.WriteLine($"{watch.Elapsed.TotalSeconds:0.0} s, exit {result.ExitCode}: {line}");
        Assert.AreEqual(0, result.ExitCode, $"'{line}' failed:\n{result.Output}");
        return result.Output;
    }

    /// <summary>Copies what a clone of this checkout would hold: tracked files and new ones git does not ignore.</summary>
    private static void CopyCheckout(string repository, string destination)
    {
        IEnumerable<string> files;
        try
        {
            var list = Process("git", "ls-files -z --cached --others --exclude-standard", repository);
            Assert.AreEqual(0, list.ExitCode, list.Output);
            files = list.Output.Split('\0', StringSplitOptions.RemoveEmptyEntries);
        }
        catch (System.ComponentModel.Win32Exception)
        {
            // No git (a source archive): everything but build outputs and packed packages.
            files = Directory.EnumerateFiles(repository, "*", SearchOption.AllDirectories)
                .Select(f => Path.GetRelativePath(repository, f))
                .Where(f => !f.EndsWith(".nupkg", StringComparison.Ordinal) &&
                            !f.Split(Path.DirectorySeparatorChar).Any(part => part is "bin" or "obj" or ".git" or "artifacts" or "TestResults"));
        }
        var copied = 0;
        foreach (var file in files)
        {
            var source = Path.Combine(repository, file);
            if (!File.Exists(source)) continue; // deleted in the working tree
            var target = Path.Combine(destination, file);
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(source, target);
            copied++;
        }
        Assert.IsTrue(File.Exists(Path.Combine(destination, "README.md")) && copied > 10, $"{copied} files copied from {repository}");
    }
}
