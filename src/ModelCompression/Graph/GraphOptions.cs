using ModelCompression.Policy;

namespace ModelCompression.Graph;

/// <summary>Lossless graph rewrites that run before the techniques.</summary>
public sealed record GraphOptions : IOptions<GraphOptions>
{
    public bool FoldBatchNorm { get; init; } = true;

    public static OptionsGroup<GraphOptions> Group { get; } = new OptionsGroup<GraphOptions>("Graph", 50,
        "Lossless rewrites.", isTechnique: false)
        .Add("FoldBatchNorm", Syntax.Bool, SettingScope.Model,
            "Fold BatchNormalization into the preceding Conv/Gemm.",
            o => o.FoldBatchNorm, (o, v) => o with { FoldBatchNorm = v });
}
