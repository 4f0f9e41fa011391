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
    /// <summary>Why a layer was skipped or left in float, or which variant ran.</summary>
    public string? Note { get; init; }
}
