using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Google.Protobuf;
using ModelCompression.Onnx.Protobuf;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.Onnx;

/// <summary>Element types: sizes and names. Sub-byte types (int4/uint4/float4) report a size of 0 and pack two per byte.</summary>
public static class ElementTypes
{
    public static int SizeInBytes(DataType type) => type switch
    {
        DataType.Float or DataType.Int32 or DataType.Uint32 => 4,
        DataType.Double or DataType.Int64 or DataType.Uint64 or DataType.Complex64 => 8,
        DataType.Complex128 => 16,
        DataType.Float16 or DataType.Bfloat16 or DataType.Int16 or DataType.Uint16 => 2,
        DataType.Int8 or DataType.Uint8 or DataType.Bool or DataType.Float8E4M3Fn or DataType.Float8E4M3Fnuz
            or DataType.Float8E5M2 or DataType.Float8E5M2Fnuz => 1,
        _ => 0,
    };

    public static bool IsPacked4Bit(DataType type) => type is DataType.Int4 or DataType.Uint4 or DataType.Float4E2M1;

    /// <summary>Bytes that <paramref name="count"/> elements occupy in raw_data.</summary>
    public static long ByteCount(DataType type, long count)
    {
        if (IsPacked4Bit(type)) return count / 2 + count % 2;
        // Counts come from dims in the file: an overflow is a malformed model, not an internal error.
        var size = SizeInBytes(type);
        return size == 0 || count <= long.MaxValue / size
            ? count * size
            : throw new OnnxFormatException($"{count} elements of {Name(type)} are more bytes than can be addressed");
    }

    public static string Name(DataType type) => type.ToString().ToLowerInvariant();
}

