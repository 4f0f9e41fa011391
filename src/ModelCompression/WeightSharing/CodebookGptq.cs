using ModelCompression.Numerics;

namespace ModelCompression.WeightSharing;

/// <summary>
/// Data-aware codebook assignment, GPTQ's error compensation applied to a codebook (as GPTVQ does in one dimension):
/// with H the layer's input second moments on calibration data and U the upper Cholesky factor of the dampened H⁻¹,
/// the columns (inputs) are assigned in order, each kept weight to its nearest codebook entry, and each column's
/// error is spread over the columns not yet assigned (lazy batch updates). Pruned weights (exact zeros, entry 0 with
/// <c>keepZero</c>) are assigned 0 whatever the updates moved them to, and their error is compensated too, so the
/// sparsity pattern stays exactly as it was. A last column that is the layer's bias (against an input of ones) is
/// never assigned: it only absorbs the compensation. Afterwards the entries are refitted once to the assignment:
/// the k values minimizing the layer's output error ‖(W − Ŵ)·x‖² on the calibration data (a k × k linear system),
/// with the bias then set to what best absorbs the remaining mean shift, b + (W − Ŵ)·E[x] — bias correction.
/// </summary>
internal static class CodebookGptq
{
    /// <summary>Columns per lazy batch update (GPTQ's 128).</summary>
    private const int LazyBatch = 128;

    /// <summary>
    /// The assigned weights (<see cref="Weights"/>, [rows, cols] like the input, the bias column updated), the indices
    /// into <see cref="Values"/> of the first <c>features</c> columns ([rows, features]), and the dampening used.
    /// </summary>
    public sealed record Result(float[] Weights, byte[] Indices, float[] Values, double Damping);

    /// <param name="weights">[rows = outputs, cols] row-major; with <paramref name="cols"/> = features + 1 the last column is the bias.</param>
    /// <param name="moments">cols × cols second moments of the input (with a ones column last when the bias is included).</param>
    /// <param name="initial">The k-means codebook of the first <paramref name="features"/> columns (its indices in [rows, features] order).</param>
    /// <param name="keepZero">Entry 0 is the fixed zero of pruned weights: they stay zero, no kept weight gets it.</param>
    /// <returns>Null when H stays singular even with 10⁵ times the dampening.</returns>
    public static Result? Assign(float[] weights, int rows, int cols, int features, double[] moments, SharedWeights initial, bool keepZero, double damping)
    {
        var w = Array.ConvertAll(weights, x => (double)x);
        var h = (double[])moments.Clone();
        // An input that is zero on every calibration sample has no curvature: any value serves there.
        for (var i = 0; i < cols; i++) if (h[i * cols + i] == 0) h[i * cols + i] = 1;
        if (DenseMath.DampedInverseFactor(h, cols, damping) is not (var u, var damp, _)) return null;

        var offset = keepZero ? 1 : 0;
        var values = initial.Values;
        var pruned = new bool[rows * features];
        if (keepZero) for (var i = 0; i < pruned.Length; i++) pruned[i] = initial.Indices[i] == 0;
        var indices = Sweep(w, rows, cols, features, u, values, offset, pruned, initial.Lambda, initial.Bits);

        // Refit the entries to the assignment, then the bias.
        if (Refit(weights, rows, cols, features, moments, indices, values, offset) is { } refitted)
        {
            values = refitted;
            for (var r = 0; r < rows; r++)
                for (var c = 0; c < features; c++) w[r * cols + c] = values[indices[r * features + c]];
            if (cols > features)
            {
                // b̂ = b + (W − Ŵ)·μ, μ = E[x] = Xᵀ1 / n: the best bias for Ŵ (it cancels the mean output shift).
                var n = moments[features * cols + features];
                for (var r = 0; r < rows; r++)
                {
                    double shift = 0;
                    for (var c = 0; c < features; c++) shift += (weights[r * cols + c] - w[r * cols + c]) * moments[c * cols + features];
                    w[r * cols + features] = weights[r * cols + features] + (n > 0 ? shift / n : 0);
                }
            }
        }
        return new Result(Array.ConvertAll(w, x => (float)x), indices, values, damp);
    }

