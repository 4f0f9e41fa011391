using ModelCompression.Diagnostics;
using ModelCompression.Evaluation;
using ModelCompression.Onnx;
using ModelCompression.Reporting;

namespace ModelCompression.Tests.Evaluation;

[TestClass]
public sealed class GateTests
{
    private static GateMeasurements Measured(double before, double after, double latencyBefore, double latencyAfter) => new()
    {
        OriginalBytes = 1000, CompressedBytes = 300, BatchSize = 64, LatencyRounds = 9,
        Original = new ModelMetrics(before, 0.99, 5, 2000), Compressed = new ModelMetrics(after, 0.98, 5, 2000),
        Outputs = [new OutputFidelity { Name = "logits", Shape = [2000, 10], Cosine = 0.999, SnrDb = 30, MaxAbsError = 0.5, MeanSquaredError = 0.01, ClassAxis = 1, Agreement = 0.95 }],
        OriginalLatency = new LatencyStats(latencyBefore, latencyBefore * 1.1, 45), CompressedLatency = new LatencyStats(latencyAfter, latencyAfter * 1.1, 45),
    };

    [TestMethod]
    public void EveryMissedThreshold_IsListed_WithBothNumbersAndTheMargin()
    {
        var policy = Fixtures.Policy(("ValidationData", "fmnist_val.npz"), ("MaxAccuracyDrop", "0.01"), ("MinAccuracy", "0.88"), ("MinAgreement", "0.97"),
            ("MaxLatencyRatio", "1.0"), ("MaxLatencyMs", "10"), ("MaxSizeRatio", "0.25"));
        var verdict = Gate.Judge(Measured(0.902, 0.871, 10, 12), policy);
        Assert.IsFalse(verdict.Passed);
        var messages = verdict.Failures.Select(f => $"{f.Code}: {f.Message}").ToList();
        CollectionAssert.AreEqual(new[]
        {
            "CM0201: accuracy 87.10 % < MinAccuracy 88.00 % (original 90.20 %)",
            "CM0201: accuracy 87.10 % < 89.20 % (original 90.20 %: drop 3.10 pt, allowed 1.00 pt)",
            "CM0202: output 'logits': top-1 agreement with the original 95.00 % < MinAgreement 97.00 %",
            "CM0203: latency ratio 1.200x > MaxLatencyRatio 1.000x (p50 12.00 ms vs 10.00 ms at batch 64)",
            "CM0204: latency p50 12.00 ms > MaxLatencyMs 10.00 ms at batch 64",
            "CM0205: file size ratio 0.300x > MaxSizeRatio 0.250x (300 vs 1,000 bytes)",
        }, messages);
    }

    [TestMethod]
    public void SizeMeasure_PicksTheSizeTheGateCompares_AndTheMessageNamesIt()
    {
        // 0.300x on disk, 0.400x after Brotli (the original compressed better), 0.350x after Deflate.
        var m = Measured(0.9, 0.9, 10, 10) with { OriginalSizes = new CompressedSizes(1000, 800, 500), CompressedSizes = new CompressedSizes(300, 280, 200) };
        (string, string)[] limit = [("ValidationData", "fmnist_val.npz"), ("MaxSizeRatio", "0.32")];
        Assert.IsTrue(Gate.Judge(m, Fixtures.Policy(limit)).Passed, "file is the default: 0.300x passes");
        Assert.IsTrue(Gate.Judge(m, Fixtures.Policy([.. limit, ("SizeMeasure", "file")])).Passed);
        var brotli = Gate.Judge(m, Fixtures.Policy([.. limit, ("SizeMeasure", "brotli")])).Failures.Single();
        Assert.AreEqual("CM0205", brotli.Code);
        Assert.AreEqual("Brotli-compressed (quality 11) size ratio 0.400x > MaxSizeRatio 0.320x (200 vs 500 bytes)", brotli.Message);
        Assert.AreEqual(0.4, brotli.Actual, 1e-12);
        var deflate = Gate.Judge(m, Fixtures.Policy([.. limit, ("SizeMeasure", "deflate")])).Failures.Single();
        Assert.AreEqual("Deflate-compressed size ratio 0.350x > MaxSizeRatio 0.320x (280 vs 800 bytes)", deflate.Message);
        // And the other way round: a limit the compressed container meets but the file does not.
        var m2 = m with { CompressedBytes = 400, CompressedSizes = new CompressedSizes(400, 200, 100) };
        Assert.IsFalse(Gate.Judge(m2, Fixtures.Policy(limit)).Passed);
        Assert.IsTrue(Gate.Judge(m2, Fixtures.Policy([.. limit, ("SizeMeasure", "brotli")])).Passed);
    }

