using Google.Protobuf;
using ModelCompression.Onnx.Protobuf;
using static ModelCompression.Onnx.Tests.OnnxTestSupport;

namespace ModelCompression.Onnx.Tests;

/// <summary>Every malformed input raises <see cref="OnnxFormatException"/> naming what is wrong — no crash, hang or huge allocation.</summary>
[TestClass]
public sealed class MalformedInputTests
{
    private static OnnxFormatException Fails(Action action) => Assert.ThrowsExactly<OnnxFormatException>(action);

    [TestMethod]
    public void TruncatedFile_IsRejected()
    {
        var bytes = File.ReadAllBytes(Mlp);
        var dir = TempDirectory();
        var path = Path.Combine(dir, "truncated.onnx");
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        var e = Fails(() => OnnxModel.Load(path));
        StringAssert.Contains(e.Message, "truncated or corrupt");
    }

    [TestMethod]
    public void RandomBytes_AreRejected()
    {
        var random = new Random(42);
        for (var trial = 0; trial < 20; trial++)
        {
            var bytes = new byte[1 + random.Next(4096)];
            random.NextBytes(bytes);
            var e = Fails(() => OnnxModel.Parse(bytes, TempDirectory(), "random.bin"));
            StringAssert.Contains(e.Message, "random.bin");
        }
    }

    [TestMethod]
    public void HugeLengthPrefix_DoesNotAllocate()
    {
        // Field 7 (graph), length-delimited, claiming ~2 GB with 3 bytes behind it.
        var bytes = new byte[] { 0x08, 0x0A, 0x3A, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x01, 0x02, 0x03 };
        var e = Fails(() => OnnxModel.Parse(bytes, TempDirectory(), "huge"));
        StringAssert.Contains(e.Message, "truncated or corrupt");
    }

    [TestMethod]
    public void MissingGraph_IsRejected()
    {
        var bytes = new ModelProto { IrVersion = 10 }.ToByteArray();
        StringAssert.Contains(Fails(() => OnnxModel.Parse(bytes, TempDirectory())).Message, "no graph");
    }

    [TestMethod]
    public void MissingExternalDataFile_IsRejected()
    {
        var (dir, path) = ExternalCopy();
        File.Delete(path + ".data");
        using var model = OnnxModel.Load(path);
        var e = Fails(model.ValidateTensors);
        StringAssert.Contains(e.Message, "does not exist");
        StringAssert.Contains(e.Message, "external.onnx.data");
    }

    [TestMethod]
    public void ExternalDataOffsetPastTheEnd_IsRejected()
    {
        var (_, path) = ExternalCopy();
        using (var model = OnnxModel.Load(path))
        {
            var tensor = model.Graph.Initializer.First(t => t.DataLocation == TensorProto.Types.DataLocation.External);
            ExternalDataInfo.Write(tensor.ExternalData, "external.onnx.data", 1L << 40, ExternalDataInfo.Parse(tensor).Length);
            File.WriteAllBytes(path + ".edited", model.Proto.ToByteArray());
        }
        using var edited = OnnxModel.Load(path + ".edited");
        var e = Fails(edited.ValidateTensors);
        StringAssert.Contains(e.Message, "runs past the end");
    }

    [TestMethod]
    [DataRow("../outside.data")]
    [DataRow("/etc/passwd")]
    [DataRow("sub/../../escape.data")]
    public void ExternalLocationEscapingTheModelFolder_IsRejected(string location)
    {
        var (_, path) = ExternalCopy();
        using var model = OnnxModel.Load(path);
        var tensor = model.Graph.Initializer.First(t => t.DataLocation == TensorProto.Types.DataLocation.External);
        ExternalDataInfo.Write(tensor.ExternalData, location, 0, 16);
        var e = Fails(() => model.GetTensor(tensor));
        StringAssert.Contains(e.Message, location.StartsWith('/') ? "absolute path" : "escapes the model's folder");
    }

    [TestMethod]
    [DataRow("file")]
    [DataRow("directory")]
    public void ExternalDataReachedThroughASymlinkOutsideTheFolder_IsRejected(string linkKind)
    {
        // The link's text stays inside the folder; only following it shows the bytes come from outside.
        var (dir, path) = ExternalCopy();
        var outside = TempDirectory();
        File.Copy(path + ".data", System.IO.Path.Combine(outside, "w.data"));
        var location = linkKind == "file" ? "link.data" : "sub/w.data";
        if (linkKind == "file") File.CreateSymbolicLink(System.IO.Path.Combine(dir, "link.data"), System.IO.Path.Combine(outside, "w.data"));
        else Directory.CreateSymbolicLink(System.IO.Path.Combine(dir, "sub"), outside);
        using var model = OnnxModel.Load(path);
        var tensor = model.Graph.Initializer.First(t => t.DataLocation == TensorProto.Types.DataLocation.External);
        var info = ExternalDataInfo.Parse(tensor);
        ExternalDataInfo.Write(tensor.ExternalData, location, info.Offset, info.Length);
        var e = Fails(() => model.GetTensor(tensor));
        StringAssert.Contains(e.Message, "escapes the model's folder through a symbolic link");
    }

