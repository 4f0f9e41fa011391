using System.IO.Compression;
using System.Text;

namespace ModelCompression.Reliability;

/// <summary>Writers for the harness's inputs: .npz/.npy files (valid and broken) and small helpers.</summary>
public static class Files
{
    /// <summary>One .npy array: a raw header text (so tests can break it) and raw element bytes.</summary>
    public sealed record NpyArray(string Name, string Header, byte[] Data, byte Major = 1);

    public static string Header(string descr, long[] shape, bool fortran = false)
    {
        var dims = shape.Length == 1 ? $"({shape[0]},)" : "(" + string.Join(", ", shape) + ")";
        return $"{{'descr': '{descr}', 'fortran_order': {(fortran ? "True" : "False")}, 'shape': {dims}, }}";
    }

    public static byte[] Npy(NpyArray array)
    {
        var header = array.Header;
        header = header.PadRight((header.Length + 11 + 63) / 64 * 64 - 11) + "\n";
        using var stream = new MemoryStream();
        stream.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', array.Major, 0]);
        stream.Write(BitConverter.GetBytes((ushort)header.Length));
        stream.Write(Encoding.ASCII.GetBytes(header));
        stream.Write(array.Data);
        return stream.ToArray();
    }

    public static void WriteNpz(string path, IEnumerable<NpyArray> arrays, string entrySuffix = ".npy")
    {
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        foreach (var array in arrays)
        {
            using var stream = zip.CreateEntry(array.Name + entrySuffix).Open();
            stream.Write(Npy(array));
        }
    }

    public static byte[] RandomFloats(Random random, long count, float scale = 1f)
    {
        var bytes = new byte[count * 4];
        for (var i = 0; i < count; i++)
            BitConverter.TryWriteBytes(bytes.AsSpan(i * 4), (float)(random.NextDouble() * 2 - 1) * scale);
        return bytes;
    }

    public static byte[] Labels(Random random, int count, int classes = 10)
    {
        var bytes = new byte[count * 8];
        for (var i = 0; i < count; i++) BitConverter.TryWriteBytes(bytes.AsSpan(i * 8), (long)random.Next(classes));
        return bytes;
    }

    /// <summary>A valid data file for the MLP fixture: <c>image</c> [n,1,28,28] float32 and <c>label</c> [n] int64.</summary>
    public static void WriteValidData(string path, Random random, int samples)
    {
        WriteNpz(path,
        [
            new NpyArray("image", Header("<f4", [samples, 1, 28, 28]), RandomFloats(random, samples * 784L, 2f)),
            new NpyArray("label", Header("<i8", [samples]), Labels(random, samples)),
        ]);
    }

    /// <summary>SHA-256 of every file under a folder (relative path → hash), to prove inputs were not modified.</summary>
    public static Dictionary<string, string> Hashes(string directory)
    {
        var hashes = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var file in Directory.EnumerateFiles(directory, "*", SearchOption.AllDirectories))
        {
            var info = new FileInfo(file);
            if (info.LinkTarget is not null) { hashes[Path.GetRelativePath(directory, file)] = "link:" + info.LinkTarget; continue; }
            using var stream = File.OpenRead(file);
            hashes[Path.GetRelativePath(directory, file)] = Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(stream));
        }
        return hashes;
    }
}

/// <summary>The fixture MLP with its hidden layers cut to their first neurons: same graph, names and input, a fraction of the bytes.</summary>
public static class Fixture
{
    /// <summary>
    /// Keeps the first <paramref name="hidden"/> neurons of every hidden Gemm (rows of its weight and bias, and the
    /// matching columns of the next Gemm's weight). A passing case's cost is mostly the gate's Brotli size of the
    /// original and compressed models, which this cuts from seconds to milliseconds.
    /// </summary>
    public static byte[] ShrinkMlp(byte[] model, int hidden)
    {
        var proto = ModelCompression.Onnx.Protobuf.ModelProto.Parser.ParseFrom(model);
        var graph = proto.Graph;
        graph.ValueInfo.Clear();
        var gemms = graph.Node.Where(n => n.OpType == "Gemm").ToList();
        var keepIn = -1; // columns of the current Gemm's weight to keep (-1: all)
        for (var i = 0; i < gemms.Count; i++)
        {
            var weight = graph.Initializer.First(t => t.Name == gemms[i].Input[1]);
            var bias = graph.Initializer.First(t => t.Name == gemms[i].Input[2]);
            var rows = (int)weight.Dims[0];
            var cols = (int)weight.Dims[1];
            var keepOut = i == gemms.Count - 1 ? rows : Math.Min(hidden, rows);
            var newCols = keepIn < 0 ? cols : keepIn;
            var source = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(weight.RawData.Span);
            var values = new float[keepOut * newCols];
            for (var r = 0; r < keepOut; r++)
                for (var c = 0; c < newCols; c++)
                    values[r * newCols + c] = source[r * cols + c];
            weight.Dims[0] = keepOut;
            weight.Dims[1] = newCols;
            weight.RawData = Google.Protobuf.ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
            bias.Dims[0] = keepOut;
            bias.RawData = Google.Protobuf.ByteString.CopyFrom(bias.RawData.Span[..(keepOut * 4)]);
            keepIn = keepOut;
        }
        return Google.Protobuf.MessageExtensions.ToByteArray(proto);
    }
}
