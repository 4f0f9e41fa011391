using System.IO.Compression;
using System.Text.Json;
using ModelCompression.Evaluation;

namespace ModelCompression.Tests.Evaluation;

/// <summary>The sizes after Deflate and Brotli, on bytes whose answer is known, and as the report carries them.</summary>
[TestClass]
public sealed class DeployedSizeTests
{
    [TestMethod]
    public void KnownBytes_CompressAsTheCodecsSay_AndDecompressToThemselves()
    {
        var zeros = new byte[1 << 20];
        var zeroSizes = DeployedSize.Of(zeros);
        Assert.AreEqual(1L << 20, zeroSizes.File);
        Assert.IsTrue(zeroSizes.Deflate is > 0 and < 1200, $"Deflate of 1 MiB of zeros: {zeroSizes.Deflate}"); // 258-byte matches: ~1 KB
        Assert.IsTrue(zeroSizes.Brotli is > 0 and < 32, $"Brotli of 1 MiB of zeros: {zeroSizes.Brotli}");

        var noise = new byte[1 << 16];
        new Random(3).NextBytes(noise);
        var noiseSizes = DeployedSize.Of(noise);
        Assert.IsTrue(noiseSizes.Deflate is >= 1 << 16 and < (1 << 16) + 64, $"Deflate of noise: {noiseSizes.Deflate}");
        Assert.IsTrue(noiseSizes.Brotli is >= 1 << 16 and < (1 << 16) + 64, $"Brotli of noise: {noiseSizes.Brotli}");

        // The size is that of a real stream: the same settings' output decompresses to the input.
        var text = System.Text.Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("weights 0 0 0 1 ", 4096)));
        var output = new byte[BrotliEncoder.GetMaxCompressedLength(text.Length)];
        Assert.IsTrue(BrotliEncoder.TryCompress(text, output, out var written, DeployedSize.BrotliQuality, DeployedSize.BrotliWindow));
        Assert.AreEqual(written, DeployedSize.Brotli(text));
        var back = new byte[text.Length];
        Assert.IsTrue(BrotliDecoder.TryDecompress(output.AsSpan(0, written), back, out var read));
        Assert.AreEqual(text.Length, read);
        CollectionAssert.AreEqual(text, back);
        using var buffer = new MemoryStream();
        using (var deflate = new DeflateStream(buffer, CompressionLevel.Optimal, leaveOpen: true)) deflate.Write(text);
        Assert.AreEqual(buffer.Length, DeployedSize.Deflate(text));
    }

    [TestMethod]
    public void LargeModel_IsCompressedAsAStream_OverTheFileAndItsExternalData()
    {
        var dir = Directory.CreateTempSubdirectory("mc-size-stream").FullName;
        try
        {
            var path = Path.Combine(dir, "a.onnx");
            using (var model = Onnx.OnnxModel.Load(Fixtures.Mlp)) model.Save(path, new Onnx.SaveOptions { ExternalizeThreshold = 1024 });
            var files = new[] { path, path + ".data" };
            var bytes = files.SelectMany(File.ReadAllBytes).ToArray();
            var inMemory = DeployedSize.OfModel(path);
            // A limit of 0 sends this small model down the path large models take.
            var streamed = DeployedSize.OfModel(path, null, streamedLimit: 0);
            Assert.AreEqual(bytes.Length, streamed.File);
            Assert.AreEqual(inMemory.File, streamed.File);
            Assert.AreEqual(DeployedSize.StreamedQuality, streamed.BrotliQuality);
            // Fastest Deflate and Brotli 5 of the same bytes: what the one-shot codecs give at those settings, to a few per cent.
            using var buffer = new MemoryStream();
            using (var deflate = new DeflateStream(buffer, CompressionLevel.Fastest, leaveOpen: true)) deflate.Write(bytes);
            Assert.AreEqual(buffer.Length, streamed.Deflate, buffer.Length * 0.02);
            var output = new byte[BrotliEncoder.GetMaxCompressedLength(bytes.Length)];
            Assert.IsTrue(BrotliEncoder.TryCompress(bytes, output, out var written, DeployedSize.StreamedQuality, DeployedSize.BrotliWindow));
            Assert.AreEqual(written, streamed.Brotli, written * 0.02);
            // The candidate is measured like its original: a large reference picks the streamed settings for a small model too.
            Assert.AreEqual(DeployedSize.StreamedQuality, DeployedSize.OfModel(path, referenceBytes: DeployedSize.StreamedLimit + 1).BrotliQuality);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [TestMethod]
    public void LayerSizes_OfALargeModel_UseTheStreamedSettings()
    {
        using var model = Onnx.OnnxModel.Load(Fixtures.Mlp);
        var weight = model.Graph.Initializer.OrderByDescending(t => t.RawData.Length).First();
        var rows = new Dictionary<string, List<string>> { ["layer"] = [weight.Name] };
        var bytes = weight.RawData.ToByteArray();
        var small = Reporting.LayerStorage.Measure(model, rows)["layer"].Sizes;
        var large = Reporting.LayerStorage.Measure(model, rows, streamedLimit: 0)["layer"].Sizes;
        Assert.AreEqual(DeployedSize.Of(bytes), small);
        Assert.AreEqual(new CompressedSizes(bytes.Length, DeployedSize.Deflate(bytes, CompressionLevel.Fastest), DeployedSize.Brotli(bytes, DeployedSize.StreamedQuality), DeployedSize.StreamedQuality), large);
        Assert.AreNotEqual(small.Brotli, large.Brotli, "the settings differ, so the test can tell them apart");
    }

    [TestMethod]
    public void LayerSizes_MeasuredTogether_AreEachRowsOwn()
    {
        using var model = Onnx.OnnxModel.Load(Fixtures.Mlp);
        // Rows of one and of two tensors (weight and bias: one buffer, entropy summed per tensor), measured in parallel.
        var names = model.Graph.Initializer.Select(t => t.Name).ToList();
        var rows = new Dictionary<string, List<string>>();
        for (var i = 0; i + 1 < names.Count; i += 2) rows[$"row{i}"] = i % 4 == 0 ? [names[i], names[i + 1]] : [names[i]];
        Assert.IsTrue(rows.Count >= 2);
        foreach (var limit in new[] { DeployedSize.StreamedLimit, 0 })
        {
            var together = Reporting.LayerStorage.Measure(model, rows, limit);
            CollectionAssert.AreEqual(rows.Keys.ToList(), together.Keys.ToList(), "rows in the order given");
            foreach (var (row, values) in rows)
            {
                var alone = Reporting.LayerStorage.Measure(model, new Dictionary<string, List<string>> { [row] = values }, limit)[row];
                Assert.AreEqual(alone, together[row], row);
                var tensors = values.Select(v => model.Graph.Initializer.Single(t => t.Name == v)).ToList();
                var bytes = tensors.SelectMany(t => t.RawData.ToByteArray()).ToArray();
                Assert.AreEqual(bytes.Length, together[row].Sizes.File, row);
                Assert.AreEqual(tensors.Sum(t => DeployedSize.EntropyBytes(t.RawData.Span, Math.Max(1, Onnx.ElementTypes.SizeInBytes((Onnx.Protobuf.TensorProto.Types.DataType)t.DataType)))), together[row].Entropy, 1e-9, row);
            }
        }
    }

    [TestMethod]
    public void EntropyBound_IsShannonEntropyTimesCount()
    {
        Assert.AreEqual(0.5, DeployedSize.EntropyBytes([0, 0, 1, 1], 1), 1e-12); // 1 bit × 4
        Assert.AreEqual(0, DeployedSize.EntropyBytes(new byte[100], 1));
        // Four float values, equally often, eight elements: 2 bits × 8 = 2 bytes.
        float[] values = [0.5f, -1f, 2f, 0f, 0.5f, -1f, 2f, 0f];
        Assert.AreEqual(2, DeployedSize.EntropyBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()), 4), 1e-12);
    }

    [TestMethod]
    public void ReportJson_CarriesTheModelsAndLayersSizes()
    {
        var dir = Directory.CreateTempSubdirectory("mc-size").FullName;
        try
        {
            var output = Path.Combine(dir, "out.onnx");
            CompressionEngine.Compress(new(Fixtures.Mlp, output, dir, Fixtures.Policy(("Codebook", "16"))));
            using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "out.report.json")));
            var m = json.RootElement.GetProperty("measurements");
            void Check(JsonElement sizes, string path)
            {
                var bytes = File.ReadAllBytes(path);
                Assert.AreEqual(bytes.Length, sizes.GetProperty("file").GetInt64(), path);
                Assert.AreEqual(DeployedSize.Deflate(bytes), sizes.GetProperty("deflate").GetInt64(), path);
                Assert.AreEqual(DeployedSize.Brotli(bytes), sizes.GetProperty("brotli").GetInt64(), path);
            }
            Check(m.GetProperty("originalSizes"), Fixtures.Mlp);
            Check(m.GetProperty("compressedSizes"), output);
            Assert.IsTrue(m.GetProperty("compressedSizes").GetProperty("brotli").GetInt64() < m.GetProperty("compressedSizes").GetProperty("file").GetInt64());

            var layers = json.RootElement.GetProperty("layers").EnumerateArray().ToList();
            Assert.AreEqual(3, layers.Count);
            foreach (var layer in layers)
            {
                var sizes = layer.GetProperty("storedSizes");
                var (file, brotli) = (sizes.GetProperty("file").GetInt64(), sizes.GetProperty("brotli").GetInt64());
                var entropy = layer.GetProperty("entropyBytes").GetDouble();
                // Stored: 4-bit or 8-bit indices, a 16-entry codebook and the float bias.
                var parameters = layer.GetProperty("parametersBefore").GetInt64();
                Assert.IsTrue(file < parameters * 1.1 && file > parameters / 3, $"{layer.GetProperty("layer")}: {file} bytes for {parameters} parameters");
                Assert.IsTrue(brotli < file && entropy > 0 && entropy <= file, $"{layer.GetProperty("layer")}: {file} / {brotli} / {entropy}");
            }
            StringAssert.Contains(File.ReadAllText(Path.Combine(dir, "out.report.md")), "| Size after Brotli (quality 9 vs 11) |");
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
