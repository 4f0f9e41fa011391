using ModelCompression.Graph;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.LowBit;

/// <summary>
/// How <see cref="ModelWeights"/> reads the decoder <see cref="LowBitEncoding"/> writes. Two of its nodes need telling:
/// the Slice that cuts the unpacked codes to their count (so the Gather after it is a lookup of known shape, which
/// <see cref="WeightSharing.CodebookDecoder"/> reads as a tensor stored as the codes), and the Mul by the per-channel
/// scales, whose output is the codes' tensor again (the scales are not weights of their own).
/// </summary>
internal sealed class LowBitDecoder : IWeightDecoder
{
    public WeightOrigin? Follow(OnnxModel model, NodeProto node, IReadOnlyList<WeightOrigin?> inputs)
    {
        switch (node.OpType)
        {
            // Slice(unpacked uint8 codes, [0], [count]): the first count codes.
            case "Slice" when inputs.Count == 3 && inputs[0] is { StoredType: DataType.Uint8, Dims: null } codes
                && inputs[1]?.Tensor is { } start && WeightDecoders.Int64s(start) is [0]
                && inputs[2]?.Tensor is { } end && WeightDecoders.Int64s(end) is [> 0 and var count]:
                return codes with { Dims = [count], Elements = count, NonZeros = NonZeroCodes(model, codes.StoredName, count), Tensor = null };
            // Mul(signs stored as uint8 codes, float scales broadcast over them).
            case "Mul" when inputs.Count == 2 && inputs[0] is { StoredType: DataType.Uint8, Dims: not null, Elements: { } elements } signs
                && inputs[1] is { StoredType: DataType.Float, Tensor: not null, Elements: { } scales } && scales <= elements:
                return signs with { Tensor = null };
            default:
                return null;
        }
    }

    /// <summary>
    /// How many of the first <paramref name="count"/> codes packed planar in the [1, K] uint8 initializer are not 0
    /// (a ternary weight's zeros are code 0), or null when the initializer or its code width is not known.
    /// </summary>
    private static long? NonZeroCodes(OnnxModel model, string packedName, long count)
    {
        if (Find(model.Graph, packedName) is not { } tensor || tensor.Dims.Count != 2 || tensor.Dims[0] != 1) return null;
        var bytes = tensor.Dims[1];
        // The width the packing used: the one whose field count gives exactly K bytes for count codes (unique but for tiny tensors).
        var widths = new[] { 1, 2, 4, 8 }.Where(b => (count + 8 / b - 1) / (8 / b) == bytes).ToList();
        if (widths.Count != 1) return null;
        var data = model.GetTensor(tensor);
        if (!data.HasRawBytes || data.RawBytes.Length != bytes) return null;
        var raw = data.RawBytes;
        var bits = widths[0];
        var mask = (1 << bits) - 1;
        long nonZeros = 0;
        for (long j = 0; j < count; j++)
            if (((raw[(int)(j % bytes)] >> (int)(j / bytes * bits)) & mask) != 0) nonZeros++;
        return nonZeros;
    }

    private static TensorProto? Find(GraphProto graph, string name)
    {
        foreach (var t in graph.Initializer) if (t.Name == name) return t;
        foreach (var node in graph.Node)
            foreach (var a in node.Attribute)
                foreach (var body in a.G is null ? a.Graphs : a.Graphs.Prepend(a.G))
                    if (Find(body, name) is { } found) return found;
        return null;
    }
}