/// <summary>
/// Read access to a tensor's elements wherever they are stored: raw_data, external data (memory-mapped), or the
/// typed repeated fields. Spans over raw/external bytes are views, not copies (ONNX data is little-endian).
/// </summary>
public readonly ref struct TensorData
{
    private readonly ReadOnlySpan<byte> _bytes;
    private readonly bool _hasBytes;

    internal TensorData(TensorProto proto, ReadOnlySpan<byte> bytes, bool hasBytes)
    {
        Proto = proto;
        _bytes = bytes;
        _hasBytes = hasBytes;
        ElementType = (DataType)proto.DataType;
        ElementCount = Tensors.ElementCount(proto);
        if (hasBytes)
        {
            if (ElementType == DataType.String)
                throw new OnnxFormatException($"tensor '{proto.Name}': string tensors cannot be stored as raw bytes");
            var expected = ElementTypes.ByteCount(ElementType, ElementCount);
            if (bytes.Length != expected)
                throw new OnnxFormatException(
                    $"tensor '{proto.Name}': {bytes.Length} bytes of data for shape [{string.Join(",", proto.Dims)}] of {ElementTypes.Name(ElementType)} (expected {expected})");
        }
    }

    public TensorProto Proto { get; }
    public DataType ElementType { get; }
    public long ElementCount { get; }
    public ReadOnlySpan<long> Dims => Tensors.DimsOf(Proto);

    /// <summary>The raw little-endian bytes, when the tensor is stored as raw_data or external data.</summary>
    public bool HasRawBytes => _hasBytes;
    public ReadOnlySpan<byte> RawBytes => _hasBytes ? _bytes : throw new InvalidOperationException($"tensor '{Proto.Name}' stores its data in typed fields");

    /// <summary>A zero-copy view of the elements as <typeparamref name="T"/> (raw/external storage of a matching element size).</summary>
    public ReadOnlySpan<T> AsSpan<T>() where T : unmanaged
    {
        if (_hasBytes) return MemoryMarshal.Cast<byte, T>(_bytes);
        if (typeof(T) == typeof(float) && ElementType == DataType.Float) return MemoryMarshal.Cast<float, T>(Tensors.ToArray(Proto.FloatData));
        if (typeof(T) == typeof(long) && ElementType == DataType.Int64) return MemoryMarshal.Cast<long, T>(Tensors.ToArray(Proto.Int64Data));
        if (typeof(T) == typeof(int) && ElementType == DataType.Int32) return MemoryMarshal.Cast<int, T>(Tensors.ToArray(Proto.Int32Data));
        if (typeof(T) == typeof(double) && ElementType == DataType.Double) return MemoryMarshal.Cast<double, T>(Tensors.ToArray(Proto.DoubleData));
        throw new InvalidOperationException($"tensor '{Proto.Name}' ({ElementTypes.Name(ElementType)}) has no {typeof(T).Name} view");
    }

    /// <summary>Every element converted to float (numeric types, float16/bfloat16, packed int4/uint4).</summary>
    public float[] ToFloatArray()
    {
        var n = ArrayLength();
        // Typed fields: the count is checked before allocating, so dims from the file cannot size a huge array.
        if (!_hasBytes) CheckTypedCount(n);
        var result = new float[n];
        if (!_hasBytes) { FillFromTypedFields(result); return result; }
        var b = _bytes;
        switch (ElementType)
        {
            case DataType.Float: MemoryMarshal.Cast<byte, float>(b).CopyTo(result); break;
            case DataType.Double: { var s = MemoryMarshal.Cast<byte, double>(b); for (var i = 0; i < n; i++) result[i] = (float)s[i]; break; }
            case DataType.Float16: { var s = MemoryMarshal.Cast<byte, Half>(b); for (var i = 0; i < n; i++) result[i] = (float)s[i]; break; }
            case DataType.Bfloat16: { var s = MemoryMarshal.Cast<byte, ushort>(b); for (var i = 0; i < n; i++) result[i] = BitConverter.Int32BitsToSingle(s[i] << 16); break; }
            case DataType.Int8: { var s = MemoryMarshal.Cast<byte, sbyte>(b); for (var i = 0; i < n; i++) result[i] = s[i]; break; }
            case DataType.Uint8 or DataType.Bool: for (var i = 0; i < n; i++) result[i] = b[i]; break;
            case DataType.Int16: { var s = MemoryMarshal.Cast<byte, short>(b); for (var i = 0; i < n; i++) result[i] = s[i]; break; }
            case DataType.Uint16: { var s = MemoryMarshal.Cast<byte, ushort>(b); for (var i = 0; i < n; i++) result[i] = s[i]; break; }
            case DataType.Int32: { var s = MemoryMarshal.Cast<byte, int>(b); for (var i = 0; i < n; i++) result[i] = s[i]; break; }
            case DataType.Uint32: { var s = MemoryMarshal.Cast<byte, uint>(b); for (var i = 0; i < n; i++) result[i] = s[i]; break; }
            case DataType.Int64: { var s = MemoryMarshal.Cast<byte, long>(b); for (var i = 0; i < n; i++) result[i] = s[i]; break; }
            case DataType.Uint64: { var s = MemoryMarshal.Cast<byte, ulong>(b); for (var i = 0; i < n; i++) result[i] = s[i]; break; }
            case DataType.Int4: for (var i = 0; i < n; i++) result[i] = Int4.Unpack(b, i, signed: true); break;
            case DataType.Uint4: for (var i = 0; i < n; i++) result[i] = Int4.Unpack(b, i, signed: false); break;
            default: throw new OnnxFormatException($"tensor '{Proto.Name}': {ElementTypes.Name(ElementType)} cannot be read as numbers");
        }
        return result;
    }

    /// <summary>Every element of an integer tensor as int64 (shape tensors, labels, axes).</summary>
    public long[] ToInt64Array()
    {
        var n = ArrayLength();
        if (!_hasBytes && ElementType == DataType.Int64) return Tensors.ToArray(Proto.Int64Data);
        var floats = ElementType is DataType.Int64 or DataType.Uint64 ? null : ToFloatArray();
        var result = new long[n];
        if (floats is not null) { for (var i = 0; i < n; i++) result[i] = (long)floats[i]; return result; }
        if (ElementType == DataType.Int64) MemoryMarshal.Cast<byte, long>(_bytes).CopyTo(result);
        else { var s = MemoryMarshal.Cast<byte, ulong>(_bytes); for (var i = 0; i < n; i++) result[i] = (long)s[i]; }
        return result;
    }

    private void CheckTypedCount(int expected)
    {
        var p = Proto;
        var available = TypedCount();
        if (available < expected || (ElementType is not (DataType.Int4 or DataType.Uint4) && available != expected))
            throw new OnnxFormatException($"tensor '{p.Name}': {available} stored elements for shape [{string.Join(",", p.Dims)}] ({expected} expected)");
    }

    private int ArrayLength() => ElementCount <= Array.MaxLength
        ? (int)ElementCount
        : throw new OnnxFormatException($"tensor '{Proto.Name}': {ElementCount} elements do not fit in one array");

    private int TypedCount()
    {
        var p = Proto;
        return ElementType switch
        {
            DataType.Float => p.FloatData.Count,
            DataType.Double => p.DoubleData.Count,
            DataType.Int64 => p.Int64Data.Count,
            DataType.Uint32 or DataType.Uint64 => p.Uint64Data.Count,
            DataType.Int4 or DataType.Uint4 => p.Int32Data.Count * 2,
            _ => p.Int32Data.Count,
        };
    }

    private void FillFromTypedFields(float[] result)
    {
        var p = Proto;
        for (var i = 0; i < result.Length; i++)
        {
            result[i] = ElementType switch
            {
                DataType.Float => p.FloatData[i],
                DataType.Double => (float)p.DoubleData[i],
                DataType.Int64 => p.Int64Data[i],
                DataType.Uint32 or DataType.Uint64 => p.Uint64Data[i],
                DataType.Float16 => (float)BitConverter.UInt16BitsToHalf((ushort)p.Int32Data[i]),
                DataType.Bfloat16 => BitConverter.Int32BitsToSingle(p.Int32Data[i] << 16),
                DataType.Int4 => Int4.Unpack((byte)p.Int32Data[i / 2], i % 2, signed: true),
                DataType.Uint4 => Int4.Unpack((byte)p.Int32Data[i / 2], i % 2, signed: false),
                DataType.Int8 or DataType.Uint8 or DataType.Int16 or DataType.Uint16 or DataType.Int32 or DataType.Bool => p.Int32Data[i],
                _ => throw new OnnxFormatException($"tensor '{p.Name}': {ElementTypes.Name(ElementType)} cannot be read as numbers"),
            };
        }
    }
}