    [TestMethod]
    public void ExternalDataThroughASymlinkThatStaysInsideTheFolder_IsRead()
    {
        var (dir, path) = ExternalCopy();
        File.CreateSymbolicLink(System.IO.Path.Combine(dir, "alias.data"), "external.onnx.data");
        using var model = OnnxModel.Load(path);
        var tensor = model.Graph.Initializer.First(t => t.DataLocation == TensorProto.Types.DataLocation.External);
        var expected = model.ReadFloats(tensor);
        var info = ExternalDataInfo.Parse(tensor);
        ExternalDataInfo.Write(tensor.ExternalData, "alias.data", info.Offset, info.Length);
        using var viaLink = OnnxModel.Parse(model.Proto.ToByteArray(), dir);
        CollectionAssert.AreEqual(expected, viaLink.ReadFloats(viaLink.Graph.Initializer.First(t => t.Name == tensor.Name)));
    }

    [TestMethod]
    public void SubgraphsNestedPastTheLimit_AreRejected()
    {
        static ModelProto Nested(int depth)
        {
            var graph = new GraphProto { Name = "g0" };
            for (var d = 1; d <= depth; d++)
            {
                var node = new NodeProto { OpType = "If", Input = { "c" }, Output = { $"y{d}" } };
                node.Attribute.Add(new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = graph });
                graph = new GraphProto { Name = $"g{d}", Node = { node } };
            }
            return new ModelProto { IrVersion = 8, Graph = graph };
        }
        using (OnnxModel.Parse(Nested(OnnxModel.MaxSubgraphDepth).ToByteArray(), TempDirectory())) { }
        var e = Fails(() => OnnxModel.Parse(Nested(OnnxModel.MaxSubgraphDepth + 1).ToByteArray(), TempDirectory()));
        StringAssert.Contains(e.Message, "nested more than 16 levels deep");
    }

    [TestMethod]
    public void TypedFieldsWithAHugeShape_AreRejectedBeforeAllocating()
    {
        // 2^30 elements claimed, 4 stored: the count is checked before a 4 GB array is made.
        var tensor = new TensorProto { Name = "w", DataType = (int)TensorProto.Types.DataType.Float, Dims = { 1L << 30 }, FloatData = { 1, 2, 3, 4 } };
        StringAssert.Contains(Fails(() => Tensors.View(tensor).ToFloatArray()).Message, "4 stored elements");
        tensor.Dims[0] = 1L << 40;
        StringAssert.Contains(Fails(() => Tensors.View(tensor).ToFloatArray()).Message, "do not fit in one array");
        // Raw bytes with a shape whose byte count overflows a long.
        var raw = new TensorProto { Name = "r", DataType = (int)TensorProto.Types.DataType.Float, Dims = { long.MaxValue }, RawData = ByteString.CopyFrom(new byte[16]) };
        StringAssert.Contains(Fails(() => Tensors.View(raw)).Message, "more bytes than can be addressed");
    }

    [TestMethod]
    public void Cycle_IsRejectedByTopologicalSort()
    {
        var graph = new GraphProto { Name = "cyclic" };
        graph.Input.Add(new ValueInfoProto { Name = "x" });
        graph.Node.Add(new NodeProto { OpType = "Add", Name = "a", Input = { "x", "c" }, Output = { "b" } });
        graph.Node.Add(new NodeProto { OpType = "Relu", Name = "r", Input = { "b" }, Output = { "c" } });
        graph.Output.Add(new ValueInfoProto { Name = "c" });
        var e = Fails(() => new OnnxGraph(graph).TopologicalSort());
        StringAssert.Contains(e.Message, "cycle");
    }

    [TestMethod]
    public void InputUsedBeforeItIsProduced_IsNamed()
    {
        using var model = OnnxModel.Load(Mlp);
        var nodes = model.Graph.Node;
        var first = nodes[0];
        nodes.RemoveAt(0);
        nodes.Add(first); // the Flatten now comes last: its consumers use its output before it exists
        var e = Fails(() => new OnnxGraph(model.Graph).ValidateOrder());
        StringAssert.Contains(e.Message, "before it is produced");
        StringAssert.Contains(e.Message, first.Output[0]);
    }

    [TestMethod]
    public void UndefinedInput_IsNamed()
    {
        using var model = OnnxModel.Load(Mlp);
        model.Graph.Node[1].Input[0] = "nowhere";
        var e = Fails(() => new OnnxGraph(model.Graph).TopologicalSort());
        StringAssert.Contains(e.Message, "'nowhere'");
    }

    [TestMethod]
    public void TensorBytesThatDoNotMatchTheShape_AreRejected()
    {
        var tensor = Tensors.FromFloats("w", [4], [1, 2, 3, 4]);
        tensor.Dims[0] = 5;
        StringAssert.Contains(Fails(() => Tensors.View(tensor)).Message, "16 bytes of data for shape [5]");
    }

    private static (string Dir, string Path) ExternalCopy()
    {
        var dir = TempDirectory();
        var path = System.IO.Path.Combine(dir, "external.onnx");
        using var model = OnnxModel.Load(Mlp);
        model.Save(path, new SaveOptions { ExternalizeThreshold = 1024 });
        return (dir, path);
    }
}
