using Google.Protobuf;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using static ModelCompression.Pruning.NodeBuilder;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.Pruning;

/// <summary>
/// A mostly-zero initializer stored compactly in a form ONNX Runtime turns back into the exact dense tensor when it
/// loads the model (bit for bit; a zero is an element whose bytes are all 0, so −0.0 stays a stored value):
/// <list type="bullet">
/// <item>COO: a <c>sparse_initializer</c> with the nonzero values and their flat int64 positions (the only index
/// type the ONNX checker accepts). ORT densifies sparse initializers while it builds the graph.</item>
/// <item>Gap codes: the nonzero values plus the distances between them as b-bit codes (<see cref="GapCode"/>). A
/// small decoder of standard operators (BitShift, Gather, CumSum, ScatterND; opset 11) writes the dense tensor
/// under the initializer's name; its inputs are all constant, so ORT's constant folding runs it once at session
/// creation and the optimized graph holds a plain initializer again.</item>
/// <item>Float16: a float tensor whose values are all exact in float16, plus a Cast back (folded at load too).</item>
/// </list>
/// </summary>
internal sealed class SparseEncoding
{
    private SparseEncoding(IReadOnlyList<TensorProto> initializers, IReadOnlyList<NodeProto> nodes, SparseTensorProto? sparse, string description)
    {
        Initializers = initializers;
        Nodes = nodes;
        Sparse = sparse;
        Description = description;
    }

    public IReadOnlyList<TensorProto> Initializers { get; }
    public IReadOnlyList<NodeProto> Nodes { get; }
    public SparseTensorProto? Sparse { get; }
    public string Description { get; }

    /// <summary>Serialized bytes this form adds to the model (messages plus their field tags and lengths).</summary>
    public long Size => Initializers.Sum(t => Framed(t.CalculateSize())) + Nodes.Sum(n => Framed(n.CalculateSize())) + (Sparse is null ? 0 : Framed(Sparse.CalculateSize()));

    public static long Framed(long size) => size + 1 + CodedOutputStream.ComputeLengthSize((int)Math.Min(size, int.MaxValue));

    /// <summary>Flat positions of the elements that are not all-zero bytes.</summary>
    public static int[] NonZeroPositions(ReadOnlySpan<byte> raw, int elementSize)
    {
        var positions = new List<int>();
        for (var i = 0; i < raw.Length / elementSize; i++)
            if (raw.Slice(i * elementSize, elementSize).IndexOfAnyExcept((byte)0) >= 0) positions.Add(i);
        return positions.ToArray();
    }

    /// <summary>COO sparse_initializer with flat int64 indices.</summary>
    public static SparseEncoding Coordinates(TensorProto dense, ReadOnlySpan<byte> raw, int elementSize, int[] positions)
    {
        var values = Values(dense.Name, (DataType)dense.DataType, raw, elementSize, positions);
        // int64 flat indices, as the ONNX spec and checker require (ORT would also take int8/16/32, other tools not).
        var indices = Tensors.FromInt64s("", [positions.Length], positions.Select(p => (long)p).ToArray());
        var sparse = new SparseTensorProto { Values = values, Indices = indices };
        sparse.Dims.AddRange(dense.Dims);
        return new SparseEncoding([], [], sparse, "COO sparse_initializer, int64 indices");
    }

    /// <summary>
    /// A float tensor whose every value is exact in float16 (int8 weight scales are chosen so): stored as float16 under
    /// a fresh name with a Cast back to float under the initializer's name, which ORT's constant folding runs at load.
    /// Null when some value is not exact.
    /// </summary>
    public static SparseEncoding? Float16(TensorProto dense, ReadOnlySpan<byte> raw, Func<string> name)
    {
        if ((DataType)dense.DataType != DataType.Float) return null;
        var floats = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(raw);
        var halves = new Half[floats.Length];
        for (var i = 0; i < floats.Length; i++)
        {
            halves[i] = (Half)floats[i];
            if (BitConverter.SingleToInt32Bits((float)halves[i]) != BitConverter.SingleToInt32Bits(floats[i])) return null;
        }
        var stored = Tensors.Create<Half>(name(), dense.Dims.ToArray(), DataType.Float16, halves);
        var cast = Node("Cast", [stored.Name], dense.Name, Int("to", (long)DataType.Float));
        return new SparseEncoding([stored], [cast], null, "float16 (every value exact), cast to float at load");
    }

