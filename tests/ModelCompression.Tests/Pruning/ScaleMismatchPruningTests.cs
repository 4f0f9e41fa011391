using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Pruning;
using static ModelCompression.Tests.Pruning.PruningHelpers;

namespace ModelCompression.Tests.Pruning;

/// <summary>
/// PruneScope=global on layers of very different weight scale (as BN folding produces): the MLP with
/// /hidden.1/Gemm's weights and bias scaled by 1e-4 and a Mul by 1e4 after it, so the model computes the same function.
/// </summary>
[TestClass]
public sealed class ScaleMismatchPruningTests
{
    private const string Scaled = "/hidden.1/Gemm";
    private static readonly string[] Hidden = ["/hidden.0/Gemm", Scaled];

    private static OnnxModel Rescaled()
    {
        var model = OnnxModel.Load(Fixtures.Mlp);
        var graph = new OnnxGraph(model.Graph);
        var node = graph.Nodes.Single(n => n.Name == Scaled);
        foreach (var input in node.Input.Skip(1))
        {
            var tensor = graph.Initializer(input)!;
            graph.SetInitializer(Tensors.FromFloats(input, tensor.Dims.ToArray(), Array.ConvertAll(model.ReadFloats(tensor), v => v * 1e-4f)));
        }
        var output = node.Output[0];
        var small = graph.FreshName(output + "_small");
        var factor = graph.FreshName(output + "_factor");
        graph.SetInitializer(Tensors.FromFloats(factor, [], [1e4f]));
        node.Output[0] = small; // consumers keep reading `output`, which the Mul now produces
        graph.InsertAfter(node, new NodeProto { OpType = "Mul", Name = graph.FreshName(Scaled + "_rescale"), Input = { small, factor }, Output = { output } });
        return model;
    }

    private static OnnxModel Prune(OnnxModel model, params (string Name, string Value)[] settings)
    {
        var context = new CompressionContext(model, Fixtures.Policy([.. settings, ("SparseStorage", "false"), ("CalibrationData", "fmnist_calib.npz")]));
        CompressionPipeline.Run(context);
        return model;
    }

    [TestMethod]
    public void TheRescaledFixtureComputesTheSameFunction()
    {
        Assert.AreEqual(Fixtures.Accuracy(OnnxModel.Load(Fixtures.Mlp)), Fixtures.Accuracy(Rescaled()), 0.001);
    }

    [TestMethod]
    public void OneRawMagnitudeThresholdWouldEmptyTheSmallScaleLayer()
    {
        var model = Rescaled();
        var magnitudes = Hidden.Select(n => Array.ConvertAll(Layer(model, n).ReadMatrix(model), MathF.Abs)).ToList();
        var old = PruningTargets.ThresholdCounts(magnitudes, 0.7, maxLayerSparsity: 1);
        Assert.AreEqual(Layer(model, Scaled).Parameters, old[1]);
    }

    [TestMethod]
    public void GlobalAllocation_IsScaleAware_NoLayerIsEmptiedAndAccuracyHolds()
    {
        var reference = Fixtures.Accuracy(OnnxModel.Load(Fixtures.Mlp));
        foreach (var method in new[] { "magnitude", "sparsegpt" })
        {
            var unscaled = Prune(OnnxModel.Load(Fixtures.Mlp), ("Sparsity", "0.7"), ("PruneMethod", method));
            var scaled = Prune(Rescaled(), ("Sparsity", "0.7"), ("PruneMethod", method));
            foreach (var name in Hidden)
            {
                var layer = Layer(scaled, name);
                var zeros = Zeros(scaled, layer);
                Assert.IsLessThan(layer.Parameters, zeros, $"{method} {name}");
                // Relative magnitudes decide, so a uniform rescale of one layer changes no layer's share.
                Assert.AreEqual(Zeros(unscaled, Layer(unscaled, name)), zeros, 0.001 * layer.Parameters, $"{method} {name}");
            }
            var accuracy = Fixtures.Accuracy(scaled);
            Assert.IsGreaterThanOrEqualTo(reference - 0.03, accuracy, $"{method}: {accuracy:P2} (fp32 {reference:P2})");
            Assert.AreEqual(Fixtures.Accuracy(unscaled), accuracy, 0.005, method);
        }
    }

