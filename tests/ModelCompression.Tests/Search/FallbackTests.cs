using ModelCompression.Diagnostics;
using ModelCompression.Policy;
using ModelCompression.Search;

namespace ModelCompression.Tests.Search;

[TestClass]
public sealed class FallbackTests
{
    /// <summary>The acceptance case: the MLP at 90 % sparsity misses MaxAccuracyDrop=0.005; the fallback makes it pass.</summary>
    private static CompressionPolicy Policy(string maxDrop = "0.005", params (string, string)[] more) => Fixtures.Policy(
        [("Sparsity", "0.9"), ("CalibrationData", "fmnist_calib.npz"), ("ValidationData", "fmnist_val.npz"), ("MaxAccuracyDrop", maxDrop),
         ("LatencyRounds", "1"), ("Fallback", "true"), .. more]);

    [TestMethod]
    public void Fallback_PassesWhereThePlainRunFails_AndTheLockReproducesTheOutputWithoutRounds_UntilAConstraintChanges()
    {
        var dir = Directory.CreateTempSubdirectory("mc-fallback").FullName;
        var model = Path.Combine(dir, "mlp.onnx");
        File.Copy(Fixtures.Mlp, model);
        var output = Path.Combine(dir, "out", "mlp.onnx");
        var reports = Path.Combine(dir, "reports");
        var lockPath = model + FallbackOptions.LockSuffix;
        // The pass cache (as MSBuild gives every item) makes the two later runs gate-only: their passes' settings match.
        var cache = Path.Combine(dir, "cache");

        var first = CompressionEngine.Compress(new(model, output, reports, Policy()) { CacheDirectory = cache });
        var search = first.Report.Search!;
        Assert.AreEqual("fallback", search.Mode);
        // Round 0 is the policy as given: the plain run, which fails the accuracy drop.
        Assert.IsFalse(search.Rounds[0].AccuracyPassed);
        StringAssert.Contains(search.Rounds[0].Failures[0], DiagnosticCodes.AccuracyBelowMinimum);
        Assert.IsTrue(first.Report.Verdict.Passed, string.Join("; ", first.Report.Verdict.Failures.Select(f => f.Message)));
        Assert.IsTrue(search.GateRuns is > 1 and <= 1 + 3 * 2, $"rounds: {search.GateRuns}"); // 1 + (1 + ⌈log₂ 2⌉) per rung, 3 rungs
        Assert.IsTrue(search.Reverted.Any(r => r.Layer == "/hidden.0/Gemm"), "the most sensitive layer is reverted");
        Assert.IsTrue(first.Report.Measurements.CompressedBytes < first.Report.Measurements.OriginalBytes * 0.5, "a smaller gain, still a gain");
        StringAssert.Contains(File.ReadAllText(Path.Combine(reports, "mlp.report.md")), "/hidden.0/Gemm | 1 |");
        Assert.AreEqual("written", search.LockStatus);
        var lockText = File.ReadAllText(lockPath);
        StringAssert.Contains(lockText, "\"MaxAccuracyDrop\": \"0.005\"");
        var bytes = File.ReadAllBytes(output);

        // The lock matches: applied directly, one candidate and no fallback round; the output is byte-identical.
        var second = CompressionEngine.Compress(new(model, output, reports, Policy()) { CacheDirectory = cache });
        Assert.AreEqual("lock", second.Report.Search!.Mode);
        Assert.AreEqual(0, second.Report.Search.GateRuns);
        Assert.IsFalse(second.Report.Timings.Any(t => t.Step == "fallback"));
        CollectionAssert.AreEqual(bytes, File.ReadAllBytes(output));
        Assert.AreEqual(lockText, File.ReadAllText(lockPath));

        // A changed constraint makes it stale: a coded warning naming what changed, the lock applied as it is (no
        // rounds: re-searching is asked for with Search=true), and the lock left alone.
        var third = CompressionEngine.Compress(new(model, output, reports, Policy("0.006")) { CacheDirectory = cache });
        var warning = third.Diagnostics.Single(d => d.Code == DiagnosticCodes.StaleLockFile);
        Assert.AreEqual(Severity.Warning, warning.Severity);
        StringAssert.Contains(warning.Message, "the settings");
        Assert.AreEqual("stale-lock", third.Report.Search!.Mode);
        Assert.AreEqual(0, third.Report.Search.GateRuns);
        Assert.AreEqual(lockText, File.ReadAllText(lockPath));
    }

    [TestMethod]
    public void Rungs_StepEachTechniqueDownItsLadder_ThenFloat()
    {
        var rungs = AccuracyFallback.Rungs(Fixtures.Policy(("Sparsity", "0.9")), "/l1/Gemm");
        CollectionAssert.AreEqual(new[] { "Sparsity=0.8", "Sparsity=0.6", "Excluded=true" }, rungs.Select(r => r.Describe()).ToArray());

        var int4 = AccuracyFallback.Rungs(Fixtures.Policy(("Quantize", "int4"), ("Sparsity", "0.5")), "/l1/Gemm");
        CollectionAssert.AreEqual(new[] { "Quantize=int8-dynamic", "Excluded=true" }, int4.Select(r => r.Describe()).ToArray(), "0.5 has no milder sparsity worth keeping");
    }

    [TestMethod]
    public void LayerChoices_ApplyAfterThePolicyFile_AndSurviveTheLockFile()
    {
        var choices = new LayerPolicy([new LayerChoice("/l1/Gemm", new Dictionary<string, string> { ["Sparsity"] = "0.8" })]);
        var policy = choices.ApplyTo(Fixtures.Policy(("Sparsity", "0.9")));
        Assert.AreEqual(0.8, policy.For<ModelCompression.Pruning.PruningOptions>("/l1/Gemm").Options.Sparsity);
        Assert.AreEqual(0.9, policy.For<ModelCompression.Pruning.PruningOptions>("/l2/Gemm").Options.Sparsity);

        var path = Path.Combine(Directory.CreateTempSubdirectory("mc-lock").FullName, "m.onnx.compress.lock.json");
        new LockFile
        {
            Hash = "h", Inputs = new LockInputs("e", "m", "c", "v", "s"), Constraints = new Dictionary<string, string>(),
            Layers = LockFile.Entries(choices), Gate = new LockGate(true, 0.9, 0.9, 10, 5),
        }.Write(path);
        var read = LockFile.Read(path, out var problem)!;
        Assert.IsNull(problem);
        Assert.AreEqual(choices.Layers.Single().Describe(), read.ToLayerPolicy().Layers.Single().Describe());
        CollectionAssert.AreEqual(new[] { "the model", "the settings (techniques, constraints or policy file)" },
            new LockInputs("e", "m2", "c", "v", "s2").Differences(read.Inputs).ToArray());

        File.WriteAllText(path, "{ not json");
        Assert.IsNull(LockFile.Read(path, out problem));
        Assert.IsNotNull(problem);
    }
}
