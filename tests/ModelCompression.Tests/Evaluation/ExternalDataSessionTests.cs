using ModelCompression.Calibration;
using ModelCompression.Evaluation;
using ModelCompression.Onnx;
using ModelCompression.Runtime;

namespace ModelCompression.Tests.Evaluation;

/// <summary>
/// Sessions over a model held in memory whose weights are external data: ONNX Runtime gets the message with its
/// references (not the weights inlined) and reads them from the model's folder, so models past 2 GB inline still run.
/// </summary>
[TestClass]
public sealed class ExternalDataSessionTests
{
    [TestMethod]
    public void ModelWithExternalData_RunsFromMemory_WithItsReferencesKept_AndMatchesTheInlineModel()
    {
        var dir = Directory.CreateTempSubdirectory("external-session").FullName;
        try
        {
            using (var inline = OnnxModel.Load(Fixtures.Mlp)) inline.Save(Path.Combine(dir, "m.onnx"), new SaveOptions { ExternalizeThreshold = 1024 });
            using var external = OnnxModel.Load(Path.Combine(dir, "m.onnx"));
            Assert.IsTrue(external.HasExternalData());
            // The message handed to ONNX Runtime leaves the weights out: it is smaller than their side file.
            Assert.IsTrue(external.ToBytesWithExternalReferences().Length < new FileInfo(Path.Combine(dir, "m.onnx.data")).Length);

            AssertRunsLikeTheMlp(external);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [TestMethod]
    [DataRow(false, DisplayName = "inline source")]
    [DataRow(true, DisplayName = "source with external data")]
    public void SpilledWeights_ReachTheRuntimeAsMapsOfTheSpillFile_AndGiveTheSameOutputs(bool externalSource)
    {
        var dir = Directory.CreateTempSubdirectory("spill-session").FullName;
        try
        {
            var path = Fixtures.Mlp;
            if (externalSource)
            {
                path = Path.Combine(dir, "m.onnx");
                using var inline = OnnxModel.Load(Fixtures.Mlp);
                // Only the first weight external: the rest stay in memory to be spilled.
                inline.Save(path, new SaveOptions { ExternalizeThreshold = inline.Graph.Initializer.Max(t => t.RawData.Length) });
            }
            using var model = OnnxModel.Load(path);
            Assert.AreEqual(externalSource, model.HasExternalData());
            var inlineBytes = model.ToBytes().Length;
            Assert.IsPositive(model.Spill(Path.Combine(dir, "out"), 1024));
            Assert.IsTrue(InMemoryExternalData.Available, "the bundled ONNX Runtime takes external data from memory");
            // The message keeps the spill file's references: the weights are not copied into it.
            Assert.IsTrue(model.ToBytesWithExternalReferences(inlineSpilled: false).Length < inlineBytes / 10);

            AssertRunsLikeTheMlp(model);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>Predictions and calibration captures (a probe model with extra outputs) give the inline MLP's exact values.</summary>
    private static void AssertRunsLikeTheMlp(OnnxModel model)
    {
        using var reference = OnnxModel.Load(Fixtures.Mlp);
        var data = Fixtures.ValidationData.Take(64);
        CollectionAssert.AreEqual(Predictions.Run(reference, data, Fixtures.Cpu, 32).Data, Predictions.Run(model, data, Fixtures.Cpu, 32).Data);
        var value = reference.Graph.Node[0].Output[0];
        var expected = new List<float[]>();
        var actual = new List<float[]>();
        ActivationCapture.Run(reference, [value], data, Fixtures.Cpu, 32, batch => expected.Add(batch[value].Data));
        ActivationCapture.Run(model, [value], data, Fixtures.Cpu, 32, batch => actual.Add(batch[value].Data));
        Assert.AreEqual(expected.Count, actual.Count);
        for (var i = 0; i < expected.Count; i++) CollectionAssert.AreEqual(expected[i], actual[i]);
    }
}
