using ModelCompression.Numerics;
using ModelCompression.Pruning;

namespace ModelCompression.Tests.Pruning;

/// <summary>
/// The refit of SparseGPT's kept weights: exact (a Cholesky solve per row) for small layers, and a fixed number of
/// preconditioned conjugate-gradient steps past a cost bound, which must lower the objective, keep the mask and
/// approach the exact optimum.
/// </summary>
[TestClass]
public sealed class SparseGptRefitTests
{
    [TestMethod]
    public void ConjugateGradient_LowersTheObjectiveAndReachesTheExactSolution()
    {
        const int m = 60;
        var random = new Random(3);
        var a = Spd(random, m, 200);
        var b = Enumerable.Range(0, m).Select(_ => random.NextDouble() - 0.5).ToArray();
        var x0 = Enumerable.Range(0, m).Select(_ => random.NextDouble() - 0.5).ToArray();
        var exact = DenseMath.SolveSpd(a, m, b, 1)!;

        var few = SparseGptPruner.ConjugateGradient(a, m, b, x0, 4)!;
        var many = SparseGptPruner.ConjugateGradient(a, m, b, x0, 4 * m)!;

        Assert.IsTrue(Objective(a, m, b, few) < Objective(a, m, b, x0), "a few steps lower the objective");
        Assert.IsTrue(Objective(a, m, b, many) <= Objective(a, m, b, few));
        for (var i = 0; i < m; i++) Assert.AreEqual(exact[i], many[i], 1e-8 * (1 + Math.Abs(exact[i])), $"x[{i}]");
    }

    [TestMethod]
    public void IterativeRefit_KeepsTheMaskAndComesCloseToTheExactRefit()
    {
        const int rows = 24, cols = 96;
        var random = new Random(5);
        var hessian = Spd(random, cols, 400);
        var weights = Enumerable.Range(0, rows * cols).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();

        var exact = SparseGptPruner.Prune(weights, rows, cols, hessian, cols, rows * cols / 2, null, 0.01, 32)!;
        var iterative = SparseGptPruner.Prune(weights, rows, cols, hessian, cols, rows * cols / 2, null, 0.01, 32, exactRefitBudget: 0)!;
        var again = SparseGptPruner.Prune(weights, rows, cols, hessian, cols, rows * cols / 2, null, 0.01, 32, exactRefitBudget: 0)!;

        Assert.IsFalse(exact.IterativeRefit);
        Assert.IsTrue(iterative.IterativeRefit);
        CollectionAssert.AreEqual(iterative.Weights, again.Weights, "deterministic");
        double exactLoss = 0, iterativeLoss = 0;
        for (var r = 0; r < rows; r++)
        {
            for (var c = 0; c < cols; c++)
                Assert.AreEqual(exact.Weights[r * cols + c] == 0, iterative.Weights[r * cols + c] == 0, $"mask at {r},{c}");
            exactLoss += Loss(hessian, cols, weights.AsSpan(r * cols, cols), exact.Weights.AsSpan(r * cols, cols));
            iterativeLoss += Loss(hessian, cols, weights.AsSpan(r * cols, cols), iterative.Weights.AsSpan(r * cols, cols));
        }
        Assert.IsTrue(iterativeLoss >= exactLoss * (1 - 1e-6), $"exact is the optimum: {exactLoss} vs {iterativeLoss}");
        Assert.IsTrue(iterativeLoss <= exactLoss * 1.05, $"within 5 % of the optimum: {exactLoss} vs {iterativeLoss}");
    }

    /// <summary>XᵀX/n + 0.01·I for a random X of <paramref name="n"/> rows with correlated columns.</summary>
    private static double[] Spd(Random random, int m, int n)
    {
        var x = new double[n * m];
        for (var i = 0; i < n; i++)
        {
            var common = random.NextDouble() - 0.5;
            for (var j = 0; j < m; j++) x[i * m + j] = common + random.NextDouble() - 0.5;
        }
        var a = DenseMath.Multiply(DenseMath.Transpose(x, n, m), x, m, n, m);
        for (var i = 0; i < m * m; i++) a[i] /= n;
        for (var i = 0; i < m; i++) a[i * m + i] += 0.01;
        return a;
    }

    private static double Objective(double[] a, int m, double[] b, double[] x)
    {
        var f = 0.0;
        for (var i = 0; i < m; i++) f += 0.5 * x[i] * DenseMath.Dot(a.AsSpan(i * m, m), x) - b[i] * x[i];
        return f;
    }

    /// <summary>(w − w₀)ᵀH(w − w₀): the row's output error on the calibration inputs.</summary>
    private static double Loss(double[] h, int n, ReadOnlySpan<float> w0, ReadOnlySpan<float> w)
    {
        var d = new double[n];
        for (var i = 0; i < n; i++) d[i] = w[i] - w0[i];
        var loss = 0.0;
        for (var i = 0; i < n; i++) loss += d[i] * DenseMath.Dot(h.AsSpan(i * n, n), d);
        return loss;
    }
}
