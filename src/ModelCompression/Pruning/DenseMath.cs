using System.Numerics;
using System.Runtime.InteropServices;

namespace ModelCompression.Pruning;

/// <summary>
/// The few dense kernels the pruners need on row-major double matrices, written for speed on the sizes of real
/// layers (a 1,152-wide conv Hessian factorizes in well under a second): Cholesky with vectorized row dot products,
/// triangular inverse, symmetric solves.
/// </summary>
internal static class DenseMath
{
    /// <summary>Lower Cholesky factor of the n×n SPD matrix <paramref name="a"/> in place (upper part zeroed); false if not positive definite.</summary>
    public static bool CholeskyInPlace(double[] a, int n)
    {
        for (var i = 0; i < n; i++)
        {
            var rowI = a.AsSpan(i * n, n);
            for (var j = 0; j <= i; j++)
            {
                var rowJ = a.AsSpan(j * n, j);
                var sum = rowI[j] - Dot(rowI[..j], rowJ);
                if (i == j)
                {
                    if (!(sum > 0) || !double.IsFinite(sum)) return false;
                    rowI[i] = Math.Sqrt(sum);
                }
                else rowI[j] = sum / a[j * n + j];
            }
            rowI[(i + 1)..].Clear();
        }
        return true;
    }

    public static double Dot(ReadOnlySpan<double> x, ReadOnlySpan<double> y)
    {
        var vx = MemoryMarshal.Cast<double, Vector<double>>(x);
        var vy = MemoryMarshal.Cast<double, Vector<double>>(y);
        var acc = Vector<double>.Zero;
        for (var k = 0; k < vx.Length; k++) acc += vx[k] * vy[k];
        var sum = Vector.Sum(acc);
        for (var k = vx.Length * Vector<double>.Count; k < x.Length; k++) sum += x[k] * y[k];
        return sum;
    }

    /// <summary>y += alpha · x.</summary>
    public static void Axpy(double alpha, ReadOnlySpan<double> x, Span<double> y)
    {
        var vx = MemoryMarshal.Cast<double, Vector<double>>(x);
        var vy = MemoryMarshal.Cast<double, Vector<double>>(y);
        var va = new Vector<double>(alpha);
        for (var k = 0; k < vx.Length; k++) vy[k] += va * vx[k];
        for (var k = vx.Length * Vector<double>.Count; k < x.Length; k++) y[k] += alpha * x[k];
    }

    /// <summary>
    /// The upper-triangular U with H⁻¹ = UᵀU (SparseGPT's factor of the inverse Hessian), without forming H⁻¹:
    /// with P the reversal permutation, P·H·P = L·Lᵀ gives H = V·Vᵀ for the upper V = P·L·P, so U = V⁻¹.
    /// Returns null when H is not positive definite.
    /// </summary>
    public static double[]? InverseCholeskyUpper(double[] h, int n)
    {
        var r = new double[n * n];
        for (var i = 0; i < n; i++)
            for (var j = 0; j < n; j++)
                r[(n - 1 - i) * n + (n - 1 - j)] = h[i * n + j];
        if (!CholeskyInPlace(r, n)) return null;
        // V = P·L·P is upper triangular; V⁻¹ = P·L⁻¹·P, and L⁻¹ is lower: invert L in place by columns.
        var inv = LowerInverse(r, n);
        var u = new double[n * n];
        for (var i = 0; i < n; i++)
            for (var j = 0; j < n; j++)
                u[(n - 1 - i) * n + (n - 1 - j)] = inv[i * n + j];
        return u;
    }

    /// <summary>Inverse of a lower-triangular matrix (row-major), by forward substitution on the rows of the transpose.</summary>
    public static double[] LowerInverse(double[] l, int n)
    {
        // Solve L·X = I row by row: X[i, :] = (e_i − Σ_{k<i} L[i,k]·X[k, :]) / L[i,i]; X is lower triangular.
        var x = new double[n * n];
        for (var i = 0; i < n; i++)
        {
            var xi = x.AsSpan(i * n, i + 1);
            xi[i] = 1;
            for (var k = 0; k < i; k++)
            {
                var lik = l[i * n + k];
                if (lik != 0) Axpy(-lik, x.AsSpan(k * n, k + 1), xi[..(k + 1)]);
            }
            var d = 1 / l[i * n + i];
            for (var k = 0; k <= i; k++) xi[k] *= d;
        }
        return x;
    }

    /// <summary>Solves (A)·X = B for SPD A (n×n) and B (n×m, row-major) via Cholesky; null when A is not positive definite.</summary>
    public static double[]? SolveSpd(double[] a, int n, double[] b, int m)
    {
        var l = (double[])a.Clone();
        if (!CholeskyInPlace(l, n)) return null;
        // Work on Bᵀ so each right-hand side is a contiguous row.
        var x = new double[m * n];
        for (var i = 0; i < n; i++)
            for (var j = 0; j < m; j++)
                x[j * n + i] = b[i * m + j];
        for (var j = 0; j < m; j++)
        {
            var y = x.AsSpan(j * n, n);
            for (var i = 0; i < n; i++) y[i] = (y[i] - Dot(l.AsSpan(i * n, i), y[..i])) / l[i * n + i];
            // Lᵀ·y = z by columns of Lᵀ (rows of L), so every update is a contiguous axpy.
            for (var i = n - 1; i >= 0; i--)
            {
                y[i] /= l[i * n + i];
                Axpy(-y[i], l.AsSpan(i * n, i), y[..i]);
            }
        }
        var result = new double[n * m];
        for (var i = 0; i < n; i++)
            for (var j = 0; j < m; j++)
                result[i * m + j] = x[j * n + i];
        return result;
    }
}
