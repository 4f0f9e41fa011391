using ModelCompression.Calibration;
using ModelCompression.Numerics;
namespace ModelCompression.LowRank;

/// <summary>
/// The metric an activation-aware factorization truncates in. With L·Lᵀ = X̂ᵀX̂ + λ·I (the damped moments of the
/// inputs the layer sees), the rank-r W′ minimizing ‖X̂·W′ᵀ − X·Wᵀ‖ is the truncated SVD of W·T, un-whitened by
/// L⁻¹, where T = L when X̂ = X (SVD-LLM) and T = (X̂ᵀX + λ·I)ᵀ·L⁻ᵀ when upstream layers were compressed, which
/// also lets the layer make up for the error that reaches it. The λ in both places makes the dampening a pull
/// toward the original W (a ridge on W′ − W), never a shrinkage of W′ toward zero; with X̂ = X the two forms agree.
/// </summary>
internal sealed class InputMetric
{
    private InputMetric(InputMoments moments, double[] whitening, double[] transform)
    {
        Moments = moments;
        Whitening = whitening;
        Transform = transform;
    }

    public InputMoments Moments { get; }
    public int Features => Moments.Features;
    /// <summary>L, lower triangular, features×features.</summary>
    public double[] Whitening { get; }
    /// <summary>T, the right factor W is multiplied by before the SVD, features×features.</summary>
    public double[] Transform { get; }

    /// <param name="damping">λ as a fraction of the mean diagonal of X̂ᵀX̂.</param>
    public static InputMetric From(InputMoments moments, double damping)
    {
        var n = moments.Features;
        var (l, added) = DenseMath.DampedCholesky(moments.Sum, n, damping);
        if (!moments.IsPaired) return new InputMetric(moments, l, l);
        // T = Cᵀ·L⁻ᵀ = (L⁻¹·C)ᵀ with C = X̂ᵀX + λ·I, all in one n² array (a 4096-input layer: 134 MB each).
        var transform = (double[])moments.Cross!.Clone();
        for (var i = 0; i < n; i++) transform[(long)i * n + i] += added;
        DenseMath.SolveLower(l, transform, n, n, overwrite: true);
        TransposeInPlace(transform, n);
        return new InputMetric(moments, l, transform);
    }

    private static void TransposeInPlace(double[] a, int n)
    {
        for (var i = 0; i < n; i++)
            for (var j = i + 1; j < n; j++)
                (a[(long)i * n + j], a[(long)j * n + i]) = (a[(long)j * n + i], a[(long)i * n + j]);
    }
}
