using ModelCompression.Diagnostics;
using ModelCompression.Passes;
using ModelCompression.Policy;
using ModelCompression.Quantization;

namespace ModelCompression.Graph;

/// <summary>
/// Quantization writes operators of opset 13 (per-channel DequantizeLinear; DynamicQuantizeLinear needs 11), so a
/// model exported at opset 7–12 is first raised to opset 13 by <see cref="OpsetConverter"/>, with the same outputs.
/// Runs only when quantization is requested: a model that is only pruned or factorized keeps its opset. When an op
/// cannot be converted the model is left as it is, with a CM0304 warning naming the op (the quantization pass then
/// reports that it quantized nothing).
/// </summary>
public sealed class OpsetUpgradePass : ICompressionPass
{
    public string Name => "opset-upgrade";
    public PassStage Stage => PassStage.Normalize;
    public IReadOnlyList<OptionsGroup> Reads => [QuantizationOptions.Group];

    public bool IsRequested(CompressionPolicy policy) => policy.AnyLayer<QuantizationOptions>(q => q.Quantize != QuantizeMode.None);

    public void Apply(CompressionContext context)
    {
        var from = context.Model.OpsetVersion();
        var needed = context.Policy.AnyLayer<QuantizationOptions>(q => q.Quantize is QuantizeMode.Int8 or QuantizeMode.BFloat16) ? 13 : 11; // bfloat16 Cast: opset 13
        if (from >= needed) return;
        if (OpsetConverter.WhyNot(context.Model.Proto) is { } reason)
        {
            context.Warn(DiagnosticCodes.OpsetUpgradeImpossible,
                $"opset upgrade not possible ({from} → {OpsetConverter.Target}, needed for quantization): {reason}; the model keeps opset {from} and is not quantized");
            return;
        }
        OpsetConverter.Upgrade(context.Model.Proto);
        context.Graph.Invalidate();
    }
}
