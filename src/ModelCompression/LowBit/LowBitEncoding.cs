using Google.Protobuf;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using static ModelCompression.Pruning.NodeBuilder;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.LowBit;

/// <summary>
/// A layer's binary or ternary weight stored packed, with a decoder of standard operators (opset 11) that writes the
/// dense float weight under its old name:
/// <c>Mul(Reshape(Gather(signs, Cast(Slice(Reshape(BitShift(BitShift(packed, shifts), align)))))), α)</c>. The codes are
/// packed planar, 1 bit (binary) or 2 bits (ternary) each: code j sits in byte j mod K, field j / K, so one broadcast
/// pair of shifts unpacks them all. Every input is constant, so ONNX Runtime folds the decoder when it loads the
/// model and runs the layer on a plain dense initializer: the file shrinks, the speed stays the float model's.
/// </summary>
internal sealed class LowBitEncoding
{
    private LowBitEncoding(List<TensorProto> initializers, List<NodeProto> nodes)
    {
        Initializers = initializers;
        Nodes = nodes;
    }

    public IReadOnlyList<TensorProto> Initializers { get; }
    public IReadOnlyList<NodeProto> Nodes { get; }

    /// <summary>Serialized bytes this form adds to the model (messages plus their field tags and lengths).</summary>
    public long Size => Initializers.Sum(t => Framed(t.CalculateSize())) + Nodes.Sum(n => Framed(n.CalculateSize()));

    public static long Framed(long size) => size + 1 + CodedOutputStream.ComputeLengthSize((int)Math.Min(size, int.MaxValue));

    /// <summary>The packed form of <paramref name="q"/> for <paramref name="layer"/>'s weight, in the weight's own stored layout.</summary>
    public static LowBitEncoding Build(WeightedLayer layer, LowBitWeights q)
    {
        var graph = layer.Graph;
        var weight = layer.Weight;
        var dims = weight.Dims.ToArray();
        var prefix = weight.Name + (q.Ternary ? "_ternary" : "_binary");
        string Fresh(string suffix) => graph.FreshName(prefix + suffix);

        // Stored order: [out, rest] (Conv, Gemm transB=1) with α down the rows, or [in, out] with α along the columns.
        var outFirst = layer.StoredOutIn;
        var codes = outFirst ? q.Codes : Transpose(q.Codes, q.Rows, q.Cols);
        long[] view = outFirst ? [q.Rows, q.Cols] : [q.Cols, q.Rows];
        long[] scaleDims = outFirst ? [q.Rows, 1] : [1, q.Rows];

        var bits = q.Bits;
        var fields = 8 / bits;
        var count = codes.Length;
        var bytes = (count + fields - 1) / fields;
        var packed = new byte[bytes];
        for (var j = 0; j < count; j++) packed[j % bytes] |= (byte)(codes[j] << (j / bytes * bits));

        var initializers = new List<TensorProto>();
        var nodes = new List<NodeProto>();
        string Constant(TensorProto t) { initializers.Add(t); return t.Name; }
        string Add(string op, string[] inputs, string? output, params AttributeProto[] attributes)
        {
            var node = Node(op, inputs, output ?? Fresh("_" + op.ToLowerInvariant()), attributes);
            node.Name = node.Output[0];
            nodes.Add(node);
            return node.Output[0];
        }

        var packedName = Constant(Tensors.FromUInt8s(Fresh("_packed"), [1, bytes], packed));
        var shifts = Constant(Tensors.FromUInt8s(Fresh("_shifts"), [fields, 1], Enumerable.Range(0, fields).Select(f => (byte)(8 - bits - f * bits)).ToArray()));
        var align = Constant(Tensors.FromUInt8s(Fresh("_align"), [], [(byte)(8 - bits)]));
        var table = Constant(Tensors.FromFloats(Fresh("_signs"), [q.Table.Length], q.Table));
        var scales = Constant(Tensors.FromFloats(Fresh("_scales"), scaleDims, q.Scales));

        var unpacked = Add("BitShift", [Add("BitShift", [packedName, shifts], null, String("direction", "LEFT")), align], null, String("direction", "RIGHT"));
        var flat = Add("Reshape", [unpacked, Constant(Tensors.FromInt64s(Fresh("_flat"), [1], [-1]))], null);
        // Sliced to the count even when no padding needs cutting: the shape is then known to readers (LowBitDecoder).
        flat = Add("Slice", [flat, Constant(Tensors.FromInt64s(Fresh("_start"), [1], [0])), Constant(Tensors.FromInt64s(Fresh("_end"), [1], [count]))], null);
        // Gather takes int32/int64 indices only: uint8 is how codes are stored, int32 what the (folded) Cast gives.
        var index = Add("Cast", [flat], null, Int("to", (long)DataType.Int32));
        var signs = Add("Gather", [table, index], null);
        var matrix = Add("Reshape", [signs, Constant(Tensors.FromInt64s(Fresh("_view"), [2], view))], null);
        var flatDims = dims.Length == 2;
        var scaled = Add("Mul", [matrix, scales], flatDims ? weight.Name : null);
        if (!flatDims) Add("Reshape", [scaled, Constant(Tensors.FromInt64s(Fresh("_shape"), [dims.Length], dims))], weight.Name);
        return new LowBitEncoding(initializers, nodes);
    }

    /// <summary>Replaces the layer's float weight by this form (the decoder nodes go right before the layer).</summary>
    public void Apply(WeightedLayer layer)
    {
        var graph = layer.Graph;
        graph.RemoveInitializer(layer.Weight.Name);
        foreach (var t in Initializers) graph.SetInitializer(t);
        foreach (var n in Nodes) graph.InsertBefore(layer.Node, n);
    }

    private static byte[] Transpose(byte[] m, int rows, int cols)
    {
        var t = new byte[m.Length];
        for (var r = 0; r < rows; r++)
            for (var c = 0; c < cols; c++)
                t[c * rows + r] = m[r * cols + c];
        return t;
    }
}
