using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using ModelCompression.Graph;
using Google.Protobuf;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Diagnostics;

namespace ModelCompression.Tests.Passes;

/// <summary>
/// Weights inside If/Loop/Scan bodies: the real Silero VAD v4 keeps every layer (convs, two LSTMs) in the branches
/// of <c>If</c> nodes chosen by the sample rate, its conv weights as main-graph initializers read by name and its LSTM
/// weights as the branches' own. Weight-only techniques reach them; data-aware ones leave them with a reason.
/// </summary>
[TestClass]
public sealed class SubgraphWeightsTests
{
    private static string Vad => Fixtures.PathOf("silero_vad_v4.onnx");
    private const int Streams = 4;
    private const int Steps = 24;
    private const int Chunk = 1536;

    /// <summary>
    /// Audio-like chunks, [Steps][Streams·Chunk]: per stream, stretches of a voiced sound (a harmonic series on a
    /// gliding 110–260 Hz fundamental, amplitude-modulated at syllable rate) between stretches of faint noise.
    /// </summary>
    private static float[][] Audio(int rate)
    {
        var random = new Random(7);
        var chunks = Enumerable.Range(0, Steps).Select(_ => new float[Streams * Chunk]).ToArray();
        for (var s = 0; s < Streams; s++)
        {
            var f0 = 110 + 40 * s;
            var phase = 0.0;
            for (var t = 0; t < Steps; t++)
            {
                var voiced = (t / (4 + s)) % 2 == 1;
                for (var i = 0; i < Chunk; i++)
                {
                    var time = (t * Chunk + i) / (double)rate;
                    var noise = (random.NextDouble() * 2 - 1) * 0.003;
                    var value = noise;
                    if (voiced)
                    {
                        var f = f0 * (1 + 0.15 * Math.Sin(2 * Math.PI * 0.7 * time));
                        phase += 2 * Math.PI * f / rate;
                        var envelope = 0.5 + 0.5 * Math.Sin(2 * Math.PI * 4 * time);
                        for (var h = 1; h <= 12; h++) value += 0.25 / h * Math.Sin(h * phase) * (h is 3 or 4 or 8 ? 2 : 1) * envelope;
                    }
                    chunks[t][s * Chunk + i] = (float)value;
                }
            }
        }
        return chunks;
    }

    /// <summary>The model streamed over <see cref="Audio"/> with its state carried: the speech probability of every (step, stream), and the final h.</summary>
    private static (float[] Probabilities, float[] H) Stream(OnnxModel model, long rate)
    {
        using var session = new InferenceSession(model.ToBytes());
        var h = new float[2 * Streams * 64];
        var c = new float[2 * Streams * 64];
        var probabilities = new List<float>();
        foreach (var chunk in Audio((int)rate))
        {
            using var results = session.Run(
            [
                NamedOnnxValue.CreateFromTensor("input", new DenseTensor<float>(chunk, [Streams, Chunk])),
                NamedOnnxValue.CreateFromTensor("sr", new DenseTensor<long>(new[] { rate }, [])),
                NamedOnnxValue.CreateFromTensor("h", new DenseTensor<float>(h, [2, Streams, 64])),
                NamedOnnxValue.CreateFromTensor("c", new DenseTensor<float>(c, [2, Streams, 64])),
            ]);
            probabilities.AddRange(results.First(r => r.Name == "output").AsEnumerable<float>());
            h = results.First(r => r.Name == "hn").AsEnumerable<float>().ToArray();
            c = results.First(r => r.Name == "cn").AsEnumerable<float>().ToArray();
        }
        return (probabilities.ToArray(), h);
    }

    private static (OnnxModel Model, CompressionContext Context) Compress(params (string Name, string Value)[] settings)
    {
        var model = OnnxModel.Load(Vad);
        var context = new CompressionContext(model, Fixtures.Policy(settings));
        CompressionPipeline.Run(context);
        return (model, context);
    }

    private static IEnumerable<NodeProto> AllNodes(OnnxModel model) => new OnnxGraph(model.Graph).SelfAndSubgraphs().SelectMany(g => g.Nodes);