    /// <summary>How often each gap (distance to the previous nonzero, the first from position −1) occurs.</summary>
    public static Dictionary<long, long> GapCounts(int[] positions)
    {
        var counts = new Dictionary<long, long>();
        var previous = -1L;
        foreach (var p in positions)
        {
            counts[p - previous] = counts.GetValueOrDefault(p - previous) + 1;
            previous = p;
        }
        return counts;
    }

    /// <summary>
    /// The nonzero positions of a [rows, rest] view of the tensor walked column by column (rest-major), with the
    /// flat index each comes from: for layers whose inputs are pruned alike, zeros then run down whole columns.
    /// </summary>
    public static (int[] Positions, int[] Sources) Transposed(int[] positions, long rows, long count)
    {
        var columns = count / rows;
        var order = positions.Select(p => (Key: p % columns * rows + p / columns, Source: p)).OrderBy(t => t.Key).ToArray();
        return (order.Select(t => (int)t.Key).ToArray(), order.Select(t => t.Source).ToArray());
    }

    /// <summary>
    /// Gap-coded values and the decoder nodes that rebuild the tensor as <c>dense.Name</c>. <paramref name="positions"/>
    /// are in coding order (<paramref name="transposed"/>: of the [rest, rows] view) and <paramref name="sources"/>
    /// the matching flat indices into <paramref name="raw"/>. The decoder's values get short fresh names from
    /// <paramref name="name"/> (they are written once per use and add up); small constants every decoder needs come
    /// from <paramref name="shared"/>.
    /// </summary>
    public static SparseEncoding GapCoded(TensorProto dense, ReadOnlySpan<byte> raw, int elementSize, int[] positions, int[] sources, bool transposed,
        GapCode code, Func<string> name, Func<string, string> shared)
    {
        var type = (DataType)dense.DataType;
        var codes = new List<byte>(positions.Length);
        var previous = -1L;
        foreach (var p in positions)
        {
            codes.AddRange(code.Encode(p - previous));
            previous = p;
        }
        // Planar packing: entry j sits in byte j mod K, field j / K (bits [f·b, (f+1)·b)), so unpacking is one
        // broadcast shift of the K bytes by each field's offset.
        var bits = code.Bits;
        var fields = 8 / bits;
        var bytes = (codes.Count + fields - 1) / fields;
        var packed = new byte[bytes];
        for (var j = 0; j < codes.Count; j++) packed[j % bytes] |= (byte)(codes[j] << (j / bytes * bits));
        var keepTable = Enumerable.Range(0, code.Size).Select(c => c < code.Emits ? 1L : 0L).ToArray();
        var dims = dense.Dims.ToArray();
        var count = Tensors.ElementCount(dense);

        var initializers = new List<TensorProto>();
        string Constant(TensorProto t) { initializers.Add(t); return t.Name; }
        var codesName = Constant(Tensors.FromUInt8s(name(), [1, bytes], packed));
        // The values start with a zero: skips (which land on zeros of the tensor) scatter that one, so every entry
        // is scattered and no shape depends on the data (constant folding leaves data-dependent shapes alone).
        var valuesName = Constant(Values(name(), type, raw, elementSize, [-1, .. sources]));
        var stepsName = Constant(Tensors.FromInt64s(name(), [code.Size], code.Steps));
        var keepName = Constant(Tensors.FromInt64s(name(), [code.Size], keepTable));
        var countName = Constant(Tensors.FromInt64s(name(), [1], [count]));
        var nodes = new List<NodeProto>();
        string Add(string op, string[] inputs, string? output = null, params AttributeProto[] attributes)
        {
            var node = Node(op, inputs, output ?? name(), attributes);
            nodes.Add(node);
            return node.Output[0];
        }
        var codeValues = Add("BitShift", [Add("BitShift", [codesName, shared($"shifts{bits}")], null, String("direction", "LEFT")), shared($"align{bits}")], null, String("direction", "RIGHT"));
        var flat = Add("Reshape", [codeValues, shared("row")]);
        if (codes.Count != fields * bytes) flat = Add("Slice", [flat, shared("zero1"), Constant(Tensors.FromInt64s(name(), [1], [codes.Count]))]);
        var index = Add("Cast", [flat], null, Int("to", (long)DataType.Int32));
        var position = Add("Sub", [Add("CumSum", [Add("Gather", [stepsName, index]), shared("zero")]), shared("one")]);
        var keep = Add("Gather", [keepName, index]);
        var updates = Add("Gather", [valuesName, Add("Mul", [Add("CumSum", [keep, shared("zero")]), keep])]);
        var zeros = Add("ConstantOfShape", [countName], null, Tensor("value", Tensors.Create<byte>("", [1], type, new byte[elementSize])));
        var scattered = Add("ScatterND", [zeros, Add("Reshape", [position, shared("column")]), updates]);
        if (transposed)
        {
            var view = Constant(Tensors.FromInt64s(name(), [2], [count / dims[0], dims[0]]));
            var columnMajor = Add("Transpose", [Add("Reshape", [scattered, view])], dims.Length == 2 ? dense.Name : null, Ints("perm", 1, 0));
            if (dims.Length != 2) Add("Reshape", [columnMajor, Constant(Tensors.FromInt64s(name(), [dims.Length], dims))], dense.Name);
        }
        else Add("Reshape", [scattered, Constant(Tensors.FromInt64s(name(), [dims.Length], dims))], dense.Name);
        var skips = string.Join(",", code.Skips.Distinct());
        return new SparseEncoding(initializers, nodes, null,
            $"{bits}-bit gap codes{(transposed ? " by column" : "")} (emit 1..{code.Emits}, skip {skips}; {codes.Count - positions.Length} skips), decoded at load");
    }

