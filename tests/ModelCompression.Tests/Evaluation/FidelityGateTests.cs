using ModelCompression.Diagnostics;
using ModelCompression.Evaluation;
using ModelCompression.Onnx;
using ModelCompression.Reporting;
using ModelCompression.Onnx.Protobuf;

namespace ModelCompression.Tests.Evaluation;

/// <summary>The gate compares every output with the original's, and by default a collapsed or NaN model never passes.</summary>
[TestClass]
public sealed class FidelityGateTests
{
    private static string NewDirectory() => Directory.CreateTempSubdirectory("mc-fidelity").FullName;

    private static CompressionResult Compress(string dir, string name, params (string, string)[] settings) =>
        CompressionEngine.Compress(new(Fixtures.Mlp, Path.Combine(dir, name + ".onnx"), dir,
            Fixtures.Policy([("ValidationData", "fmnist_val.npz"), ("LatencyRounds", "1"), .. settings])));

    [TestMethod]
    public void DefaultFloor_PassesInt8AndSparseGpt_AndFailsACollapsedModel_NamingTheOutput()
    {
        var dir = NewDirectory();
        // Measured on the 2,000 validation images: int8 0.99999, 50 % SparseGPT 0.99988, 95 % magnitude 0.86996.
        foreach (var (name, settings) in new[]
        {
            ("int8", new[] { ("Quantize", "int8"), ("CalibrationData", "fmnist_calib.npz") }),
            ("sparsegpt", new[] { ("Sparsity", "0.5"), ("PruneMethod", "sparsegpt"), ("CalibrationData", "fmnist_calib.npz") }),
        })
        {
            var result = Compress(dir, name, settings);
            var logits = result.Report.Measurements.Outputs.Single();
            Assert.IsTrue(result.Report.Verdict.Passed, $"{name}: {string.Join("; ", result.Report.Verdict.Failures.Select(f => f.Message))}");
            Assert.IsTrue(logits.Cosine > 0.999, $"{name}: cosine {logits.Cosine}");
            Assert.IsTrue(logits.SnrDb > 20, $"{name}: SNR {logits.SnrDb} dB");
            Assert.IsTrue(logits.Agreement > 0.97, $"{name}: agreement {logits.Agreement}");
        }

        var collapsed = Compress(dir, "collapsed", ("Sparsity", "0.95"), ("PruneMethod", "magnitude"));
        Assert.IsFalse(collapsed.OutputWritten);
        var output = collapsed.Report.Measurements.Outputs.Single();
        var failure = collapsed.Report.Verdict.Failures.Single();
        Assert.AreEqual(DiagnosticCodes.CosineBelowMinimum, failure.Code);
        Assert.AreEqual(output.Cosine, failure.Actual);
        Assert.AreEqual(GateOptions.DefaultMinCosine, failure.Limit);
        Assert.IsTrue(output.Cosine < GateOptions.DefaultMinCosine && output.Cosine > 0.5, $"cosine {output.Cosine}");
        Assert.AreEqual($"output '{output.Name}': cosine similarity with the original {MetricFormat.Cosine(output.Cosine)} < MinCosine 0.90000 " +
            $"(SNR {MetricFormat.Decibels(output.SnrDb)}, max abs error {MetricFormat.Magnitude(output.MaxAbsError)})", failure.Message);
        StringAssert.Contains(File.ReadAllText(Path.Combine(dir, "collapsed.report.md")), $"| {output.Name} | [2000×10] | {MetricFormat.Cosine(output.Cosine)} | {MetricFormat.Decibels(output.SnrDb)} |");

        // The floor can be lowered (or turned off with -1) by whoever accepts that model.
        Assert.IsTrue(Compress(dir, "accepted", ("Sparsity", "0.95"), ("PruneMethod", "magnitude"), ("MinCosine", "0.8")).Report.Verdict.Passed);
    }

    /// <summary>The MLP with the initializers of the node that writes its output replaced by <paramref name="value"/>.</summary>
    private static string Broken(string dir, string name, float value)
    {
        using var model = OnnxModel.Load(Fixtures.Mlp);
        var last = model.Graph.Node.Single(n => n.Output.Contains(model.Graph.Output[0].Name));
        foreach (var input in last.Input)
        {
            var init = model.Graph.Initializer.SingleOrDefault(t => t.Name == input);
            if (init is null) continue;
            var dims = init.Dims.ToArray();
            model.Graph.Initializer.Remove(init);
            model.Graph.Initializer.Add(Tensors.FromFloats(input, dims, Enumerable.Repeat(value, (int)dims.Aggregate(1L, (a, b) => a * b)).ToArray()));
        }
        var path = Path.Combine(dir, name + ".onnx");
        model.Save(path);
        return path;
    }

