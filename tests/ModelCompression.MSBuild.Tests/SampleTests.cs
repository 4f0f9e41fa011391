namespace ModelCompression.MSBuild.Tests;

/// <summary>
/// samples/FashionClassifier as a user gets it: copied out of the repository, built against the freshly packed
/// package (the headline policy, Sparsity="0.8" Quantize="int8" with its accuracy and latency gate), then run.
/// </summary>
[TestClass]
public sealed class SampleTests
{
    [TestMethod]
    [Timeout(600_000, CooperativeCancellation = true)]
    public void FashionClassifier_BuildsThroughTheGate_AndClassifiesWithTheCompressedModel()
    {
        var sample = Path.Combine(PackageFeed.RepositoryRoot, "samples", "FashionClassifier");
        var directory = Path.Combine(PackageFeed.ProjectsFolder, "FashionClassifier");
        foreach (var file in Directory.EnumerateFiles(sample, "*", SearchOption.AllDirectories)
                     .Where(f => !Path.GetRelativePath(sample, f).Split(Path.DirectorySeparatorChar).Any(part => part is "bin" or "obj")))
        {
            var target = Path.Combine(directory, Path.GetRelativePath(sample, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
        var project = Path.Combine(directory, "FashionClassifier.csproj");
        var version = $"-p:ModelCompressionVersion={PackageFeed.Version}";

        var build = DotNet.Run(directory, null, "build", project, version, "-tl:off", "-nodeReuse:false", "-v:n");
        Assert.AreEqual(0, build.ExitCode, build.ToString());
        StringAssert.Contains(build.Output, ": pass", build.ToString());
        var model = Path.Combine(directory, "bin", "Debug", "net10.0", "models", "fmnist_mlp.onnx");
        var ratio = (double)new FileInfo(model).Length / new FileInfo(Path.Combine(directory, "models", "fmnist_mlp.onnx")).Length;
        Assert.IsTrue(ratio <= 0.08, $"compressed model is {ratio:P2} of the original");

        var run = DotNet.Run(directory, null, "run", "--project", project, "--no-build", version, "--", "0");
        Assert.AreEqual(0, run.ExitCode, run.ToString());
        var accuracy = System.Text.RegularExpressions.Regex.Match(run.Output, @"accuracy: (\d+\.\d+)% on 2000 validation images");
        Assert.IsTrue(accuracy.Success, run.ToString());
        Assert.IsTrue(double.Parse(accuracy.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) >= 89.85, run.Output);
    }
}
