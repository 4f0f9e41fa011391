using System.IO.Compression;
using System.Text;

namespace ModelCompression.Tests.Data;

/// <summary>Writes small .npz files (numpy's format: a zip of .npy arrays) for tests of bad and odd data.</summary>
internal static class Npz
{
    public static NpzArray Floats(string name, long[] shape, float value = 0f) =>
        new(name, shape, "<f4", Enumerable.Repeat(value, (int)shape.Aggregate(1L, (a, b) => a * b)).SelectMany(BitConverter.GetBytes).ToArray());

    public static NpzArray Doubles(string name, long[] shape) =>
        new(name, shape, "<f8", new byte[8 * shape.Aggregate(1L, (a, b) => a * b)]);

    public static NpzArray Floats(string name, long[] shape, float[] values) =>
        new(name, shape, "<f4", values.SelectMany(BitConverter.GetBytes).ToArray());

    public static NpzArray Int64Scalar(string name, long value) => new(name, [], "<i8", BitConverter.GetBytes(value));

    public static NpzArray Labels(string name, params long[] labels) =>
        new(name, [labels.Length], "<i8", labels.SelectMany(BitConverter.GetBytes).ToArray());

    public static string Write(string path, params NpzArray[] arrays)
    {
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        foreach (var array in arrays)
        {
            using var stream = zip.CreateEntry(array.Name + ".npy").Open();
            var shape = array.Shape.Length == 1 ? $"({array.Shape[0]},)" : "(" + string.Join(", ", array.Shape) + ")"; // () for a scalar
            var header = $"{{'descr': '{array.Descr}', 'fortran_order': False, 'shape': {shape}, }}";
            header = header.PadRight((header.Length + 11 + 63) / 64 * 64 - 11) + "\n"; // magic + version + length + header: a multiple of 64
            stream.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0]);
            stream.Write(BitConverter.GetBytes((ushort)header.Length));
            stream.Write(Encoding.ASCII.GetBytes(header));
            stream.Write(array.Data);
        }
        return path;
    }
}

public sealed record NpzArray(string Name, long[] Shape, string Descr, byte[] Data);
