using ModelCompression.Policy;

namespace ModelCompression.WeightSharing;

/// <summary>What a codebook entry stands for: one weight, a run of consecutive input weights, or one of two summed stages.</summary>
public enum CodebookMethod { Scalar, Product, Residual }

/// <summary>How the weights of a scalar codebook take their entries: the nearest one, or error-compensated on data.</summary>
public enum CodebookAssignment { Auto, Nearest, Gptq }

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

    public CodebookAssignment CodebookAssignment { get; init; } = CodebookAssignment.Auto;
    /// <summary>
    /// Entropy-constrained clustering: the price of one bit of index entropy, in units of the layer's plain k-means
    /// mean squared error (0 = plain k-means, nearest value). Models ship entropy-coded (zip, Brotli), where an index
    /// costs its entropy, not ⌈log2 k⌉. Brotli % of the fp32 file / top-1 drop with 16 values, rate 4 → 10: MLP 90 %
    /// SparseGPT 2.46 % / −1.35 pt → 2.28 % / −1.75 pt; ResNet 70 % 5.46 % / −0.55 pt → 4.96 % / −0.55 pt (12:
    /// 4.78 % / −1.65 pt); without pruning MLP 7.63 % / −0.10 pt → 5.67 % / −0.05 pt, ResNet 8.76 % / −0.40 pt →
    /// 6.88 % / −0.25 pt.
    /// </summary>
    public double? CodebookRate { get; init; }

    /// <summary>
    /// The rate that applies: as set, else 10 with the data-aware assignment and at least 16 entries, 0 (plain k-means)
    /// otherwise. Without calibration data nothing compensates the extra error (ResNet, 32 values: 90.65 % top-1 at
    /// rate 10, within a point of fp32's 93.60 % at 0); with fewer entries each is a large share of the error budget
    /// (ResNet, 8 values, data-aware: 93.35 % at 0, 87.10 % at 10; 4 values: 85.20 % at 0, 81.15 % at 2).
    /// </summary>
    public double RateFor(CodebookAssignment assignment, int entries) => CodebookRate ?? (assignment == CodebookAssignment.Gptq && entries >= 16 ? 10 : 0);

    /// <summary>
    /// The assignment that runs: auto is gptq for scalar codebooks when calibration data is given, else nearest
    /// (product and residual codebooks are always assigned to the nearest entry).
    /// </summary>
    public CodebookAssignment AssignmentFor(bool calibrated) =>
        CodebookMethod != CodebookMethod.Scalar ? CodebookAssignment.Nearest
        : CodebookAssignment != CodebookAssignment.Auto ? CodebookAssignment
        : calibrated ? CodebookAssignment.Gptq : CodebookAssignment.Nearest;

    public static OptionsGroup<CodebookOptions> Group { get; } = new OptionsGroup<CodebookOptions>("Weight sharing", 45,
        "Weights replaced by indices into a per-layer codebook of shared values.", isTechnique: true)
    {
        Active = o => o.Codebook is not null,
        NeedsCalibration = o => o.Codebook is null ? []
            : [.. o.CodebookAssignment == CodebookAssignment.Gptq ? ["CodebookAssignment=gptq"] : Array.Empty<string>(),
               .. o.WeightsByActivation ? ["CodebookWeighting=activation"] : Array.Empty<string>()],
        Conflicting = (o, _) => Conflicts(o),
    }
        .Add("Codebook", Syntax.Optional(Syntax.Integer(2, 256)), SettingScope.PerLayer,
            "Weight sharing: the number of shared values per Conv/Gemm/MatMul weight, found by k-means; stored as uint8 indices (or two 4-bit ones per byte for k ≤ 16, whichever Brotli codes smaller) plus the float codebook, expanded by ONNX Runtime at load. Exact zeros (pruned weights) stay zero.",
            o => o.Codebook, (o, v) => o with { Codebook = v })
        .Add("CodebookIterations", Syntax.Integer(1, 10000), SettingScope.Model,
            "Weight sharing: most k-means iterations per layer (it stops earlier when the clusters are stable).",
            o => o.CodebookIterations, (o, v) => o with { CodebookIterations = v })
        .Add("CodebookRate", Syntax.Optional(Syntax.Number(0, 100)), SettingScope.PerLayer,
            "Weight sharing: entropy-constrained k-means; each weight takes the shared value with the least squared error + this × the layer's k-means mean squared error × the bits its index costs once entropy-coded (as zip/Brotli do), so rare values get narrower ranges and the indices compress better; 0 = plain k-means. Unset: 10 with CodebookAssignment gptq and Codebook ≥ 16 (the compensation absorbs the extra error), else 0.",
            o => o.CodebookRate, (o, v) => o with { CodebookRate = v })
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
            o => o.CodebookWeighting, (o, v) => o with { CodebookWeighting = v })
        .Add("CodebookAssignment", Syntax.Enum(("auto", CodebookAssignment.Auto), ("nearest", CodebookAssignment.Nearest), ("gptq", CodebookAssignment.Gptq)), SettingScope.PerLayer,
            "Weight sharing, scalar codebooks (product and residual ones take the nearest entry): auto = gptq when CalibrationData is given, else nearest; nearest = each weight to its nearest shared value; gptq = assigned input by input, each input's error compensated in the inputs not yet assigned (GPTQ), then the shared values and the bias refitted to the layer's outputs on the calibration data (needs CalibrationData).",
            o => o.CodebookAssignment, (o, v) => o with { CodebookAssignment = v },
            explain: (v, p) => v == CodebookAssignment.Auto ? PolicySettings.FormatEnum(new CodebookOptions().AssignmentFor(p.Data.CalibrationData is not null)) : null);

    private static IEnumerable<string> Conflicts(CodebookOptions o)
    {
        if (o.Codebook is null || o.CodebookMethod == CodebookMethod.Scalar) yield break;
        var method = PolicySettings.FormatEnum(o.CodebookMethod);
        if (o.CodebookAssignment == CodebookAssignment.Gptq) yield return $"CodebookAssignment=gptq assigns scalar codebooks only, not CodebookMethod={method}";
        if (o.CodebookRate > 0) yield return $"CodebookRate applies to scalar codebooks only, not CodebookMethod={method}";
    }
}
