using System.Text.Json;
using System.Text.RegularExpressions;
using ModelCompression.Diagnostics;
using ModelCompression.Evaluation;
using ModelCompression.Graph;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Reporting;

namespace ModelCompression.Tests.Evaluation;

[TestClass]
public sealed class ReportTests
{
    private static string NewDirectory() => Directory.CreateTempSubdirectory("mc-reports").FullName;

    [TestMethod]
    public void TwoRunsIntoOneFolder_KeepTheirOwnReports_NamedAfterTheirOutputs()
    {
        var dir = NewDirectory();
        var reports = Path.Combine(dir, "reports");
        var a = CompressionEngine.Compress(new(Fixtures.Mlp, Path.Combine(dir, "mlp.int8.onnx"), reports,
            Fixtures.Policy(("Quantize", "int8-dynamic"), ("ValidationData", "fmnist_val.npz"), ("MinAgreement", "0.9"), ("LatencyRounds", "1"))));
        var b = CompressionEngine.Compress(new(Fixtures.Mlp, Path.Combine(dir, "mlp.sparse.onnx"), reports,
            Fixtures.Policy(("Sparsity", "0.5"), ("PruneMethod", "magnitude"), ("ValidationData", "fmnist_val.npz"), ("MinAgreement", "0.9"), ("LatencyRounds", "1"))));
        Assert.IsTrue(a.OutputWritten && b.OutputWritten);

        using var jsonA = JsonDocument.Parse(File.ReadAllText(Path.Combine(reports, "mlp.int8.report.json")));
        using var jsonB = JsonDocument.Parse(File.ReadAllText(Path.Combine(reports, "mlp.sparse.report.json")));
        Assert.AreEqual(Path.Combine(dir, "mlp.int8.onnx"), jsonA.RootElement.GetProperty("output").GetString());
        Assert.AreEqual(Path.Combine(dir, "mlp.sparse.onnx"), jsonB.RootElement.GetProperty("output").GetString());
        StringAssert.Contains(File.ReadAllText(Path.Combine(reports, "mlp.int8.report.md")), "int8-dynamic");
        StringAssert.Contains(File.ReadAllText(Path.Combine(reports, "mlp.sparse.report.md")), "magnitude");
        CollectionAssert.AreEquivalent(
            new[] { "mlp.int8.report.json", "mlp.int8.report.md", "mlp.int8.report.html", "mlp.sparse.report.json", "mlp.sparse.report.md", "mlp.sparse.report.html" },
            Directory.GetFiles(reports).Select(Path.GetFileName).ToArray(), "no temporary file or candidate is left");
    }

    [TestMethod]
    public void FailedGate_KeepsTheJudgedCandidate_UnderTheOutputsName_AndAPassingRunRemovesIt()
    {
        var dir = NewDirectory();
        var output = Path.Combine(dir, "mlp.onnx");
        var failed = CompressionEngine.Compress(new(Fixtures.Mlp, output, dir,
            Fixtures.Policy(("Sparsity", "0.9"), ("PruneMethod", "magnitude"), ("ValidationData", "fmnist_val.npz"), ("MinAgreement", "0.9999"), ("LatencyRounds", "1"))));
        Assert.IsFalse(failed.OutputWritten);
        var kept = Path.Combine(dir, "mlp.candidate.onnx");
        Assert.AreEqual(kept, failed.Report.Candidate);
        // The kept file is the model the gate judged: its agreement with the original is the one measured.
        // (Up to a sample whose top-1 is a near tie: here batches are 256, there 64.)
        using (var candidate = Onnx.OnnxModel.Load(kept))
        using (var original = Onnx.OnnxModel.Load(Fixtures.Mlp))
            Assert.AreEqual(failed.Report.Measurements.Outputs[0].Agreement!.Value, Metrics.Agreement(Fixtures.Outputs(original, 2000), Fixtures.Outputs(candidate, 2000)), 0.0011);
        Assert.IsFalse(File.Exists(output));

        var passed = CompressionEngine.Compress(new(Fixtures.Mlp, output, dir,
            Fixtures.Policy(("Sparsity", "0.2"), ("PruneMethod", "magnitude"), ("ValidationData", "fmnist_val.npz"), ("MinAgreement", "0.9"), ("LatencyRounds", "1"))));
        Assert.IsTrue(passed.OutputWritten);
        Assert.IsFalse(File.Exists(kept), "the failed run's candidate no longer matches the reports");
        CollectionAssert.AreEquivalent(new[] { "mlp.onnx", "mlp.report.json", "mlp.report.md", "mlp.report.html" }, Directory.GetFiles(dir).Select(Path.GetFileName).ToArray());
    }