    [TestMethod]
    public void ThresholdsThatHold_Pass_AndUnsetOnesAreNotChecked()
    {
        var policy = Fixtures.Policy(("ValidationData", "fmnist_val.npz"), ("MaxAccuracyDrop", "0.01"), ("MaxLatencyRatio", "1.0"));
        Assert.IsTrue(Gate.Judge(Measured(0.902, 0.895, 10, 7), policy).Passed);
        Assert.IsTrue(Gate.Judge(Measured(0.902, 0.10, 10, 70), new Policy.CompressionPolicy()).Passed);
    }

    [TestMethod]
    public void ValidationSamples_AndLatencyBatchSize_BoundWhatTheGateRuns()
    {
        var dir = Directory.CreateTempSubdirectory("mc-gate-budget").FullName;
        var candidate = Path.Combine(dir, "out.onnx");
        CompressionEngine.Compress(new(Fixtures.Mlp, candidate, dir, Fixtures.Policy(("Quantize", "int8-dynamic"))));
        var budget = Gate.Measure(Fixtures.Mlp, candidate, Fixtures.Policy(("ValidationData", "fmnist_val.npz"), ("LatencyRounds", "1"), ("ValidationSamples", "100"), ("LatencyBatchSize", "8")));
        Assert.AreEqual(100, budget.Original!.Samples);
        Assert.AreEqual(100, budget.Compressed!.Samples);
        Assert.AreEqual(8, budget.BatchSize, "the latency batch");
        var all = Gate.Measure(Fixtures.Mlp, candidate, Fixtures.Policy(("ValidationData", "fmnist_val.npz"), ("LatencyRounds", "1")));
        Assert.AreEqual(Fixtures.ValidationData.Count, all.Original!.Samples);
        Assert.AreEqual(64, all.BatchSize, "BatchSize times a small model");
        // The first 100 samples are the ones judged.
        var first = Gate.Measure(Fixtures.Mlp, candidate, Fixtures.Policy(("ValidationData", "fmnist_val.npz")), default, null, Fixtures.ValidationData.Take(100), measureLatency: false);
        Assert.AreEqual(first.Original, budget.Original);
        Assert.AreEqual(first.Compressed, budget.Compressed);
        // A model past the limit (lowered here) is timed one sample at a time by default.
        var large = Gate.Measure(Fixtures.Mlp, candidate, Fixtures.Policy(("ValidationData", "fmnist_val.npz"), ("LatencyRounds", "1")), default, null, null, true, null, oneAtATimeAbove: 0);
        Assert.AreEqual(1, large.BatchSize);
        Directory.Delete(dir, recursive: true);
    }

