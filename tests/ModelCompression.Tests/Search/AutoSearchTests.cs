using ModelCompression.Diagnostics;
using ModelCompression.Policy;
using ModelCompression.Search;

namespace ModelCompression.Tests.Search;

[TestClass]
public sealed class AutoSearchTests
{
    private static CompressionPolicy Policy(params (string, string)[] more) => Fixtures.Policy(
        [("Auto", "true"), ("CalibrationData", "fmnist_calib.npz"), ("ValidationData", "fmnist_val.npz"), ("MaxAccuracyDrop", "0.01"),
         ("SearchTrials", "3"), ("SearchSamples", "2000"), ("LatencyRounds", "1"), .. more]);

    [TestMethod]
    public void Auto_OnTheMlp_ChoosesPerLayerSettingsThatMeetTheThreshold_AndTheLockReproducesThemWithoutSearching()
    {
        var dir = Directory.CreateTempSubdirectory("mc-auto").FullName;
        var model = Path.Combine(dir, "mlp.onnx");
        File.Copy(Fixtures.Mlp, model);
        var output = Path.Combine(dir, "out", "mlp.onnx");
        var reports = Path.Combine(dir, "reports");
        // As MSBuild gives every item: the lock run below then rebuilds from cached passes.
        var cache = Path.Combine(dir, "cache");

        var first = CompressionEngine.Compress(new(model, output, reports, Policy()) { CacheDirectory = cache });
        var search = first.Report.Search!;
        Assert.AreEqual("auto", search.Mode);
        Assert.AreEqual(3, search.Trials.Count);
        Assert.IsTrue(first.Report.Verdict.Passed, string.Join("; ", first.Report.Verdict.Failures.Select(f => f.Message)));
        Assert.IsNotNull(search.ChosenTrial);
        var chosen = search.Trials[search.ChosenTrial.Value];
        Assert.IsTrue(chosen.Feasible);
        // The chosen trial is the smallest that met the threshold on the search samples (all of them here, so the full
        // gate cannot reject it for a runner-up: the anchors sit near the accuracy cliff, where 500 samples flatter).
        Assert.AreEqual(search.Trials.Where(t => t.Feasible).Min(t => t.Objective), chosen.Objective);
        // Per-layer settings, not one setting for all: the head is never pruned, the hidden layers are.
        Assert.IsTrue(search.Layers.Any(l => l.Settings.TryGetValue("Sparsity", out var s) && double.Parse(s, System.Globalization.CultureInfo.InvariantCulture) > 0));
        Assert.IsFalse(search.Layers.Single(l => l.Layer == "/out/Gemm").Settings.ContainsKey("Sparsity"));
        Assert.IsTrue(first.Report.Measurements.SizeRatio < 0.3, $"size ratio {first.Report.Measurements.SizeRatio:0.000}");
        Assert.IsFalse(first.Diagnostics.Any(d => d.Code == DiagnosticCodes.NothingToCompress));
        Assert.AreEqual("written", search.LockStatus);
        StringAssert.Contains(File.ReadAllText(Path.Combine(reports, "mlp.report.md")), "Auto trials (3)");
        StringAssert.Contains(File.ReadAllText(Path.Combine(reports, "mlp.report.html")), "<svg");
        var bytes = File.ReadAllBytes(output);

        // The lock: no search, the same bytes.
        var second = CompressionEngine.Compress(new(model, output, reports, Policy()) { CacheDirectory = cache });
        Assert.AreEqual("lock", second.Report.Search!.Mode);
        Assert.AreEqual(0, second.Report.Search.Trials.Count);
        Assert.IsFalse(second.Report.Timings.Any(t => t.Step == "search"));
        CollectionAssert.AreEqual(bytes, File.ReadAllBytes(output));
    }

    [TestMethod]
    public void Allocation_GivesSensitiveLayersLessSparsity_AndRemovesAtLeastTheOverallTarget()
    {
        var levels = LayerSensitivity.SparsityLevels;
        LayerSensitivity Layer(string name, long parameters, double steepness) =>
            new(name, parameters, true, true, levels.Select(s => Math.Min(1, steepness * s * s)).ToArray(), 0.01, 0.1);
        var space = new AutoPolicy([Layer("sensitive", 1000, 4), Layer("robust", 3000, 0.5), Layer("head", 100, 1) with { Prunable = false }], staticInt8: true);
        var s = space.Spread(0.6, 1);
        Assert.IsTrue(s[0] < s[1], $"sensitive {s[0]} vs robust {s[1]}");
        Assert.AreEqual(0, s[2]);
        Assert.IsTrue(s[0] * 1000 + s[1] * 3000 >= 0.6 * 4000);
        // The third knob: ⅓ gives every prunable layer the same sparsity, 1 the allocation by sensitivity, 0 Erdős–Rényi.
        var uniform = space.Choose([0.6, 0, 1.0 / 3]).Layers;
        Assert.AreEqual(uniform[0].Settings["Sparsity"], uniform[1].Settings["Sparsity"]);
        Assert.IsFalse(uniform[2].Settings.ContainsKey("Sparsity"));
        // Erdős–Rényi (third knob 0): the wider layer (more weights per row and column) loses more, the total is met.
        var wide = new AutoPolicy([Layer("wide", 784 * 512, 1) with { Rows = 512, Cols = 784 }, Layer("narrow", 512 * 256, 1) with { Rows = 256, Cols = 512 }], staticInt8: true);
        var er = wide.ErdosRenyi(0.85);
        Assert.IsTrue(er[0] > 0.85 && er[1] < 0.85, $"wide {er[0]:0.000}, narrow {er[1]:0.000}");
        Assert.AreEqual(0.85 * (784 * 512 + 512 * 256), er[0] * 784 * 512 + er[1] * 512 * 256, 1);
        // The anchors: 85 % by the default allocation, uniformly and by Erdős–Rényi, every layer in int8.
        var anchors = space.Anchors();
        Assert.AreEqual(3, anchors.Count);
        Assert.AreEqual(0.85, AutoPolicy.Sparsity(anchors[0][0]), 1e-9);
        Assert.IsTrue(space.Choose(anchors[1]).Layers.All(l => l.Settings["Quantize"] == "int8"));
        // The second knob: more bits for smaller budgets.
        Assert.AreEqual("none", space.Choose([0, 0, 1]).Layers[0].Settings["Quantize"]);
        Assert.AreEqual("int4", space.Choose([0, 1, 1]).Layers[0].Settings["Quantize"]);
        Assert.AreEqual("int8", space.Choose([0.9, 1, 1]).Layers[1].Settings["Quantize"], "a pruned layer stays int8: int4 blocks would store its zeros");
    }

    [TestMethod]
    [DataRow(new[] { "Auto=true" }, "Auto needs ValidationData")]
    [DataRow(new[] { "Auto=true", "ValidationData=fmnist_val.npz", "Quantize=int8" }, "Auto chooses Quantize per layer")]
    [DataRow(new[] { "Auto=true", "ValidationData=fmnist_val.npz", "MinCosine=-1" }, "Auto needs a threshold")]
    public void BadAutoSettings_AreCodedConflicts(string[] settings, string message)
    {
        var e = Assert.ThrowsExactly<CompressionException>(() => Fixtures.Policy(settings.Select(s => (s.Split('=')[0], s.Split('=')[1])).ToArray()));
        Assert.AreEqual(DiagnosticCodes.ConflictingSettings, e.Diagnostics[0].Code);
        StringAssert.Contains(e.Message, message);
    }
}
