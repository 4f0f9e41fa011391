using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Text;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.Bench.Scale;

/// <summary>The shape of a generated model: hidden size, layers, vocabulary, tokens per sample.</summary>
internal sealed record ModelShape(string Label, int Hidden, int Layers, int Vocabulary, int Sequence)
{
    public long Parameters => 2L * Vocabulary * Hidden + Layers * (12L * Hidden * Hidden + 4L * Hidden) + 2L * Hidden;
    public double WeightMegabytes => Parameters * 4 / 1e6;

    /// <summary>1×, 4× and 12× of the smallest: the layer count grows, the hidden size stays, so a pass's O() shows as-is.</summary>
    public static ModelShape For(string label) => label switch
    {
        "0.25" => new(label, 1024, 4, 8192, 16),
        "1" => new(label, 1024, 19, 8192, 16),
        "3" => new(label, 1024, 59, 8192, 16),
        "tiny" => new(label, 64, 2, 256, 8),
        _ => throw new ArgumentException($"size '{label}': expected 0.25, 1, 3 or tiny"),
    };
}

/// <summary>
/// Writes a pre-LayerNorm transformer (Gather embedding; per layer LayerNorm, Q/K/V MatMuls, single-head attention as
/// MatMul-Softmax-MatMul, output MatMul, residual, LayerNorm, MLP MatMul-GELU(erf form)-MatMul, residual; final
/// LayerNorm and head MatMul) with every weight in one external-data file. Weights are streamed to the file as they are
/// drawn (fixed seed), so generating a 3 GB model never holds it in memory.
/// </summary>
internal static class ModelGenerator
{
    public const string Input = "input_ids";

    public static void Write(ModelShape shape, string path, int seed = 1234)
    {
        var random = new Random(seed);
        var dataName = Path.GetFileName(path) + ".data";
        var graph = new GraphProto { Name = $"transformer_{shape.Label}" };
        using var data = new FileStream(Path.Combine(Path.GetDirectoryName(path)!, dataName), FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        var d = shape.Hidden;

        string Weight(string name, long rows, long cols, float scale)
        {
            // 4 KiB-aligned, as ONNX Runtime memory-maps aligned external data.
            data.Position = (data.Position + 4095) / 4096 * 4096;
            var offset = data.Position;
            var row = new float[cols];
            for (long r = 0; r < rows; r++)
            {
                for (var c = 0; c < cols; c++) row[c] = (random.NextSingle() * 2 - 1) * scale;
                data.Write(MemoryMarshal.AsBytes(row.AsSpan()));
            }
            var tensor = new TensorProto { Name = name, DataType = (int)DataType.Float, DataLocation = TensorProto.Types.DataLocation.External };
            tensor.Dims.Add(rows);
            tensor.Dims.Add(cols);
            ExternalDataInfo.Write(tensor.ExternalData, dataName, offset, rows * cols * 4);
            graph.Initializer.Add(tensor);
            return name;
        }
        string Vector(string name, int length, float value)
        {
            graph.Initializer.Add(Tensors.FromFloats(name, [length], Enumerable.Repeat(value, length).ToArray()));
            return name;
        }
        string Scalar(string name, float value)
        {
            graph.Initializer.Add(Tensors.Scalar(name, value));
            return name;
        }
        string Node(string op, string output, params string[] inputs)
        {
            var node = new NodeProto { OpType = op, Name = output };
            node.Input.AddRange(inputs);
            node.Output.Add(output);
            graph.Node.Add(node);
            return output;
        }
        string LayerNorm(string x, string prefix)
        {
            var output = Node("LayerNormalization", prefix, x, Vector(prefix + ".gamma", d, 1), Vector(prefix + ".beta", d, 0));
            graph.Node[^1].Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = -1 });
            return output;
        }
        float Init(long fanIn) => MathF.Sqrt(3f / fanIn); // uniform with variance 1/fan_in

