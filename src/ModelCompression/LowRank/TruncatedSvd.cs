using MathNet.Numerics.LinearAlgebra;
using ModelCompression.Numerics;

namespace ModelCompression.LowRank;

/// <summary>
/// The leading singular triplets of a row-major rows×cols matrix M ≈ U·diag(σ)·Vᵀ, by one of two routes:
/// <list type="bullet">
/// <item><see cref="Exact"/>: eigen-decomposition of the smaller Gram matrix (MMᵀ or MᵀM) — every singular value,
/// in a fraction of the time of a full SVD (squaring costs precision only in singular values far below the ones kept).</item>
/// <item><see cref="Randomized"/>: Halko, Martinsson &amp; Tropp (2011), a seeded Gaussian sketch with power iterations
/// for the top k only — for large matrices truncated to a small known rank.</item>
/// </list>
/// </summary>
internal sealed class TruncatedSvd
{
    private TruncatedSvd(double[] singularValues, double totalEnergy, double[] u, double[] v, int rows, int cols)
    {
        SingularValues = singularValues;
        TotalEnergy = totalEnergy;
        U = u;
        V = v;
        Rows = rows;
        Cols = cols;
    }

    /// <summary>Singular values, descending: all min(rows, cols) of them (exact), or the top k (randomized).</summary>
    public double[] SingularValues { get; }
    /// <summary>‖M‖²_F = Σσ² over the whole spectrum, also when only the top k are known.</summary>
    public double TotalEnergy { get; }
    /// <summary>Left vectors, rows×Known (column j goes with σⱼ).</summary>
    public double[] U { get; }
    /// <summary>Right vectors, cols×Known.</summary>
    public double[] V { get; }
    public int Rows { get; }
    public int Cols { get; }
    public int Known => SingularValues.Length;

    /// <summary>Fraction of ‖M‖² that rank <paramref name="rank"/> leaves out: the relative squared error of the truncation.</summary>
    public double DiscardedFraction(int rank)
    {
        if (TotalEnergy <= 0) return 0;
        var kept = 0.0;
        for (var i = 0; i < Math.Min(rank, Known); i++) kept += SingularValues[i] * SingularValues[i];
        return Math.Clamp(1 - kept / TotalEnergy, 0, 1);
    }

    /// <summary>Column j of U (or V) restricted to the first <paramref name="rank"/> columns, as a rows×rank matrix.</summary>
    public static double[] Columns(double[] vectors, int length, int known, int rank)
    {
        var result = new double[(long)length * rank];
        for (var i = 0; i < length; i++)
            Array.Copy(vectors, (long)i * known, result, (long)i * rank, rank);
        return result;
    }

    public static TruncatedSvd Exact(double[] m, int rows, int cols)
    {
        var wide = rows <= cols;
        var small = wide ? rows : cols;
        var gram = wide ? DenseMath.Gram(m, rows, cols) : DenseMath.Gram(DenseMath.Transpose(m, rows, cols), cols, rows);
        var (values, vectors) = SymmetricEigen(gram, small);
        var sigma = values.Select(v => Math.Sqrt(Math.Max(v, 0))).ToArray();
        var total = values.Sum(v => Math.Max(v, 0));
        // The other side's vectors: V = Mᵀ·U/σ (or U = M·V/σ); directions with σ ≈ 0 contribute nothing and stay zero.
        var other = wide ? DenseMath.Multiply(DenseMath.Transpose(m, rows, cols), vectors, cols, rows, small)
                         : DenseMath.Multiply(m, vectors, rows, cols, small);
        var otherLength = wide ? cols : rows;
        ScaleColumns(other, otherLength, small, sigma);
        return wide ? new TruncatedSvd(sigma, total, vectors, other, rows, cols) : new TruncatedSvd(sigma, total, other, vectors, rows, cols);
    }

    /// <summary>Top <paramref name="rank"/> triplets from a sketch of rank + oversampling columns and <paramref name="powerIterations"/> power iterations.</summary>
    public static TruncatedSvd Randomized(double[] m, int rows, int cols, int rank, int seed, int oversampling = 10, int powerIterations = 2)
    {
        var sketch = Math.Min(rank + oversampling, Math.Min(rows, cols));
        var random = new Random(seed);
        var omega = new double[(long)cols * sketch];
        for (var i = 0; i < omega.Length; i++) omega[i] = Gaussian(random);
        var mt = DenseMath.Transpose(m, rows, cols);
        var q = Orthonormalize(DenseMath.Multiply(m, omega, rows, cols, sketch), rows, sketch);
        for (var it = 0; it < powerIterations; it++)
        {
            // Re-orthonormalizing between the half steps keeps the small singular directions from drowning in rounding.
            var z = Orthonormalize(DenseMath.Multiply(mt, q, cols, rows, sketch), cols, sketch);
            q = Orthonormalize(DenseMath.Multiply(m, z, rows, cols, sketch), rows, sketch);
        }
        // B = Qᵀ·M (sketch×cols); its SVD lifts back through Q.
        var b = DenseMath.Transpose(DenseMath.Multiply(mt, q, cols, rows, sketch), cols, sketch);
        var small = Exact(b, sketch, cols);
        var known = Math.Min(rank, small.Known);
        var u = DenseMath.Multiply(q, Columns(small.U, sketch, small.Known, known), rows, sketch, known);
        var v = Columns(small.V, cols, small.Known, known);
        return new TruncatedSvd(small.SingularValues[..known], DenseMath.SquaredNorm(m), u, v, rows, cols);
    }

    private static void ScaleColumns(double[] a, int rows, int cols, double[] sigma)
    {
        var floor = sigma.Length > 0 ? sigma[0] * 1e-12 : 0;
        for (var i = 0; i < rows; i++)
            for (var j = 0; j < cols; j++)
                a[(long)i * cols + j] = sigma[j] > floor ? a[(long)i * cols + j] / sigma[j] : 0;
    }

    /// <summary>Eigenvalues (descending) and eigenvectors (n×n, column j with value j) of a symmetric matrix.</summary>
    private static (double[] Values, double[] Vectors) SymmetricEigen(double[] symmetric, int n)
    {
        var evd = Matrix<double>.Build.DenseOfRowMajor(n, n, symmetric).Evd(Symmetricity.Symmetric);
        var values = evd.EigenValues.Select(c => c.Real).ToArray();
        var order = Enumerable.Range(0, n).OrderByDescending(i => values[i]).ThenBy(i => i).ToArray();
        var raw = evd.EigenVectors.ToRowMajorArray();
        var vectors = new double[(long)n * n];
        for (var i = 0; i < n; i++)
            for (var j = 0; j < n; j++)
                vectors[(long)i * n + j] = raw[(long)i * n + order[j]];
        return (order.Select(i => values[i]).ToArray(), vectors);
    }

    private static double[] Orthonormalize(double[] a, int rows, int cols) =>
        Matrix<double>.Build.DenseOfRowMajor(rows, cols, a).QR(MathNet.Numerics.LinearAlgebra.Factorization.QRMethod.Thin).Q.ToRowMajorArray();

    private static double Gaussian(Random random)
    {
        // Box–Muller: System.Random with a seed is the same sequence on every platform and .NET version.
        var u1 = 1 - random.NextDouble();
        var u2 = random.NextDouble();
        return Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }
}
