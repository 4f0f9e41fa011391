using Google.Protobuf;
using ModelCompression.Onnx.Protobuf;
using static ModelCompression.Onnx.Tests.OnnxTestSupport;

namespace ModelCompression.Onnx.Tests;

[TestClass]
public sealed class RoundTripTests
{
    [TestMethod]
    [DataRow("fmnist_mlp.onnx")]
    [DataRow("fmnist_resnet.onnx")]
    public void SaveOfLoad_RunsInOnnxRuntime_WithBitIdenticalOutputs(string fixture)
    {
        var source = PathOf(fixture);
        var expected = Run(source);
        var dir = TempDirectory();
        var copy = Path.Combine(dir, fixture);
        using (var model = OnnxModel.Load(source)) model.Save(copy);

        AssertBitIdentical(expected, Run(copy));
        // Our schema covers every field the exporter wrote: nothing fell through as unknown and the bytes match.
        CollectionAssert.AreEqual(File.ReadAllBytes(source), File.ReadAllBytes(copy));
    }

    [TestMethod]
    [DataRow("fmnist_mlp.onnx")]
    [DataRow("fmnist_resnet.onnx")]
    public void ExternalDataRoundTrip_RunsInOnnxRuntime_WithBitIdenticalOutputs(string fixture)
    {
        var expected = Run(PathOf(fixture));
        var dir = TempDirectory();
        var external = Path.Combine(dir, "external.onnx");
        using (var model = OnnxModel.Load(PathOf(fixture)))
            model.Save(external, new SaveOptions { ExternalizeThreshold = 1024 });

        Assert.IsTrue(File.Exists(external + ".data"));
        Assert.IsLessThan(100_000, new FileInfo(external).Length, "weights moved out of the .onnx file");
        AssertBitIdentical(expected, Run(external)); // ORT reads our side file

        // Load lazily from the side file and save inline again.
        var inline = Path.Combine(dir, "inline.onnx");
        using (var model = OnnxModel.Load(external))
        {
            var tensor = model.Graph.Initializer.First(t => t.Dims.Count == 2 || t.Dims.Count == 4);
            Assert.AreEqual(TensorProto.Types.DataLocation.External, tensor.DataLocation);
            Assert.IsFalse(tensor.HasRawData, "external tensors are mapped, not copied into the message");
            model.Save(inline);
        }
        AssertBitIdentical(expected, Run(inline));
        Assert.AreEqual(OnnxModel.FileSizeWithExternalData(external), new FileInfo(external).Length + new FileInfo(external + ".data").Length);
    }