    /// <summary>The GPTQ sweep: assigns every weight of the first <paramref name="features"/> columns in place, returns the indices.</summary>
    private static byte[] Sweep(double[] w, int rows, int cols, int features, double[] u, float[] values, int offset, bool[] pruned, double lambda, double[]? bits)
    {
        var entries = values.Length - offset;
        var midpoints = new double[Math.Max(0, entries - 1)];
        for (var j = 0; j < midpoints.Length; j++) midpoints[j] = ((double)values[offset + j] + values[offset + j + 1]) / 2;
        var indices = new byte[rows * features];
        var errors = new double[rows * LazyBatch];
        for (var i1 = 0; i1 < features; i1 += LazyBatch)
        {
            var i2 = Math.Min(i1 + LazyBatch, cols);
            var last = Math.Min(i2, features);
            for (var col = i1; col < last; col++)
            {
                var d = u[col * cols + col];
                var uRow = u.AsSpan(col * cols + col + 1, i2 - col - 1);
                for (var r = 0; r < rows; r++)
                {
                    ref var x = ref w[r * cols + col];
                    int index;
                    if (pruned[r * features + col]) index = 0;
                    else if (entries == 0) index = 0;
                    else index = offset + (bits is null ? ScalarKMeans.Cluster(midpoints, x) : ScalarKMeans.Cheapest(values, bits, lambda, x, offset));
                    indices[r * features + col] = (byte)index;
                    var q = offset == 1 && index == 0 ? 0.0 : values[index];
                    var err = (x - q) / d;
                    x = q;
                    errors[r * LazyBatch + col - i1] = err;
                    if (err != 0) DenseMath.Axpy(-err, uRow, w.AsSpan(r * cols + col + 1, i2 - col - 1));
                }
            }
            if (i2 == cols) continue;
            DenseMath.ForRows(rows, (long)(last - i1) * (cols - i2), r =>
            {
                var rest = w.AsSpan(r * cols + i2, cols - i2);
                for (var c = i1; c < last; c++)
                {
                    var err = errors[r * LazyBatch + c - i1];
                    if (err != 0) DenseMath.Axpy(-err, u.AsSpan(c * cols + i2, cols - i2), rest);
                }
            });
        }
        return indices;
    }

    /// <summary>
    /// The entries (entry 0 stays 0 with an offset of 1) minimizing Σ_rows (w − ŵ)ᵀ·C·(w − ŵ) for the fixed
    /// assignment, C the input covariance when a bias absorbs the mean (else the second moments): with E_r the
    /// one-hot [features, k] matrix of row r, the normal equations are (Σ E_rᵀ C E_r)·v = Σ E_rᵀ C w_r.
    /// Null when the system is singular; entries no weight uses keep their value.
    /// </summary>
    private static float[]? Refit(float[] weights, int rows, int cols, int features, double[] moments, byte[] indices, float[] values, int offset)
    {
        var f = features;
        var c = new double[f * f];
        var n = cols > f ? moments[f * cols + f] : 0;
        for (var i = 0; i < f; i++)
            for (var j = 0; j < f; j++)
                c[i * f + j] = moments[i * cols + j] - (n > 0 ? moments[i * cols + f] * moments[j * cols + f] / n : 0);
        var k = values.Length;
        var a = new double[k * k];
        var b = new double[k];
        var g = new double[k * f];
        var wr = new double[f];
        for (var r = 0; r < rows; r++)
        {
            // G[j] = C·(one-hot column j of E_r): the sum of C's rows at the inputs assigned entry j.
            Array.Clear(g);
            for (var i = 0; i < f; i++)
            {
                var index = indices[r * f + i];
                if (index < offset) continue;
                DenseMath.Axpy(1, c.AsSpan(i * f, f), g.AsSpan(index * f, f));
            }
            for (var i = 0; i < f; i++) wr[i] = weights[r * cols + i];
            for (var j = offset; j < k; j++)
            {
                var gj = g.AsSpan(j * f, f);
                b[j] += DenseMath.Dot(gj, wr);
                for (var i = 0; i < f; i++)
                {
                    var index = indices[r * f + i];
                    if (index >= offset) a[index * k + j] += gj[i];
                }
            }
        }
        // Solve over the entries in use only.
        var used = Enumerable.Range(offset, k - offset).Where(j => a[j * k + j] > 0).ToArray();
        if (used.Length == 0) return null;
        var m = used.Length;
        var sub = new double[m * m];
        var rhs = new double[m];
        for (var p = 0; p < m; p++)
        {
            rhs[p] = b[used[p]];
            for (var q = 0; q < m; q++) sub[p * m + q] = a[used[p] * k + used[q]];
        }
        if (DenseMath.SolveSpd(sub, m, rhs, 1) is not { } solution || solution.Any(x => !double.IsFinite(x))) return null;
        var result = (float[])values.Clone();
        for (var p = 0; p < m; p++) result[used[p]] = (float)solution[p];
        return result;
    }

    /// <summary>‖(W − Ŵ)·x‖ / ‖W·x‖ over the calibration rows from the moments alone ([rows, cols] like them: a bias column counts).</summary>
    public static double OutputError(float[] w, float[] assigned, int rows, int cols, double[] moments) =>
        DenseMath.RelativeOutputError(w, assigned, rows, cols, moments);
}
