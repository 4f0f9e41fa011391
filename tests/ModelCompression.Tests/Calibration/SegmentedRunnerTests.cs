using ModelCompression.Calibration;
using ModelCompression.Data;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Runtime;

namespace ModelCompression.Tests.Calibration;

[TestClass]
public sealed class SegmentedRunnerTests
{
    /// <summary>Each layer's input, stage by stage, as a staged pass asks for them, on the model as it is then.</summary>
    private static List<float[]> InputsStageByStage(SegmentedRunner runner, OnnxModel model, Action<int>? afterStage = null)
    {
        var layers = WeightedLayer.FindAll(new OnnxGraph(model.Graph)).ToList();
        var stages = LayerCapture.Stages(new OnnxGraph(model.Graph), layers);
        var captured = new List<float[]>();
        foreach (var stage in stages.Distinct().Order())
        {
            var names = layers.Where((_, k) => stages[k] == stage).Select(l => l.InputName).Distinct().ToList();
            var batches = new List<float[]>();
            runner.Run(names, (_, result) => batches.AddRange(names.Select(n => result[n].Data)));
            captured.Add(batches.SelectMany(b => b).ToArray());
            afterStage?.Invoke(stage);
        }
        return captured;
    }

    private static Dataset Data(OnnxModel model) => Fixtures.CalibrationData.BindTo(ModelInput.FromGraph(model.Graph)).Take(48);

    [TestMethod]
    public void KeptFrontier_RunsEachNodeOnce_AndCapturesTheSameValues()
    {
        using var model = OnnxModel.Load(Fixtures.ResNet);
        var data = Data(model);
        var plain = new SegmentedRunner(model, data, Fixtures.Cpu, 16, keepFrontier: false, default);
        var kept = new SegmentedRunner(model, data, Fixtures.Cpu, 16, keepFrontier: true, default);
        var expected = InputsStageByStage(plain, model);
        var actual = InputsStageByStage(kept, model);

        Assert.IsTrue(expected.Count >= 5, "the ResNet has several stages");
        Assert.IsTrue(kept.NodesRun <= model.Graph.Node.Count, $"{kept.NodesRun} node runs for {model.Graph.Node.Count} nodes");
        Assert.IsTrue(plain.NodesRun > 2 * model.Graph.Node.Count, $"from the inputs every time: {plain.NodesRun} node runs");
        for (var s = 0; s < expected.Count; s++)
        {
            Assert.AreEqual(expected[s].Length, actual[s].Length);
            var scale = expected[s].Max(MathF.Abs);
            for (var i = 0; i < expected[s].Length; i++) Assert.AreEqual(expected[s][i], actual[s][i], 1e-5 * scale, $"stage {s}, value {i}");
        }
    }

    [TestMethod]
    public void KeptFrontier_StartsOver_WhenANodeAlreadyRunChanges()
    {
        // A rewrite upstream of what was kept (not what a staged pass does) must not leave stale values: every run
        // checks the nodes already run still read the same weights.
        using var model = OnnxModel.Load(Fixtures.ResNet);
        var data = Data(model);
        var kept = new SegmentedRunner(model, data, Fixtures.Cpu, 16, keepFrontier: true, default);
        var first = WeightedLayer.FindAll(new OnnxGraph(model.Graph)).First();
        var actual = InputsStageByStage(kept, model, stage =>
        {
            if (stage != 2) return;
            first.WriteMatrix(first.ReadMatrix(model).Select(v => v * 0.5f).ToArray());
        });
        using var changed = OnnxModel.Load(Fixtures.ResNet);
        var changedFirst = WeightedLayer.FindAll(new OnnxGraph(changed.Graph)).First();
        changedFirst.WriteMatrix(changedFirst.ReadMatrix(changed).Select(v => v * 0.5f).ToArray());
        var expected = InputsStageByStage(new SegmentedRunner(changed, Data(changed), Fixtures.Cpu, 16, keepFrontier: false, default), changed);
        var last = expected.Count - 1;
        var scale = expected[last].Max(MathF.Abs);
        for (var i = 0; i < expected[last].Length; i++) Assert.AreEqual(expected[last][i], actual[last][i], 1e-5 * scale, $"value {i}");
    }
}