    [TestMethod]
    public void PerLayerTable_HasOneRowPerLayer_InItsFinalState_AndNoQuantizationParameters()
    {
        var dir = NewDirectory();
        var result = CompressionEngine.Compress(new(Fixtures.Mlp, Path.Combine(dir, "mlp.onnx"), dir,
            Fixtures.Policy(("Sparsity", "0.8"), ("PruneMethod", "magnitude"), ("PruneScope", "layer"), ("Quantize", "int8"), ("CalibrationData", "fmnist_calib.npz"))));
        var report = result.Report;
        var layers = report.Layers;
        using (var source = Onnx.OnnxModel.Load(Fixtures.Mlp))
        {
            var nodes = source.Graph.Node.Select(CompressionContext.LayerName).ToList();
            CollectionAssert.AreEqual(nodes.Where(n => layers.Any(l => l.Layer == n)).ToList(), layers.Select(l => l.Layer).ToList(), "one row per layer, in graph order, and only layers");
        }
        CollectionAssert.AreEqual(new[] { "/hidden.0/Gemm", "/hidden.1/Gemm", "/out/Gemm" }, layers.Where(l => l.ParametersBefore > 0).Select(l => l.Layer).ToArray());
        foreach (var hidden in layers.Where(l => l.Layer.StartsWith("/hidden", StringComparison.Ordinal)))
        {
            StringAssert.Matches(hidden.Technique, new Regex(@"^magnitude (79\.\d|80\.0) % \+ int8 \+ sparse-storage$"));
            Assert.AreEqual(hidden.ParametersBefore, hidden.ParametersAfter, "pruning and int8 keep the dense count");
            Assert.AreEqual(0.8, hidden.Sparsity!.Value, 0.005, "the final zeros, after int8 rounding");
            Assert.AreEqual(8, hidden.Bits);
        }
        StringAssert.StartsWith(layers.Single(l => l.Layer == "/out/Gemm").Technique, "int8");
        StringAssert.Contains(LayerTable.Notes(layers.Single(l => l.Layer == "/out/Gemm")), "prune not applied: left dense: classifier head");
        // Rows add up to the totals, measured the same way.
        Assert.AreEqual(report.ParametersAfter, layers.Sum(l => l.ParametersAfter));
        Assert.AreEqual(report.NonZeroParametersAfter, layers.Sum(l => l.NonZeroParametersAfter));
        Assert.AreEqual(report.ParametersBefore, layers.Sum(l => l.ParametersBefore));

        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "mlp.report.json")));
        Assert.AreEqual(5, json.RootElement.GetProperty("schemaVersion").GetInt32());
        var first = json.RootElement.GetProperty("layers")[0];
        Assert.AreEqual("/hidden.0/Gemm", first.GetProperty("layer").GetString());
        CollectionAssert.AreEqual(new[] { "prune", "int8", "sparse-storage" },
            first.GetProperty("steps").EnumerateArray().Select(s => s.GetProperty("technique").GetString()).Distinct().ToArray(), "each pass's record is kept as a step");
        var md = File.ReadAllText(Path.Combine(dir, "mlp.report.md"));
        Assert.AreEqual(layers.Count, md.Split('\n').Count(l => Regex.IsMatch(l, @"^\| (/hidden|/out)")), md);
        Assert.DoesNotContain("_scale", md.Split("Per-layer")[1].Split("</details>")[0], "no scale tensor as a layer");
    }

    [TestMethod]
    public void LowRankSplits_AndDynamicQuantizationsFreshNodes_CountTowardTheirLayer()
    {
        static ModelWeight W(string node, long elements, long nonZeros) =>
            new("v", new NodeProto { Name = node, OpType = "MatMul" }, [elements], elements, nonZeros, "v", TensorProto.Types.DataType.Float);
        var records = new List<LayerRecord>
        {
            new() { Layer = "fc", Op = "MatMul", Technique = "svd", Rank = 8, ParametersBefore = 1000, ParametersAfter = 400, ReconstructionError = 0.1 },
            new() { Layer = "fc/lowrank_reduce", Op = "MatMul", Technique = "int8-dynamic", Bits = 8, ParametersBefore = 200, ParametersAfter = 200, ReconstructionError = 0.01 },
            new() { Layer = "fc", Op = "MatMul", Technique = "int8-dynamic", Bits = 8, ParametersBefore = 200, ParametersAfter = 200, ReconstructionError = 0.02 },
            new() { Layer = "head", Op = "MatMul", Technique = "low-rank", ParametersBefore = 50, ParametersAfter = 50, Note = "kept dense: too small" },
        };
        var before = new[] { W("fc", 1000, 1000), W("head", 50, 50) };
        var after = new[] { W("fc/lowrank_reduce_MatMulInteger", 200, 200), W("fc_MatMulInteger", 200, 190), W("head", 50, 50) };
        var rows = LayerTable.Build(records, before, after, ["head", "fc"]);
        Assert.HasCount(2, rows);
        Assert.AreEqual("head", rows[0].Layer, "graph order");
        Assert.AreEqual("none", rows[0].Technique);
        var fc = rows[1];
        Assert.AreEqual("svd rank 8 + int8-dynamic", fc.Technique);
        Assert.AreEqual(1000, fc.ParametersBefore);
        Assert.AreEqual(400, fc.ParametersAfter);
        Assert.AreEqual(390, fc.NonZeroParametersAfter);
        Assert.AreEqual("svd 0.1000, int8-dynamic 0.0100, int8-dynamic 0.0200", LayerTable.Errors(fc));
    }

    private static CompressionReport Synthetic(double before, double after, GateVerdict verdict) => new()
    {
        Model = "/m/net.onnx", Target = "/m/net.small.onnx", Policy = new Dictionary<string, string>(), Layers = [], Diagnostics = [], Timings = [], Verdict = verdict,
        Measurements = new GateMeasurements
        {
            OriginalBytes = 1000, CompressedBytes = 300, BatchSize = 64, LatencyRounds = 3,
            Original = new ModelMetrics(before, 0.999, 5, 2000), Compressed = new ModelMetrics(after, 0.998, 5, 2000),
            Outputs = [new OutputFidelity { Name = "logits", Shape = [2000, 10], Cosine = 0.99, SnrDb = 20, MaxAbsError = 1.5, MeanSquaredError = 0.1, ClassAxis = 1, Agreement = 0.9645 }],
            OriginalLatency = new LatencyStats(10, 12, 30) { RoundP50Ms = [9.5, 10, 11], RoundP95Ms = [11, 12, 14] },
            CompressedLatency = new LatencyStats(4, 5, 30) { RoundP50Ms = [3.5, 4, 4.6], RoundP95Ms = [4.5, 5, 7] },
        },
    };

    [TestMethod]
    public void GateMessage_ConsoleSummary_MarkdownAndHtml_WriteTheSameNumbers()
    {
        // The issue's case: 93.60 % → 93.15 % against MaxAccuracyDrop 0.003 read "accuracy 0.932 < 0.935 (drop 0.5 pt)".
        var policy = Fixtures.Policy(("ValidationData", "fmnist_val.npz"), ("MaxAccuracyDrop", "0.003"));
        var report = Synthetic(0.936, 0.9315, new GateVerdict([]));
        var verdict = Gate.Judge(report.Measurements, policy);
        report = report with { Verdict = verdict };
        Assert.AreEqual("accuracy 93.15 % < 93.30 % (original 93.60 %: drop 0.45 pt, allowed 0.30 pt)", verdict.Failures.Single().Message);
        var md = MarkdownReport.Render(report);
        var html = HtmlReport.Render(report);
        foreach (var text in new[] { "93.60 %", "93.15 %", "-0.45 pt" })
        {
            StringAssert.Contains(md, text);
            StringAssert.Contains(html, text);
        }
        StringAssert.Contains(md, "| Top-1 accuracy | 93.60 % | 93.15 % | -0.45 pt |");
    }

    [TestMethod]
    public void Html_ShowsTheAccuracyChange_OnAZoomedAxisAndAsADelta_AndLatencySpreads()
    {
        var html = HtmlReport.Render(Synthetic(0.936, 0.935, new GateVerdict([])));
        StringAssert.Contains(html, "Top-1 accuracy (%), axis from 93 %");
        StringAssert.Contains(html, "Accuracy change (pt)");
        StringAssert.Contains(html, "-0.10 pt");
        // 93.60 vs 93.50 on an axis from 93: bars of 0.6 and 0.5, 20 % apart (from 0 they were 0.1 % apart).
        var chart = html[html.IndexOf("Top-1 accuracy (%)", StringComparison.Ordinal)..];
        var widths = Regex.Matches(chart[..chart.IndexOf("</svg>", StringComparison.Ordinal)], "<rect [^>]*width=\"([0-9.]+)\"").Select(m => double.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)).ToList();
        Assert.AreEqual(1.2, widths[0] / widths[1], 0.01, string.Join(", ", widths));
        StringAssert.Contains(html, "whiskers: min–max of 3 rounds");
        StringAssert.Contains(html, "0.400x (0.368x–0.418x)");
        StringAssert.Contains(html, "9.50–11.00 ms");
        var md = MarkdownReport.Render(Synthetic(0.936, 0.935, new GateVerdict([])));
        StringAssert.Contains(md, "| Latency p95 (batch 64; min–max of 3 rounds) | 12.00 ms (11.00–14.00 ms) | 5.00 ms (4.50–7.00 ms) | 0.417x (0.409x–0.500x) |");
    }

    [TestMethod]
    public void LatencyRounds_KeepEachRoundsPercentiles()
    {
        var stats = LatencyStats.FromRounds([new double[] { 1, 2, 3 }, new double[] { 4, 5, 6 }]);
        Assert.AreEqual(3.5, stats.P50Ms, 1e-9);
        CollectionAssert.AreEqual(new[] { 2.0, 5.0 }, stats.RoundP50Ms.ToArray());
        Assert.AreEqual(2.9, stats.RoundP95Ms[0], 1e-9);
    }

    [TestMethod]
    public void Save_LeavesNoTemporaryFiles()
    {
        var dir = NewDirectory();
        using var model = Onnx.OnnxModel.Load(Fixtures.Mlp);
        model.Save(Path.Combine(dir, "a.onnx"));
        model.Save(Path.Combine(dir, "a.onnx"), new Onnx.SaveOptions { ExternalizeThreshold = 1024 });
        CollectionAssert.AreEquivalent(new[] { "a.onnx", "a.onnx.data" }, Directory.GetFiles(dir).Select(Path.GetFileName).ToArray());
    }
}
