using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using ModelCompression.Diagnostics;
using ModelCompression.Graph;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using AttributeType = ModelCompression.Onnx.Protobuf.AttributeProto.Types.AttributeType;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.Tests.Graph;

/// <summary>
/// Quantization raises models below opset 13 to opset 13 first (<see cref="OpsetUpgradePass"/>). Every check runs the
/// model before and after through ONNX Runtime, which executes each op with the semantics of the model's own opset.
/// </summary>
[TestClass]
public sealed class OpsetUpgradeTests
{
    private static string Classifier => Fixtures.PathOf("ppocr_cls_v2.onnx");

    /// <summary>
    /// Synthetic text lines in the classifier's input range ((x/255 − 0.5)/0.5, [n, 3, 48, 192]): a light background
    /// with dark glyph-like bars whose tops or bottoms line up, upright or upside down, and a little noise.
    /// </summary>
    internal static float[] TextLines(int n, int seed)
    {
        var random = new Random(seed);
        var data = new float[n * 3 * 48 * 192];
        for (var s = 0; s < n; s++)
        {
            var plane = new float[48 * 192];
            Array.Fill(plane, 0.8f);
            var flipped = s % 2 == 1;
            for (var x = 4; x < 184;)
            {
                var width = random.Next(2, 6);
                var height = random.Next(10, 30);
                for (var dx = 0; dx < width && x + dx < 192; dx++)
                    for (var y = 34 - height; y < 34; y++)
                        plane[(flipped ? 47 - y : y) * 192 + (flipped ? 191 - x - dx : x + dx)] = -0.8f;
                x += width + random.Next(1, 5);
            }
            for (var c = 0; c < 3; c++)
                for (var i = 0; i < plane.Length; i++)
                    data[((s * 3) + c) * plane.Length + i] = Math.Clamp(plane[i] + (float)(random.NextDouble() - 0.5) * 0.1f, -1f, 1f);
        }
        return data;
    }

    private static float[] Run(OnnxModel model, float[] input, int[] shape, string? output = null)
    {
        using var session = new InferenceSession(model.ToBytes());
        using var results = session.Run([NamedOnnxValue.CreateFromTensor(session.InputMetadata.Keys.First(), new DenseTensor<float>(input, shape))]);
        return (output is null ? results.First() : results.First(r => r.Name == output)).AsEnumerable<float>().ToArray();
    }

    private static float MaxAbsDiff(float[] a, float[] b)
    {
        Assert.AreEqual(a.Length, b.Length);
        return a.Zip(b).Max(p => Math.Abs(p.First - p.Second));
    }

    [TestMethod]
    public void Classifier_Opset9_UpgradesTo13_WithTheSameOutputs()
    {
        using var original = OnnxModel.Load(Classifier);
        Assert.AreEqual(9, original.OpsetVersion());
        using var upgraded = original.Clone();
        Assert.IsNull(OpsetConverter.WhyNot(upgraded.Proto));
        OpsetConverter.Upgrade(upgraded.Proto);

        Assert.AreEqual(13, upgraded.OpsetVersion());
        Assert.IsGreaterThanOrEqualTo(7L, upgraded.Proto.IrVersion);
        var inputs = TextLines(6, 1);
        var diff = MaxAbsDiff(Run(original, inputs, [6, 3, 48, 192]), Run(upgraded, inputs, [6, 3, 48, 192]));
        Assert.IsLessThan(1e-5f, diff, $"max |Δ| {diff}");
    }

    [TestMethod]
    public void PruningOnly_KeepsTheModelsOpset()
    {
        using var model = OnnxModel.Load(Classifier);
        var context = new CompressionContext(model, Fixtures.Policy(("Sparsity", "0.5"), ("PruneMethod", "magnitude")));
        CompressionPipeline.Run(context);
        Assert.AreEqual(9, model.OpsetVersion());
        Assert.IsFalse(context.Diagnostics.Any(d => d.Code == DiagnosticCodes.OpsetUpgradeImpossible));
    }

