using ModelCompression.Data;
using ModelCompression.Evaluation;
using ModelCompression.Onnx;
using ModelCompression.Policy;
using ModelCompression.Runtime;

namespace ModelCompression.Tests;

/// <summary>The real Fashion-MNIST fixtures (copied next to the test binaries under data/) and shared measurements.</summary>
internal static class Fixtures
{
    public static string PathOf(string file) => Path.Combine(AppContext.BaseDirectory, "data", file);

    public static string Mlp => PathOf("fmnist_mlp.onnx");
    public static string ResNet => PathOf("fmnist_resnet.onnx");
    public static string Calibration => PathOf("fmnist_calib.npz");
    public static string Validation => PathOf("fmnist_val.npz");

    private static readonly Lazy<Dataset> ValidationSet = new(() => Dataset.Load(Validation));
    private static readonly Lazy<Dataset> CalibrationSet = new(() => Dataset.Load(Calibration));
    public static Dataset ValidationData => ValidationSet.Value;
    public static Dataset CalibrationData => CalibrationSet.Value;

    public static RuntimeOptions Cpu => new(ExecutionProviderSpec.Cpu);

    /// <summary>Top-1 accuracy of a model on the first <paramref name="samples"/> validation images (all 2,000 by default).</summary>
    public static double Accuracy(OnnxModel model, int samples = int.MaxValue)
    {
        var data = ValidationData.Take(samples);
        var outputs = Predictions.Run(model, data, Cpu, 256);
        return Metrics.TopK(outputs, data.Labels!, 1);
    }

    /// <summary>The model's first output on the first <paramref name="samples"/> validation images.</summary>
    public static FloatTensor Outputs(OnnxModel model, int samples = 256) => Predictions.Run(model, ValidationData.Take(samples), Cpu, 256);

    /// <summary>A policy as the front ends would build it, from name/value pairs.</summary>
    public static CompressionPolicy Policy(params (string Name, string Value)[] settings) =>
        PolicySettings.Parse(settings.Select(s => KeyValuePair.Create(s.Name, s.Value)), Path.Combine(AppContext.BaseDirectory, "data"));

    /// <summary>A float32 .npy file (format 1.0: magic, header length, a Python-dict header padded to 64 bytes, data).</summary>
    public static void WriteNpy(string path, long[] shape, float[] data)
    {
        var header = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({string.Join(", ", shape)},), }}";
        var padded = header.PadRight(((10 + header.Length + 1 + 63) / 64 * 64) - 10 - 1) + "\n";
        using var stream = File.Create(path);
        stream.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0]);
        stream.Write(BitConverter.GetBytes((ushort)padded.Length));
        stream.Write(System.Text.Encoding.Latin1.GetBytes(padded));
        stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan()));
    }
}
