using ModelCompression.Policy;

namespace ModelCompression.WeightSharing;

/// <summary>What a codebook entry stands for: one weight, a run of consecutive input weights, or one of two summed stages.</summary>
public enum CodebookMethod { Scalar, Product, Residual }

/// <summary>How much each weight counts when the codebook is fitted.</summary>
public enum CodebookWeighting { Auto, None, Activation }

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
    /// <summary>Inputs per product-quantization sub-vector.</summary>
    public int CodebookSubvector { get; init; } = 4;
    public CodebookWeighting CodebookWeighting { get; init; } = CodebookWeighting.Auto;

    /// <summary>Whether the fit weights each weight by its input's second moment (auto: when calibration data is given).</summary>
    public bool WeightsByActivation(bool hasCalibration) => CodebookWeighting == CodebookWeighting.Activation || (CodebookWeighting == CodebookWeighting.Auto && hasCalibration);

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
            "Weight sharing: scalar = k shared values; product = k shared vectors of CodebookSubvector consecutive inputs of a weight row (one index per vector; rows whose length is not a multiple fall back to scalar); residual = a scalar codebook plus a second one of k values fitted to what the first misses (two indices per weight, summed at load).",
            o => o.CodebookMethod, (o, v) => o with { CodebookMethod = v })
        .Add("CodebookSubvector", Syntax.Integer(2, 16), SettingScope.PerLayer,
            "Weight sharing, CodebookMethod=product: inputs per shared vector.",
            o => o.CodebookSubvector, (o, v) => o with { CodebookSubvector = v })
        .Add("CodebookWeighting", Syntax.Enum(("auto", CodebookWeighting.Auto), ("none", CodebookWeighting.None), ("activation", CodebookWeighting.Activation)), SettingScope.PerLayer,
            "Weight sharing: auto = activation when CalibrationData is given, else none; activation = k-means weights each weight by its input's second moment E[x²] on the calibration data, so the codebook minimizes a proxy of the layer's output error (needs CalibrationData); none = every weight counts the same.",
            o => o.CodebookWeighting, (o, v) => o with { CodebookWeighting = v },
            explain: (v, p) => v == CodebookWeighting.Auto ? (p.Data.CalibrationData is not null ? "activation" : "none") : null);
}
