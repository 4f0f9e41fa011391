using ModelCompression.Calibration;
using ModelCompression.Numerics;
namespace ModelCompression.Pruning;

/// <summary>Ridge-regularized least squares from accumulated moments: the A (and c) minimizing ‖Y − A·x − c‖² + λ‖A − A₀‖².</summary>
internal static class LeastSquares
{
    /// <summary>
    /// Solves the normal equations (XᵀX + λI)·Aᵀ = XᵀY + λ·A₀ᵀ by Cholesky, with λ = <paramref name="damping"/> × the
    /// mean diagonal of XᵀX: the fit stays near the prior A₀ (the layer's current weights) along directions the data
    /// barely excites, and returns A₀ itself when it already reproduces Y. With <paramref name="withBias"/> the ones
    /// column takes part (unregularized) and matrices are [out, features + 1] with c in the last column; otherwise
    /// [out, features]. Null when the system is singular.
    /// </summary>
    public static float[]? Fit(GramStatistics stats, bool withBias, double damping, float[] prior)
    {
        var f = stats.Features;
        var n = withBias ? f + 1 : f;
        var a = new double[n * n];
        var b = new double[n * stats.Outputs];
        var meanDiagonal = 0.0;
        for (var i = 0; i < f; i++) meanDiagonal += stats.Moments[i * (f + 1) + i];
        meanDiagonal = Math.Max(meanDiagonal / f, double.Epsilon);
        for (var i = 0; i < n; i++)
        {
            for (var j = 0; j < n; j++) a[i * n + j] = stats.Moments[i * (f + 1) + j];
            Array.Copy(stats.Cross, i * stats.Outputs, b, i * stats.Outputs, stats.Outputs);
            if (i == f) continue;
            var lambda = damping * meanDiagonal;
            a[i * n + i] += lambda;
            for (var o = 0; o < stats.Outputs; o++) b[i * stats.Outputs + o] += lambda * prior[o * n + i];
        }
        var x = DenseMath.SolveSpd(a, n, b, stats.Outputs, overwrite: true);
        if (x is null) return null;
        var result = new float[stats.Outputs * n];
        for (var i = 0; i < n; i++)
            for (var o = 0; o < stats.Outputs; o++)
                result[o * n + i] = (float)x[i * stats.Outputs + o];
        return result;
    }
}
