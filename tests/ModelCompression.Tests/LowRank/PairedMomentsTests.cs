using ModelCompression.Calibration;
using ModelCompression.Onnx;
using ModelCompression.Passes;

namespace ModelCompression.Tests.LowRank;

/// <summary>
/// A paired capture measures the reference's own XᵀX in the same run: exactly what a plain capture of the reference
/// sums (same samples, same batches), so a refit's reported error does not need an earlier capture kept around.
/// </summary>
[TestClass]
public sealed class PairedMomentsTests
{
    [TestMethod]
    public void PairedCapture_ReferenceSum_EqualsAPlainCaptureOfTheReference()
    {
        using var reference = OnnxModel.Load(Fixtures.Mlp);
        using var model = reference.Clone();
        var graph = new OnnxGraph(model.Graph);
        var layers = WeightedLayer.Find(graph);
        // Halve the first layer so the inputs of the later ones differ between the two models.
        var first = layers[0].Weight;
        graph.SetInitializer(Tensors.FromFloats(first.Name, [.. first.Dims], model.ReadFloats(first).Select(v => v / 2).ToArray()));
        var policy = Fixtures.Policy(("Rank", "0.5"), ("CalibrationData", "fmnist_calib.npz"));
        var inputs = layers.Skip(1).Select(l => new InputFeatures(l.InputName, FeatureAxis.Last, l.InFeatures)).ToList();

        var ofReference = new LayerCapture(new CompressionContext(reference, policy), "test").InputFeatureMoments(inputs);
        var ofModel = new LayerCapture(new CompressionContext(model, policy), "test").InputFeatureMoments(inputs);
        var paired = new LayerCapture(new CompressionContext(model, policy), "test").InputFeatureMoments(inputs, reference);

        Assert.AreEqual(2, inputs.Count);
        for (var k = 0; k < inputs.Count; k++)
        {
            var p = paired[k]!;
            Assert.IsTrue(p.IsPaired);
            Assert.AreEqual(ofReference[k]!.Samples, p.Samples);
            CollectionAssert.AreEqual(ofReference[k]!.Sum, p.ReferenceSum, $"{inputs[k].Value}: reference XᵀX");
            CollectionAssert.AreEqual(ofModel[k]!.Sum, p.Sum, $"{inputs[k].Value}: X̂ᵀX");
            CollectionAssert.AreNotEqual(p.Sum, p.ReferenceSum, $"{inputs[k].Value}: the change upstream reaches the input");
        }
    }
}