    [TestMethod]
    public void NaNOutputs_FailWithTheirOwnCode_AndScoreNoAccuracy_WhateverTheThresholds()
    {
        var dir = NewDirectory();
        var policy = Fixtures.Policy(("ValidationData", "fmnist_val.npz"), ("LatencyRounds", "1"), ("MinCosine", "-1"), ("MinAccuracy", "0.5"));
        var m = Gate.Measure(Fixtures.Mlp, Broken(dir, "nan", float.NaN), policy);
        Assert.AreEqual(0, m.Compressed!.Top1, "a NaN row is no hit");
        Assert.AreEqual(0, m.Compressed.TopK);
        var output = m.Outputs.Single();
        Assert.AreEqual(2000L * 10, output.NonFinite);
        var codes = Gate.Judge(m, policy).Failures.Select(f => f.Code).ToList();
        CollectionAssert.AreEqual(new[] { DiagnosticCodes.AccuracyBelowMinimum, DiagnosticCodes.NonFiniteOutput }, codes);
        StringAssert.Contains(Gate.Judge(m, policy).Failures[1].Message, $"output '{output.Name}': 20,000 of 20,000 values are NaN or infinite");
    }

    [TestMethod]
    public void TopK_CountsNoNaNRowAsAHit_AndArgMaxPicksNoClassForIt()
    {
        var outputs = new Runtime.FloatTensor([float.NaN, float.NaN, 0.1f, 0.9f, 0.2f, float.NaN], [3, 2]);
        Assert.AreEqual(1 / 3.0, Metrics.TopK(outputs, [0, 1, 0], 1), 1e-12);
        CollectionAssert.AreEqual(new[] { -1, 1, -1 }, Metrics.ArgMax(outputs));
    }

    [TestMethod]
    public void AllZeroOutputs_FailTheDefaultFloor()
    {
        var dir = NewDirectory();
        var policy = Fixtures.Policy(("ValidationData", "fmnist_val.npz"), ("LatencyRounds", "1"));
        var m = Gate.Measure(Fixtures.Mlp, Broken(dir, "zero", 0), policy);
        var output = m.Outputs.Single();
        Assert.AreEqual(0, output.Cosine);
        Assert.AreEqual(0, output.SnrDb, 1e-9, "the error is the whole signal");
        Assert.AreEqual(DiagnosticCodes.CosineBelowMinimum, Gate.Judge(m, policy).Failures.Single().Code);
    }

