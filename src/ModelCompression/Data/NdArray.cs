using System.Runtime.InteropServices;

namespace ModelCompression.Data;

public enum ArrayElementType { Float32, Float64, Float16, Int8, UInt8, Int16, UInt16, Int32, UInt32, Int64, UInt64, Bool }

/// <summary>A dense, C-ordered n-dimensional array as read from .npy/.npz/.pb files (which axis holds samples is decided when a <see cref="Dataset"/> is bound to a model).</summary>
public sealed class NdArray
{
    public NdArray(string name, long[] shape, ArrayElementType elementType, Array data)
    {
        Name = name;
        Shape = shape;
        ElementType = elementType;
        Data = data;
    }

    public string Name { get; }
    public long[] Shape { get; }
    public ArrayElementType ElementType { get; }
    /// <summary>float[], double[], Half[], sbyte[], byte[], short[], ushort[], int[], uint[], long[], ulong[] or bool[].</summary>
    public Array Data { get; }
    public int Count => Shape.Length == 0 ? 1 : checked((int)Shape[0]);
    public long ElementsPerSample => Shape.Skip(1).Aggregate(1L, (a, b) => a * b);
    public bool IsInteger => ElementType is ArrayElementType.Int8 or ArrayElementType.UInt8 or ArrayElementType.Int16 or ArrayElementType.UInt16
        or ArrayElementType.Int32 or ArrayElementType.UInt32 or ArrayElementType.Int64 or ArrayElementType.UInt64;

    public string ShapeText => "[" + string.Join(",", Shape) + "]";

    public static int ElementSize(ArrayElementType type) => type switch
    {
        ArrayElementType.Float64 or ArrayElementType.Int64 or ArrayElementType.UInt64 => 8,
        ArrayElementType.Float32 or ArrayElementType.Int32 or ArrayElementType.UInt32 => 4,
        ArrayElementType.Float16 or ArrayElementType.Int16 or ArrayElementType.UInt16 => 2,
        _ => 1,
    };

    public static string TypeName(ArrayElementType type) => type.ToString().ToLowerInvariant();

    /// <summary>Samples [start, start+count) as a new array (a copy of that range).</summary>
    public NdArray Slice(int start, int count)
    {
        var shape = (long[])Shape.Clone();
        shape[0] = count;
        var per = checked((int)ElementsPerSample);
        var data = Array.CreateInstance(Data.GetType().GetElementType()!, checked(count * per));
        Array.Copy(Data, (long)start * per, data, 0, (long)count * per);
        return new NdArray(Name, shape, ElementType, data);
    }

    /// <summary>Samples [start, start+count) along <paramref name="axis"/> as a new array (a copy of that range).</summary>
    public NdArray Slice(int axis, int start, int count)
    {
        if (axis == 0) return Slice(start, count);
        var shape = (long[])Shape.Clone();
        var n = Shape[axis];
        shape[axis] = count;
        var outer = Shape.Take(axis).Aggregate(1L, (a, b) => a * b);
        var inner = Shape.Skip(axis + 1).Aggregate(1L, (a, b) => a * b);
        var data = Array.CreateInstance(Data.GetType().GetElementType()!, checked((int)(outer * count * inner)));
        for (long o = 0; o < outer; o++) Array.Copy(Data, (o * n + start) * inner, data, o * count * inner, count * inner);
        return new NdArray(Name, shape, ElementType, data);
    }

    /// <summary>The arrays joined along <paramref name="axis"/> (all other dimensions and the type must agree).</summary>
    public static NdArray Concatenate(IReadOnlyList<NdArray> parts, int axis)
    {
        var first = parts[0];
        var shape = (long[])first.Shape.Clone();
        shape[axis] = parts.Sum(p => p.Shape[axis]);
        var outer = first.Shape.Take(axis).Aggregate(1L, (a, b) => a * b);
        var inner = first.Shape.Skip(axis + 1).Aggregate(1L, (a, b) => a * b);
        var data = Array.CreateInstance(first.Data.GetType().GetElementType()!, checked((int)shape.Aggregate(1L, (a, b) => a * b)));
        long offset = 0;
        for (long o = 0; o < outer; o++)
            foreach (var p in parts)
            {
                var length = p.Shape[axis] * inner;
                Array.Copy(p.Data, o * length, data, offset, length);
                offset += length;
            }
        return new NdArray(first.Name, shape, first.ElementType, data);
    }

