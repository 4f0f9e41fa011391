using ModelCompression.Policy;

namespace ModelCompression.WeightSharing;

/// <summary>What a codebook entry stands for: one weight, a run of consecutive input weights, or one of two summed stages.</summary>
public enum CodebookMethod { Scalar, Product, Residual }

/// <summary>What a product-quantization vector of a conv with a kernel wider than 1×1 holds.</summary>
public enum CodebookConvVector { Channels, Kernel }

/// <summary>How much each weight counts when the codebook is fitted.</summary>
public enum CodebookWeighting { None, Activation }

/// <summary>Weight sharing: each layer's weights replaced by indices into a small per-layer codebook of shared values.</summary>
public sealed record CodebookOptions : IOptions<CodebookOptions>
{
    /// <summary>Shared values per layer; null leaves the layer alone.</summary>
    public int? Codebook { get; init; }
    /// <summary>
    /// Cap on the k-means (Lloyd) iterations per layer; it stops as soon as no weight changes cluster. Settling
    /// matters: from the linear start the fixtures' layers settle after 15–400 iterations, and stopping at 20 costs
    /// the ResNet 1.9 points at 16 values. An iteration costs O(k log n), so even the cap is cheap.
    /// </summary>
    public int CodebookIterations { get; init; } = 1000;
    public CodebookMethod CodebookMethod { get; init; } = CodebookMethod.Scalar;
    /// <summary>Inputs (input channels, for a conv) per product-quantization sub-vector.</summary>
    public int CodebookSubvector { get; init; } = 4;
    /// <summary>
    /// Channels by default: at 2 bits a weight (k=256) the ResNet kept 88.40 % with runs of 4 input channels, against
    /// 32.80 % with whole 3×3 kernels (0.9 bits a weight) and 76.80 % with runs of the flat row.
    /// </summary>
    public CodebookConvVector CodebookConvVector { get; init; } = CodebookConvVector.Channels;
    /// <summary>
    /// Off by default: the E[x²] diagonal lowers the output error at small k but at k = 16 it cost the MLP half a
    /// point (90.30 % vs 90.80 %), so it is asked for, not implied by calibration data.
    /// </summary>
    public CodebookWeighting CodebookWeighting { get; init; } = CodebookWeighting.None;

    /// <summary>Whether the fit weights each weight by its input's second moment.</summary>
    public bool WeightsByActivation => CodebookWeighting == CodebookWeighting.Activation;

    public static OptionsGroup<CodebookOptions> Group { get; } = new OptionsGroup<CodebookOptions>("Weight sharing", 45,
        "Weights replaced by indices into a per-layer codebook of shared values.", isTechnique: true)
    {
        Active = o => o.Codebook is not null,
    }
        .Add("Codebook", Syntax.Optional(Syntax.Integer(2, 256)), SettingScope.PerLayer,
            "Weight sharing: the number of shared values per Conv/Gemm/MatMul weight, found by k-means; stored as uint8 indices (or two 4-bit ones per byte for k ≤ 16, whichever Brotli codes smaller) plus the float codebook, expanded by ONNX Runtime at load. Exact zeros (pruned weights) stay zero.",
            o => o.Codebook, (o, v) => o with { Codebook = v })
        .Add("CodebookIterations", Syntax.Integer(1, 10000), SettingScope.Model,
            "Weight sharing: most k-means iterations per layer (it stops earlier when the clusters are stable).",
            o => o.CodebookIterations, (o, v) => o with { CodebookIterations = v })
        .Add("CodebookMethod", Syntax.Enum(("scalar", CodebookMethod.Scalar), ("product", CodebookMethod.Product), ("residual", CodebookMethod.Residual)), SettingScope.PerLayer,
            "Weight sharing: scalar = k shared values; product = k shared vectors (one index per vector) of CodebookSubvector consecutive inputs of a Gemm/MatMul row, or input channels of a conv (at one kernel position; see CodebookConvVector); layers whose inputs or channels are not a multiple fall back to scalar; residual = a scalar codebook plus a second one of k values fitted to what the first misses (two indices per weight, summed at load).",
            o => o.CodebookMethod, (o, v) => o with { CodebookMethod = v })
        .Add("CodebookSubvector", Syntax.Integer(2, 16), SettingScope.PerLayer,
            "Weight sharing, CodebookMethod=product: inputs of a Gemm/MatMul row, or input channels of a conv, per shared vector.",
            o => o.CodebookSubvector, (o, v) => o with { CodebookSubvector = v })
        .Add("CodebookConvVector", Syntax.Enum(("channels", CodebookConvVector.Channels), ("kernel", CodebookConvVector.Kernel)), SettingScope.PerLayer,
            "Weight sharing, CodebookMethod=product, convs with a kernel wider than 1×1: channels = a vector is CodebookSubvector input channels at one kernel position; kernel = a vector is one whole kernel (a 3×3 kernel: 9 inputs, fewer bits a weight).",
            o => o.CodebookConvVector, (o, v) => o with { CodebookConvVector = v })
        .Add("CodebookWeighting", Syntax.Enum(("none", CodebookWeighting.None), ("activation", CodebookWeighting.Activation)), SettingScope.PerLayer,
            "Weight sharing: none = every weight counts the same (default); activation = k-means weights each weight by its input's second moment E[x²] on the calibration data, so the codebook minimizes a proxy of the layer's output error (needs CalibrationData).",
            o => o.CodebookWeighting, (o, v) => o with { CodebookWeighting = v });
}
