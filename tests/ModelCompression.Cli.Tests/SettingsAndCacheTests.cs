using System.Text.Json;
using System.Xml.Linq;
using ModelCompression.Onnx;
using ModelCompression.Policy;
using static ModelCompression.Cli.Tests.CliRunner;

namespace ModelCompression.Cli.Tests;

/// <summary>Settings as users give them (the generated CLI options, the settings verb) and incremental runs.</summary>
[TestClass]
public sealed class SettingsAndCacheTests
{
    private static JsonElement Timings(string reportDirectory)
    {
        var report = Directory.GetFiles(reportDirectory, "*.report.json").Single();
        using var json = JsonDocument.Parse(File.ReadAllText(report));
        return json.RootElement.GetProperty("timings").Clone();
    }

    private static IEnumerable<(string Step, bool Cached)> PassSteps(JsonElement timings) => timings.EnumerateArray()
        .Select(t => (t.GetProperty("step").GetString()!, t.TryGetProperty("cached", out var c) && c.GetBoolean()))
        .Where(t => t.Item1 is not ("load" or CompressionEngine.DataStep or "save" or "gate" or "total"));

    [TestMethod]
    public void ChangingOnlyAThreshold_ReGates_WithoutRerunningThePasses()
    {
        var dir = TempDirectory();
        var cache = Path.Combine(dir, "cache");
        string[] Args(string output, string reports, string drop, string sparsity) =>
            ["compress", Fixture("fmnist_mlp.onnx"), "-o", output, "--report-dir", reports, "--cache-dir", cache,
             "--sparsity", sparsity, "--quantize", "int8", "--calibration-data", Fixture("fmnist_calib.npz"), "--calibration-samples", "128",
             "--validation-data", Fixture("fmnist_val.npz"), "--max-accuracy-drop", drop, "--latency-rounds", "1"];

        var first = Run(Args(Path.Combine(dir, "1.onnx"), Path.Combine(dir, "r1"), "0.05", "0.5"));
        Assert.AreEqual(ReturnCode.Success, first.Code, first.ToString());
        var firstSteps = PassSteps(Timings(Path.Combine(dir, "r1"))).ToList();
        CollectionAssert.Contains(firstSteps.Select(s => s.Step).ToList(), "prune");
        Assert.IsTrue(firstSteps.All(s => !s.Cached), "a first run computes every pass");

        var second = Run(Args(Path.Combine(dir, "2.onnx"), Path.Combine(dir, "r2"), "0.02", "0.5"));
        Assert.AreEqual(ReturnCode.Success, second.Code, second.ToString());
        var secondSteps = PassSteps(Timings(Path.Combine(dir, "r2"))).ToList();
        CollectionAssert.AreEqual(firstSteps.Select(s => s.Step).ToList(), secondSteps.Select(s => s.Step).ToList());
        Assert.IsTrue(secondSteps.All(s => s.Cached), "only the threshold changed: every pass comes from the cache");
        CollectionAssert.AreEqual(File.ReadAllBytes(Path.Combine(dir, "1.onnx")), File.ReadAllBytes(Path.Combine(dir, "2.onnx")), "a cached run writes the same bytes");

        // A changed technique setting re-runs that pass and those after it, not the ones before.
        var third = Run(Args(Path.Combine(dir, "3.onnx"), Path.Combine(dir, "r3"), "0.05", "0.6"));
        Assert.AreEqual(ReturnCode.Success, third.Code, third.ToString());
        var thirdSteps = PassSteps(Timings(Path.Combine(dir, "r3"))).ToDictionary(s => s.Step, s => s.Cached);
        Assert.IsTrue(thirdSteps["fold-batchnorm"], "fold-batchnorm does not read Sparsity");
        Assert.IsFalse(thirdSteps["prune"]);
        Assert.IsFalse(thirdSteps["quantize-int8"]);
        Assert.IsEmpty(Directory.GetFiles(cache, "*.tmp"), "no temp file is left in the cache");
    }

    [TestMethod]
    public void SparsityPatternAlone_Prunes_StoresSparse_AndDoesNotWarn()
    {
        var dir = TempDirectory();
        var output = Path.Combine(dir, "mlp.onnx");
        var result = Run("compress", Fixture("fmnist_mlp.onnx"), "-o", output, "--sparsity-pattern", "2:4",
            "--validation-data", Fixture("fmnist_val.npz"), "--latency-rounds", "1");
        Assert.AreEqual(ReturnCode.Success, result.Code, result.ToString());
        Assert.DoesNotContain("CM0303", result.Error, "2:4 is a technique asked for");
        Assert.IsLessThan(0.6 * new FileInfo(Fixture("fmnist_mlp.onnx")).Length, new FileInfo(output).Length, "half the hidden weights are zero and stored sparse");
        using var model = OnnxModel.Load(output);
        var (parameters, nonZeros) = Graph.ModelWeights.Count(model);
        Assert.IsLessThan(0.55, (double)nonZeros / parameters, $"{nonZeros} of {parameters} nonzero");
    }

    [TestMethod]
    public void NoTechnique_Warns_NamingTheTechniqueSettings()
    {
        var dir = TempDirectory();
        var result = Run("compress", Fixture("fmnist_mlp.onnx"), "-o", Path.Combine(dir, "mlp.onnx"), "--prune-method", "magnitude");
        Assert.AreEqual(ReturnCode.Success, result.Code, result.ToString());
        StringAssert.Contains(result.Error, "warning CM0303: no technique is set (Quantize, Sparsity");
    }

    [TestMethod]
    public void SettingsVerb_PrintsEveryOption_AsMarkdown_JsonSchema_AndMSBuildDefaults()
    {
        var options = PolicySettings.Options.ToList();
        var markdown = Run("settings", "--format", "markdown");
        Assert.AreEqual(ReturnCode.Success, markdown.Code, markdown.ToString());
        foreach (var s in options) StringAssert.Contains(markdown.Output, $"| `{s.Name}` (`{s.OptionName}`) |");

        var schema = Run("settings", "--format", "json-schema");
        using var json = JsonDocument.Parse(schema.Output);
        var layer = json.RootElement.GetProperty("properties").GetProperty("layers").GetProperty("items").GetProperty("properties");
        CollectionAssert.AreEquivalent(SettingsCatalog.All.Where(s => s.PerLayer).Select(s => s.Name).Append("match").ToArray(),
            layer.EnumerateObject().Select(p => p.Name).ToArray());

        var file = Path.Combine(TempDirectory(), "defaults.targets");
        Assert.AreEqual(ReturnCode.Success, Run("settings", "--format", "msbuild", "-o", file).Code);
        var defaults = XDocument.Load(file).Descendants("CompressModel").Elements().Select(e => e.Name.LocalName).ToArray();
        CollectionAssert.AreEqual(options.Select(s => s.Name).ToArray(), defaults);

        var help = Run("compress", "--help");
        foreach (var s in options) StringAssert.Contains(help.Output, s.OptionName);
        StringAssert.Contains(help.Output, "Default: 0.01.", "help shows each default");
        Assert.AreEqual(ReturnCode.BadInput, Run("settings", "--format", "yaml").Code);
    }
}
