using ModelCompression.Calibration;

namespace ModelCompression.Quantization;

/// <summary>uint8 quantization of an activation tensor: x ≈ (q − ZeroPoint)·Scale, q ∈ [0, 255].</summary>
public readonly record struct ActivationQuantization(float Scale, byte ZeroPoint)
{
    /// <summary>
    /// Asymmetric parameters covering <paramref name="range"/> widened to include 0 (so 0 is exact: padding and
    /// ReLU zeros stay zero). A non-negative range gets zero point 0, which makes QuantizeLinear clamp like a ReLU.
    /// </summary>
    public static ActivationQuantization FromRange(ActivationRange range)
    {
        var min = Math.Min(range.Min, 0f);
        var max = Math.Max(range.Max, 0f);
        var scale = (max - min) / 255f;
        if (!(scale > 0) || !float.IsFinite(scale)) return new ActivationQuantization(1f, 0); // constant 0: any scale is exact
        var zeroPoint = Math.Clamp(MathF.Round(-min / scale, MidpointRounding.ToEven), 0f, 255f);
        return new ActivationQuantization(scale, (byte)zeroPoint);
    }
}

/// <summary>A weight matrix in symmetric per-channel int8: W[o, i] ≈ Values[o, i]·Scales[o].</summary>
public sealed record QuantizedWeight(sbyte[] Values, float[] Scales, double RelativeError);

/// <summary>The arithmetic of int8 quantization: weights per output channel, biases in int32.</summary>
public static class Int8Quantizer
{
    /// <summary>Largest magnitude of a quantized weight: [-127, 127] keeps the grid symmetric around 0.</summary>
    public const int WeightLimit = 127;

    /// <summary>Quantizes a row-major [out, in] matrix per row (output channel); also returns ‖W − Ŵ‖/‖W‖.</summary>
    public static QuantizedWeight QuantizePerChannel(ReadOnlySpan<float> outIn, int outFeatures, int inFeatures)
    {
        if (outIn.Length != (long)outFeatures * inFeatures) throw new ArgumentException($"{outIn.Length} values for [{outFeatures}, {inFeatures}]");
        var values = new sbyte[outIn.Length];
        var scales = new float[outFeatures];
        double errorSquared = 0, normSquared = 0;
        for (var o = 0; o < outFeatures; o++)
        {
            var row = outIn.Slice(o * inFeatures, inFeatures);
            var absMax = 0f;
            foreach (var w in row) absMax = Math.Max(absMax, Math.Abs(w));
            var scale = absMax > 0 ? OnHalfGrid(absMax / WeightLimit) : 1f; // an all-zero channel quantizes exactly with any scale
            scales[o] = scale;
            for (var i = 0; i < inFeatures; i++)
            {
                var q = (sbyte)Math.Clamp(MathF.Round(row[i] / scale, MidpointRounding.ToEven), -WeightLimit, WeightLimit);
                values[o * inFeatures + i] = q;
                double error = row[i] - q * scale;
                errorSquared += error * error;
                normSquared += (double)row[i] * row[i];
            }
        }
        return new QuantizedWeight(values, scales, normSquared > 0 ? Math.Sqrt(errorSquared / normSquared) : 0);
    }

    /// <summary>
    /// <paramref name="scale"/> rounded up to the nearest float16 value when that costs at most 2⁻¹⁰ of it (any normal
    /// float16): compact storage can then keep the scales in half the bytes without loss, and rounding up keeps every
    /// weight within ±<see cref="WeightLimit"/>. Scales outside that range stay as they are.
    /// </summary>
    public static float OnHalfGrid(float scale)
    {
        var half = (Half)scale;
        if ((float)half < scale) half = Half.BitIncrement(half);
        return Half.IsFinite(half) && (float)half <= scale * (1 + 1f / 1024) ? (float)half : scale;
    }

    /// <summary>The scale of a quantized bias: input scale × weight scale per channel (what QLinearConv/QGemm assume).</summary>
    public static float[] BiasScales(float inputScale, ReadOnlySpan<float> weightScales)
    {
        var scales = new float[weightScales.Length];
        for (var o = 0; o < scales.Length; o++) scales[o] = inputScale * weightScales[o];
        return scales;
    }

    /// <summary>Bias in int32 at <paramref name="scales"/> (saturating; a bias that large would be a broken model anyway).</summary>
    public static int[] QuantizeBias(ReadOnlySpan<float> bias, ReadOnlySpan<float> scales)
    {
        var q = new int[bias.Length];
        for (var o = 0; o < q.Length; o++)
            q[o] = (int)Math.Clamp(Math.Round((double)bias[o] / scales[o], MidpointRounding.ToEven), int.MinValue, int.MaxValue);
        return q;
    }
}
