using ModelCompression.Calibration;
using ModelCompression.Policy;

namespace ModelCompression.Quantization;

public enum QuantizeMode { None, Int8, Int8Dynamic, Int4, Float16, BFloat16, Binary, Ternary }

/// <summary>int8 quantization: static QDQ (calibrated activations) or dynamic (activations quantized at run time).</summary>
public sealed record QuantizationOptions : IOptions<QuantizationOptions>
{
    public QuantizeMode Quantize { get; init; } = QuantizeMode.None;
    public CalibrationMethod CalibrationMethod { get; init; } = CalibrationMethod.MinMax;
    public double CalibrationPercentile { get; init; } = 99.999;
    public bool KeepSlowLayersFloat { get; init; } = true;

    public static OptionsGroup<QuantizationOptions> Group { get; } = new OptionsGroup<QuantizationOptions>("Quantization", 10,
        "Weights (and activations) in fewer bits: int8, int4, 16-bit floats, binary or ternary.", isTechnique: true)
    {
        Active = o => o.Quantize != QuantizeMode.None,
        NeedsCalibration = o => o.Quantize == QuantizeMode.Int8 ? ["Quantize=int8 (static; int8-dynamic needs none)"] : [],
    }
        .Add("Quantize", Syntax.Enum(("none", QuantizeMode.None), ("int8", QuantizeMode.Int8), ("int8-dynamic", QuantizeMode.Int8Dynamic), ("int4", QuantizeMode.Int4), ("float16", QuantizeMode.Float16), ("bfloat16", QuantizeMode.BFloat16), ("binary", QuantizeMode.Binary), ("ternary", QuantizeMode.Ternary)), SettingScope.PerLayer,
            "Quantization: int8 = static QDQ (weights per channel, activations calibrated); int8-dynamic = int8 weights, activations quantized at run time; int4 = weight-only 4-bit blocks (Gemm/MatMul → MatMulNBits; Conv → 4-bit blocks expanded at load, a size win only), GPTQ with CalibrationData (see the int4 settings); float16 / bfloat16 = 16-bit floats with float32 inputs and outputs (on ONNX Runtime's x64 CPU provider only the weights are 16-bit: half the file at float32's speed); binary / ternary = weights ±α (1 bit) or {−α, 0, +α} (2 bits) per output channel, expanded at load (the first conv and the head stay float unless a policy-file entry names them).",
            o => o.Quantize, (o, v) => o with { Quantize = v })
        .Add("CalibrationMethod", Syntax.Enum(("minmax", CalibrationMethod.MinMax), ("percentile", CalibrationMethod.Percentile), ("entropy", CalibrationMethod.Entropy)), SettingScope.Model,
            "How activation ranges are chosen from calibration data.",
            o => o.CalibrationMethod, (o, v) => o with { CalibrationMethod = v })
        .Add("CalibrationPercentile", Syntax.Number(50, 100, minOpen: true), SettingScope.Model,
            "Percentile of |activation| kept by the percentile calibrator.",
            o => o.CalibrationPercentile, (o, v) => o with { CalibrationPercentile = v })
        .Add("KeepSlowLayersFloat", Syntax.Bool, SettingScope.PerLayer,
            "int8: leave in float the convolutions whose int8 kernel ONNX Runtime runs slower than its float one (depthwise convolutions; a first convolution over at most 4 input channels); false quantizes them too, for size.",
            o => o.KeepSlowLayersFloat, (o, v) => o with { KeepSlowLayersFloat = v });
}
