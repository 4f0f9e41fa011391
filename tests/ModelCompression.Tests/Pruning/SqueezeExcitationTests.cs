using Google.Protobuf;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using static ModelCompression.Tests.Pruning.PruningHelpers;

namespace ModelCompression.Tests.Pruning;

/// <summary>
/// Data-aware pruning of convolutions whose output is 1×1 (a squeeze-excitation block after global average pooling):
/// such a layer has one output position per sample, so no coarser grid of positions leaves fewer rows. With 512
/// calibration samples and few input channels, the search for the grid step used to run until the step overflowed
/// and crashed with CM0001 (DivideByZeroException).
/// </summary>
[TestClass]
public sealed class SqueezeExcitationTests
{
    private const string SqueezeName = "se_reduce";
    private const string ExciteName = "se_expand";

    [TestMethod]
    public void SparseGpt_PrunesOneByOneConvOutputsOfASqueezeExcitationBlock()
    {
        var original = Build();
        var model = OnnxModel.Parse(original.ToBytes(), Path.GetTempPath(), "squeeze_excitation");
        var context = new CompressionContext(model, Fixtures.Policy(("Sparsity", "0.5"), ("PruneMethod", "sparsegpt"),
            ("SparseStorage", "false"), ("CalibrationData", "fmnist_calib.npz")));
        CompressionPipeline.Run(context);

        // The first conv and the head are edge layers and stay dense; the budget is shared by the other three.
        var pruned = new[] { "conv1", SqueezeName, ExciteName };
        foreach (var name in pruned)
        {
            var record = context.Records.Single(r => r.Layer == name && r.Technique == "prune");
            StringAssert.StartsWith(record.Note, "sparsegpt", name);
            Assert.IsTrue(record.ReconstructionError is { } e && double.IsFinite(e) && e < 1, $"{name}: error {record.ReconstructionError}");
            Assert.IsTrue(Zeros(model, Layer(model, name)) > 0, name);
        }
        var layers = pruned.Select(n => Layer(model, n)).ToList();
        // At least the requested half: weights of inputs that are zero on every calibration sample (channels
        // the random first conv's ReLU never opens) are zeroed on top of the count.
        var zeros = layers.Sum(l => Zeros(model, l));
        Assert.IsTrue(zeros >= (long)Math.Round(0.5 * layers.Sum(l => l.Parameters)), $"{zeros} zeros of {layers.Sum(l => l.Parameters)}");
        // The pruned model still computes nearly the same logits (the refit compensates what pruning removes).
        var before = Fixtures.Outputs(original).Data;
        var after = Fixtures.Outputs(model).Data;
        double delta = 0, norm = 0;
        for (var i = 0; i < before.Length; i++)
        {
            delta += Math.Pow(after[i] - before[i], 2);
            norm += Math.Pow(before[i], 2);
        }
        Assert.IsTrue(Math.Sqrt(delta / norm) < 0.5, $"relative logit change {Math.Sqrt(delta / norm):0.###}");
    }

    /// <summary>
    /// image [N,1,28,28] → 3×3 conv (8, stride 2) → ReLU → 3×3 conv1 (16, stride 2) → ReLU → f; squeeze-excitation:
    /// GlobalAveragePool(f) → 1×1 conv (8) → ReLU → 1×1 conv (16) → Sigmoid → f·gate; then GlobalAveragePool →
    /// Flatten → Gemm head (10). Random but fixed weights.
    /// </summary>
    private static OnnxModel Build()
    {
        var random = new Random(5);
        var graph = new GraphProto { Name = "squeeze_excitation" };
        graph.Input.Add(Value("image", "batch", 1, 28, 28));
        graph.Output.Add(Value("logits", "batch", 10));

        void Weight(string name, params long[] dims)
        {
            var count = (int)dims.Aggregate(1L, (a, b) => a * b);
            var fanIn = count / dims[0];
            graph.Initializer.Add(Tensors.FromFloats(name, dims,
                Enumerable.Range(0, count).Select(_ => (float)((random.NextDouble() * 2 - 1) * Math.Sqrt(3.0 / fanIn))).ToArray()));
        }
        void Bias(string name, int count) =>
            graph.Initializer.Add(Tensors.FromFloats(name, [count], Enumerable.Range(0, count).Select(_ => (float)(0.1 * (random.NextDouble() - 0.5))).ToArray()));
        void Node(string op, string name, string[] inputs, string output, params AttributeProto[] attributes)
        {
            var node = new NodeProto { OpType = op, Name = name };
            node.Input.AddRange(inputs);
            node.Output.Add(output);
            node.Attribute.AddRange(attributes);
            graph.Node.Add(node);
        }
        AttributeProto[] Conv3x3() => [Ints("strides", 2, 2), Ints("pads", 1, 1, 1, 1), Ints("kernel_shape", 3, 3)];

        Weight("conv0.weight", 8, 1, 3, 3);
        Bias("conv0.bias", 8);
        Weight("conv1.weight", 16, 8, 3, 3);
        Bias("conv1.bias", 16);
        Weight("se_reduce.weight", 8, 16, 1, 1);
        Bias("se_reduce.bias", 8);
        Weight("se_expand.weight", 16, 8, 1, 1);
        Bias("se_expand.bias", 16);
        Weight("head.weight", 10, 16);
        Bias("head.bias", 10);

        Node("Conv", "conv0", ["image", "conv0.weight", "conv0.bias"], "c0", Conv3x3());
        Node("Relu", "relu0", ["c0"], "r0");
        Node("Conv", "conv1", ["r0", "conv1.weight", "conv1.bias"], "c1", Conv3x3());
        Node("Relu", "relu1", ["c1"], "f");
        Node("GlobalAveragePool", "squeeze", ["f"], "s");
        Node("Conv", SqueezeName, ["s", "se_reduce.weight", "se_reduce.bias"], "s1");
        Node("Relu", "se_relu", ["s1"], "s1r");
        Node("Conv", ExciteName, ["s1r", "se_expand.weight", "se_expand.bias"], "s2");
        Node("Sigmoid", "gate", ["s2"], "g");
        Node("Mul", "excite", ["f", "g"], "fe");
        Node("GlobalAveragePool", "pool", ["fe"], "p");
        Node("Flatten", "flatten", ["p"], "pf");
        Node("Gemm", "head", ["pf", "head.weight", "head.bias"], "logits", new AttributeProto { Name = "transB", Type = AttributeProto.Types.AttributeType.Int, I = 1 });

        var proto = new ModelProto { IrVersion = 8, ProducerName = "ModelCompression.Tests", Graph = graph };
        proto.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        return OnnxModel.Parse(proto.ToByteArray(), Path.GetTempPath(), "squeeze_excitation");
    }

    private static ValueInfoProto Value(string name, string batch, params long[] dims)
    {
        var shape = new TensorShapeProto();
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = batch });
        foreach (var d in dims) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = shape } },
        };
    }

    private static AttributeProto Ints(string name, params long[] values)
    {
        var attribute = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        attribute.Ints.AddRange(values);
        return attribute;
    }
}
