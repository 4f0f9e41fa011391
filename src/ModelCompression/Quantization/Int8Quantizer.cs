using System.Numerics;
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
        var values = new sbyte[outIn.Length];
        var (scales, error) = QuantizeRows(outIn, outFeatures, inFeatures, values);
        return new QuantizedWeight(values, scales, error);
    }

    /// <summary>Rows per unit of parallel work: fixed (not derived from the core count), so sums add up in one order.</summary>
    private const int ChunkRows = 16;

    /// <summary>
    /// Quantizes a row-major [out, in] matrix per row into <paramref name="destination"/> (same layout); returns the
    /// scales and ‖W − Ŵ‖/‖W‖. Rows run in parallel, vectorized; the codes are those of the scalar definition
    /// (q = clamp(round_even(w / scale))), and the error sums are combined per fixed chunk in order (deterministic).
    /// </summary>
    public static (float[] Scales, double RelativeError) QuantizeRows(ReadOnlySpan<float> outIn, int outFeatures, int inFeatures, Span<sbyte> destination)
    {
        if (outIn.Length != (long)outFeatures * inFeatures) throw new ArgumentException($"{outIn.Length} values for [{outFeatures}, {inFeatures}]");
        if (destination.Length != outIn.Length) throw new ArgumentException($"{destination.Length} destination values for [{outFeatures}, {inFeatures}]");
        var scales = new float[outFeatures];
        var chunks = (outFeatures + ChunkRows - 1) / ChunkRows;
        var sums = new (double Error, double Norm)[chunks];
        unsafe
        {
            fixed (float* source = outIn)
            fixed (sbyte* target = destination)
            {
                var (src, dst) = ((nint)source, (nint)target);
                Parallel.For(0, chunks, chunk =>
                {
                    double error = 0, norm = 0;
                    for (var o = chunk * ChunkRows; o < Math.Min(outFeatures, (chunk + 1) * ChunkRows); o++)
                    {
                        var row = new ReadOnlySpan<float>((float*)src + (long)o * inFeatures, inFeatures);
                        var absMax = AbsMax(row);
                        var scale = absMax > 0 ? OnHalfGrid(absMax / WeightLimit) : 1f; // an all-zero channel quantizes exactly with any scale
                        scales[o] = scale;
                        var (e, n) = QuantizeSpan(row, new ReadOnlySpan<float>(), scale, new Span<sbyte>((sbyte*)dst + (long)o * inFeatures, inFeatures));
                        error += e;
                        norm += n;
                    }
                    sums[chunk] = (error, norm);
                });
            }
        }
        return (scales, Relative(sums));
    }

    /// <summary>
    /// Quantizes a row-major [in, out] matrix (MatMul's layout) per column (output channel) into
    /// <paramref name="destination"/> in the same [in, out] layout, without transposing it; returns the scales and
    /// ‖W − Ŵ‖/‖W‖. Same codes as <see cref="QuantizeRows"/> on the transpose.
    /// </summary>
    public static (float[] Scales, double RelativeError) QuantizeColumns(ReadOnlySpan<float> inOut, int outFeatures, int inFeatures, Span<sbyte> destination)
    {
        if (inOut.Length != (long)outFeatures * inFeatures) throw new ArgumentException($"{inOut.Length} values for [{inFeatures}, {outFeatures}]");
        if (destination.Length != inOut.Length) throw new ArgumentException($"{destination.Length} destination values for [{inFeatures}, {outFeatures}]");
        var chunks = (inFeatures + ChunkRows - 1) / ChunkRows;
        var maxima = new float[chunks][];
        var sums = new (double Error, double Norm)[chunks];
        var scales = new float[outFeatures];
        unsafe
        {
            fixed (float* source = inOut)
            fixed (sbyte* target = destination)
            {
                var (src, dst) = ((nint)source, (nint)target);
                // Column maxima per chunk of rows, then merged: a maximum does not depend on the order it is taken in.
                Parallel.For(0, chunks, chunk =>
                {
                    var max = new float[outFeatures];
                    for (var i = chunk * ChunkRows; i < Math.Min(inFeatures, (chunk + 1) * ChunkRows); i++)
                        AbsMaxInto(new ReadOnlySpan<float>((float*)src + (long)i * outFeatures, outFeatures), max);
                    maxima[chunk] = max;
                });
                for (var o = 0; o < outFeatures; o++)
                {
                    var absMax = 0f;
                    foreach (var m in maxima) absMax = Math.Max(absMax, m[o]);
                    scales[o] = absMax > 0 ? OnHalfGrid(absMax / WeightLimit) : 1f;
                }
                Parallel.For(0, chunks, chunk =>
                {
                    double error = 0, norm = 0;
                    for (var i = chunk * ChunkRows; i < Math.Min(inFeatures, (chunk + 1) * ChunkRows); i++)
                    {
                        var (e, n) = QuantizeSpan(new ReadOnlySpan<float>((float*)src + (long)i * outFeatures, outFeatures), scales, 0,
                            new Span<sbyte>((sbyte*)dst + (long)i * outFeatures, outFeatures));
                        error += e;
                        norm += n;
                    }
                    sums[chunk] = (error, norm);
                });
            }
        }
        return (scales, Relative(sums));
    }

    private static double Relative((double Error, double Norm)[] sums)
    {
        double error = 0, norm = 0;
        foreach (var (e, n) in sums) { error += e; norm += n; }
        return norm > 0 ? Math.Sqrt(error / norm) : 0;
    }

    private static float AbsMax(ReadOnlySpan<float> values)
    {
        var i = 0;
        var max = Vector<float>.Zero;
        for (; i <= values.Length - Vector<float>.Count; i += Vector<float>.Count)
            max = Vector.Max(max, Vector.Abs(new Vector<float>(values.Slice(i))));
        var result = 0f;
        for (var k = 0; k < Vector<float>.Count; k++) result = Math.Max(result, max[k]);
        for (; i < values.Length; i++) result = Math.Max(result, Math.Abs(values[i]));
        return result;
    }

    private static void AbsMaxInto(ReadOnlySpan<float> values, Span<float> max)
    {
        var i = 0;
        for (; i <= values.Length - Vector<float>.Count; i += Vector<float>.Count)
            Vector.Max(new Vector<float>(max.Slice(i)), Vector.Abs(new Vector<float>(values.Slice(i)))).CopyTo(max.Slice(i));
        for (; i < values.Length; i++) max[i] = Math.Max(max[i], Math.Abs(values[i]));
    }

    /// <summary>
    /// q = clamp(round_even(w / scale), ±127) for each element, with one <paramref name="scale"/> or one per element
    /// (<paramref name="scales"/>, when not empty); returns Σ(w − q·scale)² and Σw².
    /// </summary>
    private static (double Error, double Norm) QuantizeSpan(ReadOnlySpan<float> w, ReadOnlySpan<float> scales, float scale, Span<sbyte> q)
    {
        var perElement = !scales.IsEmpty;
        var width = Vector<float>.Count;
        var limit = new Vector<float>(WeightLimit);
        var errors = Vector<float>.Zero;
        var norms = Vector<float>.Zero;
        var single = new Vector<float>(scale);
        var i = 0;
        Span<int> codes = stackalloc int[Vector<int>.Count];
        for (; i <= w.Length - width; i += width)
        {
            var x = new Vector<float>(w.Slice(i));
            var s = perElement ? new Vector<float>(scales.Slice(i)) : single;
            var r = Vector.Min(Vector.Max(Vector.Round(x / s), -limit), limit);
            var e = x - r * s;
            errors += e * e;
            norms += x * x;
            Vector.ConvertToInt32(r).CopyTo(codes);
            for (var k = 0; k < width; k++) q[i + k] = (sbyte)codes[k];
        }
        double error = Vector.Sum(errors), norm = Vector.Sum(norms);
        for (; i < w.Length; i++)
        {
            var s = perElement ? scales[i] : scale;
            var r = Math.Clamp(MathF.Round(w[i] / s, MidpointRounding.ToEven), -WeightLimit, WeightLimit);
            q[i] = (sbyte)r;
            double e = w[i] - r * s;
            error += e * e;
            norm += (double)w[i] * w[i];
        }
        return (error, norm);
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
