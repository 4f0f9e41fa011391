using ModelCompression.Data;
using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;

namespace ModelCompression.Tests.Data;

[TestClass]
public sealed class DatasetTests
{
    [TestMethod]
    public void CompressedAndStoredNpz_ReadTheSameImages_AndAnyIntegerLabels()
    {
        var compressed = Dataset.Load(Fixtures.Validation);
        var stored = Dataset.Load(Fixtures.PathOf("fmnist_val_small_uncompressed.npz"));
        Assert.AreEqual(2000, compressed.Count);
        Assert.AreEqual(64, stored.Count);
        CollectionAssert.AreEqual(new long[] { 64, 1, 28, 28 }, stored.Inputs[0].Shape);
        CollectionAssert.AreEqual(compressed.Take(64).Inputs[0].ToFloats(), stored.Inputs[0].ToFloats());
        CollectionAssert.AreEqual(compressed.Labels![..64], stored.Labels, "int64 and int32 labels read alike");
    }

    [TestMethod]
    public void NpyFile_FeedsASingleInputModel()
    {
        var dir = Directory.CreateTempSubdirectory("mc-data").FullName;
        var npy = Path.Combine(dir, "batch.npy");
        using (var zip = System.IO.Compression.ZipFile.OpenRead(Fixtures.PathOf("fmnist_val_small_uncompressed.npz")))
        using (var entry = zip.GetEntry("image.npy")!.Open())
        using (var file = File.Create(npy)) entry.CopyTo(file);
        using var model = OnnxModel.Load(Fixtures.Mlp);
        var data = Dataset.Load(npy).BindTo(ModelInput.FromGraph(model.Graph));
        Assert.AreEqual(64, data.Count);
        Assert.IsNull(data.Labels);
        Assert.AreEqual("image", ModelInput.FromGraph(model.Graph)[0].Name);
    }

    [TestMethod]
    public void OnnxTestDataFolders_AreStackedAlongTheSampleAxis()
    {
        var dir = Directory.CreateTempSubdirectory("mc-data").FullName;
        var images = Fixtures.ValidationData.Take(3).Inputs[0];
        for (var k = 0; k < 3; k++)
        {
            var set = Directory.CreateDirectory(Path.Combine(dir, $"test_data_set_{k}")).FullName;
            var tensor = Tensors.FromFloats("image", [1, 1, 28, 28], images.Slice(k, 1).ToFloats());
            File.WriteAllBytes(Path.Combine(set, "input_0.pb"), Google.Protobuf.MessageExtensions.ToByteArray(tensor));
        }
        var data = Dataset.Load(dir);
        Assert.AreEqual(3, data.Count);
        CollectionAssert.AreEqual(images.ToFloats(), data.Inputs[0].ToFloats());
    }

    [TestMethod]
    public void Mismatches_AreCM0122_NamingKeyAndShapes()
    {
        var e = Assert.ThrowsExactly<CompressionException>(() =>
            Fixtures.ValidationData.BindTo([new ModelInput("pixels", ArrayElementType.Float32, [null, 784])]));
        Assert.AreEqual("CM0122", e.Code);
        StringAssert.Contains(e.Message, "no array for model input 'pixels' [?,784] (found: 'image' [2000,1,28,28])");

        e = Assert.ThrowsExactly<CompressionException>(() =>
            Fixtures.ValidationData.BindTo([new ModelInput("image", ArrayElementType.Float64, [null, 1, 28, 28])]));
        StringAssert.Contains(e.Message, "'image' is float32 but model input 'image' expects float64");
    }

    [TestMethod]
    public void UnreadableData_IsCM0121()
    {
        var dir = Directory.CreateTempSubdirectory("mc-data").FullName;
        var truncated = Path.Combine(dir, "t.npz");
        File.WriteAllBytes(truncated, File.ReadAllBytes(Fixtures.Validation)[..5000]);
        Assert.AreEqual("CM0121", Assert.ThrowsExactly<CompressionException>(() => Dataset.Load(truncated)).Code);
        var text = Path.Combine(dir, "d.csv");
        File.WriteAllText(text, "1,2,3");
        Assert.AreEqual("CM0121", Assert.ThrowsExactly<CompressionException>(() => Dataset.Load(text)).Code);
        Assert.AreEqual("CM0120", Assert.ThrowsExactly<CompressionException>(() => Dataset.Load(Path.Combine(dir, "none.npz"))).Code);
    }
}