    /// <summary>The small constants decoders share, by key (see <see cref="GapCoded"/>).</summary>
    public static TensorProto SharedConstant(string key, string name) => key switch
    {
        "one" => Tensors.FromInt64s(name, [], [1]),
        "zero" => Tensors.FromInt64s(name, [], [0]),
        "zero1" => Tensors.FromInt64s(name, [1], [0]),
        "row" => Tensors.FromInt64s(name, [1], [-1]),
        "column" => Tensors.FromInt64s(name, [2], [-1, 1]),
        _ when key.StartsWith("shifts", StringComparison.Ordinal) => Shifts(name, int.Parse(key[6..], System.Globalization.CultureInfo.InvariantCulture)),
        _ when key.StartsWith("align", StringComparison.Ordinal) => Tensors.FromUInt8s(name, [], [(byte)(8 - int.Parse(key[5..], System.Globalization.CultureInfo.InvariantCulture))]),
        _ => throw new ArgumentException($"no shared decoder constant '{key}'"),
    };

    /// <summary>Left shifts that bring field f of a byte (bits [f·b, (f+1)·b)) to the top, as a [fields, 1] column.</summary>
    private static TensorProto Shifts(string name, int bits)
    {
        var fields = 8 / bits;
        return Tensors.FromUInt8s(name, [fields, 1], Enumerable.Range(0, fields).Select(f => (byte)(8 - bits - f * bits)).ToArray());
    }

    /// <summary>The elements at <paramref name="positions"/> as a 1-D tensor (position −1: a zero element).</summary>
    private static TensorProto Values(string name, DataType type, ReadOnlySpan<byte> raw, int elementSize, int[] positions)
    {
        var values = new byte[positions.Length * elementSize];
        for (var k = 0; k < positions.Length; k++)
            if (positions[k] >= 0) raw.Slice(positions[k] * elementSize, elementSize).CopyTo(values.AsSpan(k * elementSize));
        return Tensors.Create<byte>(name, [positions.Length], type, values);
    }
}
