namespace ModelCompression.Calibration;

/// <summary>
/// The threshold search of entropy calibration (as in TensorRT and ONNX Runtime): for each candidate number of
/// histogram bins i, the reference distribution P is the first i bins with everything above folded into the last,
/// Q is those bins merged into <c>levels</c> quantization levels and spread back over their non-empty bins; the
/// candidate with the smallest KL(P‖Q) wins.
/// </summary>
internal static class KlDivergence
{
    private const double Epsilon = 1e-4;

    /// <summary>The number of leading bins to keep (the threshold is that many bin widths).</summary>
    public static int BestThresholdBins(ReadOnlySpan<long> counts, int levels)
    {
        // Exact zeros (half of a ReLU output) are represented exactly by the zero point; left in, their spike in
        // bin 0 dominates the divergence and pins the threshold wherever bin 0 stays a level of its own.
        var histogram = counts.ToArray();
        if (histogram.Length > 1) histogram[0] = histogram[1];
        var used = histogram.Length;
        while (used > 0 && histogram[used - 1] == 0) used--;
        if (used <= levels) return Math.Max(used, 1); // already fewer bins than levels: nothing to clip

        var suffix = new double[used + 1];
        for (var i = used - 1; i >= 0; i--) suffix[i] = suffix[i + 1] + histogram[i];
        var p = new double[used];
        var q = new double[used];
        var best = used;
        var bestDivergence = double.PositiveInfinity;
        for (var i = levels; i <= used; i++)
        {
            for (var j = 0; j < i; j++) p[j] = histogram[j];
            p[i - 1] += suffix[i]; // outliers are clipped to the threshold

            for (var level = 0; level < levels; level++)
            {
                var start = (int)((long)level * i / levels);
                var end = (int)((long)(level + 1) * i / levels);
                double total = 0;
                var nonEmpty = 0;
                for (var j = start; j < end; j++)
                {
                    total += histogram[j];
                    if (histogram[j] != 0) nonEmpty++;
                }
                for (var j = start; j < end; j++) q[j] = histogram[j] != 0 ? total / nonEmpty : 0;
            }

            var divergence = Divergence(p.AsSpan(0, i), q.AsSpan(0, i));
            if (divergence < bestDivergence)
            {
                bestDivergence = divergence;
                best = i;
            }
        }
        return best;
    }

    /// <summary>KL(P‖Q) of two distributions given as bin counts, smoothed so that empty bins of Q do not make it infinite.</summary>
    private static double Divergence(Span<double> p, Span<double> q)
    {
        if (!SmoothAndNormalize(p) || !SmoothAndNormalize(q)) return double.PositiveInfinity;
        double sum = 0;
        for (var j = 0; j < p.Length; j++) sum += p[j] * Math.Log(p[j] / q[j]);
        return sum;
    }

    /// <summary>
    /// Moves a tiny count (1e-4) into every empty bin, taken evenly from the others (ONNX Runtime's smoothing, on
    /// counts), then scales to sum 1. False when every bin is empty.
    /// </summary>
    private static bool SmoothAndNormalize(Span<double> counts)
    {
        var zeros = 0;
        foreach (var v in counts) if (v == 0) zeros++;
        var nonZeros = counts.Length - zeros;
        if (nonZeros == 0) return false;
        var taken = Epsilon * zeros / nonZeros;
        double total = 0;
        for (var j = 0; j < counts.Length; j++)
        {
            counts[j] = counts[j] == 0 ? Epsilon : counts[j] - taken;
            if (counts[j] <= 0) return false;
            total += counts[j];
        }
        for (var j = 0; j < counts.Length; j++) counts[j] /= total;
        return true;
    }
}
