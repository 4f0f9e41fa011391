using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;

namespace ModelCompression.Tests.Graph;

/// <summary>
/// HardSwish written out as x·Clip(x+3, 0, 6)/6 (the PP-OCR classifier has 18 of them, as paddle2onnx writes it)
/// becomes one op, with the same outputs in ONNX Runtime.
/// </summary>
[TestClass]
public sealed class HardSwishFusionTests
{
    [TestMethod]
    public void Classifier_Opset9_HardSwishPatterns_BecomeHardSigmoidTimesX_WithTheSameOutputs()
    {
        using var original = OnnxModel.Load(Fixtures.PathOf("ppocr_cls_v2.onnx"));
        using var model = original.Clone();
        var context = new CompressionContext(model, Fixtures.Policy(("FoldBatchNorm", "false")));
        CompressionPipeline.Run(context);

        Assert.AreEqual(18, context.Records.Count(r => r.Technique == "fuse-hardswish"));
        Assert.AreEqual(0, model.Graph.Node.Count(n => n.OpType is "Clip" or "Div"));
        Assert.AreEqual(18 + original.Graph.Node.Count(n => n.OpType == "HardSigmoid"), model.Graph.Node.Count(n => n.OpType == "HardSigmoid"));
        var inputs = OpsetUpgradeTests.TextLines(4, 7);
        var diff = Run(original, inputs, [4, 3, 48, 192]).Zip(Run(model, inputs, [4, 3, 48, 192])).Max(p => Math.Abs(p.First - p.Second));
        Assert.IsLessThan(1e-5f, diff, $"max |Δ| {diff}");
    }

    [TestMethod]
    public void Opset17_DividedFirstPattern_BecomesHardSwish_AndTheSwitchTurnsItOff()
    {
        var input = Enumerable.Range(0, 64).Select(i => (i - 32) / 4f).ToArray(); // −8 … 7.75: both clip bounds and the middle
        var fused = Build();
        CompressionPipeline.Run(new CompressionContext(fused, Fixtures.Policy()));
        Assert.AreEqual(1, fused.Graph.Node.Count(n => n.OpType == "HardSwish"));
        Assert.AreEqual(1, fused.Graph.Node.Count, "Add, Clip, Div and Mul are gone");
        var diff = Run(Build(), input, [1, 64]).Zip(Run(fused, input, [1, 64])).Max(p => Math.Abs(p.First - p.Second));
        Assert.IsLessThan(1e-5f, diff, $"max |Δ| {diff}");

        var kept = Build();
        CompressionPipeline.Run(new CompressionContext(kept, Fixtures.Policy(("FuseActivations", "false"))));
        Assert.AreEqual(4, kept.Graph.Node.Count);
    }

    /// <summary>y = x · (Clip(x + 3, 0, 6) / 6) at opset 17, bounds as constant inputs.</summary>
    private static OnnxModel Build()
    {
        var graph = new GraphProto { Name = "hardswish" };
        graph.Input.Add(Value("x"));
        graph.Output.Add(Value("y"));
        graph.Initializer.Add(Tensors.Scalar("three", 3f));
        graph.Initializer.Add(Tensors.Scalar("zero", 0f));
        graph.Initializer.Add(Tensors.Scalar("six", 6f));
        void Node(string op, string[] inputs, string output)
        {
            var node = new NodeProto { OpType = op, Name = op };
            node.Input.AddRange(inputs);
            node.Output.Add(output);
            graph.Node.Add(node);
        }
        Node("Add", ["x", "three"], "a");
        Node("Clip", ["a", "zero", "six"], "c");
        Node("Div", ["c", "six"], "d");
        Node("Mul", ["x", "d"], "y");
        var proto = new ModelProto { IrVersion = 8, ProducerName = "ModelCompression.Tests", Graph = graph };
        proto.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        return OnnxModel.Parse(proto.ToByteArray(), Path.GetTempPath(), "hardswish");
    }

    private static ValueInfoProto Value(string name)
    {
        var shape = new TensorShapeProto();
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = 1 });
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = 64 });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = shape } } };
    }

    private static float[] Run(OnnxModel model, float[] input, int[] shape)
    {
        using var session = new InferenceSession(model.ToBytes());
        using var results = session.Run([NamedOnnxValue.CreateFromTensor(session.InputMetadata.Keys.First(), new DenseTensor<float>(input, shape))]);
        return results.First().AsEnumerable<float>().ToArray();
    }
}