    /// <summary>Same shape, type and elements.</summary>
    public bool SameAs(NdArray other) =>
        ElementType == other.ElementType && Shape.SequenceEqual(other.Shape) && Data.Length == other.Data.Length
        && Enumerable.Range(0, Data.Length).All(i => Equals(Data.GetValue(i), other.Data.GetValue(i)));

    /// <summary>The elements as float (converted when stored otherwise).</summary>
    public float[] ToFloats() => Data switch
    {
        float[] f => f,
        double[] d => Array.ConvertAll(d, x => (float)x),
        Half[] h => Array.ConvertAll(h, x => (float)x),
        sbyte[] a => Array.ConvertAll(a, x => (float)x),
        byte[] a => Array.ConvertAll(a, x => (float)x),
        short[] a => Array.ConvertAll(a, x => (float)x),
        ushort[] a => Array.ConvertAll(a, x => (float)x),
        int[] a => Array.ConvertAll(a, x => (float)x),
        uint[] a => Array.ConvertAll(a, x => (float)x),
        long[] a => Array.ConvertAll(a, x => (float)x),
        ulong[] a => Array.ConvertAll(a, x => (float)x),
        bool[] a => Array.ConvertAll(a, x => x ? 1f : 0f),
        _ => throw new InvalidOperationException(),
    };

    /// <summary>The elements of an integer array as int64 (labels).</summary>
    public long[] ToInt64s() => Data switch
    {
        long[] l => l,
        sbyte[] a => Array.ConvertAll(a, x => (long)x),
        byte[] a => Array.ConvertAll(a, x => (long)x),
        short[] a => Array.ConvertAll(a, x => (long)x),
        ushort[] a => Array.ConvertAll(a, x => (long)x),
        int[] a => Array.ConvertAll(a, x => (long)x),
        uint[] a => Array.ConvertAll(a, x => (long)x),
        ulong[] a => Array.ConvertAll(a, x => (long)x),
        _ => throw new InvalidOperationException($"'{Name}' holds {TypeName(ElementType)}, not integers"),
    };

    /// <summary>Builds an array from little-endian bytes.</summary>
    public static NdArray FromBytes(string name, long[] shape, ArrayElementType type, ReadOnlySpan<byte> bytes)
    {
        var count = checked((int)shape.Aggregate(1L, (a, b) => checked(a * b)));
        Array data = type switch
        {
            ArrayElementType.Float32 => MemoryMarshal.Cast<byte, float>(bytes).ToArray(),
            ArrayElementType.Float64 => MemoryMarshal.Cast<byte, double>(bytes).ToArray(),
            ArrayElementType.Float16 => MemoryMarshal.Cast<byte, Half>(bytes).ToArray(),
            ArrayElementType.Int8 => MemoryMarshal.Cast<byte, sbyte>(bytes).ToArray(),
            ArrayElementType.UInt8 => bytes.ToArray(),
            ArrayElementType.Int16 => MemoryMarshal.Cast<byte, short>(bytes).ToArray(),
            ArrayElementType.UInt16 => MemoryMarshal.Cast<byte, ushort>(bytes).ToArray(),
            ArrayElementType.Int32 => MemoryMarshal.Cast<byte, int>(bytes).ToArray(),
            ArrayElementType.UInt32 => MemoryMarshal.Cast<byte, uint>(bytes).ToArray(),
            ArrayElementType.Int64 => MemoryMarshal.Cast<byte, long>(bytes).ToArray(),
            ArrayElementType.UInt64 => MemoryMarshal.Cast<byte, ulong>(bytes).ToArray(),
            ArrayElementType.Bool => bytes.ToArray().Select(b => b != 0).ToArray(),
            _ => throw new InvalidOperationException(),
        };
        if (data.Length != count) throw new InvalidDataException($"'{name}': {bytes.Length} bytes for shape [{string.Join(",", shape)}] of {TypeName(type)}");
        return new NdArray(name, shape, type, data);
    }
}
