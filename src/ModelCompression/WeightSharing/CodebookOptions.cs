using ModelCompression.Policy;

namespace ModelCompression.WeightSharing;

public enum CodebookMethod { Auto, Nearest, Gptq }

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
    public CodebookMethod CodebookMethod { get; init; } = CodebookMethod.Auto;
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
    public double RateFor(CodebookMethod method, int entries) => CodebookRate ?? (method == CodebookMethod.Gptq && entries >= 16 ? 10 : 0);

    /// <summary>The assignment that runs: auto is gptq when calibration data is given, else nearest.</summary>
    public CodebookMethod MethodFor(bool calibrated) => CodebookMethod != CodebookMethod.Auto ? CodebookMethod : calibrated ? CodebookMethod.Gptq : CodebookMethod.Nearest;

    public static OptionsGroup<CodebookOptions> Group { get; } = new OptionsGroup<CodebookOptions>("Weight sharing", 45,
        "Weights replaced by indices into a per-layer codebook of shared values.", isTechnique: true)
    {
        Active = o => o.Codebook is not null,
        NeedsCalibration = o => o.Codebook is not null && o.CodebookMethod == CodebookMethod.Gptq ? ["CodebookMethod=gptq"] : [],
    }
        .Add("Codebook", Syntax.Optional(Syntax.Integer(2, 256)), SettingScope.PerLayer,
            "Weight sharing: the number of shared values per Conv/Gemm/MatMul weight, found by k-means; stored as uint8 indices (or two 4-bit ones per byte for k ≤ 16, whichever Brotli codes smaller) plus the float codebook, expanded by ONNX Runtime at load. Exact zeros (pruned weights) stay zero.",
            o => o.Codebook, (o, v) => o with { Codebook = v })
        .Add("CodebookIterations", Syntax.Integer(1, 10000), SettingScope.Model,
            "Weight sharing: most k-means iterations per layer (it stops earlier when the clusters are stable).",
            o => o.CodebookIterations, (o, v) => o with { CodebookIterations = v })
        .Add("CodebookRate", Syntax.Optional(Syntax.Number(0, 100)), SettingScope.PerLayer,
            "Weight sharing: entropy-constrained k-means; each weight takes the shared value with the least squared error + this × the layer's k-means mean squared error × the bits its index costs once entropy-coded (as zip/Brotli do), so rare values get narrower ranges and the indices compress better; 0 = plain k-means. Unset: 10 with CodebookMethod gptq and Codebook ≥ 16 (the compensation absorbs the extra error), else 0.",
            o => o.CodebookRate, (o, v) => o with { CodebookRate = v })
        .Add("CodebookMethod", Syntax.Enum(("auto", CodebookMethod.Auto), ("nearest", CodebookMethod.Nearest), ("gptq", CodebookMethod.Gptq)), SettingScope.PerLayer,
            "Weight sharing: auto = gptq when CalibrationData is given, else nearest; nearest = each weight to its nearest shared value; gptq = assigned input by input, each input's error compensated in the inputs not yet assigned (GPTQ), then the shared values and the bias refitted to the layer's outputs on the calibration data (needs CalibrationData).",
            o => o.CodebookMethod, (o, v) => o with { CodebookMethod = v },
            explain: (v, p) => v == CodebookMethod.Auto ? PolicySettings.FormatEnum(new CodebookOptions().MethodFor(p.Data.CalibrationData is not null)) : null);
}
