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
    private static string Broken(string dir, string name, float value, string? source = null)
    {
        using var model = OnnxModel.Load(source ?? Fixtures.Mlp);
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

    [TestMethod]
    public void MaskIou_FailsACandidateWhoseMaskVanished_ThatDecisionAgreementLetsThrough()
    {
        var dir = NewDirectory();
        var original = TwoOutputs(dir);
        // Constant logits: every softmax probability is 0.1, so the mask p > 0.5 (about one class in ten per image) is
        // empty; 90 % of the values still fall on the same side of 0.5 as the original's.
        var candidate = Broken(dir, "flat", 0, original);
        var policy = Fixtures.Policy(("ValidationData", "fmnist_val.npz"), ("LatencyRounds", "1"), ("Outputs", "probs"),
            ("MinCosine", "-1"), ("MinDecisionAgreement", "0.85"), ("MinMaskIou", "0.5"));
        var m = Gate.Measure(original, candidate, policy);
        var probs = m.Outputs.Single();
        Assert.AreEqual(0, probs.MaskIou!.Value, "nothing left in the candidate's mask");
        Assert.IsTrue(probs.DecisionAgreement > 0.85, $"decision agreement {probs.DecisionAgreement}");
        var failure = Gate.Judge(m, policy).Failures.Single();
        Assert.AreEqual(DiagnosticCodes.MaskIouBelowMinimum, failure.Code);
        Assert.AreEqual("mask-iou:probs", failure.Metric);
        Assert.AreEqual($"output 'probs': mask IoU (p > 0.5) with the original 0.00000 < MinMaskIou 0.50000 (decision agreement {MetricFormat.Percent(probs.DecisionAgreement)})", failure.Message);

        // The original against itself: identical masks pass; a threshold below every candidate value fills its mask.
        Assert.AreEqual(1, Gate.Measure(original, original, policy).Outputs.Single().MaskIou);
        var low = Fixtures.Policy(("ValidationData", "fmnist_val.npz"), ("LatencyRounds", "1"), ("Outputs", "probs"), ("DecisionThreshold", "0.05"));
        var filled = Gate.Measure(original, candidate, low).Outputs.Single();
        Assert.AreEqual(0.05, filled.DecisionThreshold);
        Assert.IsTrue(filled.MaskIou > 0 && filled.MaskIou < 1, $"mask IoU {filled.MaskIou}");
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
    public void MaskIou_IsPooledOverTheSet_AtTheThreshold()
    {
        var original = new Runtime.FloatTensor([0.1f, 0.9f, 1.0000001f, 0.4f, 0.2f, 0.7f, 0.6f, 0.3f], [2, 1, 2, 2]);
        var compressed = new Runtime.FloatTensor([0.2f, 0.8f, 0.9f, 0.6f, 0.1f, 0.7f, 0.4f, 0.3f], [2, 1, 2, 2]);
        // p > 0.5: original {1, 2, 5, 6}, compressed {1, 2, 3, 5}: 3 shared of 5.
        Assert.AreEqual(3 / 5.0, Fidelity.Compare("map", original, compressed).MaskIou!.Value, 1e-12);
        // p > 0.3: both {1, 2, 3, 5, 6} (0.3 itself is off).
        var low = Fidelity.Compare("map", original, compressed, 0.3);
        Assert.AreEqual(1, low.MaskIou);
        Assert.AreEqual(1, low.DecisionAgreement);
        Assert.AreEqual(0.3, low.DecisionThreshold);

        // Σ intersections / Σ unions, not the mean of per-sample IoUs: sample 0 loses its one pixel (IoU 0), sample 1
        // keeps its three (IoU 1); pooled 3/4, where the per-sample mean would be 1/2.
        var a = new Runtime.FloatTensor([0.9f, 0.1f, 0.1f, 0.1f, 0.9f, 0.9f, 0.9f, 0.1f], [2, 4]);
        var b = new Runtime.FloatTensor([0.1f, 0.1f, 0.1f, 0.1f, 0.9f, 0.9f, 0.9f, 0.1f], [2, 4]);
        Assert.AreEqual(3 / 4.0, Fidelity.Compare("map", a, b).MaskIou!.Value, 1e-12);
    }

    [TestMethod]
    public void MaskIou_IsOneWhenBothMasksAreEmpty_AndCountsANonFiniteValueAsOff()
    {
        var empty = Fidelity.Compare("p", new Runtime.FloatTensor([0.1f, 0.2f, 0.3f], [3, 1]), new Runtime.FloatTensor([0.2f, 0.1f, 0.4f], [3, 1]));
        Assert.AreEqual(1, empty.MaskIou);
        var nan = Fidelity.Compare("p", new Runtime.FloatTensor([0.9f, 0.9f], [2, 1]), new Runtime.FloatTensor([float.NaN, 0.9f], [2, 1]));
        Assert.AreEqual(0.5, nan.MaskIou);
        Assert.AreEqual(0.5, nan.DecisionAgreement);
        Assert.AreEqual(1, nan.NonFinite);
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
        Assert.IsNull(f.MaskIou);
        Assert.AreEqual(10 * Math.Log10(40.0 / 5), f.SnrDb, 1e-9);
    }
}
