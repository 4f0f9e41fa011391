using ModelCompression.Numerics;

namespace ModelCompression.Tests.Numerics;

/// <summary>
/// The parallel factorizations must give the bits of the plain sequential algorithms (row by row Cholesky, forward
/// substitution for the inverse, one right-hand side at a time), so results do not depend on the core count. 600 is
/// wide enough for every one of them to split its work.
/// </summary>
[TestClass]
public sealed class DenseMathTests
{
    private const int N = 600;

    [TestMethod]
    public void Cholesky_HasTheBitsOfTheRowByRowOrder()
    {
        var a = Spd(N);
        var parallel = (double[])a.Clone();
        Assert.IsTrue(DenseMath.CholeskyInPlace(parallel, N));
        CollectionAssert.AreEqual(SequentialCholesky(a, N), parallel);
    }

    [TestMethod]
    public void QuadraticSums_MatchTheRowByRowForms()
    {
        // 45 rows: two full blocks and a partial one; two sets, one of them with zeros (skipped terms).
        var s = Spd(N);
        var random = new Random(5);
        const int rows = 45;
        var v = Enumerable.Range(0, 2 * rows * N).Select(i => i % 7 == 0 ? 0 : random.NextDouble() - 0.5).ToArray();
        var sums = DenseMath.QuadraticSums(s, N, rows, 2, (r, set, row) => v.AsSpan((set * rows + r) * N, N).CopyTo(row));
        for (var set = 0; set < 2; set++)
        {
            var expected = 0.0;
            for (var r = 0; r < rows; r++)
            {
                var x = v.AsSpan((set * rows + r) * N, N);
                for (var i = 0; i < N; i++)
                    for (var j = 0; j < N; j++) expected += x[i] * s[i * N + j] * x[j];
            }
            Assert.AreEqual(expected, sums[set], 1e-9 * Math.Abs(expected));
        }
        Assert.AreEqual(sums[0], DenseMath.QuadraticSums(s, N, rows, 2, (r, set, row) => v.AsSpan((set * rows + r) * N, N).CopyTo(row))[0], "the same bits again");
    }

    [TestMethod]
    public void LowerInverse_HasTheBitsOfForwardSubstitution()
    {
        var l = Spd(N);
        Assert.IsTrue(DenseMath.CholeskyInPlace(l, N));
        CollectionAssert.AreEqual(SequentialLowerInverse(l, N), DenseMath.LowerInverse(l, N));
    }

    [TestMethod]
    public void SolveSpd_SolvesEachRightHandSideAsAlone()
    {
        var a = Spd(N);
        var random = new Random(2);
        const int m = 3;
        var b = Enumerable.Range(0, N * m).Select(_ => random.NextDouble()).ToArray();
        var all = DenseMath.SolveSpd(a, N, b, m)!;
        for (var j = 0; j < m; j++)
        {
            var bj = Enumerable.Range(0, N).Select(i => b[i * m + j]).ToArray();
            var alone = DenseMath.SolveSpd(a, N, bj, 1)!;
            for (var i = 0; i < N; i++) Assert.AreEqual(alone[i], all[i * m + j], 0.0, $"[{i}, {j}]");
        }
    }

    private static double[] Spd(int n)
    {
        var random = new Random(1);
        var x = Enumerable.Range(0, n * n).Select(_ => random.NextDouble() - 0.5).ToArray();
        var a = DenseMath.Gram(x, n, n);
        for (var i = 0; i < n; i++) a[i * n + i] += 1;
        return a;
    }

    private static double[] SequentialCholesky(double[] source, int n)
    {
        var a = (double[])source.Clone();
        for (var i = 0; i < n; i++)
        {
            var rowI = a.AsSpan(i * n, n);
            for (var j = 0; j <= i; j++)
            {
                var sum = rowI[j] - DenseMath.Dot(rowI[..j], a.AsSpan(j * n, j));
                rowI[j] = i == j ? Math.Sqrt(sum) : sum / a[j * n + j];
            }
            rowI[(i + 1)..].Clear();
        }
        return a;
    }

    private static double[] SequentialLowerInverse(double[] l, int n)
    {
        var x = new double[n * n];
        for (var i = 0; i < n; i++)
        {
            var xi = x.AsSpan(i * n, i + 1);
            xi[i] = 1;
            for (var k = 0; k < i; k++)
            {
                var lik = l[i * n + k];
                if (lik != 0) DenseMath.Axpy(-lik, x.AsSpan(k * n, k + 1), xi[..(k + 1)]);
            }
            var d = 1 / l[i * n + i];
            for (var k = 0; k <= i; k++) xi[k] *= d;
        }
        return x;
    }
}