    [TestMethod]
    public void SpilledTensors_ReadSaveAndRunAsBefore_AndLeaveNoFileBehind()
    {
        // A model's built weights spilled to a private file: reads, both saves, runtime bytes and the inline size are
        // what they were in memory, and the spill file has no name in its folder (Linux/macOS: unlinked when opened).
        var expected = Run(PathOf("fmnist_mlp.onnx"));
        var dir = TempDirectory();
        var spillDir = Path.Combine(dir, "spill");
        Directory.CreateDirectory(spillDir);
        byte[] inlineBytes;
        using (var plain = OnnxModel.Load(PathOf("fmnist_mlp.onnx"))) inlineBytes = plain.ToBytes();

        using (var model = OnnxModel.Load(PathOf("fmnist_mlp.onnx")))
        {
            var sizeBefore = model.InlineSize();
            var before = model.Graph.Initializer.ToDictionary(t => t.Name, t => model.GetTensor(t).RawBytes.ToArray());
            var moved = model.Spill(Path.Combine(spillDir, "out"), 64 * 1024);
            var spilled = model.Graph.Initializer.Where(t => t.DataLocation == TensorProto.Types.DataLocation.External).ToList();
            Assert.IsNotEmpty(spilled);
            Assert.AreEqual(spilled.Sum(t => (long)before[t.Name].Length), moved);
            Assert.IsTrue(spilled.All(t => !t.HasRawData), "the bytes left the message");
            Assert.IsTrue(model.Graph.Initializer.Where(t => !spilled.Contains(t)).All(t => t.RawData.Length < 64 * 1024), "only tensors past the threshold move");
            Assert.AreEqual(0L, model.Spill(Path.Combine(spillDir, "out"), 64 * 1024), "spilled once");
            Assert.IsFalse(model.HasExternalData(), "a spill file is not external data the model names");
            Assert.IsEmpty(model.ExternalDataFiles());
            // Spilled tensors count as if inline (to within the length prefixes of the messages around them).
            Assert.AreEqual(sizeBefore, model.InlineSize(), 16);
            if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS()) Assert.IsEmpty(Directory.GetFileSystemEntries(spillDir));

            foreach (var t in model.Graph.Initializer) CollectionAssert.AreEqual(before[t.Name], model.GetTensor(t).RawBytes.ToArray(), t.Name);
            CollectionAssert.AreEqual(inlineBytes, model.ToBytes());
            CollectionAssert.AreEqual(inlineBytes, model.ToBytesWithExternalReferences());
            // A clone reads them through the shared store.
            using (var clone = model.Clone())
                foreach (var t in clone.Graph.Initializer) CollectionAssert.AreEqual(before[t.Name], clone.GetTensor(t).RawBytes.ToArray(), t.Name);

            var inline = Path.Combine(dir, "inline.onnx");
            model.Save(inline);
            CollectionAssert.AreEqual(File.ReadAllBytes(PathOf("fmnist_mlp.onnx")), File.ReadAllBytes(inline));
            var external = Path.Combine(dir, "external.onnx");
            model.Save(external, new SaveOptions { ExternalizeThreshold = 1024 });
            AssertBitIdentical(expected, Run(external));
            using var saved = OnnxModel.Load(external);
            Assert.AreEqual(saved.ExternalDataFiles().Single(), Path.GetFullPath(external + ".data"));
        }
        Assert.IsEmpty(Directory.GetFileSystemEntries(spillDir));
        Directory.Delete(dir, recursive: true);
    }

    [TestMethod]
    public void UnknownFields_SurviveARoundTrip()
    {
        using var model = OnnxModel.Load(Mlp);
        var proto = model.Proto.ToByteArray();
        // Append field 99 (varint) to the model message: a future ONNX field this schema does not know.
        var withUnknown = proto.Concat(new byte[] { 0x98, 0x06, 0x2A }).ToArray();
        var dir = TempDirectory();
        using (var parsed = OnnxModel.Parse(withUnknown, dir)) parsed.Save(Path.Combine(dir, "u.onnx"));
        CollectionAssert.AreEqual(withUnknown, File.ReadAllBytes(Path.Combine(dir, "u.onnx")));
    }

    [TestMethod]
    public void TypedAccess_ReadsRawAndTypedFieldsAndPackedInt4()
    {
        var raw = Tensors.FromFloats("w", [2, 2], [1f, -2f, 3.5f, 0f]);
        CollectionAssert.AreEqual(new[] { 1f, -2f, 3.5f, 0f }, Tensors.View(raw).ToFloatArray());
        Assert.AreEqual(3.5f, Tensors.View(raw).AsSpan<float>()[2]);

        var typed = new TensorProto { Name = "t", DataType = (int)TensorProto.Types.DataType.Float16 };
        typed.Dims.Add(2);
        typed.Int32Data.Add(BitConverter.HalfToUInt16Bits((Half)1.5f));
        typed.Int32Data.Add(BitConverter.HalfToUInt16Bits((Half)(-0.25f)));
        CollectionAssert.AreEqual(new[] { 1.5f, -0.25f }, Tensors.View(typed).ToFloatArray());

        var int4 = Tensors.FromInt4s("q", [5], [-8, 7, -1, 0, 3]);
        Assert.AreEqual(3, int4.RawData.Length, "two int4 values per byte");
        CollectionAssert.AreEqual(new[] { -8f, 7f, -1f, 0f, 3f }, Tensors.View(int4).ToFloatArray());

        var bf16 = Tensors.Create<ushort>("b", [1], TensorProto.Types.DataType.Bfloat16, [(ushort)(BitConverter.SingleToInt32Bits(-2.5f) >> 16)]);
        Assert.AreEqual(-2.5f, Tensors.View(bf16).ToFloatArray()[0]);
        var i8 = Tensors.FromInt8s("c", [3], [-128, 0, 127]);
        CollectionAssert.AreEqual(new long[] { -128, 0, 127 }, Tensors.View(i8).ToInt64Array());
    }
}
