using System.Buffers.Binary;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Quantization;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.HalfPrecision;

/// <summary>The two 16-bit float formats: their ranges, and float32 values rounded (to nearest even) into them.</summary>
public static class HalfFormats
{
    /// <summary>Largest finite float16; anything above becomes infinity.</summary>
    public const double Float16Max = 65504;
    /// <summary>Smallest positive float16 (subnormal, 2^-24): a value under half of it becomes zero.</summary>
    public const double Float16Tiny = 5.960464477539063e-8;
    /// <summary>Largest finite bfloat16 (float32's exponent range, 8 bits of mantissa).</summary>
    public const double BFloat16Max = 3.3895313892515355e38;
    /// <summary>Smallest positive bfloat16 (subnormal, 2^-133).</summary>
    public const double BFloat16Tiny = 9.183549615799121e-41;

    public static DataType? TypeOf(QuantizeMode mode) => mode switch
    {
        QuantizeMode.Float16 => DataType.Float16,
        QuantizeMode.BFloat16 => DataType.Bfloat16,
        _ => null,
    };

    public static string Name(DataType type) => type switch { DataType.Float16 => "float16", DataType.Bfloat16 => "bfloat16", _ => "float32" };
    public static double Max(DataType type) => type == DataType.Float16 ? Float16Max : BFloat16Max;
    public static double Tiny(DataType type) => type == DataType.Float16 ? Float16Tiny : BFloat16Tiny;

    /// <summary>float32 → bfloat16 bits, rounded to nearest even; NaN stays a (quiet) NaN.</summary>
    public static ushort ToBFloat16(float value)
    {
        var bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x40);
        var rounding = 0x7FFFu + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }

    public static float FromBFloat16(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>A value as the 16-bit format stores it, read back as float32.</summary>
    public static float Round(float value, DataType type) => type == DataType.Float16 ? (float)(Half)value : FromBFloat16(ToBFloat16(value));

    /// <summary>The values in the 16-bit format as little-endian raw bytes.</summary>
    public static byte[] Encode(ReadOnlySpan<float> values, DataType type)
    {
        var bytes = new byte[values.Length * 2];
        for (var i = 0; i < values.Length; i++)
        {
            var bits = type == DataType.Float16 ? BitConverter.HalfToUInt16Bits((Half)values[i]) : ToBFloat16(values[i]);
            BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(2 * i), bits);
        }
        return bytes;
    }

    /// <summary>A float32 tensor (same name and shape) stored in the 16-bit format.</summary>
    public static TensorProto Convert(OnnxModel model, TensorProto tensor, DataType type)
    {
        var converted = new TensorProto { Name = tensor.Name, DataType = (int)type, RawData = Google.Protobuf.ByteString.CopyFrom(Encode(model.ReadFloats(tensor), type)) };
        converted.Dims.AddRange(tensor.Dims);
        return converted;
    }

    /// <summary>‖round(w) − w‖ / ‖w‖: what storing the values in the format changes.</summary>
    public static double RelativeError(ReadOnlySpan<float> values, DataType type)
    {
        double error = 0, norm = 0;
        foreach (var v in values)
        {
            var d = (double)Round(v, type) - v;
            error += d * d;
            norm += (double)v * v;
        }
        return norm > 0 ? Math.Sqrt(error / norm) : 0;
    }
}
