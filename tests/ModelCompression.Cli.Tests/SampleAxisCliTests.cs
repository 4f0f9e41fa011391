using System.Text.Json;
using ModelCompression.Tests.Data;
using static ModelCompression.Cli.Tests.CliRunner;

namespace ModelCompression.Cli.Tests;

/// <summary><c>compress</c> on Silero VAD v4 (scalar <c>sr</c>, state [2, batch, 64]) with generated validation data.</summary>
[TestClass]
public sealed class SampleAxisCliTests
{
    [TestMethod]
    public void Silero_NoTechnique_GatesTheSameModel_WithDecisionAgreement1_AndStatesJoinedPerSample()
    {
        var dir = TempDirectory();
        var validation = SileroData.Generate(9).Write(Path.Combine(dir, "val.npz"));
        var output = Path.Combine(dir, "vad.onnx");
        var result = Run("compress", Fixture("silero_vad_v4.onnx"), "-o", output, "--validation-data", validation,
            "--batch-size", "4", "--latency-rounds", "1", "--min-decision-agreement", "1.0");
        Assert.AreEqual(ReturnCode.Success, result.Code, result.ToString());
        StringAssert.Contains(result.Output, ": pass");

        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "compress-model-reports", "vad.report.json")));
        var outputs = report.RootElement.GetProperty("measurements").GetProperty("outputs").EnumerateArray().ToDictionary(o => o.GetProperty("name").GetString()!);
        Assert.AreEqual(1.0, outputs["output"].GetProperty("decisionAgreement").GetDouble());
        CollectionAssert.AreEqual(new long[] { 9, 1 }, outputs["output"].GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray());
        CollectionAssert.AreEqual(new long[] { 9, 2, 64 }, outputs["hn"].GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray());
        Assert.AreEqual(1.0, outputs["cn"].GetProperty("cosine").GetDouble());
    }
}
