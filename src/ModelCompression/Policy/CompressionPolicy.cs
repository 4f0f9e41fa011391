namespace ModelCompression.Policy;

public enum QuantizeMode { None, Int8, Int8Dynamic }
public enum CalibrationMethod { MinMax, Percentile, Entropy }
public enum PruneMethod { Auto, Magnitude, SparseGpt }
public enum PruneScope { Global, Layer }
public enum StructuredCriterion { Auto, L1, Apoz, Reconstruction }
public enum LowRankMethod { Auto, Svd, ActivationAware }
public enum ConvDecomposition { None, Tucker2, Spatial }

/// <summary>N:M semi-structured sparsity (N zeros in every M consecutive weights); null means unstructured.</summary>
public readonly record struct NmPattern(int N, int M)
{
    public override string ToString() => $"{N}:{M}";
}

/// <summary>A target rank: a ratio of the full rank (0 &lt; r &lt;= 1) or an absolute rank (&gt;= 1, integer).</summary>
public readonly record struct RankSpec(double Value, bool IsRatio)
{
    public int Resolve(int fullRank) => Math.Clamp(IsRatio ? (int)Math.Round(Value * fullRank) : (int)Value, 1, fullRank);
    public override string ToString() => IsRatio ? Value.ToString("0.###", System.Globalization.CultureInfo.InvariantCulture) : ((int)Value).ToString(System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>The execution provider the gate and calibration run on: cpu, or cuda with a device id.</summary>
public readonly record struct ExecutionProviderSpec(string Name, int DeviceId)
{
    public static readonly ExecutionProviderSpec Cpu = new("cpu", 0);
    public bool IsCuda => Name == "cuda";
    public override string ToString() => IsCuda ? $"cuda:{DeviceId}" : Name;
}

/// <summary>Settings applied to the layers whose node name matches a glob (from the policy file).</summary>
public sealed record LayerOverride(string Match, IReadOnlyDictionary<string, string> Settings);

/// <summary>
/// The whole interface of the engine: CLI options and MSBuild item metadata map 1:1 onto these properties through
/// <see cref="PolicySettings"/>, which also validates them. Per-layer overrides come from <see cref="PolicyFile"/>.
/// </summary>
public sealed record CompressionPolicy
{
    // Quantization
    public QuantizeMode Quantize { get; init; } = QuantizeMode.None;
    public CalibrationMethod CalibrationMethod { get; init; } = CalibrationMethod.MinMax;
    public double CalibrationPercentile { get; init; } = 99.999;
    public int CalibrationSamples { get; init; } = 512;

    // Pruning
    public double Sparsity { get; init; }
    public PruneMethod PruneMethod { get; init; } = PruneMethod.Auto;
    /// <summary>The method that runs: auto is sparsegpt when calibration data is given (far more accurate), else magnitude.</summary>
    public PruneMethod EffectivePruneMethod => PruneMethod != PruneMethod.Auto ? PruneMethod : CalibrationData is null ? PruneMethod.Magnitude : PruneMethod.SparseGpt;
    public PruneScope PruneScope { get; init; } = PruneScope.Global;
    public NmPattern? SparsityPattern { get; init; }
    public double PruneDamping { get; init; } = 0.01;
    public int PruneBlockSize { get; init; } = 128;
    public double StructuredSparsity { get; init; }
    public StructuredCriterion StructuredCriterion { get; init; } = StructuredCriterion.Auto;
    /// <summary>The ranking that runs: auto is reconstruction when calibration data is given (far more accurate on the ResNet), else l1.</summary>
    public StructuredCriterion EffectiveStructuredCriterion => StructuredCriterion != StructuredCriterion.Auto ? StructuredCriterion : CalibrationData is null ? StructuredCriterion.L1 : StructuredCriterion.Reconstruction;
    /// <summary>Structured pruning keeps a multiple of this many channels per group.</summary>
    public int StructuredChannelMultiple { get; init; } = 16;
    /// <summary>Also prune the first conv (reads the model input) and the classifier head (writes a model output).</summary>
    public bool PruneEdgeLayers { get; init; }
    /// <summary>Store mostly-zero initializers in a compact sparse form when that is smaller.</summary>
    public bool SparseStorage { get; init; } = true;

    // Low rank
    public RankSpec? Rank { get; init; }
    public double? RankEnergy { get; init; }
    public LowRankMethod LowRankMethod { get; init; } = LowRankMethod.Auto;
    /// <summary>The method that runs: auto is activation-aware when calibration data is given (far more accurate), else svd.</summary>
    public LowRankMethod EffectiveLowRankMethod => LowRankMethod != LowRankMethod.Auto ? LowRankMethod : CalibrationData is null ? LowRankMethod.Svd : LowRankMethod.ActivationAware;
    public double LowRankDamping { get; init; } = 0.01;
    public ConvDecomposition ConvDecomposition { get; init; } = ConvDecomposition.None;
    public double? ParameterBudget { get; init; }

    // Graph
    public bool FoldBatchNorm { get; init; } = true;
    public IReadOnlyList<string> Exclude { get; init; } = [];
    /// <summary>True for a layer whose override says <c>"Exclude": "true"</c>: no pass touches it.</summary>
    public bool Excluded { get; init; }

    // Data (paths are absolute once parsed)
    public string? CalibrationData { get; init; }
    public string? ValidationData { get; init; }
    public string? PolicyFile { get; init; }
    public IReadOnlyList<LayerOverride> LayerOverrides { get; init; } = [];

    // Gate thresholds (null = not checked)
    public double? MinAccuracy { get; init; }
    public double? MaxAccuracyDrop { get; init; }
    public double? MinAgreement { get; init; }
    public double? MaxLatencyRatio { get; init; }
    public double? MaxLatencyMs { get; init; }
    public double? MaxSizeRatio { get; init; }
    public int TopK { get; init; } = 5;

    // Runtime
    public ExecutionProviderSpec ExecutionProvider { get; init; } = ExecutionProviderSpec.Cpu;
    public string? OnnxRuntimeLibrary { get; init; }
    public int BatchSize { get; init; } = 64;
    public int Threads { get; init; }
    public int LatencyRounds { get; init; } = 9;
    public int Seed { get; init; }

    /// <summary>True when <paramref name="predicate"/> holds globally or for any per-layer override (for IsRequested).</summary>
    public bool AnyLayer(Func<CompressionPolicy, bool> predicate) =>
        predicate(this) || LayerOverrides.Any(o => predicate(PolicySettings.ApplyOverride(this, o)));

    public bool HasTechnique => Quantize != QuantizeMode.None || Sparsity > 0 || StructuredSparsity > 0 || Rank is not null || RankEnergy is not null || ParameterBudget is not null;
    public bool HasAccuracyThreshold => MinAccuracy is not null || MaxAccuracyDrop is not null;
}