    private static double Cosine(float[] a, float[] b)
    {
        double ab = 0, aa = 0, bb = 0;
        for (var i = 0; i < a.Length; i++) { ab += (double)a[i] * b[i]; aa += (double)a[i] * a[i]; bb += (double)b[i] * b[i]; }
        return ab / Math.Sqrt(aa * bb);
    }

    private static double Agreement(float[] a, float[] b) => a.Zip(b).Count(p => p.First > 0.5f == p.Second > 0.5f) / (double)a.Length;

    /// <summary>Both sample-rate branches of the compressed model against the original: speech decisions (p &gt; 0.5) and state.</summary>
    private static void AssertFaithful(OnnxModel compressed, double minAgreement, double minCosine, double minStateCosine)
    {
        using var original = OnnxModel.Load(Vad);
        foreach (var rate in new long[] { 16000, 8000 })
        {
            var (expected, expectedH) = Stream(original, rate);
            var (actual, actualH) = Stream(compressed, rate);
            var speech = expected.Count(p => p > 0.5f);
            Assert.IsTrue(speech > 0 && speech < expected.Length, $"sr {rate}: the inputs should hold both speech and silence ({speech} of {expected.Length} speech)");
            var agreement = Agreement(expected, actual);
            var cosine = Cosine(expected, actual);
            Console.WriteLine($"sr {rate}: {speech} of {expected.Length} chunks speech; agreement {agreement:0.####}, output cosine {cosine:0.####}, max |Δp| {expected.Zip(actual).Max(p => Math.Abs(p.First - p.Second)):0.####}, state cosine {Cosine(expectedH, actualH):0.####}");
            Assert.IsGreaterThanOrEqualTo(minAgreement, agreement, $"sr {rate}: decision agreement {agreement:0.###}");
            Assert.IsGreaterThanOrEqualTo(minCosine, cosine, $"sr {rate}: output cosine {cosine:0.####}");
            Assert.IsGreaterThanOrEqualTo(minStateCosine, Cosine(expectedH, actualH), $"sr {rate}: state cosine");
        }
    }

    [TestMethod]
    public void WeightedLayers_AreFoundInsideSubgraphs_WithOuterAndLocalWeights()
    {
        using var model = OnnxModel.Load(Vad);
        var graph = new OnnxGraph(model.Graph);
        Assert.IsEmpty(WeightedLayer.Find(graph), "the main graph holds only Equal and If");
        var layers = WeightedLayer.FindAll(graph);
        Assert.HasCount(36, layers, "18 convolutions in each sample-rate branch");
        Assert.IsTrue(layers.All(l => l.InSubgraph && l.OpType == "Conv"));
        Assert.IsTrue(layers.All(l => model.Graph.Initializer.Any(t => ReferenceEquals(t, l.Weight))), "the conv weights are main-graph initializers read by name");
        Assert.AreEqual(444_944, ModelWeights.Parameters(model), "weights read inside subgraphs count (main-graph initializers and the branches' own LSTM weights)");
    }

    [TestMethod]
    public void Cleanup_KeepsInitializersOnlySubgraphsUse()
    {
        using var model = OnnxModel.Load(Vad);
        var before = model.Graph.Initializer.Count;
        var context = new CompressionContext(model, new Policy.CompressionPolicy());
        new CleanupPass().Apply(context);
        Assert.AreEqual(before, model.Graph.Initializer.Count);
        using var original = OnnxModel.Load(Vad);
        CollectionAssert.AreEqual(Stream(original, 16000).Probabilities, Stream(model, 16000).Probabilities);
    }

