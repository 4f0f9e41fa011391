using ModelCompression.Calibration;

namespace ModelCompression.LowBit;

/// <summary>
/// One layer's weights as a per-output-channel scale times a pattern of signs: <see cref="Codes"/> holds one code per
/// weight of the [out, in] matrix (binary: 0 = −1, 1 = +1; ternary: 0 = 0, 1 = +1, 2 = −1), <see cref="Scales"/> one α
/// per output.
/// </summary>
internal sealed record LowBitWeights(bool Ternary, int Rows, int Cols, byte[] Codes, float[] Scales)
{
    /// <summary>Sign of each code's value: −1, 0 or +1 (the table the decoder gathers from, by code).</summary>
    public static readonly float[] BinaryTable = [-1f, 1f];
    public static readonly float[] TernaryTable = [0f, 1f, -1f];

    public float[] Table => Ternary ? TernaryTable : BinaryTable;
    public int Bits => Ternary ? 2 : 1;

    /// <summary>α·sign as the dense [out, in] matrix the decoder rebuilds.</summary>
    public float[] Dense()
    {
        var table = Table;
        var w = new float[Codes.Length];
        for (var r = 0; r < Rows; r++)
            for (var c = 0; c < Cols; c++)
                w[r * Cols + c] = Scales[r] * table[Codes[r * Cols + c]];
        return w;
    }

    /// <summary>Zero weights (ternary codes 0, or a channel with α = 0).</summary>
    public long Zeros()
    {
        long zeros = 0;
        for (var r = 0; r < Rows; r++)
            for (var c = 0; c < Cols; c++)
                if (Scales[r] == 0 || Table[Codes[r * Cols + c]] == 0) zeros++;
        return zeros;
    }
}

/// <summary>
/// Binary (BinaryConnect / XNOR-Net's BWN, Rastegari et al. 2016) and ternary (TWN, Li &amp; Liu 2016) weights without
/// retraining. Binary: W ≈ α·sign(W) per output channel with α = mean |W| (the least-squares scale for fixed signs).
/// Ternary: Δ = 0.7·mean |W| per channel, weights with |w| &gt; Δ keep their sign, the rest become 0, and α = mean |w|
/// over the kept ones. With calibration data <see cref="FitScales"/> replaces each α by the one that best reproduces
/// the channel's output on the data.
/// </summary>
internal static class LowBitQuantizer
{
    public const double TernaryThreshold = 0.7;

    public static LowBitWeights Quantize(float[] w, int rows, int cols, bool ternary)
    {
        var codes = new byte[w.Length];
        var scales = new float[rows];
        for (var r = 0; r < rows; r++)
        {
            var row = w.AsSpan(r * cols, cols);
            double meanAbs = 0;
            foreach (var x in row) meanAbs += Math.Abs(x);
            meanAbs /= Math.Max(1, cols);
            var threshold = ternary ? TernaryThreshold * meanAbs : -1;
            double kept = 0;
            var count = 0;
            for (var c = 0; c < cols; c++)
            {
                var x = row[c];
                if (ternary && Math.Abs(x) <= threshold) continue; // code 0: zero
                codes[r * cols + c] = ternary ? (byte)(x > 0 ? 1 : 2) : (byte)(x >= 0 ? 1 : 0);
                kept += Math.Abs(x);
                count++;
            }
            scales[r] = count > 0 ? (float)(kept / count) : 0f;
        }
        return new LowBitWeights(ternary, rows, cols, codes, scales);
    }

    /// <summary>
    /// Scales (and, when <paramref name="bias"/> is given, the bias) refitted per output channel by least squares on
    /// the calibration statistics: for fixed signs s, min over α, b of ‖y − α·sᵀx − b‖², whose solution is
    /// α = ⟨y − b, Sx⟩ / ‖Sx‖² with y the channel's output in the model before the pass. A channel whose fit is not
    /// finite or not positive keeps its α. Returns the bias (null without one).
    /// </summary>
    public static float[]? FitScales(LowBitWeights q, GramStatistics stats, float[]? bias)
    {
        var f = q.Cols;
        var u = f + 1;
        var m = stats.Moments;
        var table = q.Table;
        var s = new double[f];
        var fitted = bias is null ? null : (float[])bias.Clone();
        for (var o = 0; o < q.Rows; o++)
        {
            for (var j = 0; j < f; j++) s[j] = table[q.Codes[o * f + j]];
            double shs = 0, sm = 0, sc = 0;
            for (var i = 0; i < f; i++)
            {
                if (s[i] == 0) continue;
                double row = 0;
                var mi = m.AsSpan(i * u, f);
                for (var j = 0; j < f; j++) if (s[j] != 0) row += mi[j] * s[j];
                shs += s[i] * row;
                sm += s[i] * m[i * u + f];
                sc += s[i] * stats.Cross[i * stats.Outputs + o];
            }
            if (shs <= 0) continue;
            double alpha, b = 0;
            if (fitted is null) alpha = sc / shs;
            else
            {
                // [sᵀHs, sᵀm; sᵀm, n]·[α; b] = [sᵀc; Σy]
                var n = m[f * u + f];
                var sumY = stats.Cross[f * stats.Outputs + o];
                var det = shs * n - sm * sm;
                if (det <= 1e-12 * shs * n) { alpha = sc / shs; b = fitted[o]; }
                else { alpha = (sc * n - sm * sumY) / det; b = (shs * sumY - sm * sc) / det; }
            }
            if (!double.IsFinite(alpha) || !double.IsFinite(b) || alpha <= 0) continue;
            q.Scales[o] = (float)alpha;
            if (fitted is not null) fitted[o] = (float)b;
        }
        return fitted;
    }
}
