using ModelCompression.Graph;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;

namespace ModelCompression.WeightSharing;

/// <summary>
/// How <see cref="ModelWeights"/> reads the lookup <see cref="CodebookPass"/> writes, <c>Gather(codebook, indices)</c>:
/// a tensor of the indices' shape, stored as the indices. Its zeros are the indices of the table's zero entries, which
/// the indices' own zeros tell when entry 0 is the only one.
/// </summary>
internal sealed class CodebookDecoder : IWeightDecoder
{
    public WeightOrigin? Follow(OnnxModel model, NodeProto node, IReadOnlyList<WeightOrigin?> inputs)
    {
        if (node.OpType != "Gather" || inputs.Count < 2 || inputs[0] is not { Dims.Length: 1 } table || inputs[1] is not { Dims: { } dims, Elements: { } elements } indices) return null;
        var nonZeros = table.NonZeros == table.Elements ? elements
            : table.NonZeros == table.Elements - 1 && table.Tensor is { } values && WeightDecoders.FirstIsZero(model, values) ? indices.NonZeros : null;
        return new WeightOrigin(dims, elements, nonZeros, indices.StoredName, indices.StoredType, null);
    }
}
