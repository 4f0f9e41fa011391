using Microsoft.ML.OnnxRuntime;

// Classifies Fashion-MNIST validation images with the model the build compressed (bin/…/models/fmnist_mlp.onnx).
string[] classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
var modelPath = Path.Combine(AppContext.BaseDirectory, "models", "fmnist_mlp.onnx");
var dataPath = Path.Combine(AppContext.BaseDirectory, "data", "fmnist_val.npz");
var shown = args.Length > 0 ? int.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 8;

var images = Npz.Read(dataPath, "image");   // float32 [n, 1, 28, 28], normalized
var labels = Npz.Read(dataPath, "label");
var count = (int)images.Shape[0];
var pixels = images.Floats();
var truth = labels.Integers();
var imageSize = pixels.Length / count;

using var session = new InferenceSession(modelPath);
var inputName = session.InputMetadata.Keys.First();
var outputName = session.OutputMetadata.Keys.First();
Console.WriteLine($"model: {modelPath} ({new FileInfo(modelPath).Length / 1024.0:0} KiB)");

const int batchSize = 250;
var correct = 0;
using var runOptions = new RunOptions();
for (var start = 0; start < count; start += batchSize)
{
    var n = Math.Min(batchSize, count - start);
    var batch = pixels.AsMemory(start * imageSize, n * imageSize);
    using var input = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, batch, [n, .. images.Shape[1..]]);
    using var outputs = session.Run(runOptions, [inputName], [input], [outputName]);
    var logits = outputs[0].GetTensorDataAsSpan<float>();
    var classCount = logits.Length / n;
    for (var i = 0; i < n; i++)
    {
        var scores = logits.Slice(i * classCount, classCount);
        var predicted = 0;
        for (var c = 1; c < classCount; c++) if (scores[c] > scores[predicted]) predicted = c;
        if (predicted == truth[start + i]) correct++;
        if (start + i < shown)
            Console.WriteLine($"image {start + i,4}: {classes[predicted],-12} (truth: {classes[truth[start + i]]}){(predicted == truth[start + i] ? "" : "  <- wrong")}");
    }
}
Console.WriteLine($"accuracy: {100.0 * correct / count:0.00}% on {count} validation images");

/// <summary>Just enough of NumPy's .npz/.npy format for this sample: little-endian float32/int32/int64 arrays.</summary>
internal sealed record NpyArray(string DType, long[] Shape, byte[] Data)
{
    public float[] Floats() => DType == "<f4" ? System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(Data).ToArray() : throw new InvalidDataException($"expected float32, got {DType}");

    public long[] Integers() => DType switch
    {
        "<i8" => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(Data).ToArray(),
        "<i4" => Array.ConvertAll(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, int>(Data).ToArray(), v => (long)v),
        _ => throw new InvalidDataException($"expected int32/int64, got {DType}"),
    };
}

internal static class Npz
{
    public static NpyArray Read(string npzPath, string key)
    {
        using var zip = System.IO.Compression.ZipFile.OpenRead(npzPath);
        var entry = zip.GetEntry(key + ".npy") ?? throw new InvalidDataException($"{npzPath} has no array '{key}'");
        using var stream = entry.Open();
        using var reader = new BinaryReader(stream);
        var magic = reader.ReadBytes(6);
        if (magic.Length != 6 || magic[0] != 0x93 || !magic.AsSpan(1).SequenceEqual("NUMPY"u8)) throw new InvalidDataException("not a .npy array");
        var major = reader.ReadByte();
        reader.ReadByte();
        var headerLength = major == 1 ? reader.ReadUInt16() : (int)reader.ReadUInt32();
        var header = System.Text.Encoding.ASCII.GetString(reader.ReadBytes(headerLength));
        var dtype = System.Text.RegularExpressions.Regex.Match(header, @"'descr':\s*'([^']+)'").Groups[1].Value;
        if (header.Contains("'fortran_order': True", StringComparison.Ordinal)) throw new InvalidDataException("Fortran-ordered arrays are not supported");
        var shape = System.Text.RegularExpressions.Regex.Match(header, @"'shape':\s*\(([^)]*)\)").Groups[1].Value
            .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(long.Parse).ToArray();
        var elementSize = int.Parse(dtype[2..], System.Globalization.CultureInfo.InvariantCulture);
        var data = reader.ReadBytes(checked((int)(shape.Aggregate(1L, (a, b) => a * b) * elementSize)));
        return new NpyArray(dtype, shape, data);
    }
}
