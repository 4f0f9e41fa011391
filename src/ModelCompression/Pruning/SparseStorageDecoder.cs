using ModelCompression.Graph;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;

namespace ModelCompression.Pruning;

/// <summary>
/// How <see cref="ModelWeights"/> reads the gap-code decoders <see cref="SparseEncoding.GapCoded"/> writes: a zero
/// tensor of the full shape (ConstantOfShape) that ScatterND fills with the stored values, which Gathers pick by
/// indices the decoder computes at load. The tensor has the zeros' shape and the values' nonzeros, stored as the values.
/// </summary>
internal sealed class SparseStorageDecoder : IWeightDecoder
{
    public WeightOrigin? Follow(OnnxModel model, NodeProto node, IReadOnlyList<WeightOrigin?> inputs)
    {
        WeightOrigin? Input(int i) => i < inputs.Count ? inputs[i] : null;
        var first = inputs[0]! with { Tensor = null };
        switch (node.OpType)
        {
            case "ConstantOfShape" when inputs[0]!.Tensor is { } shape && WeightDecoders.Int64s(shape) is { } dims && dims.All(d => d >= 0):
                return new WeightOrigin(dims, WeightDecoders.Product(dims), 0, first.StoredName, first.StoredType, null);
            case "ScatterND" when Input(2) is { } updates:
                // The data is the zero tensor of the full shape, the updates the stored values.
                return first with { NonZeros = updates.NonZeros, StoredName = updates.StoredName, StoredType = updates.StoredType };
            case "Gather" when !(Input(0) is { Dims.Length: 1 or 2 } && Input(1) is { Dims: not null, Elements: not null }):
                // Reading stored values by computed indices: no shape of interest, but where the values live (a
                // lookup in a 1-D or 2-D table by indices of known shape is a codebook's, see WeightSharing).
                return first with { Dims = null, Elements = null };
            default:
                return null;
        }
    }
}