    [TestMethod]
    public void NoLayerSharingTheGlobalAllocationLosesMoreThanTheCap()
    {
        // A layer 1e-6 the scale of the rest, with no compensation: even raw-magnitude scores stop at the cap.
        var random = new Random(3);
        var big = Enumerable.Range(0, 1000).Select(_ => (float)random.NextDouble()).ToArray();
        var tiny = Enumerable.Range(0, 100).Select(_ => 1e-6f * (float)random.NextDouble()).ToArray();
        var counts = PruningTargets.ThresholdCounts([big, tiny], 0.5, PruningTargets.MaxLayerSparsity);
        Assert.AreEqual(98, counts[1]);
        Assert.AreEqual(550L, counts.Sum());
    }
    [TestMethod]
    public void SortedLamp_IsLampSorted_BitForBit()
    {
        // The global threshold keeps only each layer's sorted scores, computed in place: the same values as the
        // scores in weight order, sorted (ties, signed zeros and a real layer's weights included).
        using var model = Onnx.OnnxModel.Load(Fixtures.Mlp);
        var random = new Random(5);
        var synthetic = Enumerable.Range(0, 5000).Select(i => i % 7 == 0 ? 0.25f : i % 11 == 0 ? -0f : (float)(random.NextDouble() - 0.5)).ToArray();
        foreach (var weights in model.Graph.Initializer.Where(t => t.Dims.Count == 2).Select(t => model.ReadFloats(t)).Append(synthetic))
        {
            var expected = PruningTargets.Lamp(weights);
            Array.Sort(expected);
            var actual = PruningTargets.SortedLamp((float[])weights.Clone());
            CollectionAssert.AreEqual(expected.Select(BitConverter.SingleToInt32Bits).ToList(), actual.Select(BitConverter.SingleToInt32Bits).ToList());
        }
    }

    [TestMethod]
    public void StreamedThreshold_GivesTheCountsOfTheThresholdOverAllScores()
    {
        // The global threshold asks for each layer's scores twice instead of holding them all: the same counts as
        // the search over every score, for layers of many scales and sizes, ties at the threshold, the cap, zeros
        // and sparsities from none to all.
        var random = new Random(11);
        for (var trial = 0; trial < 60; trial++)
        {
            var layers = Enumerable.Range(0, 1 + random.Next(12)).Select(_ =>
            {
                var scale = MathF.Pow(10, random.Next(-8, 3));
                var values = Enumerable.Range(0, 1 + random.Next(3000)).Select(j => random.Next(5) == 0 ? 0.5f : j % 13 == 0 ? 0f : scale * (float)random.NextDouble()).ToArray();
                return trial % 2 == 0 ? PruningTargets.SortedLamp(values) : values.OrderBy(v => v).ToArray();
            }).ToList();
            var sparsity = trial % 10 == 0 ? 0 : trial % 10 == 1 ? 1 : random.NextDouble();
            foreach (var cap in new[] { PruningTargets.MaxLayerSparsity, 1 })
            {
                var maxLayerSparsity = Math.Max(cap, sparsity);
                var asked = new int[layers.Count];
                var streamed = PruningTargets.StreamedThresholdCounts(layers.Count, i => { asked[i]++; return (float[])layers[i].Clone(); }, sparsity, maxLayerSparsity);
                CollectionAssert.AreEqual(PruningTargets.ThresholdCounts(layers, sparsity, maxLayerSparsity, alreadySorted: true), streamed, $"trial {trial}, cap {cap}");
                Assert.IsTrue(asked.All(n => n == 2), "each layer's scores are asked for twice");
            }
        }
    }

    [TestMethod]
    public void SmallestFirst_OrdersByMagnitudeThenIndex()
    {
        // The order the earlier comparison of (|w|, index) gave: ties, signed zeros and infinities included (weights are
        // checked finite when a model is loaded; with NaN that comparison had no order to match).
        var random = new Random(13);
        float[] special = [0f, -0f, float.PositiveInfinity, float.NegativeInfinity, 0.25f, -0.25f, float.Epsilon, -float.Epsilon];
        var weights = Enumerable.Range(0, 20000).Select(i => i % 5 == 0 ? special[random.Next(special.Length)] : (float)(random.NextDouble() - 0.5) * MathF.Pow(10, random.Next(-6, 3))).ToArray();
        var expected = Enumerable.Range(0, weights.Length).ToArray();
        var keys = Array.ConvertAll(weights, MathF.Abs);
        Array.Sort(expected, (a, b) => keys[a] != keys[b] ? keys[a].CompareTo(keys[b]) : a.CompareTo(b));
        CollectionAssert.AreEqual(expected, MagnitudePruner.SmallestFirst(weights));
    }
}
