namespace ModelCompression.Passes;

/// <summary>One row of the report's per-layer table: what a pass did to one layer, with measured numbers.</summary>
public sealed record LayerRecord
{
    public required string Layer { get; init; }
    public required string Op { get; init; }
    public required string Technique { get; init; }
    public long[]? Shape { get; init; }
    public long ParametersBefore { get; init; }
    public long ParametersAfter { get; init; }
    public double? Sparsity { get; init; }
    public int? Bits { get; init; }
    public int? Rank { get; init; }
    /// <summary>Relative error the layer's change introduces (‖ΔW‖/‖W‖, or of its outputs on calibration data where said in Note).</summary>
    public double? ReconstructionError { get; init; }
    /// <summary>
    /// An error at or above this loses half the layer's signal or more: the report flags the layer and the run warns
    /// (CM0305). The gate still decides; the flag says where to look when it fails.
    /// </summary>
    public const double HighError = 0.5;
    public bool HasHighError => ReconstructionError is { } e && (e >= HighError || !double.IsFinite(e));
    /// <summary>A rewrite changed the layer without a number to show for it (folding, fusion, storage form).</summary>
    public bool Rewritten { get; init; }
    /// <summary>Why a layer was skipped or left in float, or which variant ran.</summary>
    public string? Note { get; init; }
}
