using ModelCompression.Graph;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.Int4;

/// <summary>
/// How <see cref="ModelWeights"/> reads <c>com.microsoft.MatMulNBits</c>: its B input, packed [N, blocks, blob], is
/// an [N, K] weight of N·K parameters stored at <c>bits</c> per weight (reported as uint4 for 4 bits); scales, zero
/// points and g_idx are quantization parameters; the bias is an ordinary weight. Zeros are not known (a zero point
/// shifts them).
/// </summary>
internal sealed class MatMulNBitsDecoder : IWeightDecoder
{
    public WeightOrigin? Follow(OnnxModel model, NodeProto node, IReadOnlyList<WeightOrigin?> inputs) => null;

    public WeightOrigin? Consumed(OnnxModel model, NodeProto node, int input, WeightOrigin stored)
    {
        if (node.OpType != "MatMulNBits" || node.Domain != "com.microsoft") return null;
        long Attr(string name, long fallback) => node.Attribute.FirstOrDefault(a => a.Name == name)?.I ?? fallback;
        switch (input)
        {
            case 1:
                long k = Attr("K", 0), n = Attr("N", 0);
                if (k <= 0 || n <= 0) return null;
                var bits = Attr("bits", 4);
                return stored with { Dims = [n, k], Elements = n * k, NonZeros = null, StoredType = bits == 4 ? DataType.Uint4 : stored.StoredType };
            case 2 or 3 or 4:
                return stored with { Elements = null };
            default:
                return null;
        }
    }
}

/// <summary>
/// How <see cref="ModelWeights"/> reads the expansion <see cref="Int4Pass"/> writes for convolutions: the Sub of the
/// zero points, the Mul by the scales and the Slice of the padding keep the 4-bit codes' elements (the Slice fewer of
/// them); Cast and Reshape are the format's own (<see cref="FormatDecoder"/>).
/// </summary>
internal sealed class Int4BlockDecoder : IWeightDecoder
{
    public WeightOrigin? Follow(OnnxModel model, NodeProto node, IReadOnlyList<WeightOrigin?> inputs)
    {
        if (inputs[0] is not { StoredType: DataType.Int4 or DataType.Uint4 } codes) return null;
        switch (node.OpType)
        {
            case "Sub" or "Mul" when inputs.Count == 2:
                return codes with { NonZeros = null, Tensor = null };
            case "Slice" when codes.Dims is { Length: 2 } dims && inputs.Count == 4 && Int64(inputs[1]) == 0 && Int64(inputs[3]) == 1 && Int64(inputs[2]) is { } end && end > 0 && end <= dims[1]:
                return codes with { Dims = [dims[0], end], Elements = dims[0] * end, NonZeros = null, Tensor = null };
            default:
                return null;
        }
    }

    private static long? Int64(WeightOrigin? origin) => origin?.Tensor is { } t && WeightDecoders.Int64s(t) is [var v] ? v : null;
}
