using ModelCompression.Policy;

namespace ModelCompression.Graph;

/// <summary>Lossless graph rewrites that run before the techniques.</summary>
public sealed record GraphOptions : IOptions<GraphOptions>
{
    public bool FoldBatchNorm { get; init; } = true;
    public bool FuseActivations { get; init; } = true;

    public static OptionsGroup<GraphOptions> Group { get; } = new OptionsGroup<GraphOptions>("Graph", 50,
        "Lossless rewrites.", isTechnique: false)
        .Add("FoldBatchNorm", Syntax.Bool, SettingScope.Model,
            "Fold BatchNormalization into the preceding Conv/Gemm.",
            o => o.FoldBatchNorm, (o, v) => o with { FoldBatchNorm = v })
        .Add("FuseActivations", Syntax.Bool, SettingScope.Model,
            "Write activations spelled out as elementwise ops as one op (HardSwish: x·Clip(x+3, 0, 6)/6).",
            o => o.FuseActivations, (o, v) => o with { FuseActivations = v });
}
