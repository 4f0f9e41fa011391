namespace ModelCompression.Calibration;

/// <summary>
/// A histogram of |x| over [0, <see cref="UpperEdge"/>) with a fixed number of bins, built batch by batch. The
/// upper edge is a power of two strictly above every value seen; when a batch holds a larger value the edge
/// doubles and adjacent bin pairs merge. Because edges only ever double, re-binning is exact: the result equals a
/// histogram built in one go over all the data with the final edge.
/// </summary>
public sealed class StreamingHistogram
{
    private readonly long[] _counts;

    /// <param name="bins">Bin count, a power of two (so bin widths are exact binary fractions of the edge).</param>
    /// <param name="upperEdge">Initial edge: 0 (chosen from the first non-zero value) or a power of two.</param>
    public StreamingHistogram(int bins, double upperEdge = 0)
    {
        if (bins < 2 || (bins & (bins - 1)) != 0) throw new ArgumentOutOfRangeException(nameof(bins), bins, "a power of two >= 2");
        if (upperEdge < 0 || (upperEdge > 0 && upperEdge != NextPowerOfTwoAbove(upperEdge / 2)))
            throw new ArgumentOutOfRangeException(nameof(upperEdge), upperEdge, "0 or a power of two");
        _counts = new long[bins];
        UpperEdge = upperEdge;
    }

    public int Bins => _counts.Length;
    /// <summary>Exclusive upper bound of the last bin (0 while every value seen was 0).</summary>
    public double UpperEdge { get; private set; }
    public double BinWidth => UpperEdge / Bins;
    public long Total { get; private set; }
    public ReadOnlySpan<long> Counts => _counts;

    /// <summary>Adds |v| for every finite value.</summary>
    public void Add(ReadOnlySpan<float> values)
    {
        var (min, max) = ActivationCalibrator.FiniteMinMax(values);
        Add(values, ActivationCalibrator.LargestMagnitude(min, max));
    }

    /// <summary>Adds |v| for every finite value, given the largest finite |v| of the batch (already known to calibrators).</summary>
    public void Add(ReadOnlySpan<float> values, float largest)
    {
        if (largest >= UpperEdge && largest > 0) Grow(largest);

        // Multiplying by Bins/UpperEdge (a power of two) is exact, so a bin index never depends on when it was added.
        var perUnit = UpperEdge > 0 ? Bins / UpperEdge : 0;
        long added = 0;
        foreach (var v in values)
        {
            if (!float.IsFinite(v)) continue;
            _counts[(int)(Math.Abs((double)v) * perUnit)]++;
            added++;
        }
        Total += added;
    }

    /// <summary>The upper edge of the first bin at which the cumulative count reaches <paramref name="fraction"/> of the total.</summary>
    public double Quantile(double fraction)
    {
        var target = fraction * Total;
        long cumulative = 0;
        for (var i = 0; i < Bins; i++)
        {
            cumulative += _counts[i];
            if (cumulative >= target && cumulative > 0) return (i + 1) * BinWidth;
        }
        return UpperEdge;
    }

    private void Grow(double largest)
    {
        if (UpperEdge == 0)
        {
            UpperEdge = NextPowerOfTwoAbove(largest); // only zeros so far: they stay in bin 0
            return;
        }
        while (UpperEdge <= largest)
        {
            for (var i = 0; i < Bins / 2; i++) _counts[i] = _counts[2 * i] + _counts[2 * i + 1];
            Array.Clear(_counts, Bins / 2, Bins / 2);
            UpperEdge *= 2;
        }
    }

    /// <summary>The smallest power of two strictly greater than <paramref name="value"/> (&gt; 0).</summary>
    internal static double NextPowerOfTwoAbove(double value) => Math.ScaleB(1.0, Math.ILogB(value) + 1);
}
