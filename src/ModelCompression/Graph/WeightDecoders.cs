using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.Graph;

/// <summary>
/// What a constant value stores, as <see cref="ModelWeights"/> follows it back: <paramref name="Dims"/>,
/// <paramref name="Elements"/> and <paramref name="NonZeros"/> of the logical tensor (null: not known), the tensor
/// it is stored in, and <paramref name="Tensor"/>, the initializer itself when the value is one.
/// </summary>
public sealed record WeightOrigin(long[]? Dims, long? Elements, long? NonZeros, string StoredName, DataType StoredType, TensorProto? Tensor);

/// <summary>
/// Knows how one kind of constant node (a storage decoder, a lookup, a format conversion) turns the values its inputs
/// store into its output. A technique that stores weights in a new form adds one next to its pass; every decoder in
/// the engine is found by <see cref="WeightDecoders"/>, so <see cref="ModelWeights"/> never lists them.
/// </summary>
public interface IWeightDecoder
{
    /// <summary>
    /// What <paramref name="node"/>'s first output stores, given what each of its inputs stores (null for an empty
    /// input), or null when the node is not one this decoder knows.
    /// </summary>
    WeightOrigin? Follow(OnnxModel model, NodeProto node, IReadOnlyList<WeightOrigin?> inputs);

    /// <summary>
    /// For a node that computes on a weight in a packed form itself (a layer such as MatMulNBits, not a constant
    /// node): what its constant input <paramref name="input"/>, stored as <paramref name="stored"/>, holds; an
    /// origin with null Elements for a quantization parameter (not a weight); null when the decoder does not know it.
    /// </summary>
    WeightOrigin? Consumed(OnnxModel model, NodeProto node, int input, WeightOrigin stored) => null;
}

/// <summary>Every <see cref="IWeightDecoder"/> in the engine, found by reflection, and helpers they share.</summary>
public static class WeightDecoders
{
    /// <summary>In type-name order; decoders answer for disjoint nodes, so the order only makes the search deterministic.</summary>
    public static IReadOnlyList<IWeightDecoder> All { get; } = typeof(WeightDecoders).Assembly.GetTypes()
        .Where(t => t is { IsClass: true, IsAbstract: false } && typeof(IWeightDecoder).IsAssignableFrom(t) && t.GetConstructor(Type.EmptyTypes) is not null)
        .OrderBy(t => t.FullName, StringComparer.Ordinal)
        .Select(t => (IWeightDecoder)Activator.CreateInstance(t)!)
        .ToList();

    /// <summary>
    /// What a constant node's output stores: the first decoder's answer, else an intermediate no weight is read from
    /// (unknown elements, stored where its first input is).
    /// </summary>
    public static WeightOrigin Follow(OnnxModel model, NodeProto node, IReadOnlyList<WeightOrigin?> inputs)
    {
        foreach (var decoder in All)
            if (decoder.Follow(model, node, inputs) is { } origin) return origin with { Tensor = null };
        var first = inputs[0]!;
        return new WeightOrigin(null, null, null, first.StoredName, first.StoredType, null);
    }

    /// <summary>What a layer's constant input holds as a weight, by the first decoder that knows the layer (see <see cref="IWeightDecoder.Consumed"/>).</summary>
    public static WeightOrigin? Consumed(OnnxModel model, NodeProto node, int input, WeightOrigin stored)
    {
        foreach (var decoder in All)
            if (decoder.Consumed(model, node, input, stored) is { } origin) return origin;
        return null;
    }

    public static WeightOrigin Stored(OnnxModel model, TensorProto tensor)
    {
        var dims = tensor.Dims.ToArray();
        return new WeightOrigin(dims, Product(dims), NonZeros(model, tensor), tensor.Name, (DataType)tensor.DataType, tensor);
    }

    public static long Product(long[] dims) => dims.Aggregate(1L, (a, b) => a * b);

    /// <summary>The values of a scalar or 1-D int64 tensor (a shape, axes), or null.</summary>
    public static long[]? Int64s(TensorProto tensor) =>
        (DataType)tensor.DataType == DataType.Int64 && tensor.Dims.Count <= 1 && tensor.RawData.Length > 0
            ? System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(tensor.RawData.Span).ToArray()
            : (DataType)tensor.DataType == DataType.Int64 && tensor.Int64Data.Count > 0 ? tensor.Int64Data.ToArray() : null;

    /// <summary>Whether the tensor's first <paramref name="count"/> elements are all zero bytes.</summary>
    public static bool FirstIsZero(OnnxModel model, TensorProto tensor, long count = 1)
    {
        var size = ElementTypes.SizeInBytes((DataType)tensor.DataType) * (int)count;
        var data = model.GetTensor(tensor);
        return size > 0 && data.HasRawBytes && data.RawBytes.Length >= size && data.RawBytes[..size].IndexOfAnyExcept((byte)0) < 0;
    }

    private static long? NonZeros(OnnxModel model, TensorProto tensor)
    {
        var size = ElementTypes.SizeInBytes((DataType)tensor.DataType);
        var data = model.GetTensor(tensor);
        if (size == 0 || !data.HasRawBytes || (DataType)tensor.DataType is DataType.String) return null;
        var raw = data.RawBytes;
        long count = 0;
        for (var i = 0; i + size <= raw.Length; i += size)
            if (raw.Slice(i, size).IndexOfAnyExcept((byte)0) >= 0) count++;
        // Counted over the memory map when stored externally: the report counts a whole large model this way.
        model.ReleasePages(tensor);
        return count;
    }
}

/// <summary>
/// The ONNX format's own rules: ops whose output holds the same elements as input 0 (re-typed, reordered or
/// reshaped). DequantizeLinear and Cast keep the zeros too, unless a nonzero zero point shifts them.
/// </summary>
internal sealed class FormatDecoder : IWeightDecoder
{
    /// <summary>Ops whose output holds the same elements as input 0 (reordered, reshaped or re-typed).</summary>
    private static readonly HashSet<string> SameElements = new(StringComparer.Ordinal)
    {
        "DequantizeLinear", "Cast", "Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten",
    };

    public WeightOrigin? Follow(OnnxModel model, NodeProto node, IReadOnlyList<WeightOrigin?> inputs)
    {
        WeightOrigin? Input(int i) => i < inputs.Count ? inputs[i] : null;
        var first = inputs[0]! with { Tensor = null };
        switch (node.OpType)
        {
            case "Reshape" when Input(1)?.Tensor is { } shape && WeightDecoders.Int64s(shape) is { } dims && dims.All(d => d > 0):
                return first with { Dims = dims };
            case "Transpose" when first.Dims is not null:
                var perm = node.Attribute.FirstOrDefault(a => a.Name == "perm")?.Ints.ToArray() ?? Enumerable.Range(0, first.Dims.Length).Reverse().Select(i => (long)i).ToArray();
                var valid = perm.Length == first.Dims.Length && perm.Order().SequenceEqual(Enumerable.Range(0, perm.Length).Select(i => (long)i));
                return first with { Dims = valid ? perm.Select(p => first.Dims[p]).ToArray() : null };
            case "DequantizeLinear" when Input(2) is { } zeroPoint && zeroPoint.NonZeros != 0:
                return first with { NonZeros = null }; // a nonzero zero point: stored zeros are not zeros of the weight
            case "DequantizeLinear" or "Cast" or "Identity":
                return first;
            case var op when SameElements.Contains(op):
                return first with { Dims = null };
            default:
                return null;
        }
    }
}
