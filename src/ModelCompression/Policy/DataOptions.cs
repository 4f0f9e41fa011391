namespace ModelCompression.Policy;

/// <summary>The files a run reads besides the model: calibration and validation samples, per-layer overrides.</summary>
public sealed record DataOptions : IOptions<DataOptions>
{
    public string? CalibrationData { get; init; }
    public int CalibrationSamples { get; init; } = 512;
    public string? ValidationData { get; init; }
    public string? PolicyFile { get; init; }

    public static OptionsGroup<DataOptions> Group { get; } = new OptionsGroup<DataOptions>("Data", 60,
        "Input files (paths relative to the project or current folder).", isTechnique: false)
        .Add("CalibrationData", Syntax.Path, SettingScope.Model,
            "Calibration samples (.npz, .npy or an ONNX test-data folder).",
            o => o.CalibrationData, (o, v) => o with { CalibrationData = v })
        .Add("CalibrationSamples", Syntax.Integer(1, 1_000_000), SettingScope.Model,
            "At most this many calibration samples are used.",
            o => o.CalibrationSamples, (o, v) => o with { CalibrationSamples = v })
        .Add("ValidationData", Syntax.Path, SettingScope.Model,
            "Gate samples (.npz, .npy or an ONNX test-data folder); 'label'/'labels' holds class ids.",
            o => o.ValidationData, (o, v) => o with { ValidationData = v })
        .Add("PolicyFile", Syntax.Path, SettingScope.Model,
            "JSON file with per-layer overrides (see docs/policy-file.md).",
            o => o.PolicyFile, (o, v) => o with { PolicyFile = v });
}
