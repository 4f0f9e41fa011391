using ModelCompression.Calibration;
using ModelCompression.Data;
using ModelCompression.Onnx.Protobuf;
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

    [TestMethod]
    public void SpilledWeightsPast2GB_RunInOneSession()
    {
        // 520 MatMuls with 4 MiB weights each: 2080 MiB, past what one protobuf message can hold inline. Each weight
        // is spilled as soon as it is added, so the test holds one of them in memory at a time.
        const int width = 1024, layers = 520;
        var graph = new GraphProto { Name = "chain" };
        var x = "x";
        for (var i = 0; i < layers; i++)
        {
            var node = new NodeProto { OpType = "MatMul", Name = $"mm{i}", Input = { x, $"w{i}" }, Output = { $"y{i}" } };
            graph.Node.Add(node);
            x = $"y{i}";
        }
        static ValueInfoProto Value(string name) => new()
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = new TensorShapeProto { Dim = { new TensorShapeProto.Types.Dimension { DimValue = 1 }, new TensorShapeProto.Types.Dimension { DimValue = width } } } } },
        };
        graph.Input.Add(Value("x"));
        graph.Output.Add(Value(x));
        var proto = new ModelProto { IrVersion = 8, Graph = graph, OpsetImport = { new OperatorSetIdProto { Domain = "", Version = 17 } } };
        var dir = Directory.CreateTempSubdirectory("spill-2gb").FullName;
        try
        {
            using var model = OnnxModel.Parse(Google.Protobuf.MessageExtensions.ToByteArray(proto), dir);
            // 1/1024 everywhere: each layer averages its input, exactly (a power of two over 1024 terms).
            var weight = System.Runtime.InteropServices.MemoryMarshal.AsBytes(Enumerable.Repeat(1f / width, width * width).ToArray().AsSpan()).ToArray();
            long spilled = 0;
            for (var i = 0; i < layers; i++)
            {
                model.Graph.Initializer.Add(Tensors.Wrap($"w{i}", [width, width], TensorProto.Types.DataType.Float, weight));
                spilled += model.Spill(Path.Combine(dir, "out"), 1024);
            }
            Assert.IsTrue(spilled > int.MaxValue);
            Assert.ThrowsExactly<OnnxFormatException>(() => model.ToBytesWithExternalReferences(), "inline, the weights do not fit one message");

            using var session = OnnxRuntimeSession.Create(model, Fixtures.Cpu with { Prepacking = false });
            var input = Enumerable.Range(0, width).Select(i => (float)(i % 7)).ToArray();
            var output = session.Run([new NdArray("x", [1, width], ArrayElementType.Float32, input)])[x].Data;
            var mean = input.Average();
            Assert.IsTrue(output.All(v => Math.Abs(v - mean) < 1e-4), $"{output[0]} vs {mean}");
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
