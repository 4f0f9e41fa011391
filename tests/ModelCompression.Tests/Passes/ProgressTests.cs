using ModelCompression.Passes;

namespace ModelCompression.Tests.Passes;

/// <summary>
/// A pass's reported fraction only grows, however many calibration runs its stages make: the time left shown from
/// it would otherwise jump back at every stage.
/// </summary>
[TestClass]
public sealed class ProgressTests
{
    [TestMethod]
    [DataRow("Sparsity", "0.5", "prune", DisplayName = "SparseGPT")]
    [DataRow("Quantize", "int4", "int4", DisplayName = "GPTQ int4")]
    [DataRow("Rank", "0.5", "low-rank", DisplayName = "activation-aware low rank")]
    [DataRow("StructuredSparsity", "0.5", "structured-prune", DisplayName = "structured pruning, refit")]
    [DataRow("Codebook", "16", "codebook", DisplayName = "codebooks, GPTQ-style assignment")]
    public void StagedPass_ReportsAFractionThatOnlyGrows(string setting, string value, string pass)
    {
        var dir = Directory.CreateTempSubdirectory("mc-progress").FullName;
        var reports = new List<(string Stage, double Fraction)>();
        var policy = Fixtures.Policy((setting, value), ("CalibrationData", "fmnist_calib.npz"), ("CalibrationSamples", "64"), ("BatchSize", "16"));
        CompressionEngine.Compress(new(Fixtures.Mlp, Path.Combine(dir, "out.onnx"), dir, policy), default, new InlineProgress<(string Stage, double Fraction)>(reports.Add));
        Directory.Delete(dir, recursive: true);

        var fractions = reports.Where(r => r.Stage == pass).Select(r => r.Fraction).ToList();
        Assert.IsGreaterThan(4, fractions.Count, $"the pass reports as it goes: {string.Join(", ", reports.Select(r => r.Stage).Distinct())}");
        for (var i = 1; i < fractions.Count; i++)
            Assert.IsGreaterThanOrEqualTo(fractions[i - 1], fractions[i], $"report {i}: {fractions[i - 1]} then {fractions[i]}");
        Assert.IsTrue(fractions.All(f => f is >= 0 and <= 1));
    }
}
