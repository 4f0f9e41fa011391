using ModelCompression.Numerics;
using ModelCompression.Policy;

namespace ModelCompression.Pruning;

/// <summary>
/// One-shot Optimal Brain Surgeon pruning of one layer in the manner of SparseGPT (Frantar &amp; Alistarh, 2023):
/// with H = XᵀX of the layer's inputs (dampened) and U the upper Cholesky factor of H⁻¹, columns are processed in
/// blocks; in each block the mask is chosen by the OBS saliency w²/[U]²_jj over all rows (so the mask adapts to
/// the weights as they are updated), each pruned column's error is spread over the not-yet-processed columns of the
/// block through U, and the block's accumulated errors update the remaining columns at once (lazy batch update).
/// </summary>
internal static class SparseGptPruner
{
    /// <summary>The pruned weights, the dampening that made H positive definite, and whether the kept weights were
    /// refit by <see cref="RefitIterations"/> conjugate-gradient steps instead of the exact solve (a large layer).</summary>
    public sealed record Result(float[] Weights, double Damping, bool IterativeRefit);

    /// <summary>
    /// Multiply-adds the exact refit (Σ over rows of m³/3, m = a row's kept weights) may cost before the layer is
    /// refit iteratively instead: 2·10¹⁰ is seconds on one core and covers every layer of the fixtures (the MLP's
    /// 784-input layer at 2:4 costs 1·10¹⁰); a 1024 × 1024 layer at 50 % costs 4.6·10¹⁰ and a 4096-input one
    /// 2.9·10¹², hours of the whole pass.
    /// </summary>
    internal const double ExactRefitBudget = 2e10;

    /// <summary>Conjugate-gradient steps of the iterative refit: each costs m² per row, like one exact row's m³/3 at m = 48.</summary>
    internal const int RefitIterations = 16;

    /// <param name="weights">W as [rows = outputs, cols = inputs], row-major.</param>
    /// <param name="hessian">XᵀX of the inputs, cols × cols (not modified).</param>
    /// <param name="prunable">Only the first <paramref name="prunable"/> columns are pruned; later ones (a bias
    /// column, against an input of ones) only absorb the compensation.</param>
    /// <param name="pruneCount">Weights to set to zero (unstructured); ignored when <paramref name="pattern"/> is set.</param>
    /// <param name="exactRefitBudget">See <see cref="ExactRefitBudget"/>.</param>
    /// <returns>Null when H stays singular even with 10⁵ times the dampening (non-finite or degenerate activations).</returns>
    /// <param name="stride">Elements between rows of <paramref name="hessian"/> (default cols): the leading block of larger statistics is read in place.</param>
    public static Result? Prune(float[] weights, int rows, int cols, double[] hessian, int prunable, long pruneCount, NmPattern? pattern, double damping, int blockSize, double exactRefitBudget = ExactRefitBudget, int stride = 0)
    {
        if (stride == 0) stride = cols;
        var w = Array.ConvertAll(weights, x => (double)x);
        // An input that is zero on every calibration sample has no curvature: its weights cannot matter. The factor is
        // taken of H with a unit diagonal there; no weight of such an input is ever nonzero again, so the refit reads
        // H as it is, in place (no copy of H is held: 134 MB at 4096 inputs).
        var dead = new List<int>();
        for (var i = 0; i < prunable && i < cols; i++)
        {
            if (hessian[(long)i * stride + i] != 0) continue;
            dead.Add(i);
            for (var r = 0; r < rows; r++) w[r * cols + i] = 0;
        }
        if (DenseMath.DampedInverseFactor(hessian, cols, stride, dead, damping) is not (var u, var damp, var added)) return null;
        var target = (double[])w.Clone();

        var block = pattern is { } nm ? Math.Max(nm.M, blockSize - blockSize % nm.M) : blockSize;
        var errors = new double[rows * block];
        var mask = new bool[rows * block];
        for (var i1 = 0; i1 < cols; i1 += block)
        {
            var i2 = Math.Min(i1 + block, cols);
            var count = i2 - i1;
            var candidates = Math.Max(0, Math.Min(i2, prunable) - i1);
            Array.Clear(mask);
            if (pattern is null && candidates > 0)
            {
                // Exact count per block by cumulative rounding: the blocks add up to pruneCount.
                var before = (long)Math.Round((double)pruneCount * i1 / prunable);
                var after = (long)Math.Round((double)pruneCount * (i1 + candidates) / prunable);
                SelectSmallest(w, u, rows, cols, i1, candidates, (int)(after - before), mask);
            }
            // Once the block's mask is chosen (N:M picks within each row), every row's sweep and trailing update
            // touch only that row: rows run in parallel, each in the same order as alone (same bits on any core count).
            DenseMath.ForRows(rows, (long)count * (cols - i1), r =>
            {
                var row = w.AsSpan(r * cols, cols);
                for (var c = 0; c < count; c++)
                {
                    var col = i1 + c;
                    if (pattern is { } p && c % p.M == 0 && c < candidates) SelectNm(row, u, cols, r, i1, c, Math.Min(p.M, candidates - c), p, mask, block);
                    if (!mask[r * block + c]) { errors[r * block + c] = 0; continue; }
                    var err = row[col] / u[col * cols + col];
                    errors[r * block + c] = err;
                    row[col] = 0;
                    DenseMath.Axpy(-err, u.AsSpan(col * cols + col + 1, i2 - col - 1), row.Slice(col + 1, i2 - col - 1));
                }
                if (i2 == cols) return;
                var rest = row[i2..];
                for (var c = 0; c < count; c++)
                {
                    var err = errors[r * block + c];
                    if (err != 0) DenseMath.Axpy(-err, u.AsSpan((i1 + c) * cols + i2, cols - i2), rest);
                }
            });
        }
        var iterative = Refit(w, target, hessian, stride, rows, cols, added, exactRefitBudget);
        return new Result(Array.ConvertAll(w, x => (float)x), damp, iterative);
    }

