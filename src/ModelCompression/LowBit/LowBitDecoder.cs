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
                return codes with { Dims = [count], Elements = count, NonZeros = null, Tensor = null };
            // Mul(signs stored as uint8 codes, float scales broadcast over them).
            case "Mul" when inputs.Count == 2 && inputs[0] is { StoredType: DataType.Uint8, Dims: not null, Elements: { } elements } signs
                && inputs[1] is { StoredType: DataType.Float, Tensor: not null, Elements: { } scales } && scales <= elements:
                return signs with { Tensor = null };
            default:
                return null;
        }
    }
}
