using ModelCompression.Graph;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.WeightSharing;

/// <summary>
/// How <see cref="ModelWeights"/> reads the 4-bit index unpacking <see cref="CodebookPass"/> writes:
/// <c>BitShift(BitShift(packed [1, B], [4, 0] LEFT), 4 RIGHT)</c> holds 2·B indices, stored as the packed bytes,
/// and is zero where a nibble is. The Reshape to the weight's shape and the lookup follow as usual.
/// </summary>
internal sealed class PackedIndicesDecoder : IWeightDecoder
{
    /// <summary>Left shifts that bring the low nibble, then the high one, to the top of the byte, as a [2, 1] column.</summary>
    public static readonly byte[] Shifts = [4, 0];

    public WeightOrigin? Follow(OnnxModel model, NodeProto node, IReadOnlyList<WeightOrigin?> inputs)
    {
        if (node.OpType != "BitShift" || inputs.Count < 2 || inputs[0] is not { } data || inputs[1] is not { Tensor: { } shift }) return null;
        var direction = node.Attribute.FirstOrDefault(a => a.Name == "direction")?.S.ToStringUtf8();
        if (direction == "LEFT" && data is { Dims: [1, var bytes], StoredType: DataType.Uint8 } && (DataType)shift.DataType == DataType.Uint8 &&
            shift.Dims.SequenceEqual([2L, 1L]) && IsShifts(model, shift))
            return new WeightOrigin([2, bytes], 2 * bytes, data.Tensor is { } packed ? NonZeroNibbles(model, packed) : null, data.StoredName, data.StoredType, null);
        // The right shift that aligns the nibbles keeps what the left one tells.
        if (direction == "RIGHT" && data is { Dims: [2, _], Elements: not null } && (DataType)shift.DataType == DataType.Uint8 && shift.Dims.Count == 0)
            return data;
        return null;
    }

    private static bool IsShifts(OnnxModel model, TensorProto shift)
    {
        var data = model.GetTensor(shift);
        return data.HasRawBytes && data.RawBytes.SequenceEqual(Shifts);
    }

    private static long? NonZeroNibbles(OnnxModel model, TensorProto packed)
    {
        var data = model.GetTensor(packed);
        if (!data.HasRawBytes) return null;
        long count = 0;
        foreach (var b in data.RawBytes) count += ((b & 0x0F) != 0 ? 1 : 0) + ((b & 0xF0) != 0 ? 1 : 0);
        return count;
    }
}