    [TestMethod]
    public void Int8_OnTheOpset9Classifier_QuantizesItsConvolutions_OutputsAgree()
    {
        var folder = Directory.CreateTempSubdirectory("opset-tests-");
        try
        {
            var calibration = Path.Combine(folder.FullName, "x.npy");
            Fixtures.WriteNpy(calibration, [32, 3, 48, 192], TextLines(32, 2));
            using var original = OnnxModel.Load(Classifier);
            using var model = original.Clone();
            var context = new CompressionContext(model, Fixtures.Policy(("Quantize", "int8"), ("CalibrationData", calibration)));
            CompressionPipeline.Run(context);

            Assert.AreEqual(13, model.OpsetVersion());
            Assert.IsFalse(context.Diagnostics.Any(d => d.Code is DiagnosticCodes.OpsetUpgradeImpossible or DiagnosticCodes.LayerSkipped),
                string.Join("\n", context.Diagnostics));
            var graph = new OnnxGraph(model.Graph);
            var convs = graph.Nodes.Where(n => n.OpType == "Conv").ToList();
            bool Int8(NodeProto conv) => graph.Producer(conv.Input[1])?.OpType == "DequantizeLinear";
            var int8Convs = convs.Count(Int8);
            // Depthwise convolutions and the first one (3-channel image) stay float: their int8 kernels are slower.
            var depthwise = convs.Where(c => c.Attribute.Any(a => a.Name == "group" && a.I > 1)).ToList();
            Assert.AreEqual(11, depthwise.Count);
            Assert.IsFalse(depthwise.Any(Int8));
            Assert.AreEqual(convs.Count - depthwise.Count - 1, int8Convs, $"{int8Convs} of {convs.Count} convolutions read int8 weights");
            Assert.IsGreaterThan(int8Convs, graph.Nodes.Count(n => n.OpType == "QuantizeLinear"), "activations are int8 too");

            const int n = 16;
            var inputs = TextLines(n, 3);
            var reference = Run(original, inputs, [n, 3, 48, 192]);
            var quantized = Run(model, inputs, [n, 3, 48, 192]);
            var agree = Enumerable.Range(0, n).Count(i => reference[2 * i] > reference[2 * i + 1] == quantized[2 * i] > quantized[2 * i + 1]);
            var meanDiff = reference.Zip(quantized).Average(p => Math.Abs(p.First - p.Second));
            Assert.IsGreaterThanOrEqualTo(n - 1, agree, $"argmax agrees on {agree}/{n}");
            Assert.IsLessThan(0.05, meanDiff, $"mean |Δp| {meanDiff}");
        }
        finally { folder.Delete(recursive: true); }
    }

    [TestMethod]
    public void Int8Dynamic_OnTheOpset9Classifier_QuantizesItsMatMul()
    {
        using var model = OnnxModel.Load(Classifier);
        var context = new CompressionContext(model, Fixtures.Policy(("Quantize", "int8-dynamic")));
        CompressionPipeline.Run(context);
        Assert.AreEqual(13, model.OpsetVersion());
        Assert.AreEqual(1, model.Graph.Node.Count(n => n.OpType == "MatMulInteger"), string.Join("\n", context.Diagnostics));
        using var original = OnnxModel.Load(Classifier);
        var inputs = TextLines(4, 4);
        Assert.IsLessThan(0.05f, MaxAbsDiff(Run(original, inputs, [4, 3, 48, 192]), Run(model, inputs, [4, 3, 48, 192])));
    }

    // ---- tiny graphs ----

