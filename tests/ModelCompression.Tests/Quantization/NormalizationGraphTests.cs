using Google.Protobuf;
using ModelCompression.Data;
using ModelCompression.Evaluation;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;

namespace ModelCompression.Tests.Quantization;

/// <summary>
/// A small transformer-like block built with our ONNX layer: MatMul + bias → LayerNormalization → MatMul → Relu →
/// MatMul → residual Add → a decomposed layer norm (ReduceMean/Sub/Pow/Sqrt/Div) → MatMul → Softmax. Its MatMuls
/// must go int8 while the normalization ops keep computing on float inputs.
/// </summary>
[TestClass]
public sealed class NormalizationGraphTests
{
    private const int Tokens = 8, Width = 16, Hidden = 32;
    private static readonly string[] NormalizationOps = ["LayerNormalization", "Softmax", "ReduceMean", "Sub", "Pow", "Sqrt", "Div"];

    [TestMethod]
    public void Int8_TransformerBlock_QuantizesMatMulsAndKeepsNormalizationInFloat()
    {
        var folder = Directory.CreateTempSubdirectory("quantization-tests-");
        try
        {
            var random = new Random(11);
            var calibration = Path.Combine(folder.FullName, "x.npy");
            Fixtures.WriteNpy(calibration, [128, Tokens, Width], Enumerable.Range(0, 128 * Tokens * Width).Select(_ => Gaussian(random)).ToArray());
            using var original = OnnxModel.Parse(BuildBlock(random).ToByteArray(), folder.FullName);
            var quantized = original.Clone();
            var context = new CompressionContext(quantized, Fixtures.Policy(("Quantize", "int8"), ("CalibrationData", calibration)));

            CompressionPipeline.Run(context);

            var graph = new OnnxGraph(quantized.Graph);
            var matMuls = graph.Nodes.Where(n => n.OpType == "MatMul").ToList();
            Assert.AreEqual(4, matMuls.Count);
            Assert.IsTrue(matMuls.All(m => graph.Producer(m.Input[1])?.OpType == "DequantizeLinear"), "every MatMul weight is int8");
            foreach (var op in NormalizationOps)
            {
                var nodes = graph.Nodes.Where(n => n.OpType == op).ToList();
                Assert.IsTrue(nodes.Count > 0, $"{op} is gone");
                foreach (var node in nodes)
                    Assert.IsFalse(node.Input.Any(i => graph.Producer(i)?.OpType == "DequantizeLinear"), $"{OnnxGraph.Describe(node)} reads a dequantized (int8) tensor");
            }
            Assert.IsFalse(graph.Nodes.Any(n => n.OpType.StartsWith("QLinear", StringComparison.Ordinal)), "no QLinear* op is emitted directly");

            var data = Dataset.Load(calibration);
            var runtime = Fixtures.Cpu;
            var reference = Predictions.Run(original, data, runtime, 64);
            var candidate = Predictions.Run(quantized, data, runtime, 64);
            Assert.IsTrue(Metrics.MeanCosine(reference, candidate) > 0.995, $"cosine {Metrics.MeanCosine(reference, candidate)}");

            // ONNX Runtime runs each MatMul as an int8 kernel (float output where a normalization op reads it).
            var ops = Runtime.KernelProfiler.Profile(quantized.ToBytes(), data.Batches(64).First(), runtime, runs: 2).Select(k => k.OpType).ToList();
            Assert.AreEqual(4, ops.Count(op => op is "MatMulIntegerToFloat" or "QLinearMatMul"), string.Join(", ", ops));
            Assert.IsFalse(ops.Contains("MatMul"), string.Join(", ", ops));
        }
        finally
        {
            folder.Delete(recursive: true);
        }
    }

    private static float Gaussian(Random random) => (float)(Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()));

    private static ModelProto BuildBlock(Random random)
    {
        var graph = new GraphProto { Name = "block" };
        graph.Input.Add(Value("x", 3));
        graph.Output.Add(Value("y", 3));
        void Init(string name, long[] dims, float scale) =>
            graph.Initializer.Add(Tensors.FromFloats(name, dims, Enumerable.Range(0, (int)dims.Aggregate(1L, (a, b) => a * b)).Select(_ => scale * Gaussian(random)).ToArray()));
        void Node(string op, string[] inputs, string output, params AttributeProto[] attributes) =>
            graph.Node.Add(new NodeProto { OpType = op, Name = "/" + output, Input = { inputs }, Output = { output }, Attribute = { attributes } });

        Init("w1", [Width, Hidden], 0.3f); Init("b1", [Hidden], 0.1f);
        Init("gamma", [Hidden], 1f); Init("beta", [Hidden], 0.1f);
        Init("w2", [Hidden, Hidden], 0.2f); Init("w3", [Hidden, Width], 0.2f); Init("w4", [Width, Width], 0.3f);
        graph.Initializer.Add(Tensors.Scalar("two", 2f));
        graph.Initializer.Add(Tensors.Scalar("epsilon", 1e-5f));

        Node("MatMul", ["x", "w1"], "h1");
        Node("Add", ["h1", "b1"], "h1b");
        Node("LayerNormalization", ["h1b", "gamma", "beta"], "ln1", Int("axis", -1));
        Node("MatMul", ["ln1", "w2"], "h2");
        Node("Relu", ["h2"], "r2");
        Node("MatMul", ["r2", "w3"], "h3");
        Node("Add", ["x", "h3"], "residual");
        Node("ReduceMean", ["residual"], "mean", Ints("axes", -1));
        Node("Sub", ["residual", "mean"], "centered");
        Node("Pow", ["centered", "two"], "squared");
        Node("ReduceMean", ["squared"], "variance", Ints("axes", -1));
        Node("Add", ["variance", "epsilon"], "variance_eps");
        Node("Sqrt", ["variance_eps"], "deviation");
        Node("Div", ["centered", "deviation"], "normalized");
        Node("MatMul", ["normalized", "w4"], "logits");
        Node("Softmax", ["logits"], "y", Int("axis", -1));

        var model = new ModelProto { IrVersion = 8, ProducerName = "tests", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        return model;
    }

    private static ValueInfoProto Value(string name, int rank)
    {
        var shape = new TensorShapeProto();
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = "batch" });
        foreach (var d in new long[] { Tokens, Width }.Take(rank - 1)) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = shape } } };
    }

    private static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };
    private static AttributeProto Ints(string name, params long[] values) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Ints, Ints = { values } };
}
