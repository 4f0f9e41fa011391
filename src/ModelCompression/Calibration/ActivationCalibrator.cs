using System.Numerics;
using System.Runtime.InteropServices;

namespace ModelCompression.Calibration;


/// <summary>How activation ranges are chosen from calibration data.</summary>
public enum CalibrationMethod { MinMax, Percentile, Entropy }

/// <summary>The float interval an activation tensor is quantized over.</summary>
public readonly record struct ActivationRange(float Min, float Max)
{
    public bool IsNonNegative => Min >= 0;
}

/// <summary>
/// Chooses the quantization range of one activation tensor from calibration data. Every calibrator has the same
/// lifecycle: <see cref="Collect"/> once per batch (keeping only running statistics, so memory does not grow with
/// the data), then <see cref="ComputeRange"/>.
/// </summary>
public abstract class ActivationCalibrator
{
    private float _min = float.PositiveInfinity;
    private float _max = float.NegativeInfinity;

    /// <summary>Smallest and largest value seen so far (what min/max calibration returns).</summary>
    public ActivationRange ObservedRange => _min <= _max ? new ActivationRange(_min, _max) : new ActivationRange(0, 0);

    /// <summary>Values seen so far.</summary>
    public long Count { get; private set; }

    public void Collect(ReadOnlySpan<float> values)
    {
        if (values.IsEmpty) return;
        var (min, max) = FiniteMinMax(values);
        _min = Math.Min(_min, min);
        _max = Math.Max(_max, max);
        Count += values.Length;
        CollectDistribution(values, LargestMagnitude(min, max));
    }

    /// <summary>max |v| from a batch's finite minimum and maximum; 0 when the batch had no finite value.</summary>
    internal static float LargestMagnitude(float min, float max) => min <= max ? Math.Max(Math.Abs(min), Math.Abs(max)) : 0f;

    /// <summary>
    /// Minimum and maximum of the finite values (+∞, −∞ when there is none; a stray inf/NaN must not blow a range up). Vectorized: this runs
    /// over every calibration activation, millions of values per batch.
    /// </summary>
    internal static (float Min, float Max) FiniteMinMax(ReadOnlySpan<float> values)
    {
        var i = 0;
        float min = float.PositiveInfinity, max = float.NegativeInfinity;
        if (Vector.IsHardwareAccelerated && values.Length >= 2 * Vector<float>.Count)
        {
            var vectors = MemoryMarshal.Cast<float, Vector<float>>(values);
            Vector<float> vmin = vectors[0], vmax = vectors[0];
            foreach (var v in vectors[1..])
            {
                vmin = Vector.Min(vmin, v);
                vmax = Vector.Max(vmax, v);
            }
            for (var k = 0; k < Vector<float>.Count; k++)
            {
                min = Math.Min(min, vmin[k]);
                max = Math.Max(max, vmax[k]);
            }
            i = vectors.Length * Vector<float>.Count;
            // NaN and ±inf poison the vector result: redo the batch the careful way (rare).
            if (!float.IsFinite(min) || !float.IsFinite(max)) { i = 0; min = float.PositiveInfinity; max = float.NegativeInfinity; }
        }
        for (; i < values.Length; i++)
        {
            var v = values[i];
            if (!float.IsFinite(v)) continue;
            if (v < min) min = v;
            if (v > max) max = v;
        }
        return (min, max);
    }

    /// <summary>The range to quantize over, within <see cref="ObservedRange"/>; (0, 0) when nothing was collected.</summary>
    public abstract ActivationRange ComputeRange();

    /// <summary>Hook for calibrators that keep more than the running min/max (<paramref name="largestMagnitude"/>: max |v| of this batch).</summary>
    protected virtual void CollectDistribution(ReadOnlySpan<float> values, float largestMagnitude) { }

    public static ActivationCalibrator Create(CalibrationMethod method, double percentile) => method switch
    {
        CalibrationMethod.MinMax => new MinMaxCalibrator(),
        CalibrationMethod.Percentile => new PercentileCalibrator(percentile),
        CalibrationMethod.Entropy => new EntropyCalibrator(),
        _ => throw new ArgumentOutOfRangeException(nameof(method), method, null),
    };
}

/// <summary>The observed minimum and maximum: no value is clipped, outliers widen the step for everyone.</summary>
public sealed class MinMaxCalibrator : ActivationCalibrator
{
    public override ActivationRange ComputeRange() => ObservedRange;
}

/// <summary>Base of the calibrators that look at the distribution of |x| through a <see cref="StreamingHistogram"/>.</summary>
public abstract class HistogramCalibrator : ActivationCalibrator
{
    public const int DefaultBins = 2048;

    public StreamingHistogram Histogram { get; } = new(DefaultBins);

    protected override void CollectDistribution(ReadOnlySpan<float> values, float largestMagnitude) => Histogram.Add(values, largestMagnitude);

    public override ActivationRange ComputeRange()
    {
        var observed = ObservedRange;
        if (Histogram.Total == 0 || Histogram.UpperEdge == 0) return observed;
        var threshold = (float)ChooseThreshold(observed);
        // The threshold bounds |x|: clip both sides to it, but never widen the observed range.
        return new ActivationRange(Math.Max(observed.Min, -threshold), Math.Min(observed.Max, threshold));
    }

    /// <summary>The clipping threshold for |x|, in (0, UpperEdge].</summary>
    protected abstract double ChooseThreshold(ActivationRange observed);
}

/// <summary>Clips |x| at a percentile of its distribution (e.g. 99.999 %), so rare outliers do not set the step size.</summary>
public sealed class PercentileCalibrator(double percentile) : HistogramCalibrator
{
    public double Percentile { get; } = percentile is > 0 and <= 100 ? percentile : throw new ArgumentOutOfRangeException(nameof(percentile));

    protected override double ChooseThreshold(ActivationRange observed) => Histogram.Quantile(Percentile / 100);
}

/// <summary>
/// Entropy calibration (TensorRT's and ONNX Runtime's "entropy" method): of all clipping thresholds, the one whose
/// quantized distribution of |x| is closest to the original in Kullback–Leibler divergence.
/// </summary>
public sealed class EntropyCalibrator : HistogramCalibrator
{
    protected override double ChooseThreshold(ActivationRange observed)
    {
        // uint8 activations: a non-negative tensor gets all 256 levels for [0, t]; a signed one about half per side.
        var levels = observed.IsNonNegative ? 256 : 128;
        return Histogram.BinWidth * KlDivergence.BestThresholdBins(Histogram.Counts, levels);
    }
}
