namespace ModelCompression.Policy;

/// <summary>Which layers the passes may touch at all.</summary>
public sealed record LayerSelectionOptions : IOptions<LayerSelectionOptions>
{
    public IReadOnlyList<string> Exclude { get; init; } = [];
    /// <summary>True for a layer whose policy-file entry says <c>"Excluded": true</c>.</summary>
    public bool Excluded { get; init; }

    public static OptionsGroup<LayerSelectionOptions> Group { get; } = new OptionsGroup<LayerSelectionOptions>("Layers", 55,
        "Layers no pass touches.", isTechnique: false)
        .Add("Exclude", Syntax.Custom<IReadOnlyList<string>>("glob;glob",
                raw => raw.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                v => string.Join(";", v), () => new() { ["type"] = "string" }), SettingScope.Model,
            "Layers (node-name globs, ';'-separated) no pass touches.",
            o => o.Exclude, (o, v) => o with { Exclude = v })
        .Add("Excluded", Syntax.Bool, SettingScope.PolicyFileOnly,
            "Policy file only: true leaves the matched layers untouched.",
            o => o.Excluded, (o, v) => o with { Excluded = v });

    /// <summary>Whether a layer stays untouched: its policy-file entry says so or an Exclude glob matches it.</summary>
    public bool Excludes(string layerName) => Excluded || Exclude.Any(glob => LayerGlob.IsMatch(glob, layerName));
}