    /// <summary>
    /// The exact optimum for the mask the sweep chose: each row's kept weights (nonzeros, and any column past the
    /// prunable ones) re-solved as argmin (w − w₀)ᵀ(H + λI)(w − w₀) over that support, i.e. w_S = (H + λI)_SS⁻¹·((H + λI)·w₀)_S
    /// with w₀ the weights before pruning. The sweep's OBS updates only reach the columns after each pruned one; at
    /// high sparsity that leaves error the kept weights before it can still absorb (as in Boža's ADMM update for pruned
    /// LLMs, 2024). A row whose system is singular keeps the sweep's values.
    /// </summary>
    /// <remarks>
    /// The exact solve costs m³/3 per row. Past <see cref="ExactRefitBudget"/> for the layer, each row instead takes
    /// <see cref="RefitIterations"/> steps of Jacobi-preconditioned conjugate gradient on the same system, started
    /// from the sweep's values: every step lowers the objective (never above the sweep's), at m² per step. A fixed
    /// step count (stopping early only on an exact zero residual or lost positivity) keeps the result deterministic.
    /// </remarks>
    /// <returns>Whether the layer was refit iteratively.</returns>
    private static bool Refit(double[] w, double[] target, double[] h, int stride, int rows, int cols, double lambda, double budget)
    {
        var exactCost = 0.0;
        var largest = 0;
        for (var r = 0; r < rows; r++)
        {
            var m = 0;
            foreach (var x in w.AsSpan(r * cols, cols)) if (x != 0) m++;
            exactCost += (double)m * m * m / 3;
            largest = Math.Max(largest, m);
        }
        var iterative = exactCost > budget;
        // The iterative refit's systems (32 MB each at 4096 inputs) come from a pool sized for the largest row: one
        // array per row in flight. Growing a per-thread array row by row left ≈ 1.5 GB of them to the collector in a
        // 4096-input layer (the SparseGPT pass's peak).
        var scratch = new System.Collections.Concurrent.ConcurrentBag<double[]>();
        DenseMath.ForRows(rows, (long)cols * cols / 4, r =>
        {
            var row = w.AsSpan(r * cols, cols);
            var support = new List<int>();
            for (var c = 0; c < cols; c++) if (row[c] != 0) support.Add(c);
            var m = support.Count;
            if (m == 0) return;
            double[]? pooled = null;
            if (iterative && !scratch.TryTake(out pooled)) pooled = new double[(long)largest * largest];
            var a = pooled ?? new double[m * m];
            var b = new double[m];
            var w0 = target.AsSpan(r * cols, cols);
            for (var p = 0; p < m; p++)
            {
                var hp = h.AsSpan(support[p] * stride, cols);
                b[p] = DenseMath.Dot(hp, w0) + lambda * w0[support[p]];
                var ap = a.AsSpan(p * m, m);
                for (var q = 0; q < m; q++) ap[q] = hp[support[q]];
                ap[p] += lambda;
            }
            if (iterative)
            {
                var x0 = new double[m];
                for (var p = 0; p < m; p++) x0[p] = row[support[p]];
                var xi = ConjugateGradient(a, m, b, x0, RefitIterations);
                scratch.Add(pooled!);
                if (xi is null) return;
                for (var p = 0; p < m; p++) row[support[p]] = xi[p];
                return;
            }
            if (DenseMath.SolveSpd(a, m, b, 1) is not { } x || x.Any(v => !double.IsFinite(v))) return;
            for (var p = 0; p < m; p++) row[support[p]] = x[p];
        });
        return iterative;
    }

