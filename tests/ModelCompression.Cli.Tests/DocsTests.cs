using System.Text.RegularExpressions;
using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Passes;
using ModelCompression.Policy;
using ModelCompression.Pruning;

namespace ModelCompression.Cli.Tests;

/// <summary>docs/policy-file.md says what the engine does: its examples load, and its ordering example orders so.</summary>
[TestClass]
public sealed class DocsTests
{
    private static string Repository()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "BuildTasks.sln"))) dir = dir.Parent;
        return dir!.FullName;
    }

    private static List<string> JsonBlocks() =>
        Regex.Matches(File.ReadAllText(Path.Combine(Repository(), "docs", "policy-file.md")).ReplaceLineEndings("\n"), "```json\n(.*?)```", RegexOptions.Singleline)
            .Select(m => m.Groups[1].Value).ToList();

    private static CompressionPolicy Load(string json, params (string, string)[] settings)
    {
        var path = Path.Combine(CliRunner.TempDirectory(), "policy.json");
        File.WriteAllText(path, json);
        return PolicySettings.Parse([.. settings.Select(s => KeyValuePair.Create(s.Item1, s.Item2)), KeyValuePair.Create("PolicyFile", path)], Path.GetDirectoryName(path)!);
    }

    [TestMethod]
    public void PolicyFileExamples_AllLoad()
    {
        var blocks = JsonBlocks();
        Assert.IsGreaterThanOrEqualTo(5, blocks.Count);
        foreach (var json in blocks) Assert.IsNotEmpty(Load(json).LayerOverrides, json);
    }

    [TestMethod]
    public void PolicyFileOrderingExample_LaterEntriesWin_KeyByKey_AndExcludeWinsOverAll()
    {
        var json = JsonBlocks().Single(b => b.Contains("/l3/c2/Conv", StringComparison.Ordinal));
        var policy = Load(json, ("Exclude", "/l1/*"));
        using var model = OnnxModel.Load(CliRunner.Fixture("fmnist_resnet.onnx"));
        var context = new CompressionContext(model, policy);
        Onnx.Protobuf.NodeProto Node(string layer) => model.Graph.Node.Single(n => n.Name == layer);
        PruningOptions For(string layer) => context.Options<PruningOptions>(Node(layer));
        Assert.AreEqual(0.9, For("/l3/c1/Conv").Sparsity);
        Assert.AreEqual(0.7, For("/l3/c2/Conv").Sparsity);
        Assert.AreEqual(PruneMethod.Magnitude, For("/l3/c2/Conv").PruneMethod, "the first entry's other keys stay");
        Assert.AreEqual(0.5, For("/l2/c1/Conv").Sparsity);
        Assert.IsTrue(context.IsExcluded(Node("/l1/c1/Conv")), "the global Exclude wins");
    }

    [TestMethod]
    public void PolicyFileErrorTable_MessagesAreTheEngines()
    {
        CompressionException Fails(string json) => Assert.ThrowsExactly<CompressionException>(() => Load(json));
        Assert.AreEqual("layers[0]: 'Sparsity' must be a string, number or boolean", Fails("""{ "layers": [ { "match": "*", "Sparsity": null } ] }""").Message);
        Assert.AreEqual("layers[0] must be an object", Fails("""{ "layers": [ 1 ] }""").Message);
        Assert.AreEqual("policy file must be a JSON object with a \"layers\" array", Fails("[]").Message);
        var ok = Load("""
            // comments and trailing commas
            { "$schema": "x", "layers": [ { "match": "*", "sparsity": "0.5", "prune-method": "magnitude", }, ], }
            """);
        Assert.AreEqual(0.5, ok.LayerOverrides[0].Values[PolicySettings.Find("Sparsity")!]);
        Assert.AreEqual(PruneMethod.Magnitude, ok.LayerOverrides[0].Values[PolicySettings.Find("PruneMethod")!]);
    }
}
