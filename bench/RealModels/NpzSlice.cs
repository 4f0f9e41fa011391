using System.Globalization;
using System.IO.Compression;
using System.Text;
using System.Text.RegularExpressions;

namespace ModelCompression.Bench.RealModels;

/// <summary>
/// Writes the first N samples of an .npz to a new .npz, byte for byte, without interpreting the values. The sample
/// count is the largest first-axis length among the arrays; each array is cut along its first axis of that length
/// (axis 0 for images and labels, axis 1 for an LSTM state laid out [layers, batch, hidden]); an array with no such
/// axis (a scalar sample rate) is copied whole. Done here rather than through the engine's loader so a data layout
/// the engine does not read yet still reaches it, and fails there with its own coded error.
/// </summary>
internal static partial class NpzSlice
{
    public static int Write(string source, string target, int samples)
    {
        var arrays = new List<(string Name, string Descr, long[] Shape, byte[] Data)>();
        using (var zip = ZipFile.OpenRead(source))
            foreach (var entry in zip.Entries)
            {
                using var stream = entry.Open();
                using var buffer = new MemoryStream();
                stream.CopyTo(buffer);
                var (descr, shape, data) = ReadNpy(buffer.ToArray(), entry.FullName);
                arrays.Add((entry.FullName, descr, shape, data));
            }
        var count = arrays.Where(a => a.Shape.Length > 0).Select(a => a.Shape[0]).DefaultIfEmpty(0).Max();
        var n = (int)Math.Min(samples, count);
        using var output = ZipFile.Open(target, ZipArchiveMode.Create);
        foreach (var (name, descr, shape, data) in arrays)
        {
            var axis = Array.IndexOf(shape, count);
            var (newShape, bytes) = axis < 0 ? (shape, data) : Cut(shape, data, axis, n);
            using var stream = output.CreateEntry(name, CompressionLevel.Fastest).Open();
            WriteNpy(stream, descr, newShape, bytes);
        }
        return n;
    }

    private static (long[], byte[]) Cut(long[] shape, byte[] data, int axis, int n)
    {
        long outer = 1, inner = 1;
        for (var i = 0; i < axis; i++) outer *= shape[i];
        for (var i = axis + 1; i < shape.Length; i++) inner *= shape[i];
        var itemBytes = data.Length / Math.Max(1, shape.Aggregate(1L, (p, d) => p * d));
        var block = inner * itemBytes;
        var result = new byte[outer * n * block];
        for (long o = 0; o < outer; o++)
            Array.Copy(data, o * shape[axis] * block, result, o * n * block, n * block);
        var newShape = (long[])shape.Clone();
        newShape[axis] = n;
        return (newShape, result);
    }

    private static (string Descr, long[] Shape, byte[] Data) ReadNpy(byte[] bytes, string name)
    {
        if (bytes.Length < 10 || bytes[0] != 0x93 || Encoding.ASCII.GetString(bytes, 1, 5) != "NUMPY") throw new InvalidDataException($"'{name}' is not an .npy array");
        int headerLength, start;
        if (bytes[6] == 1) { headerLength = BitConverter.ToUInt16(bytes, 8); start = 10; }
        else { headerLength = (int)BitConverter.ToUInt32(bytes, 8); start = 12; }
        var header = Encoding.ASCII.GetString(bytes, start, headerLength);
        if (header.Contains("'fortran_order': True", StringComparison.Ordinal)) throw new InvalidDataException($"'{name}' is in Fortran order");
        var descr = Descr().Match(header).Groups[1].Value;
        var shape = ShapeText().Match(header).Groups[1].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(d => long.Parse(d, CultureInfo.InvariantCulture)).ToArray();
        return (descr, shape, bytes[(start + headerLength)..]);
    }

    private static void WriteNpy(Stream stream, string descr, long[] shape, byte[] data)
    {
        var dims = shape.Length == 1 ? $"{shape[0]}," : string.Join(", ", shape);
        var dict = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}";
        // Version 1.0: the header (10 bytes of preamble included) pads to a multiple of 64 and ends in a newline.
        var padded = dict.PadRight((dict.Length + 11 + 63) / 64 * 64 - 10 - 1) + "\n";
        stream.Write([0x93, .. "NUMPY"u8, 1, 0]);
        stream.Write(BitConverter.GetBytes((ushort)padded.Length));
        stream.Write(Encoding.ASCII.GetBytes(padded));
        stream.Write(data);
    }

    [GeneratedRegex(@"'descr':\s*'([^']*)'")]
    private static partial Regex Descr();

    [GeneratedRegex(@"'shape':\s*\(([^)]*)\)")]
    private static partial Regex ShapeText();
}
