using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.Tests.Graph;

/// <summary>
/// Weights behind ops that only reshape or convert a constant are weights: the MLP fixture rewritten as exporters
/// sometimes write it — each Gemm's [out, in] weight read through Transpose → MatMul, or stored in float16 and cast
/// to float32 — is pruned like the original, and its outputs agree with ORT's run of the unfolded graph.
/// </summary>
[TestClass]
public sealed class WeightChainsTests
{
    [TestMethod]
    public void TransposedConstantWeights_AreFoundAndPruned()
    {
        var original = Rewrite(transposed: true);
        var model = original.Clone();
        var context = new CompressionContext(model, Fixtures.Policy(("Sparsity", "0.5"), ("PruneMethod", "magnitude"), ("PruneScope", "layer"), ("SparseStorage", "false")));
        CompressionPipeline.Run(context);

        Assert.AreEqual(0, model.Graph.Node.Count(n => n.OpType == "Transpose"), "the weight transposes are folded");
        var pruned = context.Records.Where(r => r.Technique == "prune" && r.Sparsity is > 0.49).Select(r => r.Layer).ToList();
        Assert.AreEqual(2, pruned.Count, string.Join(", ", context.Records.Select(r => $"{r.Layer}:{r.Technique}:{r.Note}")));
        AssertCloseAccuracy(original, model);
    }

    [TestMethod]
    public void Float16WeightsCastToFloat_AreQuantizedWhenATechniqueIsAsked_AndLeftAloneOtherwise()
    {
        var original = Rewrite(transposed: false);
        var untouched = original.Clone();
        CompressionPipeline.Run(new CompressionContext(untouched, Fixtures.Policy()));
        Assert.AreEqual(3, untouched.Graph.Node.Count(n => n.OpType == "Cast"), "no technique: the float16 weights stay float16");

        var model = original.Clone();
        var context = new CompressionContext(model, Fixtures.Policy(("Quantize", "int8-dynamic")));
        CompressionPipeline.Run(context);
        Assert.AreEqual(0, model.Graph.Node.Count(n => n.OpType == "Cast" && n.Input[0].EndsWith(".weight", StringComparison.Ordinal)));
        Assert.AreEqual(3, context.Records.Count(r => r.Technique == "int8-dynamic" && r.Bits == 8), string.Join("\n", context.Records));
        AssertCloseAccuracy(original, model);
    }

    private static void AssertCloseAccuracy(OnnxModel original, OnnxModel model)
    {
        var before = Fixtures.Accuracy(original, 1000);
        var after = Fixtures.Accuracy(model, 1000);
        Assert.IsTrue(before - after < 0.02, $"accuracy {before:P2} → {after:P2}");
    }

    /// <summary>
    /// The MLP fixture with each Gemm (transB=1, weight [out, in]) as MatMul(x, Transpose(W)) + bias, or with W stored
    /// as float16 and Cast to float32 before the Gemm.
    /// </summary>
    private static OnnxModel Rewrite(bool transposed)
    {
        var model = OnnxModel.Load(Fixtures.Mlp);
        var graph = new OnnxGraph(model.Graph);
        foreach (var gemm in graph.Nodes.Where(n => n.OpType == "Gemm").ToList())
        {
            var weight = graph.Initializer(gemm.Input[1])!;
            var read = graph.FreshName(gemm.Input[1] + "_read");
            if (transposed)
            {
                var transpose = new NodeProto { OpType = "Transpose", Name = read };
                transpose.Input.Add(weight.Name);
                transpose.Output.Add(read);
                var product = graph.FreshName(gemm.Output[0] + "_product");
                var matMul = new NodeProto { OpType = "MatMul", Name = gemm.Name };
                matMul.Input.Add(gemm.Input[0]);
                matMul.Input.Add(read);
                matMul.Output.Add(product);
                var add = new NodeProto { OpType = "Add", Name = gemm.Name + "_bias" };
                add.Input.Add(product);
                add.Input.Add(gemm.Input[2]);
                add.Output.Add(gemm.Output[0]);
                graph.ReplaceNode(gemm, transpose, matMul, add);
            }
            else
            {
                var values = model.ReadFloats(weight).Select(v => (Half)v).ToArray();
                graph.SetInitializer(Tensors.Create(weight.Name, weight.Dims.ToArray(), DataType.Float16, values.AsSpan()));
                var cast = new NodeProto { OpType = "Cast", Name = read };
                cast.Input.Add(weight.Name);
                cast.Output.Add(read);
                cast.Attribute.Add(new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = (long)DataType.Float });
                graph.InsertBefore(gemm, cast);
                gemm.Input[1] = read;
            }
        }
        graph.TopologicalSort();
        return OnnxModel.Parse(model.ToBytes(), Path.GetDirectoryName(Fixtures.Mlp)!);
    }
}
