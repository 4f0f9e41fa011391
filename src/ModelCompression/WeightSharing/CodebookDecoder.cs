using ModelCompression.Graph;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.WeightSharing;

/// <summary>
/// How <see cref="ModelWeights"/> reads the lookup <see cref="CodebookPass"/> writes, <c>Gather(codebook, indices)</c>:
/// with a 1-D codebook a tensor of the indices' shape; with a [k, d] one (product quantization) the indices' shape
/// plus d, each index standing for d weights; stored as the indices. Its zeros are the indices of the table's zero
/// entry (row), which the indices' own zeros tell when entry 0 is the only zero one and the rest have no zeros.
/// </summary>
internal sealed class CodebookDecoder : IWeightDecoder
{
    public WeightOrigin? Follow(OnnxModel model, NodeProto node, IReadOnlyList<WeightOrigin?> inputs)
    {
        if (node.OpType != "Gather" || inputs.Count < 2 || inputs[0] is not { Dims.Length: 1 or 2, Elements: { } entries } table || inputs[1] is not { Dims: { } dims, Elements: { } elements } indices) return null;
        if (node.Attribute.FirstOrDefault(a => a.Name == "axis") is { I: not 0 }) return null;
        var width = table.Dims!.Length == 2 ? table.Dims[1] : 1;
        var nonZeros = table.NonZeros == entries ? elements * width
            : table.NonZeros == entries - width && table.Tensor is { } values && WeightDecoders.FirstIsZero(model, values, width) ? indices.NonZeros * width : null;
        return new WeightOrigin(width == 1 ? dims : [.. dims, width], elements * width, nonZeros, indices.StoredName, indices.StoredType, null);
    }
}

/// <summary>
/// How <see cref="ModelWeights"/> reads the sum <see cref="CodebookPass"/> writes for CodebookMethod=residual,
/// <c>Add(first lookup, second lookup)</c> of one shape, both stored as uint8 indices: a tensor of that shape, stored as the first stage's indices
/// (the second's are counted with it). A zero stays zero where both lookups are zero, which the stored form does not
/// tell without decoding, so the nonzeros are left unknown.
/// </summary>
internal sealed class ResidualCodebookDecoder : IWeightDecoder
{
    public WeightOrigin? Follow(OnnxModel model, NodeProto node, IReadOnlyList<WeightOrigin?> inputs)
    {
        if (node.OpType != "Add" || inputs.Count != 2 || inputs[0] is not { Dims: { } a, Elements: { } elements, StoredType: DataType.Uint8 } first
            || inputs[1] is not { Dims: { } b, StoredType: DataType.Uint8 } || !a.SequenceEqual(b)) return null;
        return first with { Dims = a, Elements = elements, NonZeros = null, Tensor = null };
    }
}
