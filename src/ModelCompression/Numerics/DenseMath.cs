using System.Numerics;
using System.Runtime.InteropServices;

namespace ModelCompression.Numerics;

/// <summary>
/// Row-major double-precision kernels for pruning and factorization, written for speed on the sizes of real layers
/// (a 1,152-wide conv Hessian factorizes in well under a second): products, Gram matrices, Cholesky factors (plain
/// and damped), triangular solves and inverses, symmetric solves. Work split across threads still sums every output
/// element on one thread in a fixed order, so results do not depend on scheduling (same input ⇒ same bits).
/// </summary>
internal static class DenseMath
{
    /// <summary>Rows per parallel work item: small matrices stay on one thread.</summary>
    private const long MinWorkPerTask = 1 << 16;

    public static double Dot(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        var va = MemoryMarshal.Cast<double, Vector<double>>(a);
        var vb = MemoryMarshal.Cast<double, Vector<double>>(b);
        var acc = Vector<double>.Zero;
        for (var i = 0; i < va.Length; i++) acc += va[i] * vb[i];
        var sum = Vector.Sum(acc);
        for (var i = va.Length * Vector<double>.Count; i < a.Length; i++) sum += a[i] * b[i];
        return sum;
    }

    /// <summary>A float dot product (activations), summed in float lanes and returned as double.</summary>
    public static double Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        var va = MemoryMarshal.Cast<float, Vector<float>>(a);
        var vb = MemoryMarshal.Cast<float, Vector<float>>(b);
        var acc = Vector<float>.Zero;
        for (var i = 0; i < va.Length; i++) acc += va[i] * vb[i];
        double sum = Vector.Sum(acc);
        for (var i = va.Length * Vector<float>.Count; i < a.Length; i++) sum += a[i] * b[i];
        return sum;
    }

    /// <summary>‖a − b‖ / ‖a‖ (0 when a is zero): how much a change moved a weight tensor.</summary>
    public static double RelativeError(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double num = 0, den = 0;
        for (var i = 0; i < a.Length; i++)
        {
            double d = a[i] - b[i];
            num += d * d;
            den += (double)a[i] * a[i];
        }
        return den > 0 ? Math.Sqrt(num / den) : 0;
    }

    /// <summary>y += alpha·x.</summary>
    public static void Axpy(double alpha, ReadOnlySpan<double> x, Span<double> y)
    {
        var vx = MemoryMarshal.Cast<double, Vector<double>>(x);
        var vy = MemoryMarshal.Cast<double, Vector<double>>(y);
        var va = new Vector<double>(alpha);
        for (var i = 0; i < vx.Length; i++) vy[i] += va * vx[i];
        for (var i = vx.Length * Vector<double>.Count; i < x.Length; i++) y[i] += alpha * x[i];
    }

    /// <summary>C[m×n] = A[m×k]·B[k×n].</summary>
    public static double[] Multiply(double[] a, double[] b, int m, int k, int n)
    {
        var c = new double[(long)m * n];
        ForRows(m, (long)k * n, i =>
        {
            var row = c.AsSpan(i * n, n);
            for (var p = 0; p < k; p++)
            {
                var aip = a[(long)i * k + p];
                if (aip != 0) Axpy(aip, b.AsSpan(p * n, n), row);
            }
        });
        return c;
    }

    /// <summary>A[m×k]·A[m×k]ᵀ, symmetric m×m.</summary>
    public static double[] Gram(double[] a, int m, int k)
    {
        var g = new double[(long)m * m];
        ForRows(m, (long)k * m / 2, i =>
        {
            var ai = a.AsSpan(i * k, k);
            for (var j = 0; j <= i; j++) g[(long)i * m + j] = Dot(ai, a.AsSpan(j * k, k));
        });
        MirrorLower(g, m);
        return g;
    }

    /// <summary>Aᵀ for a row-major rows×cols matrix.</summary>
    public static double[] Transpose(ReadOnlySpan<double> a, int rows, int cols)
    {
        var t = new double[a.Length];
        for (var r = 0; r < rows; r++)
            for (var c = 0; c < cols; c++)
                t[(long)c * rows + r] = a[r * cols + c];
        return t;
    }

    private static void MirrorLower(double[] g, int m)
    {
        for (var i = 0; i < m; i++)
            for (var j = 0; j < i; j++)
                g[(long)j * m + i] = g[(long)i * m + j];
    }

    /// <summary>
    /// The lower Cholesky factor L of S + μ·I (LLᵀ), μ = <paramref name="damping"/>·mean(diag S) raised tenfold
    /// until the factor exists (rounding can leave a nearly singular S indefinite); also returns the μ used.
    /// </summary>
    public static (double[] Factor, double Added) DampedCholesky(double[] s, int n, double damping)
    {
        var mean = 0.0;
        for (var i = 0; i < n; i++) mean += s[(long)i * n + i];
        mean = mean > 0 ? mean / n : 1;
        for (var lambda = damping * mean; ; lambda *= 10)
        {
            var l = new double[(long)n * n];
            var ok = true;
            for (var j = 0; j < n && ok; j++)
            {
                var d = s[(long)j * n + j] + lambda - SquaredNorm(l.AsSpan(j * n, j));
                if (!(d > 0)) { ok = false; break; }
                var ljj = Math.Sqrt(d);
                l[(long)j * n + j] = ljj;
                ForRows(n - j - 1, j, t =>
                {
                    var i = j + 1 + t;
                    l[(long)i * n + j] = (s[(long)i * n + j] - Dot(l.AsSpan(i * n, j), l.AsSpan(j * n, j))) / ljj;
                });
            }
            if (ok) return (l, lambda);
        }
    }

    /// <summary>X = L⁻¹·B for lower-triangular L (n×n) and B (n×r): forward substitution (into B itself when <paramref name="overwrite"/>).</summary>
    public static double[] SolveLower(double[] l, double[] b, int n, int r, bool overwrite = false)
    {
        var x = overwrite ? b : (double[])b.Clone();
        for (var i = 0; i < n; i++)
        {
            var xi = x.AsSpan(i * r, r);
            for (var j = 0; j < i; j++)
            {
                var lij = l[(long)i * n + j];
                if (lij != 0) Axpy(-lij, x.AsSpan(j * r, r), xi);
            }
            var inv = 1 / l[(long)i * n + i];
            for (var c = 0; c < r; c++) xi[c] *= inv;
        }
        return x;
    }

    /// <summary>X = L⁻ᵀ·B for lower-triangular L (n×n) and B (n×r): back substitution on Lᵀ·X = B.</summary>
    public static double[] SolveLowerTransposed(double[] l, double[] b, int n, int r)
    {
        var x = (double[])b.Clone();
        for (var i = n - 1; i >= 0; i--)
        {
            var xi = x.AsSpan(i * r, r);
            // Lᵀ[i, j] = L[j, i] for j > i: subtract the solved rows below.
            for (var j = i + 1; j < n; j++)
            {
                var lji = l[(long)j * n + i];
                if (lji != 0) Axpy(-lji, x.AsSpan(j * r, r), xi);
            }
            var inv = 1 / l[(long)i * n + i];
            for (var c = 0; c < r; c++) xi[c] *= inv;
        }
        return x;
    }

    /// <summary>Frobenius norm squared.</summary>
    public static double SquaredNorm(ReadOnlySpan<double> a) => Dot(a, a);

    /// <summary>
    /// After a layer with <paramref name="features"/> inputs: a 2048-or-wider layer's solvers leave several n² double
    /// arrays (a 4096-input layer: 134 MB each) on the large-object heap, which a plain collection leaves committed,
    /// so their memory is handed back now (a collection per large layer: well under its solve time).
    /// </summary>
    public static void ReleaseWorkingMemory(int features)
    {
        if (features >= 2048) GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
    }

    /// <summary>Runs body(i) for i in [0, rows), on several threads when each row is worth <paramref name="workPerRow"/> multiply-adds.</summary>
    public static void ForRows(int rows, long workPerRow, Action<int> body)
    {
        if (rows <= 1 || (long)rows * workPerRow < MinWorkPerTask)
        {
            for (var i = 0; i < rows; i++) body(i);
            return;
        }
        // At most one thread per core: an unbounded loop lets the pool add threads to a long CPU-bound loop, and every
        // extra thread holds its own working arrays (a SparseGPT refit's is 32 MB at 4096 inputs) for no speed.
        Parallel.For(0, rows, Bounded, body);
    }

    private static readonly ParallelOptions Bounded = new() { MaxDegreeOfParallelism = Environment.ProcessorCount };

    /// <summary>
    /// For each of <paramref name="sets"/> sets of <paramref name="rows"/> vectors v (fill(row, set, v) writes one),
    /// Σ over rows of v·S·vᵀ, S a symmetric n×n matrix (its lower triangle is read). Rows go in blocks that share
    /// each pass over S: S of a 4096-input layer is 134 MB, and one pass per row made this memory-bound (a layer's
    /// error report took longer than its quantization). Each block's sums are added in block order, so the result has
    /// the same bits on any number of threads.
    /// </summary>
    /// <param name="stride">Elements from one row of S to the next (n, or more when S is the leading block of a larger matrix).</param>
    public static double[] QuadraticSums(double[] s, int n, int rows, int sets, Action<int, int, Span<double>> fill, int stride = 0)
    {
        if (stride == 0) stride = n;
        const int block = 16;
        var blocks = (rows + block - 1) / block;
        var partial = new double[blocks * sets];
        ForRows(blocks, (long)block * sets * n * n / 2, b =>
        {
            var r0 = b * block;
            var vectors = Math.Min(block, rows - r0) * sets;
            var v = new double[(long)vectors * n];
            for (var q = 0; q < vectors; q++) fill(r0 + q / sets, q % sets, v.AsSpan(q * n, n));
            var sums = partial.AsSpan(b * sets, sets);
            for (var i = 0; i < n; i++)
            {
                var below = s.AsSpan(i * stride, i);
                var diagonal = s[(long)i * stride + i];
                for (var q = 0; q < vectors; q++)
                {
                    var vq = v.AsSpan(q * n, n);
                    var vi = vq[i];
                    if (vi != 0) sums[q % sets] += vi * (diagonal * vi + 2 * Dot(below, vq[..i]));
                }
            }
        });
        var total = new double[sets];
        for (var b = 0; b < blocks; b++)
            for (var k = 0; k < sets; k++) total[k] += partial[b * sets + k];
        return total;
    }

    /// <summary>‖ΔW·x‖/‖W·x‖ over inputs with second moments H (n×n): √(Σ δ·H·δᵀ / Σ w·H·wᵀ) over the rows of W [rows, n] and its approximation.</summary>
    public static double RelativeOutputError(float[] w, float[] approximation, int rows, int n, double[] h, int stride = 0) =>
        RelativeOutputErrors(w, [approximation], rows, n, h, stride)[0];

    /// <summary><see cref="RelativeOutputError"/> of several approximations of W in one pass over H.</summary>
    public static double[] RelativeOutputErrors(float[] w, IReadOnlyList<float[]> approximations, int rows, int n, double[] h, int stride = 0)
    {
        var sets = approximations.Count;
        var sums = QuadraticSums(h, n, rows, sets + 1, (r, set, v) =>
        {
            var row = w.AsSpan(r * n, n);
            if (set == sets) for (var c = 0; c < n; c++) v[c] = row[c];
            else for (var c = 0; c < n; c++) v[c] = row[c] - approximations[set][r * n + c];
        }, stride);
        return sums.Take(sets).Select(e => sums[sets] > 0 ? Math.Sqrt(Math.Max(0, e) / sums[sets]) : 0).ToArray();
    }

    /// <summary>Lower Cholesky factor of the n×n SPD matrix <paramref name="a"/> in place (upper part zeroed); false if not positive definite.</summary>
    public static bool CholeskyInPlace(double[] a, int n)
    {
        // Column by column (left-looking): L[i, j] = (A[i, j] − L[i, :j]·L[j, :j]) / L[j, j] for all i > j at once, in
        // parallel over i. Each element is the same Dot of the same values as the row-by-row order, so the factor has
        // the same bits on any number of threads.
        for (var j = 0; j < n; j++)
        {
            var rowJ = a.AsSpan(j * n, n);
            var sum = rowJ[j] - Dot(rowJ[..j], rowJ[..j]);
            if (!(sum > 0) || !double.IsFinite(sum)) return false;
            var ljj = Math.Sqrt(sum);
            rowJ[j] = ljj;
            ForRows(n - j - 1, j + 1, t =>
            {
                var i = j + 1 + t;
                var rowI = a.AsSpan(i * n, j + 1);
                rowI[j] = (rowI[j] - Dot(rowI[..j], a.AsSpan(j * n, j))) / ljj;
            });
        }
        for (var i = 0; i < n; i++) a.AsSpan(i * n + i + 1, n - i - 1).Clear();
        return true;
    }

    /// <summary>
    /// The upper factor U of (H + λ·mean(diag H)·I)⁻¹ that the OBS sweeps (SparseGPT, GPTQ) run on, with λ starting at
    /// <paramref name="damping"/> and raised tenfold, at most five times, while the damped H is not positive definite;
    /// also returns the λ used and λ·mean(diag H), the amount added. Null when even 10⁵ times the dampening leaves it
    /// singular. H is not modified.
    /// </summary>
    public static (double[] Factor, double Damping, double Added)? DampedInverseFactor(double[] h, int n, double damping) =>
        DampedInverseFactor(() => (double[])h.Clone(), n, damping);

    /// <summary>
    /// Like <see cref="DampedInverseFactor(double[], int, double)"/> for H the leading <paramref name="n"/> × n block of
    /// <paramref name="statistics"/> (rows <paramref name="stride"/> apart) with a unit diagonal at <paramref name="unseen"/>
    /// (inputs zero on every sample: no curvature). Each attempt copies the block afresh; the statistics are not modified.
    /// </summary>
    public static (double[] Factor, double Damping, double Added)? DampedInverseFactor(double[] statistics, int n, int stride, IReadOnlyList<int> unseen, double damping) =>
        DampedInverseFactor(() =>
        {
            var h = new double[(long)n * n];
            for (var i = 0; i < n; i++) statistics.AsSpan(i * stride, n).CopyTo(h.AsSpan(i * n, n));
            foreach (var i in unseen) h[i * n + i] = 1;
            return h;
        }, n, damping);

    /// <summary>
    /// Like <see cref="DampedInverseFactor(double[], int, double)"/>, with H made afresh by <paramref name="copy"/> for
    /// each attempt (a caller that builds H from larger statistics then holds no copy of its own while it is factored).
    /// </summary>
    public static (double[] Factor, double Damping, double Added)? DampedInverseFactor(Func<double[]> copy, int n, double damping)
    {
        var mean = double.NaN;
        var damp = damping;
        for (var attempt = 0; attempt < 6; attempt++, damp *= 10)
        {
            var damped = copy();
            if (attempt == 0)
            {
                mean = 0.0;
                for (var i = 0; i < n; i++) mean += damped[i * n + i];
                mean /= n;
            }
            for (var i = 0; i < n; i++) damped[i * n + i] += damp * mean;
            if (InverseCholeskyUpper(damped, n) is { } u) return (u, damp, damp * mean);
        }
        return null;
    }

    /// <summary>
    /// The upper-triangular U with H⁻¹ = UᵀU (SparseGPT's factor of the inverse Hessian), without forming H⁻¹:
    /// with P the reversal permutation, P·H·P = L·Lᵀ gives H = V·Vᵀ for the upper V = P·L·P, so U = V⁻¹.
    /// Returns null when H is not positive definite. Overwrites <paramref name="h"/> (every caller passes a damped copy
    /// of its own: at n = 4096 a further copy is 134 MB).
    /// </summary>
    public static double[]? InverseCholeskyUpper(double[] h, int n)
    {
        // P·A·P of a row-major n×n matrix moves [i, j] to [n−1−i, n−1−j], i.e. flat index k to n²−1−k: a reversal.
        var r = h;
        Array.Reverse(r, 0, n * n);
        if (!CholeskyInPlace(r, n)) return null;
        // V = P·L·P is upper triangular; V⁻¹ = P·L⁻¹·P, and L⁻¹ is lower.
        var u = LowerInverse(r, n);
        Array.Reverse(u);
        return u;
    }

    /// <summary>Inverse of a lower-triangular matrix (row-major), by forward substitution on the rows of the transpose.</summary>
    public static double[] LowerInverse(double[] l, int n)
    {
        // Solve L·X = I row by row: X[i, :] = (e_i − Σ_{k<i} L[i,k]·X[k, :]) / L[i,i]; X is lower triangular. The
        // columns of X are independent, so chunks of columns run in parallel; each element's sum keeps its order
        // (an axpy has no cross-lane sum), so the bits do not depend on the chunking.
        var x = new double[n * n];
        var chunks = (n + InverseChunk - 1) / InverseChunk;
        ForRows(chunks, (long)n * n * InverseChunk / 6, chunk =>
        {
            var c0 = chunk * InverseChunk;
            for (var i = c0; i < n; i++)
            {
                var c1 = Math.Min(i + 1, c0 + InverseChunk);
                var xi = x.AsSpan(i * n + c0, c1 - c0);
                if (i < c0 + InverseChunk) xi[i - c0] = 1;
                for (var k = c0; k < i; k++)
                {
                    var lik = l[i * n + k];
                    var width = Math.Min(k + 1, c1) - c0;
                    if (lik != 0) Axpy(-lik, x.AsSpan(k * n + c0, width), xi[..width]);
                }
                var d = 1 / l[i * n + i];
                for (var k = 0; k < xi.Length; k++) xi[k] *= d;
            }
        });
        return x;
    }

    /// <summary>Columns per parallel chunk of <see cref="LowerInverse"/>: a multiple of every vector width.</summary>
    private const int InverseChunk = 256;

    /// <summary>Solves (A)·X = B for SPD A (n×n) and B (n×m, row-major) via Cholesky; null when A is not positive definite.</summary>
    /// <param name="overwrite">Factor <paramref name="a"/> in place (a caller that has no further use for it saves a copy).</param>
    public static double[]? SolveSpd(double[] a, int n, double[] b, int m, bool overwrite = false)
    {
        var l = overwrite ? a : (double[])a.Clone();
        if (!CholeskyInPlace(l, n)) return null;
        // Work on Bᵀ so each right-hand side is a contiguous row.
        var x = new double[m * n];
        for (var i = 0; i < n; i++)
            for (var j = 0; j < m; j++)
                x[j * n + i] = b[i * m + j];
        // Right-hand sides are independent: in parallel, each solved in the same order as alone.
        ForRows(m, (long)n * n, j =>
        {
            var y = x.AsSpan(j * n, n);
            for (var i = 0; i < n; i++) y[i] = (y[i] - Dot(l.AsSpan(i * n, i), y[..i])) / l[i * n + i];
            // Lᵀ·y = z by columns of Lᵀ (rows of L), so every update is a contiguous axpy.
            for (var i = n - 1; i >= 0; i--)
            {
                y[i] /= l[i * n + i];
                Axpy(-y[i], l.AsSpan(i * n, i), y[..i]);
            }
        });
        var result = new double[n * m];
        for (var i = 0; i < n; i++)
            for (var j = 0; j < m; j++)
                result[i * m + j] = x[j * n + i];
        return result;
    }
}