    [TestMethod]
    public void Int8Dynamic_QuantizesTheLstmsInsideSubgraphs_AndKeepsTheSpeechDecisions()
    {
        var (model, context) = Compress(("Quantize", "int8-dynamic"));
        using var _ = model;
        var nodes = AllNodes(model).ToList();
        Assert.AreEqual(0, nodes.Count(n => n.OpType == "LSTM"));
        Assert.AreEqual(8, nodes.Count(n => n.OpType == "DynamicQuantizeLSTM" && n.Domain == "com.microsoft"), "2 LSTMs × (given, zero state) × 2 sample rates");
        var quantized = context.Records.Where(r => r.Technique == "int8-dynamic" && r.Bits == 8).ToList();
        Assert.HasCount(8, quantized);
        Assert.IsTrue(quantized.All(r => r.ReconstructionError < 0.02), string.Join(", ", quantized.Select(r => r.ReconstructionError)));
        // The convolutions stay float, each with its reason.
        Assert.AreEqual(36, context.Records.Count(r => r.Technique == "int8-dynamic" && r.Op == "Conv" && r.Note!.StartsWith("left in float", StringComparison.Ordinal)));
        Assert.IsLessThan(0.65 * new FileInfo(Vad).Length, (double)model.ToBytes().Length);
        AssertFaithful(model, minAgreement: 0.99, minCosine: 0.999, minStateCosine: 0.999);
    }

    [TestMethod]
    public void StaticInt8_GivesTheLstmsTheDynamicForm_AndLeavesTheSubgraphConvsWithAReason()
    {
        // Never read: calibration reaches no layer of this model (all are inside If bodies).
        var (model, context) = Compress(("Quantize", "int8"), ("CalibrationData", Fixtures.PathOf("silero_vad_v4.onnx")));
        using var _ = model;
        Assert.AreEqual(8, AllNodes(model).Count(n => n.OpType == "DynamicQuantizeLSTM"), string.Join("\n", context.Diagnostics));
        Assert.AreEqual(36, context.Records.Count(r => r.Technique == "int8" && r.Op == "Conv" && r.Note!.Contains(WeightedLayer.SubgraphReason, StringComparison.Ordinal)));
        Assert.IsFalse(context.Diagnostics.Any(d => d.Code == DiagnosticCodes.NothingToCompress), string.Join("\n", context.Diagnostics));
        AssertFaithful(model, minAgreement: 0.99, minCosine: 0.999, minStateCosine: 0.999);
    }

    [TestMethod]
    public void Codebook_SharesTheSubgraphConvWeights()
    {
        // 64 values (stored in the same uint8 indices as 16): the STFT basis, a sine table, needs that many levels.
        var (model, context) = Compress(("Codebook", "64"));
        using var _ = model;
        var shared = context.Records.Where(r => r.Technique == "codebook" && r.Bits == 6).ToList();
        Assert.IsGreaterThanOrEqualTo(20, shared.Count, string.Join(", ", context.Records.Select(r => $"{r.Layer}:{r.Note}")));
        var gathers = new OnnxGraph(model.Graph).Subgraphs().Sum(g => g.Nodes.Count(n => n.OpType == "Gather" && n.Input[0].Contains("_codebook", StringComparison.Ordinal)));
        Assert.AreEqual(shared.Count, gathers, "each lookup sits next to its layer, inside the branch");
        Assert.IsLessThan(0.8 * new FileInfo(Vad).Length, (double)model.ToBytes().Length);
        AssertFaithful(model, minAgreement: 0.95, minCosine: 0.99, minStateCosine: 0.95);
    }

    [TestMethod]
    public void MagnitudePruning_PrunesTheSubgraphConvWeights()
    {
        using var original = OnnxModel.Load(Vad);
        var (_, nonZerosBefore) = ModelWeights.Count(original);
        var (model, context) = Compress(("Sparsity", "0.3"), ("PruneMethod", "magnitude"));
        using var _ = model;
        var pruned = context.Records.Where(r => r.Technique == "prune" && r.Sparsity > 0).ToList();
        Assert.IsGreaterThanOrEqualTo(30, pruned.Count, string.Join(", ", context.Records.Select(r => $"{r.Layer}:{r.Note}")));
        var (_, nonZerosAfter) = ModelWeights.Count(model);
        Assert.IsLessThan(nonZerosBefore - 40_000, nonZerosAfter, $"nonzeros {nonZerosBefore} → {nonZerosAfter}");
        AssertFaithful(model, minAgreement: 0.95, minCosine: 0.99, minStateCosine: 0.95);
    }

