using ModelCompression.Policy;

namespace ModelCompression.BiasCorrection;

public enum BiasCorrectionMode { Auto, On, Off }

/// <summary>
/// Bias correction after weight quantization: each output channel's bias absorbs the mean shift the rounded weights
/// cause on calibration data, Δb = −(Ŵ − W)·E[x].
/// </summary>
public sealed record BiasCorrectionOptions : IOptions<BiasCorrectionOptions>
{
    public BiasCorrectionMode BiasCorrection { get; init; } = BiasCorrectionMode.Auto;

    public static OptionsGroup<BiasCorrectionOptions> Group { get; } = new OptionsGroup<BiasCorrectionOptions>("Bias correction", 12,
        "Biases corrected for the mean output shift weight quantization causes.", isTechnique: false)
        .Add("BiasCorrection", Syntax.Enum(("auto", BiasCorrectionMode.Auto), ("on", BiasCorrectionMode.On), ("off", BiasCorrectionMode.Off)), SettingScope.Model,
            "Quantize=int8: correct each output channel's bias by −(Ŵ − W)·E[x], E[x] the layer's mean input on calibration data (a Conv/Gemm without a bias gets one); auto keeps it only when the model's output MSE against the float model on calibration data improves.",
            o => o.BiasCorrection, (o, v) => o with { BiasCorrection = v });
}
