using ModelCompression.Numerics;

namespace ModelCompression.Calibration;

/// <summary>
/// Second moments of a layer's input X (one row per output position: im2col patches for Conv, rows for Gemm/MatMul)
/// over the calibration data, accumulated in double, with a column of ones appended: <see cref="Moments"/> is
/// [[XᵀX, Xᵀ1], [1ᵀX, n]]. Feature j of a Conv input is (channel, ky, kx) in the order of the weight's flattened
/// [in] axis, so the XᵀX block is the layer's Hessian H in its own layout.
/// </summary>
internal sealed class GramStatistics(int features, int outputs)
{
    /// <summary>Columns of X (without the ones column).</summary>
    public int Features { get; } = features;
    public int Outputs { get; } = outputs;
    /// <summary>(Features + 1)², row-major; the last row and column hold the sums of X and the row count.</summary>
    public double[] Moments { get; } = new double[(features + 1) * (features + 1)];
    /// <summary>[XᵀY; 1ᵀY] with the target Y, (Features + 1) × Outputs, row-major (empty without a target).</summary>
    public double[] Cross { get; } = new double[(features + 1) * outputs];
    /// <summary>‖Y‖² summed over rows and outputs.</summary>
    public double TargetSquaredNorm { get; set; }
    public long Rows => (long)Math.Round(Moments[^1]);

    /// <summary>[rows, f] weights and an optional bias as the [rows, f + 1] layout <see cref="RelativeError"/> reads (zero bias when absent).</summary>
    public static float[] Augment(float[] weights, float[]? bias, int rows, int f)
    {
        var result = new float[rows * (f + 1)];
        for (var r = 0; r < rows; r++)
        {
            weights.AsSpan(r * f, f).CopyTo(result.AsSpan(r * (f + 1), f));
            result[r * (f + 1) + f] = bias?[r] ?? 0;
        }
        return result;
    }

    /// <summary>‖Y − (A·x + c)‖ / ‖Y‖ over the calibration rows for A|c as [Outputs, Features + 1] (c last), from the moments alone.</summary>
    public double RelativeError(float[] affine)
    {
        var u = Features + 1;
        var cross = 0.0;
        for (var i = 0; i < u; i++)
        {
            var row = Cross.AsSpan(i * Outputs, Outputs);
            for (var o = 0; o < Outputs; o++) cross += affine[o * u + i] * row[o];
        }
        var quadratic = DenseMath.QuadraticSums(Moments, u, Outputs, 1, (o, _, v) =>
        {
            for (var j = 0; j < u; j++) v[j] = affine[o * u + j];
        })[0];
        return TargetSquaredNorm > 0 ? Math.Sqrt(Math.Max(0, TargetSquaredNorm - 2 * cross + quadratic) / TargetSquaredNorm) : 0;
    }

    /// <summary>The statistics of the columns <paramref name="features"/> of X only (the ones column stays last).</summary>
    public GramStatistics Select(IReadOnlyList<int> features)
    {
        var sub = new GramStatistics(features.Count, Outputs) { TargetSquaredNorm = TargetSquaredNorm };
        var index = features.Append(Features).ToArray();
        var n = index.Length;
        for (var i = 0; i < n; i++)
        {
            for (var j = 0; j < n; j++) sub.Moments[i * n + j] = Moments[index[i] * (Features + 1) + index[j]];
            Array.Copy(Cross, index[i] * Outputs, sub.Cross, i * Outputs, Outputs);
        }
        return sub;
    }

    /// <summary>The XᵀX block as a Features × Features row-major copy.</summary>
    public double[] Hessian()
    {
        var h = new double[Features * Features];
        for (var i = 0; i < Features; i++) Moments.AsSpan(i * (Features + 1), Features).CopyTo(h.AsSpan(i * Features, Features));
        return h;
    }
}
