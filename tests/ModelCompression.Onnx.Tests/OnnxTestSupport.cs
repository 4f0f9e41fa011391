using Microsoft.ML.OnnxRuntime;
using ModelCompression.Onnx;

namespace ModelCompression.Onnx.Tests;

/// <summary>Fixture paths, the validation images, and running a model in ONNX Runtime directly (this layer has no engine).</summary>
internal static class OnnxTestSupport
{
    public static string PathOf(string file) => Path.Combine(AppContext.BaseDirectory, "data", file);
    public static string Mlp => PathOf("fmnist_mlp.onnx");
    public static string ResNet => PathOf("fmnist_resnet.onnx");

    /// <summary>The first 64 validation images ([64,1,28,28] float32) from the uncompressed .npz fixture, read by hand.</summary>
    public static readonly Lazy<float[]> Images = new(() =>
    {
        using var zip = System.IO.Compression.ZipFile.OpenRead(PathOf("fmnist_val_small_uncompressed.npz"));
        using var stream = zip.GetEntry("image.npy")!.Open();
        using var memory = new MemoryStream();
        stream.CopyTo(memory);
        var bytes = memory.ToArray();
        var headerLength = BitConverter.ToUInt16(bytes, 8);
        var data = bytes.AsSpan(10 + headerLength);
        return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(data).ToArray();
    });

    /// <summary>Logits of a model (bytes or path) for the 64 images, batch 64.</summary>
    public static float[] Run(byte[] model) { using var session = new InferenceSession(model); return Run(session); }
    public static float[] Run(string path) { using var session = new InferenceSession(path); return Run(session); }

    private static float[] Run(InferenceSession session)
    {
        using var input = OrtValue.CreateTensorValueFromMemory(Images.Value, [64, 1, 28, 28]);
        using var results = session.Run(new RunOptions(), [session.InputNames[0]], [input], [session.OutputNames[0]]);
        return results[0].GetTensorDataAsSpan<float>().ToArray();
    }

    public static string TempDirectory()
    {
        var dir = Path.Combine(Path.GetTempPath(), "mc-onnx-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }

    public static void AssertBitIdentical(float[] expected, float[] actual)
    {
        Assert.HasCount(expected.Length, actual);
        for (var i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"output {i}: {expected[i]:R} != {actual[i]:R}");
    }
}