    /// <summary>
    /// <paramref name="steps"/> steps of Jacobi-preconditioned conjugate gradient on A·x = b (A SPD, m×m, row-major
    /// in the first m² entries of <paramref name="a"/>) from x0; null when a value is not finite.
    /// </summary>
    internal static double[]? ConjugateGradient(double[] a, int m, double[] b, double[] x0, int steps)
    {
        var x = (double[])x0.Clone();
        var residual = new double[m];
        var inverseDiagonal = new double[m];
        for (var i = 0; i < m; i++)
        {
            residual[i] = b[i] - DenseMath.Dot(a.AsSpan(i * m, m), x);
            inverseDiagonal[i] = 1 / a[i * m + i];
        }
        var z = new double[m];
        for (var i = 0; i < m; i++) z[i] = inverseDiagonal[i] * residual[i];
        var direction = (double[])z.Clone();
        var product = new double[m];
        var rz = DenseMath.Dot(residual, z);
        for (var step = 0; step < steps && rz > 0; step++)
        {
            for (var i = 0; i < m; i++) product[i] = DenseMath.Dot(a.AsSpan(i * m, m), direction);
            var curvature = DenseMath.Dot(direction, product);
            if (!(curvature > 0)) break;
            var alpha = rz / curvature;
            DenseMath.Axpy(alpha, direction, x);
            DenseMath.Axpy(-alpha, product, residual);
            for (var i = 0; i < m; i++) z[i] = inverseDiagonal[i] * residual[i];
            var next = DenseMath.Dot(residual, z);
            var beta = next / rz;
            for (var i = 0; i < m; i++) direction[i] = z[i] + beta * direction[i];
            rz = next;
        }
        return x.All(double.IsFinite) ? x : null;
    }

    /// <summary>Marks the <paramref name="k"/> weights of the block with the smallest saliency w²/U²_jj (ties: lower index first).</summary>
    private static void SelectSmallest(double[] w, double[] u, int rows, int cols, int i1, int count, int k, bool[] mask)
    {
        if (k <= 0) return;
        var block = mask.Length / rows;
        var saliency = new double[rows * count];
        var index = new int[rows * count];
        for (var r = 0; r < rows; r++)
            for (var c = 0; c < count; c++)
            {
                var d = u[(i1 + c) * cols + i1 + c];
                var x = w[r * cols + i1 + c];
                saliency[r * count + c] = x * x / (d * d);
                index[r * count + c] = r * count + c;
            }
        Array.Sort(index, (a, b) => saliency[a] != saliency[b] ? saliency[a].CompareTo(saliency[b]) : a.CompareTo(b));
        for (var t = 0; t < k; t++)
        {
            var r = index[t] / count;
            mask[r * block + index[t] % count] = true;
        }
    }

    /// <summary>N:M: in row <paramref name="r"/>, the N of the <paramref name="length"/> (≤ M) columns from <paramref name="c"/> with the smallest saliency.</summary>
    private static void SelectNm(ReadOnlySpan<double> row, double[] u, int cols, int r, int i1, int c, int length, NmPattern pattern, bool[] mask, int block)
    {
        var n = length == pattern.M ? pattern.N : pattern.N * length / pattern.M;
        Span<int> order = stackalloc int[length];
        Span<double> saliency = stackalloc double[length];
        for (var j = 0; j < length; j++)
        {
            var col = i1 + c + j;
            var d = u[col * cols + col];
            var x = row[col];
            saliency[j] = x * x / (d * d);
            order[j] = j;
        }
        MagnitudePruner.SortAscending(order, saliency);
        for (var j = 0; j < n; j++) mask[r * block + c + order[j]] = true;
    }
}
