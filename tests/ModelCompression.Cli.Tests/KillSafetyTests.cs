using System.Diagnostics;
using ModelCompression.Reliability;
using static ModelCompression.Cli.Tests.CliRunner;

namespace ModelCompression.Cli.Tests;

/// <summary>
/// <c>kill -9</c> of a real compress process at seeded points: the output never appears half-written, no temp file is
/// left next to it, and the source model is untouched.
/// </summary>
[TestClass]
public sealed class KillSafetyTests
{
    [TestMethod]
    public void KilledCompress_LeavesNoOutputNoTempFile_AndTheSourceUntouched()
    {
        var engine = Path.Combine(AppContext.BaseDirectory, "compress-model.dll");
        var source = Fixture("fmnist_resnet.onnx");
        var before = Files.Hashes(Path.GetDirectoryName(source)!);
        var random = new Random(15);
        // SparseGPT on the ResNet with calibration data runs for seconds: points from start-up to the passes.
        for (var round = 0; round < 3; round++)
        {
            var killAfter = TimeSpan.FromMilliseconds(random.Next(400, 2500));
            var dir = TempDirectory();
            var output = Path.Combine(dir, "out", "resnet.sparse.onnx");
            var info = new ProcessStartInfo("dotnet")
            {
                ArgumentList = { engine, "compress", source, "-o", output, "--sparsity", "0.5", "--calibration-data", Fixture("fmnist_calib.npz") },
                RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
            };
            using var process = System.Diagnostics.Process.Start(info)!;
            process.OutputDataReceived += (_, _) => { };
            process.ErrorDataReceived += (_, _) => { };
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            var exited = process.WaitForExit(killAfter);
            if (!exited) process.Kill(); // SIGKILL: no handler, no finally block runs
            process.WaitForExit();

            Assert.IsFalse(exited, $"round {round}: the compress finished before the kill at {killAfter.TotalMilliseconds} ms; the test needs a longer run");
            Assert.IsFalse(File.Exists(output), $"round {round}: an output appeared after a kill at {killAfter.TotalMilliseconds} ms");
            // A candidate a kill strands in the report folder (<name>.<guid>.candidate.onnx) is not asserted here: cleaning
            // stale ones is issue #15's "kill -9 while a temp file exists" item, fixed with the engine's temp names.
            var outputFolder = Path.GetDirectoryName(output)!;
            var left = Directory.Exists(outputFolder)
                ? Directory.EnumerateFiles(outputFolder, "*", SearchOption.AllDirectories).Where(f => f.EndsWith(".tmp", StringComparison.Ordinal) || Path.GetFileName(f).StartsWith(Path.GetFileName(output) + ".", StringComparison.Ordinal)).ToList()
                : [];
            Assert.AreEqual(0, left.Count, $"round {round}: left next to the output after a kill at {killAfter.TotalMilliseconds} ms: {string.Join(", ", left)}");
        }
        CollectionAssert.AreEquivalent(before.ToList(), Files.Hashes(Path.GetDirectoryName(source)!).ToList(), "the fixtures changed");
    }
}
