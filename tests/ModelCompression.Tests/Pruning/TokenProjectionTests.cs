using Google.Protobuf;
using ModelCompression.Calibration;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;

namespace ModelCompression.Tests.Pruning;

/// <summary>
/// Data-aware pruning of MatMul projections over token sequences ([N, T, C] · W[C, C']), the layout of attention and
/// MLP projections in transformers and OCR recognizers: every token is a row of the layer's input statistics, and the
/// weight is stored [in, out]. The report's error column must be the error ONNX Runtime measures on the layer's
/// output, and SparseGPT's reconstruction must beat plain magnitude pruning there.
/// </summary>
[TestClass]
public sealed class TokenProjectionTests
{
    private const int Samples = 256;

    [TestMethod]
    public void SparseGpt_ReportsTheErrorOnnxRuntimeMeasuresOnTokenProjections()
    {
        var original = Build();
        var (sparseGpt, records) = Prune(original, "sparsegpt");
        var (magnitude, _) = Prune(original, "magnitude");

        foreach (var (name, output) in new[] { ("proj_in", "h0"), ("proj_out", "h2") })
        {
            var record = records.Single(r => r.Layer == name && r.Technique == "prune");
            StringAssert.StartsWith(record.Note, "sparsegpt", name);
            Assert.AreEqual(0.5, record.Sparsity!.Value, 0.01, name);
            var measured = OutputError(sparseGpt, original, output);
            var byMagnitude = OutputError(magnitude, original, output);
            // proj_in sees the model's own input, so its reported error (on the calibration rows) is exactly what ORT
            // measures on its output; proj_out's inputs already carry proj_in's error, which its refit corrects.
            if (name == "proj_in") Assert.AreEqual(measured, record.ReconstructionError!.Value, 0.01 + 0.05 * measured, $"{name}: reported vs ORT");
            Assert.IsTrue(measured < LayerRecord.HighError, $"{name}: output error {measured:0.####}");
            Assert.IsTrue(measured < 0.8 * byMagnitude, $"{name}: sparsegpt {measured:0.####} vs magnitude {byMagnitude:0.####}");
        }
    }

    private static (OnnxModel Model, IReadOnlyList<LayerRecord> Records) Prune(OnnxModel original, string method)
    {
        var model = OnnxModel.Parse(original.ToBytes(), Path.GetTempPath(), "token_projection");
        var context = new CompressionContext(model, Fixtures.Policy(("Sparsity", "0.5"), ("PruneMethod", method), ("PruneScope", "layer"),
            ("PruneEdgeLayers", "true"), ("SparseStorage", "false"), ("CalibrationData", "fmnist_calib.npz"), ("CalibrationSamples", Samples.ToString())));
        CompressionPipeline.Run(context);
        return (model, context.Records);
    }

    /// <summary>‖y − y₀‖/‖y₀‖ of one value over the calibration samples, y₀ from the original model.</summary>
    private static double OutputError(OnnxModel model, OnnxModel original, string value)
    {
        double delta = 0, norm = 0;
        ActivationCapture.RunPaired(model, original, [value], Fixtures.CalibrationData.Take(Samples), Fixtures.Cpu, 64, (batch, reference) =>
        {
            var y = batch[value].Data;
            var y0 = reference[value].Data;
            for (var i = 0; i < y.Length; i++)
            {
                delta += Math.Pow(y[i] - y0[i], 2);
                norm += Math.Pow(y0[i], 2);
            }
        });
        return Math.Sqrt(delta / norm);
    }

    /// <summary>
    /// image [N,1,28,28] → tokens [N,28,28] (one token per pixel row) → MatMul proj_in (28→64) → +b → Relu →
    /// MatMul proj_out (64→32) → +b → mean over tokens → Gemm head (10). Random but fixed weights.
    /// </summary>
    private static OnnxModel Build()
    {
        var random = new Random(11);
        var graph = new GraphProto { Name = "token_projection" };
        graph.Input.Add(Value("image", [-1, 1, 28, 28]));
        graph.Output.Add(Value("logits", [-1, 10]));

        void Weight(string name, long fanIn, params long[] dims)
        {
            var count = (int)dims.Aggregate(1L, (a, b) => a * b);
            graph.Initializer.Add(Tensors.FromFloats(name, dims,
                Enumerable.Range(0, count).Select(_ => (float)((random.NextDouble() * 2 - 1) * Math.Sqrt(3.0 / fanIn))).ToArray()));
        }
        void Node(string op, string name, string[] inputs, string output, params AttributeProto[] attributes)
        {
            var node = new NodeProto { OpType = op, Name = name };
            node.Input.AddRange(inputs);
            node.Output.Add(output);
            node.Attribute.AddRange(attributes);
            graph.Node.Add(node);
        }

        graph.Initializer.Add(Tensors.FromInt64s("tokens_shape", [3], [0, 28, 28]));
        Weight("proj_in.weight", 28, 28, 64);
        Weight("proj_in.bias", 28, 64);
        Weight("proj_out.weight", 64, 64, 32);
        Weight("proj_out.bias", 64, 32);
        Weight("head.weight", 32, 10, 32);
        Weight("head.bias", 32, 10);

        Node("Reshape", "tokens", ["image", "tokens_shape"], "t");
        Node("MatMul", "proj_in", ["t", "proj_in.weight"], "h0");
        Node("Add", "proj_in_bias", ["h0", "proj_in.bias"], "h1");
        Node("Relu", "relu", ["h1"], "r");
        Node("MatMul", "proj_out", ["r", "proj_out.weight"], "h2");
        Node("Add", "proj_out_bias", ["h2", "proj_out.bias"], "h3");
        var axes = new AttributeProto { Name = "axes", Type = AttributeProto.Types.AttributeType.Ints };
        axes.Ints.Add(1);
        Node("ReduceMean", "pool", ["h3"], "p", axes, new AttributeProto { Name = "keepdims", Type = AttributeProto.Types.AttributeType.Int, I = 0 });
        Node("Gemm", "head", ["p", "head.weight", "head.bias"], "logits", new AttributeProto { Name = "transB", Type = AttributeProto.Types.AttributeType.Int, I = 1 });

        var proto = new ModelProto { IrVersion = 8, ProducerName = "ModelCompression.Tests", Graph = graph };
        proto.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        return OnnxModel.Parse(proto.ToByteArray(), Path.GetTempPath(), "token_projection");
    }

    private static ValueInfoProto Value(string name, long[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims) shape.Dim.Add(d < 0 ? new TensorShapeProto.Types.Dimension { DimParam = "batch" } : new TensorShapeProto.Types.Dimension { DimValue = d });
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = shape } },
        };
    }
}
