using MathNet.Numerics.LinearAlgebra;

namespace ModelCompression.Search;

/// <summary>
/// A Gaussian-process regression over points in [0, 1]^d: a Matérn-5/2 kernel with one length scale per dimension
/// (automatic relevance determination: a knob that barely matters gets a long scale and stops adding uncertainty),
/// the targets standardized, a small noise term, and the length scales picked from a fixed grid by marginal
/// likelihood, one dimension at a time for a few sweeps (no random starts, so the same trials always give the same
/// model). Small by design: a search has tens of trials.
/// </summary>
internal sealed class GaussianProcess
{
    private static readonly double[] Grid = [0.08, 0.12, 0.18, 0.27, 0.4, 0.6, 0.9, 1.4, 3, 10];
    private const double Noise = 1e-4;

    private readonly double[][] _x;
    private readonly double _mean;
    private readonly double _scale;
    private readonly Vector<double> _alpha;
    private readonly MathNet.Numerics.LinearAlgebra.Factorization.Cholesky<double> _cholesky;

    private readonly double[] _lengthScales;
    public IReadOnlyList<double> LengthScales => _lengthScales;

    private GaussianProcess(double[][] x, double mean, double scale, double[] lengthScales, Vector<double> alpha, MathNet.Numerics.LinearAlgebra.Factorization.Cholesky<double> cholesky)
    {
        _x = x;
        _mean = mean;
        _scale = scale;
        _lengthScales = lengthScales;
        _alpha = alpha;
        _cholesky = cholesky;
    }

    /// <summary>Fits the process to <paramref name="y"/> observed at <paramref name="x"/> (at least one point).</summary>
    public static GaussianProcess Fit(IReadOnlyList<double[]> x, IReadOnlyList<double> y)
    {
        if (x.Count == 0 || x.Count != y.Count) throw new ArgumentException("a Gaussian process needs as many targets as points, at least one");
        var points = x.Select(p => (double[])p.Clone()).ToArray();
        var mean = y.Average();
        var spread = Math.Sqrt(y.Sum(v => (v - mean) * (v - mean)) / y.Count);
        var scale = spread > 1e-12 ? spread : 1;
        var targets = Vector<double>.Build.Dense(y.Select(v => (v - mean) / scale).ToArray());

        var dimensions = points[0].Length;
        var scales = Enumerable.Repeat(0.4, dimensions).ToArray();
        var best = Build(points, targets, mean, scale, scales);
        for (var sweep = 0; sweep < 3; sweep++)
            for (var d = 0; d < dimensions; d++)
                foreach (var value in Grid)
                {
                    var trial = (double[])best.Scales.Clone();
                    trial[d] = value;
                    var candidate = Build(points, targets, mean, scale, trial);
                    if (candidate.Likelihood > best.Likelihood + 1e-9) best = candidate;
                }
        return best.Process;
    }

    private static (GaussianProcess Process, double Likelihood, double[] Scales) Build(double[][] points, Vector<double> targets, double mean, double scale, double[] scales)
    {
        var k = Matrix<double>.Build.Dense(points.Length, points.Length, (i, j) => Kernel(points[i], points[j], scales) + (i == j ? Noise : 0));
        var cholesky = k.Cholesky();
        var alpha = cholesky.Solve(targets);
        // log p(y) = −½ yᵀK⁻¹y − ½ log|K| (constant dropped).
        var likelihood = -0.5 * targets.DotProduct(alpha) - 0.5 * cholesky.DeterminantLn;
        return (new GaussianProcess(points, mean, scale, scales, alpha, cholesky), likelihood, scales);
    }

    /// <summary>Posterior mean and standard deviation at <paramref name="point"/>, in the targets' own units.</summary>
    public (double Mean, double StdDev) Predict(double[] point)
    {
        var k = Vector<double>.Build.Dense(_x.Length, i => Kernel(_x[i], point, _lengthScales));
        var mean = k.DotProduct(_alpha);
        var v = _cholesky.Solve(k);
        var variance = Math.Max(1 + Noise - k.DotProduct(v), 1e-12);
        return (_mean + _scale * mean, _scale * Math.Sqrt(variance));
    }

    /// <summary>Matérn 5/2 with unit variance and a length scale per dimension.</summary>
    private static double Kernel(double[] a, double[] b, double[] lengthScales)
    {
        var d2 = 0.0;
        for (var i = 0; i < a.Length; i++) d2 += (a[i] - b[i]) * (a[i] - b[i]) / (lengthScales[i] * lengthScales[i]);
        var r = Math.Sqrt(5 * d2);
        return (1 + r + r * r / 3) * Math.Exp(-r);
    }
}