/// <summary>Packing of 4-bit integers, two per byte, the first element in the low nibble (ONNX int4/uint4).</summary>
public static class Int4
{
    public static int Unpack(ReadOnlySpan<byte> packed, int index, bool signed) => Unpack(packed[index >> 1], index & 1, signed);

    public static int Unpack(byte b, int nibble, bool signed)
    {
        var v = nibble == 0 ? b & 0x0F : b >> 4;
        return signed && v >= 8 ? v - 16 : v;
    }

    public static byte[] Pack(ReadOnlySpan<sbyte> values)
    {
        var packed = new byte[(values.Length + 1) / 2];
        for (var i = 0; i < values.Length; i++)
            packed[i >> 1] |= (byte)((values[i] & 0x0F) << ((i & 1) * 4));
        return packed;
    }
}

/// <summary>Building and inspecting TensorProto values.</summary>
public static class Tensors
{
    public static long[] DimsOf(TensorProto tensor) => tensor.Dims.ToArray();

    /// <summary>A view of a tensor that carries its own data (raw_data or typed fields); external data needs its <see cref="OnnxModel"/>.</summary>
    public static TensorData View(TensorProto tensor)
    {
        if (tensor.HasDataLocation && tensor.DataLocation == TensorProto.Types.DataLocation.External)
            throw new OnnxFormatException($"tensor '{tensor.Name}' stores its data externally; read it through the model that owns it");
        return tensor.HasRawData ? new TensorData(tensor, tensor.RawData.Span, hasBytes: true) : new TensorData(tensor, default, hasBytes: false);
    }