    [TestMethod]
    public void ModelPastTheLimit_IsGatedOneModelAtATime_WithTheSameVerdict()
    {
        // The path a model over 64 MiB takes (each session alone, latency per model in turn), on the small MLP by
        // lowering the limit: the accuracy, fidelity and verdict are those of the interleaved gate.
        var dir = Directory.CreateTempSubdirectory("mc-gate-alone").FullName;
        var candidate = Path.Combine(dir, "out.onnx");
        CompressionEngine.Compress(new(Fixtures.Mlp, candidate, dir, Fixtures.Policy(("Quantize", "int4"))));
        var policy = Fixtures.Policy(("ValidationData", "fmnist_val.npz"), ("LatencyRounds", "2"), ("MaxAccuracyDrop", "0.001"), ("MinCosine", "0.9999"));
        var together = Gate.Measure(Fixtures.Mlp, candidate, policy);
        var alone = Gate.Measure(Fixtures.Mlp, candidate, policy, default, null, null, true, null, oneAtATimeAbove: 0);

        Assert.IsNull(together.LatencyOneAtATime);
        Assert.IsTrue(alone.LatencyOneAtATime);
        Assert.AreEqual(together.Original, alone.Original);
        Assert.AreEqual(together.Compressed, alone.Compressed);
        Assert.AreNotEqual(together.Original!.Top1, together.Compressed!.Top1, "int4 moves the accuracy, so the verdict is not a trivial pass");
        CollectionAssert.AreEqual(together.Outputs.Select(o => (o.Name, o.Cosine, o.SnrDb, o.MaxAbsError, o.Agreement)).ToList(),
            alone.Outputs.Select(o => (o.Name, o.Cosine, o.SnrDb, o.MaxAbsError, o.Agreement)).ToList());
        CollectionAssert.AreEqual(Gate.Judge(together, policy).Failures.Select(f => (f.Code, f.Metric, f.Actual)).ToList(),
            Gate.Judge(alone, policy).Failures.Select(f => (f.Code, f.Metric, f.Actual)).ToList());
        Assert.IsFalse(Gate.Judge(alone, policy).Passed);
        Assert.AreEqual(2, alone.OriginalLatency!.RoundP50Ms.Count);
        Assert.AreEqual(alone.OriginalLatency.Runs, alone.CompressedLatency!.Runs, "both models get the same runs per round");
        StringAssert.Contains(ReportText.EnvironmentRows(alone).Single(r => r.Name == "Latency method").Value, "one model at a time");

        // A search's kept original outputs serve the next trial on this path too (latency off: no original session).
        var run = new OriginalRun();
        var data = Fixtures.ValidationData;
        var first = Gate.Measure(Fixtures.Mlp, candidate, policy, default, null, data, false, run, oneAtATimeAbove: 0);
        var second = Gate.Measure(Fixtures.Mlp, candidate, policy, default, null, data, false, run, oneAtATimeAbove: 0);
        Assert.IsNotNull(run.Outputs);
        Assert.AreEqual(first.Compressed, second.Compressed);
        Assert.IsNull(second.OriginalLatency);

        var error = Assert.ThrowsExactly<CompressionException>(() => Gate.Measure(Fixtures.Mlp, candidate,
            Fixtures.Policy(("ValidationData", "fmnist_val.npz"), ("Outputs", "prob")), default, null, null, true, null, oneAtATimeAbove: 0));
        Assert.AreEqual(DiagnosticCodes.InvalidSettingValue, error.Code);
        Directory.Delete(dir, recursive: true);
    }

    [TestMethod]
    public void LargeModelPath_ReportsWhatTheInMemoryPathReports()
    {
        // A large source stored with external data: the candidate keeps that form, the engine reads its weights back
        // from the saved file for the report, and the gate runs one model at a time. Same verdict and per-layer table.
        var dir = Directory.CreateTempSubdirectory("mc-large-path").FullName;
        var source = Path.Combine(dir, "mlp.onnx");
        using (var model = OnnxModel.Load(Fixtures.Mlp)) model.Save(source, new SaveOptions { ExternalizeThreshold = 1024 });
        var policy = Fixtures.Policy(("Quantize", "int8-dynamic"), ("ValidationData", "fmnist_val.npz"), ("LatencyRounds", "1"), ("MinAgreement", "0.999"));
        var small = CompressionEngine.Compress(new(source, Path.Combine(dir, "small", "out.onnx"), Path.Combine(dir, "small"), policy) { GateFailureAsWarning = true });
        CompressionReport large;
        CompressionEngine.LargeModelBytes = 0;
        try { large = CompressionEngine.Compress(new(source, Path.Combine(dir, "large", "out.onnx"), Path.Combine(dir, "large"), policy) { GateFailureAsWarning = true }).Report; }
        finally { CompressionEngine.LargeModelBytes = DeployedSize.StreamedLimit; }

        Assert.IsNull(small.Report.Measurements.LatencyOneAtATime);
        Assert.IsTrue(large.Measurements.LatencyOneAtATime);
        Assert.IsTrue(File.Exists(Path.Combine(dir, "large", "out.onnx.data")), "the large path keeps external data");
        Assert.AreEqual(small.Report.Measurements.Compressed, large.Measurements.Compressed);
        Assert.AreEqual(small.Report.Measurements.Outputs.Single().Agreement, large.Measurements.Outputs.Single().Agreement);
        CollectionAssert.AreEqual(small.Report.Verdict.Failures.Select(f => (f.Code, f.Actual)).ToList(), large.Verdict.Failures.Select(f => (f.Code, f.Actual)).ToList());
        Assert.AreEqual(small.Report.ParametersAfter, large.ParametersAfter);
        Assert.AreEqual(small.Report.NonZeroParametersAfter, large.NonZeroParametersAfter);
        // The per-layer stored sizes, measured on the weights read back from the candidate's side file.
        CollectionAssert.AreEqual(small.Report.Layers.Select(l => (l.Layer, l.Technique, l.NonZeroParametersAfter, l.StoredSizes, l.EntropyBytes)).ToList(),
            large.Layers.Select(l => (l.Layer, l.Technique, l.NonZeroParametersAfter, l.StoredSizes, l.EntropyBytes)).ToList());
        Assert.IsTrue(large.Layers.Any(l => l.StoredSizes is not null));
        Directory.Delete(dir, recursive: true);
    }