    /// <summary>The MLP with a second output: the softmax of its logits.</summary>
    private static string TwoOutputs(string dir)
    {
        using var model = OnnxModel.Load(Fixtures.Mlp);
        var logits = model.Graph.Output[0].Name;
        model.Graph.Node.Add(new NodeProto { OpType = "Softmax", Name = "/probs", Input = { logits }, Output = { "probs" }, Attribute = { new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = -1 } } });
        var probs = model.Graph.Output[0].Clone();
        probs.Name = "probs";
        model.Graph.Output.Add(probs);
        var path = Path.Combine(dir, "two.onnx");
        model.Save(path);
        return path;
    }

    [TestMethod]
    public void EveryOutput_IsCompared_WithItsOwnMetrics_AndReported()
    {
        var dir = NewDirectory();
        var original = TwoOutputs(dir);
        var result = CompressionEngine.Compress(new(original, Path.Combine(dir, "two.int8.onnx"), dir,
            Fixtures.Policy(("ValidationData", "fmnist_val.npz"), ("CalibrationData", "fmnist_calib.npz"), ("Quantize", "int8"), ("LatencyRounds", "1"), ("MinDecisionAgreement", "0.99"))));
        Assert.IsTrue(result.Report.Verdict.Passed, string.Join("; ", result.Report.Verdict.Failures.Select(f => f.Message)));
        var outputs = result.Report.Measurements.Outputs;
        CollectionAssert.AreEqual(new[] { "logits", "probs" }, outputs.Select(o => o.Name).ToArray());
        var (logits, probs) = (outputs[0], outputs[1]);
        CollectionAssert.AreEqual(new long[] { 2000, 10 }, probs.Shape);
        Assert.IsNull(logits.DecisionAgreement, "logits are not in [0, 1]");
        Assert.IsTrue(probs.DecisionAgreement > 0.99, $"decision agreement {probs.DecisionAgreement}");
        Assert.AreEqual(logits.Agreement, probs.Agreement, "softmax keeps the argmax");
        Assert.IsTrue(probs.MaxAbsError <= 1 && logits.MaxAbsError > probs.MaxAbsError, $"{logits.MaxAbsError} vs {probs.MaxAbsError}");
        Assert.AreNotEqual(logits.SnrDb, probs.SnrDb);

        using (var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "two.int8.report.json"))))
        {
            var rows = json.RootElement.GetProperty("measurements").GetProperty("outputs");
            Assert.AreEqual(2, rows.GetArrayLength());
            Assert.AreEqual(probs.DecisionAgreement!.Value, rows[1].GetProperty("decisionAgreement").GetDouble());
        }
        var html = File.ReadAllText(Path.Combine(dir, "two.int8.report.html"));
        foreach (var cell in ReportText.FidelityCells(probs).Where(c => c.Length > 0)) StringAssert.Contains(html, System.Net.WebUtility.HtmlEncode(cell));

        // Only the named output is gated and scored; a name the model lacks is a coded error.
        var named = Gate.Measure(original, Path.Combine(dir, "two.int8.onnx"), Fixtures.Policy(("ValidationData", "fmnist_val.npz"), ("LatencyRounds", "1"), ("Outputs", "probs")));
        Assert.AreEqual("probs", named.Outputs.Single().Name);
        Assert.AreEqual(result.Report.Measurements.Compressed!.Top1, named.Compressed!.Top1);
        var error = Assert.ThrowsExactly<CompressionException>(() => Gate.Measure(original, original, Fixtures.Policy(("ValidationData", "fmnist_val.npz"), ("Outputs", "prob"))));
        Assert.AreEqual(DiagnosticCodes.InvalidSettingValue, error.Code);
        StringAssert.Contains(error.Message, "'prob' is not an output");
    }
}

[TestClass]
public sealed class FidelityMetricsTests
{
    [TestMethod]
    public void ProbabilityMap_HasNoClassAxis_AndGetsDecisionAgreement_EvenWithSigmoidsUlpAboveOne()
    {
        // [N, 1, H, W]: the argmax along a one-entry axis is always 0, so it is not reported.
        var original = new Runtime.FloatTensor([0.1f, 0.9f, 1.0000001f, 0.4f, 0.2f, 0.7f, 0.6f, 0.3f], [2, 1, 2, 2]);
        var compressed = new Runtime.FloatTensor([0.2f, 0.8f, 0.9f, 0.6f, 0.1f, 0.7f, 0.4f, 0.3f], [2, 1, 2, 2]);
        var f = Fidelity.Compare("map", original, compressed);
        Assert.IsNull(f.ClassAxis);
        Assert.IsNull(f.Agreement);
        Assert.AreEqual(6 / 8.0, f.DecisionAgreement!.Value, 1e-12);
        Assert.AreEqual(0.2, f.MaxAbsError, 1e-6);
    }

    [TestMethod]
    public void Sequence_AgreesPerTimeStep_AlongTheLastAxis()
    {
        // [N=1, T=3, C=3]: steps 0 and 2 keep their class, step 1 does not.
        var original = new Runtime.FloatTensor([3, 1, 0, 0, 2, 1, 0, 0, 5], [1, 3, 3]);
        var compressed = new Runtime.FloatTensor([2, 1, 0, 0, 1, 2, 0, 1, 4], [1, 3, 3]);
        var f = Fidelity.Compare("seq", original, compressed);
        Assert.AreEqual(2, f.ClassAxis);
        Assert.AreEqual(2 / 3.0, f.Agreement!.Value, 1e-12);
        Assert.IsNull(f.DecisionAgreement, "values above 1 are no probabilities");
        Assert.AreEqual(10 * Math.Log10(40.0 / 5), f.SnrDb, 1e-9);
    }
}