    [TestMethod]
    public void AutoMethods_WithCalibrationData_UseTheWeightOnlyMethodInsideSubgraphs()
    {
        // Never read: every layer is in a subgraph, so the auto methods choose magnitude pruning and plain SVD there.
        var unread = Fixtures.PathOf("silero_vad_v4.onnx");
        var (pruned, pruning) = Compress(("Sparsity", "0.3"), ("CalibrationData", unread));
        using (pruned)
        {
            var magnitude = pruning.Records.Where(r => r.Technique == "prune" && r.Sparsity > 0).ToList();
            Assert.IsGreaterThanOrEqualTo(30, magnitude.Count, string.Join("\n", pruning.Records.Select(r => $"{r.Layer}:{r.Note}")));
            Assert.IsTrue(magnitude.All(r => r.Note!.Contains("PruneMethod=auto", StringComparison.Ordinal)), string.Join("\n", magnitude.Select(r => r.Note)));
            AssertFaithful(pruned, minAgreement: 0.95, minCosine: 0.99, minStateCosine: 0.95);
        }
        var (factorized, lowRank) = Compress(("Rank", "0.5"), ("ConvDecomposition", "tucker2"), ("CalibrationData", unread));
        using (factorized)
            Assert.IsFalse(lowRank.Records.Any(r => r.Note?.Contains(WeightedLayer.SubgraphReason, StringComparison.Ordinal) == true),
                string.Join("\n", lowRank.Records.Select(r => $"{r.Layer}:{r.Note}")));
    }

    [TestMethod]
    public void DataAwareTechniques_LeaveSubgraphLayersWithAReason_InsteadOfFailing()
    {
        // Never read: every layer is in a subgraph, so no technique captures anything.
        var unread = Fixtures.PathOf("silero_vad_v4.onnx");
        foreach (var settings in new[]
        {
            new[] { ("Sparsity", "0.5"), ("PruneMethod", "sparsegpt") },
            [("Rank", "0.5"), ("LowRankMethod", "activation-aware"), ("ConvDecomposition", "tucker2")],
        })
        {
            var (model, context) = Compress([.. settings, ("CalibrationData", unread)]);
            using var _ = model;
            var left = context.Records.Where(r => r.Note?.Contains(WeightedLayer.SubgraphReason, StringComparison.Ordinal) == true).ToList();
            Assert.IsGreaterThanOrEqualTo(30, left.Count, $"{settings[0]}: {string.Join(", ", context.Records.Select(r => $"{r.Layer}:{r.Note}"))}");
            Assert.IsTrue(left.All(r => r.ParametersAfter == r.ParametersBefore));
            using var original = OnnxModel.Load(Vad);
            CollectionAssert.AreEqual(Stream(original, 16000).Probabilities, Stream(model, 16000).Probabilities, $"{settings[0]}: unchanged");
        }
    }