        var x = Node("Gather", "embed", Weight("embed.weight", shape.Vocabulary, d, 1f), Input);
        Scalar("attn.scale", 1f / MathF.Sqrt(d));
        Scalar("gelu.half", 0.5f);
        Scalar("gelu.one", 1f);
        Scalar("gelu.inv_sqrt2", 1f / MathF.Sqrt(2f));
        for (var l = 0; l < shape.Layers; l++)
        {
            var p = $"layer{l}";
            var h = LayerNorm(x, p + ".ln1");
            var q = Node("MatMul", p + ".q", h, Weight(p + ".q.weight", d, d, Init(d)));
            var k = Node("MatMul", p + ".k", h, Weight(p + ".k.weight", d, d, Init(d)));
            var v = Node("MatMul", p + ".v", h, Weight(p + ".v.weight", d, d, Init(d)));
            var kt = Node("Transpose", p + ".kT", k);
            graph.Node[^1].Attribute.Add(new AttributeProto { Name = "perm", Type = AttributeProto.Types.AttributeType.Ints, Ints = { 0, 2, 1 } });
            var scores = Node("Mul", p + ".scores", Node("MatMul", p + ".qk", q, kt), "attn.scale");
            var probabilities = Node("Softmax", p + ".softmax", scores);
            graph.Node[^1].Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = -1 });
            var attended = Node("MatMul", p + ".attn", probabilities, v);
            var o = Node("MatMul", p + ".o", attended, Weight(p + ".o.weight", d, d, Init(d)));
            x = Node("Add", p + ".res1", x, o);
            var h2 = LayerNorm(x, p + ".ln2");
            var up = Node("MatMul", p + ".up", h2, Weight(p + ".up.weight", d, 4L * d, Init(d)));
            // GELU in its erf form: 0.5·u·(1 + erf(u/√2)), since Gelu is an op only from opset 20.
            var erf = Node("Erf", p + ".erf", Node("Mul", p + ".scaled", up, "gelu.inv_sqrt2"));
            var gelu = Node("Mul", p + ".gelu", Node("Mul", p + ".half", up, "gelu.half"), Node("Add", p + ".erf1", erf, "gelu.one"));
            var down = Node("MatMul", p + ".down", gelu, Weight(p + ".down.weight", 4L * d, d, Init(4L * d)));
            x = Node("Add", p + ".res2", x, down);
        }
        var final = LayerNorm(x, "final_ln");
        Node("MatMul", "logits", final, Weight("head.weight", d, shape.Vocabulary, Init(d)));

        graph.Input.Add(Value(Input, DataType.Int64, "batch", shape.Sequence));
        graph.Output.Add(Value("logits", DataType.Float, "batch", shape.Sequence, shape.Vocabulary));
        var model = new ModelProto { IrVersion = 8, ProducerName = "scale-bench", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        using var file = File.Create(path);
        using var coded = new Google.Protobuf.CodedOutputStream(file);
        model.WriteTo(coded);
    }

    private static ValueInfoProto Value(string name, DataType type, string batch, params long[] dims)
    {
        var shape = new TensorShapeProto();
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = batch });
        foreach (var dim in dims) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = dim });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } } };
    }

    /// <summary>Token ids [samples, sequence] (int64) under the model's input name in a .npz file, drawn with a fixed seed.</summary>
    public static void WriteTokens(string path, ModelShape shape, int samples, int seed)
    {
        var random = new Random(seed);
        var tokens = new long[samples * shape.Sequence];
        for (var i = 0; i < tokens.Length; i++) tokens[i] = random.Next(shape.Vocabulary);
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        using var stream = zip.CreateEntry(Input + ".npy", CompressionLevel.NoCompression).Open();
        var header = $"{{'descr': '<i8', 'fortran_order': False, 'shape': ({samples}, {shape.Sequence}), }}";
        // .npy v1: magic, version, header length; the header is padded with spaces to a multiple of 64 bytes, then '\n'.
        var padded = header.PadRight((header.Length + 10 + 1 + 63) / 64 * 64 - 10 - 1) + "\n";
        stream.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0, (byte)(padded.Length & 0xFF), (byte)(padded.Length >> 8)]);
        stream.Write(Encoding.ASCII.GetBytes(padded));
        stream.Write(MemoryMarshal.AsBytes(tokens.AsSpan()));
    }
}