    [TestMethod]
    public void LargeModelPath_CalibratesInSmallBatches_ToTheSameModel()
    {
        // A large model's calibration captures a few samples per run (memory), not the whole batch: the statistics
        // stream, so int8 static writes the same tensors.
        var dir = Directory.CreateTempSubdirectory("mc-large-calibration").FullName;
        var source = Path.Combine(dir, "mlp.onnx");
        using (var model = OnnxModel.Load(Fixtures.Mlp)) model.Save(source, new SaveOptions { ExternalizeThreshold = 1024 });
        var policy = Fixtures.Policy(("Quantize", "int8"), ("CalibrationData", "fmnist_calib.npz"), ("CalibrationSamples", "20"));
        Assert.IsTrue(policy.Execution.BatchSize > 20 && ModelCompression.Passes.CompressionContext.LargeCaptureBatch < 20, "one batch in memory, several in small batches");
        CompressionEngine.Compress(new(source, Path.Combine(dir, "small", "out.onnx"), Path.Combine(dir, "small"), policy));
        CompressionEngine.LargeModelBytes = 0;
        try { CompressionEngine.Compress(new(source, Path.Combine(dir, "large", "out.onnx"), Path.Combine(dir, "large"), policy)); }
        finally { CompressionEngine.LargeModelBytes = DeployedSize.StreamedLimit; }

        using var small = OnnxModel.Load(Path.Combine(dir, "small", "out.onnx"));
        using var large = OnnxModel.Load(Path.Combine(dir, "large", "out.onnx"));
        var expected = small.Graph.Initializer.ToDictionary(t => t.Name, t => small.GetTensor(t).RawBytes.ToArray());
        Assert.AreEqual(expected.Count, large.Graph.Initializer.Count);
        foreach (var t in large.Graph.Initializer)
            CollectionAssert.AreEqual(expected[t.Name], large.GetTensor(t).RawBytes.ToArray(), t.Name);
        Directory.Delete(dir, recursive: true);
    }

    [TestMethod]
    public void Latency_PercentilesInterpolate()
    {
        var stats = LatencyStats.From([5, 1, 3, 2, 4]);
        Assert.AreEqual(3, stats.P50Ms);
        Assert.AreEqual(4.8, stats.P95Ms, 1e-9);
    }

    [TestMethod]
    public void EngineReports_AreSelfContained_AndCarryTheNumbers()
    {
        var dir = Directory.CreateTempSubdirectory("mc-report").FullName;
        var result = CompressionEngine.Compress(new(Fixtures.Mlp, Path.Combine(dir, "out.onnx"), dir,
            Fixtures.Policy(("ValidationData", "fmnist_val.npz"), ("MinAgreement", "1.0"), ("LatencyRounds", "2"))));
        Assert.IsTrue(result.Report.Verdict.Passed);
        var logits = result.Report.Measurements.Outputs.Single();
        Assert.AreEqual(1.0, logits.Agreement);
        Assert.AreEqual(1.0, logits.Cosine, 1e-12);
        Assert.AreEqual(double.PositiveInfinity, logits.SnrDb, "nothing was compressed: the outputs are identical");
        Assert.IsNotNull(result.Report.Measurements.Environment);
        StringAssert.StartsWith(result.Report.Measurements.Environment.OnnxRuntimeVersion, "1.31");

        var html = File.ReadAllText(Path.Combine(dir, "out.report.html"));
        StringAssert.Contains(html, "<svg");
        StringAssert.Contains(html, ReportText.Percent(result.Report.Measurements.Compressed!.Top1));
        var external = System.Text.RegularExpressions.Regex.Matches(html, "(src|href)=\"[^\"]*\"|https?://(?!www\\.w3\\.org/2000/svg)").Count;
        Assert.AreEqual(0, external, "no scripts, styles or images are fetched");
        var md = File.ReadAllText(Path.Combine(dir, "out.report.md"));
        StringAssert.Contains(md, "| Top-1 accuracy |");
        using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "out.report.json")));
        Assert.AreEqual("pass", json.RootElement.GetProperty("verdictText").GetString());
    }
}