    private static ValueInfoProto Value(string name, TensorProto.Types.DataType type, params long[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } } };
    }

    private static TensorProto Weight(string name, int seed)
    {
        var random = new Random(seed);
        return Tensors.FromFloats(name, [8, 4], Enumerable.Range(0, 32).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray());
    }

    private static NodeProto If(string cond, string output, GraphProto then, GraphProto otherwise) => new()
    {
        OpType = "If", Name = output + "_if", Input = { cond }, Output = { output },
        Attribute =
        {
            new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = then },
            new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = otherwise },
        },
    };

    private static GraphProto Branch(string name, string weight, string output, params TensorProto[] initializers) => new()
    {
        Name = name, Initializer = { initializers }, Output = { Value(output, TensorProto.Types.DataType.Float, 2, 4) },
        Node = { new NodeProto { OpType = "MatMul", Name = output + "_matmul", Input = { "x", weight }, Output = { output } } },
    };

    /// <summary>
    /// y = x·W, with W chosen by two nested Ifs: the main graph's initializer read from a branch, a branch's own
    /// initializer read from the branch nested in it, and a nested branch's own Constant.
    /// </summary>
    private static OnnxModel NestedIfModel()
    {
        // The nested branch stores its weight as a Constant node, as exporters often do.
        var leaf = Branch("inner_else", "w_leaf", "y_leaf");
        leaf.Node.Insert(0, new NodeProto
        {
            OpType = "Constant", Name = "w_leaf_constant", Output = { "w_leaf" },
            Attribute = { new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = Weight("w_leaf", 3) } },
        });
        var inner = If("cond2", "y_else", Branch("inner_then", "w_mid", "y_mid"), leaf);
        var otherwise = new GraphProto { Name = "else", Initializer = { Weight("w_mid", 2) }, Node = { inner }, Output = { Value("y_else", TensorProto.Types.DataType.Float, 2, 4) } };
        var graph = new GraphProto
        {
            Name = "nested",
            Input = { Value("x", TensorProto.Types.DataType.Float, 2, 8), Value("cond", TensorProto.Types.DataType.Bool), Value("cond2", TensorProto.Types.DataType.Bool) },
            Output = { Value("y", TensorProto.Types.DataType.Float, 2, 4) },
            Initializer = { Weight("w_outer", 1) },
            Node = { If("cond", "y", Branch("then", "w_outer", "y_then"), otherwise) },
        };
        var proto = new ModelProto { IrVersion = 8, Graph = graph, OpsetImport = { new OperatorSetIdProto { Domain = "", Version = 17 } } };
        return OnnxModel.Parse(proto.ToByteArray(), AppContext.BaseDirectory);
    }

    private static float[] RunNested(OnnxModel model, bool cond, bool cond2)
    {
        using var session = new InferenceSession(model.ToBytes());
        var x = Enumerable.Range(0, 16).Select(i => MathF.Sin(i * 0.7f)).ToArray();
        using var results = session.Run(
        [
            NamedOnnxValue.CreateFromTensor("x", new DenseTensor<float>(x, [2, 8])),
            NamedOnnxValue.CreateFromTensor("cond", new DenseTensor<bool>(new[] { cond }, [])),
            NamedOnnxValue.CreateFromTensor("cond2", new DenseTensor<bool>(new[] { cond2 }, [])),
        ]);
        return results.First().AsEnumerable<float>().ToArray();
    }

    [TestMethod]
    public void Int8Dynamic_RewritesMatMulsAtAnyDepth_WithOuterAndLocalWeights()
    {
        using var original = NestedIfModel();
        using var model = NestedIfModel();
        var context = new CompressionContext(model, Fixtures.Policy(("Quantize", "int8-dynamic")));
        CompressionPipeline.Run(context);

        var graphs = new OnnxGraph(model.Graph).SelfAndSubgraphs().ToList();
        Assert.AreEqual(3, graphs.Sum(g => g.Nodes.Count(n => n.OpType == "MatMulInteger")));
        Assert.AreEqual(0, graphs.Sum(g => g.Nodes.Count(n => n.OpType == "MatMul")));
        Assert.IsFalse(graphs.Any(g => g.Proto.Initializer.Any(t => t.DataType == (int)TensorProto.Types.DataType.Float && t.Dims.Count == 2)), "no float weight is left behind");
        Assert.IsFalse(graphs.Any(g => g.Nodes.Any(n => n.OpType == "Constant")), "the branch's Constant weight became its initializer, then int8");
        var names = graphs.SelectMany(g => g.Proto.Initializer.Select(t => t.Name).Concat(g.Nodes.SelectMany(n => n.Output))).ToList();
        Assert.HasCount(names.Distinct().Count(), names, "names stay unique across all graphs (no shadowing)");
        Assert.AreEqual(ModelWeights.Parameters(original), ModelWeights.Parameters(model), "96 weights before and after, counted at every depth");
        foreach (var (cond, cond2) in new[] { (true, false), (false, true), (false, false) })
        {
            var expected = RunNested(original, cond, cond2);
            var actual = RunNested(model, cond, cond2);
            Assert.IsGreaterThan(0.999, Cosine(expected, actual), $"cond={cond}, cond2={cond2}");
            CollectionAssert.AreNotEqual(expected, actual, "int8 weights change the outputs a little");
        }
    }
}