    public static long ElementCount(TensorProto tensor)
    {
        long count = 1;
        foreach (var d in tensor.Dims)
        {
            if (d < 0) throw new OnnxFormatException($"tensor '{tensor.Name}': negative dimension {d} in shape [{string.Join(",", tensor.Dims)}]");
            try { count = checked(count * d); }
            catch (OverflowException) { throw new OnnxFormatException($"tensor '{tensor.Name}': shape [{string.Join(",", tensor.Dims)}] has more elements than can be addressed"); }
        }
        return count;
    }

    public static T[] ToArray<T>(Google.Protobuf.Collections.RepeatedField<T> field)
    {
        var a = new T[field.Count];
        field.CopyTo(a, 0);
        return a;
    }

    public static TensorProto Create<T>(string name, ReadOnlySpan<long> dims, DataType type, ReadOnlySpan<T> values) where T : unmanaged
    {
        var tensor = new TensorProto { Name = name, DataType = (int)type };
        foreach (var d in dims) tensor.Dims.Add(d);
        var expected = ElementTypes.ByteCount(type, ElementCount(tensor));
        var bytes = MemoryMarshal.AsBytes(values);
        if (bytes.Length != expected)
            throw new ArgumentException($"tensor '{name}': {bytes.Length} bytes for shape [{string.Join(",", dims.ToArray())}] of {ElementTypes.Name(type)} (expected {expected})");
        tensor.RawData = ByteString.CopyFrom(bytes);
        return tensor;
    }

    /// <summary>
    /// A tensor over <paramref name="bytes"/> without copying them: the array becomes the tensor's raw_data, so the
    /// caller must not change it afterwards (it saves a second copy of a large quantized weight).
    /// </summary>
    public static TensorProto Wrap(string name, ReadOnlySpan<long> dims, DataType type, byte[] bytes)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)type };
        foreach (var d in dims) tensor.Dims.Add(d);
        var expected = ElementTypes.ByteCount(type, ElementCount(tensor));
        if (bytes.Length != expected)
            throw new ArgumentException($"tensor '{name}': {bytes.Length} bytes for shape [{string.Join(",", dims.ToArray())}] of {ElementTypes.Name(type)} (expected {expected})");
        tensor.RawData = UnsafeByteOperations.UnsafeWrap(bytes);
        return tensor;
    }

    public static TensorProto FromFloats(string name, ReadOnlySpan<long> dims, ReadOnlySpan<float> values) => Create(name, dims, DataType.Float, values);
    public static TensorProto FromInt64s(string name, ReadOnlySpan<long> dims, ReadOnlySpan<long> values) => Create(name, dims, DataType.Int64, values);
    public static TensorProto FromInt8s(string name, ReadOnlySpan<long> dims, ReadOnlySpan<sbyte> values) => Create(name, dims, DataType.Int8, values);
    public static TensorProto FromUInt8s(string name, ReadOnlySpan<long> dims, ReadOnlySpan<byte> values) => Create(name, dims, DataType.Uint8, values);
    public static TensorProto FromInt32s(string name, ReadOnlySpan<long> dims, ReadOnlySpan<int> values) => Create(name, dims, DataType.Int32, values);

    /// <summary>A packed int4 (or uint4) tensor from values in [-8, 7] (or [0, 15]).</summary>
    public static TensorProto FromInt4s(string name, ReadOnlySpan<long> dims, ReadOnlySpan<sbyte> values, bool signed = true)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)(signed ? DataType.Int4 : DataType.Uint4) };
        foreach (var d in dims) tensor.Dims.Add(d);
        if (ElementCount(tensor) != values.Length) throw new ArgumentException($"tensor '{name}': {values.Length} values for {ElementCount(tensor)} elements");
        tensor.RawData = ByteString.CopyFrom(Int4.Pack(values));
        return tensor;
    }

    public static TensorProto Scalar(string name, float value) => FromFloats(name, ReadOnlySpan<long>.Empty, [value]);

    public static void WriteLittleEndian(Span<byte> destination, float value) => BinaryPrimitives.WriteSingleLittleEndian(destination, value);
}
