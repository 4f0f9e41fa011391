using System.Globalization;
using System.Text.Json.Nodes;
using ModelCompression.Policy;

namespace ModelCompression.LowRank;

public enum LowRankMethod { Auto, Svd, ActivationAware }
public enum ConvDecomposition { None, Tucker2, Spatial }

/// <summary>Low-rank factorization: the rank of each layer (fixed, by spectral energy or from a budget) and the method.</summary>
public sealed record LowRankOptions : IOptions<LowRankOptions>
{
    public RankSpec? Rank { get; init; }
    public double? RankEnergy { get; init; }
    public LowRankMethod LowRankMethod { get; init; } = LowRankMethod.Auto;
    public double LowRankDamping { get; init; } = 0.01;
    public ConvDecomposition ConvDecomposition { get; init; } = ConvDecomposition.None;
    public double? ParameterBudget { get; init; }

    /// <summary>The method that runs: auto is activation-aware when calibration data is given (the head keeps its accuracy), else svd.</summary>
    public LowRankMethod MethodFor(bool calibrated) => LowRankMethod != LowRankMethod.Auto ? LowRankMethod : calibrated ? LowRankMethod.ActivationAware : LowRankMethod.Svd;

    public static OptionsGroup<LowRankOptions> Group { get; } = new OptionsGroup<LowRankOptions>("Low rank", 40,
        "Layers factorized into thinner ones.", isTechnique: true)
    {
        Active = o => o.Rank is not null || o.RankEnergy is not null || o.ParameterBudget is not null,
        NeedsCalibration = o => o.LowRankMethod == LowRankMethod.ActivationAware ? ["LowRankMethod=activation-aware"] : [],
        Conflicting = (o, _) => Conflicts(o),
    }
        .Add("Rank", Syntax.Custom<RankSpec?>("(0, 1] ratio or integer >= 1", ParseRank, v => v?.ToString() ?? "",
                () => new JsonObject { ["type"] = "number", ["exclusiveMinimum"] = 0 }), SettingScope.PerLayer,
            "Low-rank factorization of Gemm/MatMul weights (and of convolutions, see ConvDecomposition): a ratio of full rank or an absolute rank. The first conv and the classifier head stay dense unless the policy file gives them their own Rank.",
            o => o.Rank, (o, v) => o with { Rank = v })
        .Add("RankEnergy", Syntax.Optional(Syntax.Number(0, 1, minOpen: true)), SettingScope.PerLayer,
            "Keep the smallest rank whose singular values hold this fraction of spectral energy.",
            o => o.RankEnergy, (o, v) => o with { RankEnergy = v })
        .Add("LowRankMethod", Syntax.Enum(("auto", LowRankMethod.Auto), ("svd", LowRankMethod.Svd), ("activation-aware", LowRankMethod.ActivationAware)), SettingScope.PerLayer,
            "auto = activation-aware when CalibrationData is given, else svd; svd = plain truncated SVD; activation-aware = truncate in the metric of the layer inputs (needs CalibrationData).",
            o => o.LowRankMethod, (o, v) => o with { LowRankMethod = v },
            explain: (v, p) => v == LowRankMethod.Auto ? PolicySettings.FormatEnum(new LowRankOptions().MethodFor(p.Data.CalibrationData is not null)) : null)
        .Add("LowRankDamping", Syntax.Number(0, 100, minOpen: true), SettingScope.PerLayer,
            "Activation-aware low rank: dampening added to the diagonal of the inputs' XᵀX before whitening, as a fraction of its mean (raise it when calibration samples are fewer than a layer's input features).",
            o => o.LowRankDamping, (o, v) => o with { LowRankDamping = v })
        .Add("ConvDecomposition", Syntax.Enum(("none", ConvDecomposition.None), ("tucker2", ConvDecomposition.Tucker2), ("spatial", ConvDecomposition.Spatial)), SettingScope.PerLayer,
            "Low-rank form of convolutions: tucker2 (1x1 -> kxk core -> 1x1) or spatial (kx1 then 1xk).",
            o => o.ConvDecomposition, (o, v) => o with { ConvDecomposition = v })
        .Add("ParameterBudget", Syntax.Optional(Syntax.Number(0, 1, minOpen: true, maxOpen: true)), SettingScope.Model,
            "Low rank: fraction of the factorizable layers' parameters to keep; ranks are allocated per layer from their spectra (a per-layer Rank in the policy file pins a layer outside the budget).",
            o => o.ParameterBudget, (o, v) => o with { ParameterBudget = v });

    private static IEnumerable<string> Conflicts(LowRankOptions o)
    {
        if (o.Rank is not null && o.RankEnergy is not null)
            yield return "Rank and RankEnergy both choose the rank: set one of them";
        if (o.ParameterBudget is not null && (o.Rank is not null || o.RankEnergy is not null))
            yield return $"ParameterBudget allocates the ranks that {(o.Rank is not null ? "Rank" : "RankEnergy")} would fix for every layer: set one of them (a per-layer Rank in the policy file pins that layer outside the budget)";
    }

    private static RankSpec? ParseRank(string raw)
    {
        if (!double.TryParse(raw, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || !double.IsFinite(v) || v <= 0)
            throw new FormatException("expected a ratio in (0, 1] or an integer rank >= 1");
        if (v <= 1 && raw.Contains('.')) return new RankSpec(v, IsRatio: true);
        if (v == 1) return new RankSpec(1, IsRatio: true);
        if (v != Math.Floor(v)) throw new FormatException("expected a ratio in (0, 1] or an integer rank >= 1");
        return new RankSpec(v, IsRatio: false);
    }
}
