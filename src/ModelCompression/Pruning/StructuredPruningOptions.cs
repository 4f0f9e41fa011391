using ModelCompression.Policy;

namespace ModelCompression.Pruning;

/// <summary>Structured pruning: whole neurons and filters removed, so the graph itself shrinks.</summary>
public sealed record StructuredPruningOptions : IOptions<StructuredPruningOptions>
{
    public double StructuredSparsity { get; init; }
    public StructuredCriterion StructuredCriterion { get; init; } = StructuredCriterion.Auto;
    /// <summary>Structured pruning keeps a multiple of this many channels per group.</summary>
    public int StructuredChannelMultiple { get; init; } = 16;

    /// <summary>The criterion that runs: auto is reconstruction when calibration data is given (measured best), else l1.</summary>
    public StructuredCriterion CriterionFor(bool calibrated) =>
        StructuredCriterion != StructuredCriterion.Auto ? StructuredCriterion : calibrated ? StructuredCriterion.Reconstruction : StructuredCriterion.L1;

    public static OptionsGroup<StructuredPruningOptions> Group { get; } = new OptionsGroup<StructuredPruningOptions>("Structured pruning", 30,
        "Neurons and filters removed.", isTechnique: true)
    {
        Active = o => o.StructuredSparsity > 0,
        NeedsCalibration = o => o.StructuredCriterion is StructuredCriterion.Apoz or StructuredCriterion.Reconstruction ? [$"StructuredCriterion={PolicySettings.FormatEnum(o.StructuredCriterion)}"] : [],
    }
        .Add("StructuredSparsity", Syntax.Number(0, 1, maxOpen: true), SettingScope.PerLayer,
            "Fraction of hidden neurons (Gemm/MatMul) and conv filters removed; the graph shrinks.",
            o => o.StructuredSparsity, (o, v) => o with { StructuredSparsity = v })
        .Add("StructuredCriterion", Syntax.Enum(("auto", StructuredCriterion.Auto), ("l1", StructuredCriterion.L1), ("apoz", StructuredCriterion.Apoz), ("reconstruction", StructuredCriterion.Reconstruction)), SettingScope.Model,
            "How neurons/filters are ranked for structured pruning: auto = reconstruction when CalibrationData is given, else l1 (apoz and reconstruction need CalibrationData).",
            o => o.StructuredCriterion, (o, v) => o with { StructuredCriterion = v },
            explain: (v, p) => v == StructuredCriterion.Auto ? PolicySettings.FormatEnum(new StructuredPruningOptions().CriterionFor(p.Data.CalibrationData is not null)) : null)
        .Add("StructuredChannelMultiple", Syntax.Integer(1, 256), SettingScope.Model,
            "Structured pruning keeps a multiple of this many channels per group (CPU kernels work on blocks of 8 or 16 channels; other counts save no time).",
            o => o.StructuredChannelMultiple, (o, v) => o with { StructuredChannelMultiple = v });
}

public enum StructuredCriterion { Auto, L1, Apoz, Reconstruction }
