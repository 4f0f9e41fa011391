using ModelCompression.Calibration;
using ModelCompression.Int4;
using ModelCompression.Numerics;
using ModelCompression.Passes;
using ModelCompression.Quantization;

namespace ModelCompression.Search;

/// <summary>
/// How much one layer's output suffers under each setting the search may give it, estimated alone on the calibration
/// inputs (the relative output error ‖ΔW·X‖/‖W·X‖ from H = XᵀX; without data, H = I, the relative weight error):
/// pruning at each of <see cref="SparsityLevels"/> (by OBS saliency, with compensation), int8 per channel and int4 in
/// blocks of 32 by rounding.
/// </summary>
/// <param name="Rows">Output features (0: unknown).</param>
/// <param name="Cols">Input features per output, kernel included (0: unknown).</param>
internal sealed record LayerSensitivity(string Layer, long Parameters, bool Prunable, bool Int4, double[] PruneErrors, double Int8Error, double Int4Error, int Rows = 0, int Cols = 0)
{
    /// <summary>0, 0.05, …, 0.95: a layer is never emptied.</summary>
    public static readonly double[] SparsityLevels = Enumerable.Range(0, 20).Select(i => i / 20.0).ToArray();

    public static LayerSensitivity Measure(string name, float[] w, int rows, int cols, double[]? hessian, bool prunable, bool int4)
    {
        // Optimal Brain Surgeon saliency w²/[H⁻¹]_jj: what removing one weight costs once the others of its row
        // compensate (as SparseGPT's reconstruction does), relative to the layer's output energy tr(W·H·Wᵀ).
        // Interactions between removed weights are ignored, so the error of a level is an estimate, not a bound.
        var inverseDiagonal = hessian is null ? null : DampedInverseDiagonal(hessian, cols);
        var saliency = new double[w.Length];
        for (var i = 0; i < w.Length; i++) saliency[i] = (double)w[i] * w[i] / (inverseDiagonal?[i % cols] ?? 1);
        var total = hessian is null ? w.Sum(x => (double)x * x) : Energy(w, rows, cols, hessian);
        Array.Sort(saliency);
        var prefix = 0.0;
        var pruneErrors = new double[SparsityLevels.Length];
        var taken = 0;
        for (var k = 0; k < SparsityLevels.Length; k++)
        {
            var count = (int)Math.Round(SparsityLevels[k] * w.Length);
            for (; taken < count; taken++) prefix += saliency[taken];
            pruneErrors[k] = total > 0 ? Math.Sqrt(prefix / total) : 0;
        }
        double Error(float[] q) => hessian is null ? DenseMath.RelativeError(w, q) : Int4Quantizer.OutputError(w, q, rows, cols, hessian);
        var int8 = Int8Quantizer.QuantizePerChannel(w, rows, cols);
        var dequantized = new float[w.Length];
        for (var i = 0; i < w.Length; i++) dequantized[i] = int8.Values[i] * int8.Scales[i / cols];
        var int8Error = Error(dequantized);
        var int4Error = int4 ? Error(Int4Quantizer.Rtn(w, rows, cols, 32, symmetric: false).Dequantize()) : double.PositiveInfinity;
        return new LayerSensitivity(name, w.Length, prunable, int4, pruneErrors, int8Error, int4Error, rows, cols);
    }

    /// <summary>The diagonal of (H + μI)⁻¹, μ = 1 % of the mean diagonal (SparseGPT's dampening): Σᵢ (L⁻¹)ᵢⱼ² for H + μI = LLᵀ.</summary>
    private static double[] DampedInverseDiagonal(double[] hessian, int n)
    {
        var inverse = DenseMath.LowerInverse(DenseMath.DampedCholesky(hessian, n, 0.01).Factor, n);
        var diagonal = new double[n];
        for (var i = 0; i < n; i++)
            for (var j = 0; j <= i; j++) diagonal[j] += inverse[(long)i * n + j] * inverse[(long)i * n + j];
        return diagonal.Select(d => Math.Max(d, 1e-300)).ToArray();
    }

    /// <summary>tr(W·H·Wᵀ): the layer's squared output norm on the calibration inputs.</summary>
    private static double Energy(float[] w, int rows, int cols, double[] hessian)
    {
        var total = 0.0;
        var row = new double[cols];
        for (var r = 0; r < rows; r++)
        {
            for (var c = 0; c < cols; c++) row[c] = w[r * cols + c];
            for (var i = 0; i < cols; i++)
                if (row[i] != 0) total += row[i] * DenseMath.Dot(hessian.AsSpan(i * cols, cols), row);
        }
        return total;
    }


    /// <summary>The highest sparsity level whose estimated error is at most <paramref name="budget"/>.</summary>
    public double SparsityWithin(double budget)
    {
        if (!Prunable) return 0;
        var best = 0.0;
        for (var k = 0; k < SparsityLevels.Length; k++)
            if (PruneErrors[k] <= budget) best = SparsityLevels[k];
        return best;
    }
}
