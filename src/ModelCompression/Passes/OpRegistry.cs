using ModelCompression.Onnx.Protobuf;

namespace ModelCompression.Passes;

/// <summary>The ways a pass can handle an op (flags: an op usually has several).</summary>
[Flags]
public enum OpTechnique
{
    None = 0,
    /// <summary>Quantize=int8: a QDQ group ONNX Runtime fuses into an int8 kernel.</summary>
    StaticInt8 = 1 << 0,
    /// <summary>Quantize=int8: moves or selects values, so it runs on int8 between two tensors with equal parameters.</summary>
    Int8PassThrough = 1 << 1,
    /// <summary>Quantize=int8-dynamic: int8 weights, activations quantized at run time.</summary>
    DynamicInt8 = 1 << 2,
    /// <summary>Unstructured or N:M pruning of the weight.</summary>
    Prune = 1 << 3,
    /// <summary>Structured pruning: output channels removed, the layers reading them shrunk.</summary>
    StructuredPrune = 1 << 4,
    /// <summary>Low-rank factorization of the weight.</summary>
    Factorize = 1 << 5,
    /// <summary>Weight sharing: the weight stored as codebook indices.</summary>
    Codebook = 1 << 6,
    /// <summary>A following BatchNormalization folded into the weight and bias.</summary>
    FoldBatchNorm = 1 << 7,
}

/// <summary>How a weighted op lays its weight out (<see cref="WeightedLayer"/> reads every layout as [out, in]).</summary>
public enum WeightLayout
{
    /// <summary>Conv: [out, in/group, k…].</summary>
    Convolution,
    /// <summary>Gemm: [out, in] with transB=1, [in, out] without; transA must be 0.</summary>
    Gemm,
    /// <summary>MatMul: x·W with W [in, out].</summary>
    MatMul,
}

/// <summary>
/// What the engine knows of one op type: the techniques that handle it, and for a weighted op which input is the
/// weight, which the bias, and its layout. <see cref="Reasons"/> says why a technique does not handle it, where that
/// is a choice worth reporting.
/// </summary>
public sealed record OpEntry(string OpType, OpTechnique Techniques, int? WeightInput = null, int? BiasInput = null, WeightLayout? Layout = null)
{
    public IReadOnlyDictionary<OpTechnique, string> Reasons { get; init; } = new Dictionary<OpTechnique, string>();
}

/// <summary>
/// One place for op-type knowledge, as in ONNX Runtime's quantizer registry: which ops carry a weight and which
/// techniques handle which ops. An op that is not here, or a technique its entry does not list, is left as it is
/// (float) by that technique, with <see cref="WhyNot"/> as the reason. The passes keep their finer checks (a grouped
/// conv, Gemm's alpha and beta, shapes) themselves.
/// </summary>
public static class OpRegistry
{
    private const OpTechnique WeightTechniques = OpTechnique.StaticInt8 | OpTechnique.Prune | OpTechnique.StructuredPrune | OpTechnique.Factorize | OpTechnique.Codebook;

    private static readonly Dictionary<string, OpEntry> Entries = new OpEntry[]
    {
        new("Conv", WeightTechniques | OpTechnique.FoldBatchNorm, WeightInput: 1, BiasInput: 2, WeightLayout.Convolution)
        {
            Reasons = new Dictionary<OpTechnique, string>
            {
                [OpTechnique.DynamicInt8] = "dynamic int8 covers Gemm/MatMul only; ConvInteger runs slower than a float Conv in ONNX Runtime (Quantize=int8 quantizes convolutions statically)",
            },
        },
        new("Gemm", WeightTechniques | OpTechnique.DynamicInt8 | OpTechnique.FoldBatchNorm, WeightInput: 1, BiasInput: 2, WeightLayout.Gemm),
        new("MatMul", WeightTechniques | OpTechnique.DynamicInt8, WeightInput: 1, BiasInput: null, WeightLayout.MatMul),
        // Activation ops ORT runs in int8 when their inputs already are (QLinearAdd, QLinear(Global)AveragePool; a
        // spatial ReduceMean becomes GlobalAveragePool).
        new("Add", OpTechnique.StaticInt8),
        new("AveragePool", OpTechnique.StaticInt8),
        new("GlobalAveragePool", OpTechnique.StaticInt8),
        new("ReduceMean", OpTechnique.StaticInt8),
        new("Flatten", OpTechnique.Int8PassThrough),
        new("Reshape", OpTechnique.Int8PassThrough),
        new("Squeeze", OpTechnique.Int8PassThrough),
        new("Unsqueeze", OpTechnique.Int8PassThrough),
        new("Transpose", OpTechnique.Int8PassThrough),
        new("MaxPool", OpTechnique.Int8PassThrough),
    }.ToDictionary(e => e.OpType, StringComparer.Ordinal);

    /// <summary>The entry of an op type, whatever its domain; null when the engine does not know it.</summary>
    public static OpEntry? For(string opType) => Entries.GetValueOrDefault(opType);

    /// <summary>The entry of a node of the default ONNX domain; null for other domains and unknown ops.</summary>
    public static OpEntry? For(NodeProto node) => node.Domain is "" or "ai.onnx" ? For(node.OpType) : null;

    /// <summary>Op types with a weight input.</summary>
    public static IReadOnlyList<string> WeightedOps { get; } = Entries.Values.Where(e => e.WeightInput is not null).Select(e => e.OpType).ToList();

    /// <summary>Op types a technique handles.</summary>
    public static IReadOnlySet<string> OpsFor(OpTechnique technique) =>
        Entries.Values.Where(e => e.Techniques.HasFlag(technique)).Select(e => e.OpType).ToHashSet(StringComparer.Ordinal);

    public static bool Handles(NodeProto node, OpTechnique technique) => For(node) is { } entry && entry.Techniques.HasFlag(technique);

    /// <summary>Why <paramref name="technique"/> leaves the node as it is, or null when it handles it.</summary>
    public static string? WhyNot(NodeProto node, OpTechnique technique)
    {
        if (Handles(node, technique)) return null;
        return For(node)?.Reasons.GetValueOrDefault(technique) is { } reason ? reason : $"{Describe(technique)} has no handler for {node.OpType}";
    }

    private static string Describe(OpTechnique technique) => technique switch
    {
        OpTechnique.StaticInt8 => "int8",
        OpTechnique.Int8PassThrough => "int8 pass-through",
        OpTechnique.DynamicInt8 => "int8-dynamic",
        OpTechnique.Prune => "pruning",
        OpTechnique.StructuredPrune => "structured pruning",
        OpTechnique.Factorize => "low rank",
        OpTechnique.Codebook => "codebook",
        OpTechnique.FoldBatchNorm => "batch-norm folding",
        _ => technique.ToString(),
    };
}
