using MathNet.Numerics.LinearAlgebra;
using ModelCompression.LowRank;

namespace ModelCompression.Tests.LowRank;

[TestClass]
public sealed class TruncatedSvdTests
{
    [TestMethod]
    public void Exact_MatchesMathNetsSvdAndReconstructsTheMatrix()
    {
        foreach (var (rows, cols) in new[] { (30, 50), (50, 30) })
        {
            var m = Random(rows, cols, seed: rows);
            var svd = TruncatedSvd.Exact(m, rows, cols);
            var reference = Matrix<double>.Build.DenseOfRowMajor(rows, cols, m).Svd(computeVectors: false).S.ToArray();
            for (var i = 0; i < reference.Length; i++)
                Assert.AreEqual(reference[i], svd.SingularValues[i], 1e-9 * reference[0], $"σ{i} of {rows}x{cols}");
            var rebuilt = new double[rows * cols];
            for (var r = 0; r < rows; r++)
                for (var c = 0; c < cols; c++)
                    for (var k = 0; k < svd.Known; k++)
                        rebuilt[r * cols + c] += svd.U[r * svd.Known + k] * svd.SingularValues[k] * svd.V[c * svd.Known + k];
            Assert.IsTrue(rebuilt.Zip(m, (a, b) => Math.Abs(a - b)).Max() < 1e-9, $"{rows}x{cols} reconstruction");
            Assert.AreEqual(0, svd.DiscardedFraction(svd.Known), 1e-12);
        }
    }

    [TestMethod]
    public void Randomized_FindsTheLeadingTripletsOfADecayingSpectrumReproducibly()
    {
        const int rows = 700, cols = 500, rank = 24;
        // A decaying spectrum plus noise: the shape of trained weights the randomized route is meant for.
        var left = Random(rows, 60, seed: 1);
        var right = Random(60, cols, seed: 2);
        for (var k = 0; k < 60; k++) for (var c = 0; c < cols; c++) right[k * cols + c] *= Math.Pow(0.85, k);
        var m = Multiply(left, right, rows, 60, cols);
        var noise = Random(rows, cols, seed: 3);
        for (var i = 0; i < m.Length; i++) m[i] += 0.01 * noise[i];

        var exact = TruncatedSvd.Exact(m, rows, cols);
        var randomized = TruncatedSvd.Randomized(m, rows, cols, rank, seed: 5);
        Assert.AreEqual(rank, randomized.Known);
        for (var i = 0; i < rank; i++)
            Assert.AreEqual(exact.SingularValues[i], randomized.SingularValues[i], 1e-6 * exact.SingularValues[0], $"σ{i}");
        Assert.AreEqual(exact.DiscardedFraction(rank), randomized.DiscardedFraction(rank), 1e-6);
        // Leading left vectors agree up to sign.
        for (var k = 0; k < 5; k++)
        {
            var dot = 0.0;
            for (var r = 0; r < rows; r++) dot += exact.U[r * exact.Known + k] * randomized.U[r * rank + k];
            Assert.AreEqual(1, Math.Abs(dot), 1e-6, $"u{k}");
        }
        var again = TruncatedSvd.Randomized(m, rows, cols, rank, seed: 5);
        CollectionAssert.AreEqual(randomized.U, again.U, "same seed, same bits");
    }

    private static double[] Random(int rows, int cols, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, rows * cols).Select(_ => random.NextDouble() - 0.5).ToArray();
    }

    private static double[] Multiply(double[] a, double[] b, int m, int k, int n)
    {
        var c = new double[m * n];
        for (var i = 0; i < m; i++)
            for (var p = 0; p < k; p++)
                for (var j = 0; j < n; j++)
                    c[i * n + j] += a[i * k + p] * b[p * n + j];
        return c;
    }
}