    private static ValueInfoProto Value(string name, params long[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)DataType.Float, Shape = shape } } };
    }

    private static ValueInfoProto Unknown(string name) =>
        new() { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)DataType.Float } } };

    private static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttributeType.Int, I = value };
    private static AttributeProto Ints(string name, params long[] values) => new() { Name = name, Type = AttributeType.Ints, Ints = { values } };
    private static AttributeProto Float(string name, float value) => new() { Name = name, Type = AttributeType.Float, F = value };
    private static AttributeProto Floats(string name, params float[] values) => new() { Name = name, Type = AttributeType.Floats, Floats = { values } };
    private static AttributeProto Str(string name, string value) => new() { Name = name, Type = AttributeType.String, S = Google.Protobuf.ByteString.CopyFromUtf8(value) };

    private static NodeProto Node(string op, string[] inputs, string[] outputs, params AttributeProto[] attributes)
    {
        var node = new NodeProto { OpType = op, Name = outputs[0] + "_node" };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        node.Attribute.AddRange(attributes);
        return node;
    }

    private static OnnxModel Model(long opset, ValueInfoProto input, IEnumerable<ValueInfoProto> outputs, IEnumerable<NodeProto> nodes, IEnumerable<TensorProto>? initializers = null)
    {
        var graph = new GraphProto { Name = "g", Input = { input } };
        graph.Output.AddRange(outputs);
        graph.Node.AddRange(nodes);
        if (initializers is not null) graph.Initializer.AddRange(initializers);
        var proto = new ModelProto { IrVersion = 6, OpsetImport = { new OperatorSetIdProto { Domain = "", Version = opset } }, Graph = graph };
        return OnnxModel.Parse(Google.Protobuf.MessageExtensions.ToByteArray(proto), AppContext.BaseDirectory);
    }

    private static float[] Ramp(int count, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => (float)(random.NextDouble() * 6 - 3)).ToArray();
    }

    /// <summary>Every output of the model before and after the upgrade, through ONNX Runtime; returns the upgraded model.</summary>
    private static OnnxModel AssertSameOutputs(OnnxModel original, int[] shape, float tolerance = 1e-6f)
    {
        var upgraded = original.Clone();
        Assert.IsNull(OpsetConverter.WhyNot(upgraded.Proto));
        OpsetConverter.Upgrade(upgraded.Proto);
        Assert.AreEqual(13, upgraded.OpsetVersion());
        var input = Ramp(shape.Aggregate(1, (a, b) => a * b), 5);
        foreach (var output in original.Graph.Output.Select(o => o.Name))
        {
            var before = Run(original, input, shape, output);
            var after = Run(upgraded, input, shape, output);
            Assert.IsLessThanOrEqualTo(tolerance, MaxAbsDiff(before, after), output);
        }
        return upgraded;
    }

    [TestMethod]
    [DataRow("Softmax", 1, true)]
    [DataRow("Softmax", 0, false)]
    [DataRow("Softmax", 2, true)]
    [DataRow("Softmax", -2, false)]
    [DataRow("LogSoftmax", 1, false)]
    [DataRow("Hardmax", 1, true)]
    [DataRow("Hardmax", 2, false)]
    public void SoftmaxFamily_AxisNotLast_KeepsTheFlattenedMeaning(string op, int axis, bool shapesKnown)
    {
        // Rank 4, [2, 3, 4, 5]: axis 1 normalizes over 60 values per sample before opset 13, over 3 from 13.
        ValueInfoProto V(string name) => shapesKnown ? Value(name, 2, 3, 4, 5) : Unknown(name);
        using var original = Model(11, V("x"), [V("y")], [Node(op, ["x"], ["y"], Int("axis", axis))]);
        using var upgraded = AssertSameOutputs(original, [2, 3, 4, 5]);
        var ops = upgraded.Graph.Node.Select(n => n.OpType).ToList();
        CollectionAssert.AreEqual(new[] { "Shape", "Flatten", op, "Reshape" }, ops);
        Assert.AreEqual("y", upgraded.Graph.Node.Last().Output[0], "the graph output keeps its name");
    }

    [TestMethod]
    public void Softmax_OverTheLastAxis_IsOnlyRelabelled()
    {
        using var last = Model(9, Value("x", 2, 3, 4), [Value("y", 2, 3, 4)], [Node("Softmax", ["x"], ["y"], Int("axis", 2))]);
        using var upgradedLast = AssertSameOutputs(last, [2, 3, 4]);
        Assert.AreEqual(-1, upgradedLast.Graph.Node.Single().Attribute.Single(a => a.Name == "axis").I);

        // The default axis (1) of a rank-2 input is its last one: the classifier's Softmax over [N, 2].
        using var matrix = Model(9, Value("x", 3, 7), [Value("y", 3, 7)], [Node("Softmax", ["x"], ["y"])]);
        using var upgradedMatrix = AssertSameOutputs(matrix, [3, 7]);
        Assert.AreEqual("Softmax", upgradedMatrix.Graph.Node.Single().OpType);
    }

    [TestMethod]
    public void AttributesBecomeInputs_ResizeReplacesUpsample_OutputsUnchanged()
    {
        // Opset 9, x [1, 2, 4, 6]: each op that changed between 9 and 13 reads x and is a graph output.
        TensorProto Scales(string name, params float[] s) => Tensors.FromFloats(name, [s.Length], s);
        var nodes = new[]
        {
            Node("Clip", ["x"], ["clip"], Float("min", -0.5f), Float("max", 1.5f)),
            Node("Clip", ["x"], ["clip_max"], Float("max", 0.25f)),
            Node("Slice", ["x"], ["slice"], Ints("starts", 1, 0), Ints("ends", 3, 100), Ints("axes", 2, 1)),
            Node("Unsqueeze", ["x"], ["unsqueeze"], Ints("axes", 0, 5)),
            Node("Squeeze", ["unsqueeze"], ["squeeze"], Ints("axes", 0)),
            Node("ReduceSum", ["x"], ["reducesum"], Ints("axes", 1, 3), Int("keepdims", 0)),
            Node("Split", ["x"], ["split_a", "split_b"], Int("axis", 3), Ints("split", 2, 4)),
            Node("Pad", ["x"], ["pad"], Ints("pads", 0, 0, 1, 2, 0, 0, 2, 1), Float("value", 0.75f)),
            Node("Pad", ["x"], ["pad_reflect"], Ints("pads", 0, 0, 1, 1, 0, 0, 1, 1), Str("mode", "reflect")),
            Node("TopK", ["x"], ["topk", "topk_index"], Int("k", 3), Int("axis", 3)),
            Node("Upsample", ["x", "scales"], ["up_nearest"], Str("mode", "nearest")),
            Node("Upsample", ["x", "scales"], ["up_linear"], Str("mode", "linear")),
            Node("Dropout", ["x"], ["dropout"], Float("ratio", 0.3f)),
            Node("BatchNormalization", ["x", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["bn"]),
        };
        var outputs = nodes.SelectMany(n => n.Output).Where(o => o != "unsqueeze" && o != "topk_index").Select(Unknown).ToList();
        var initializers = new[]
        {
            Scales("scales", 1, 1, 2, 1.5f), Scales("bn_scale", 0.5f, 2), Scales("bn_bias", 0.1f, -0.2f), Scales("bn_mean", 0.3f, -0.1f), Scales("bn_var", 1.5f, 0.7f),
        };
        using var original = Model(9, Value("x", 1, 2, 4, 6), outputs, nodes, initializers);
        using var upgraded = AssertSameOutputs(original, [1, 2, 4, 6], tolerance: 1e-5f);
        Assert.IsFalse(upgraded.Graph.Node.Any(n => n.OpType == "Upsample"));
        Assert.IsFalse(upgraded.Graph.Node.Any(n => n.Attribute.Any(a => a.Name is "axes" or "starts" or "ends" or "pads" or "split" or "k" or "min" or "max" or "spatial" or "ratio")),
            "every attribute that opset 13 takes as an input is gone");
    }

    [TestMethod]
    public void Opset8_UpsampleScalesAttribute_AndBatchNormSpatial_AreConverted()
    {
        var nodes = new[]
        {
            Node("Upsample", ["x"], ["up"], Str("mode", "nearest"), Floats("scales", 1, 1, 3, 2)),
            Node("BatchNormalization", ["x", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["bn"], Int("spatial", 1)),
        };
        TensorProto Vector(string name, params float[] v) => Tensors.FromFloats(name, [v.Length], v);
        var initializers = new[] { Vector("bn_scale", 0.5f, 2), Vector("bn_bias", 0.1f, -0.2f), Vector("bn_mean", 0.3f, -0.1f), Vector("bn_var", 1.5f, 0.7f) };
        using var original = Model(8, Value("x", 1, 2, 3, 4), [Unknown("up"), Unknown("bn")], nodes, initializers);
        using var upgraded = AssertSameOutputs(original, [1, 2, 3, 4], tolerance: 1e-5f);
        Assert.AreEqual("Resize", upgraded.Graph.Node[0].OpType);
        Assert.IsFalse(upgraded.Graph.Node[1].Attribute.Any(a => a.Name == "spatial"));
    }

    [TestMethod]
    public void UnknownOp_WarnsCM0304_AndLeavesTheModelAsItIs()
    {
        // Opset 9's experimental ops (here ImageScaler) were removed at 10 with no replacement the converter knows.
        using var model = Model(9, Value("x", 1, 2, 4, 4), [Value("y", 1, 2, 4, 4)],
            [Node("ImageScaler", ["x"], ["y"], Float("scale", 2f))]);
        var before = model.Proto.Clone();
        var context = new CompressionContext(model, Fixtures.Policy(("Quantize", "int8-dynamic")));
        CompressionPipeline.Run(context);

        var warning = context.Diagnostics.Single(d => d.Code == DiagnosticCodes.OpsetUpgradeImpossible);
        Assert.AreEqual(Severity.Warning, warning.Severity);
        StringAssert.Contains(warning.Message, "op ImageScaler");
        Assert.IsTrue(context.Diagnostics.Any(d => d.Code == DiagnosticCodes.LayerSkipped), "the quantization pass says it quantized nothing");
        Assert.AreEqual(before.OpsetImport.Single().Version, model.OpsetVersion());
        CollectionAssert.AreEqual(before.Graph.Node.Select(n => n.OpType).ToArray(), model.Graph.Node.Select(n => n.OpType).ToArray(), "nothing converted");
    }
}
