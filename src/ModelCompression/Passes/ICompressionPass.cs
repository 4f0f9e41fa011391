using ModelCompression.Policy;

namespace ModelCompression.Passes;

/// <summary>Where a pass runs in the pipeline: normalize (lossless form changes) → fold → structural → factorize → prune → quantize → clean-up → storage.</summary>
public enum PassStage { Normalize = -10, Fold = 0, Structural = 10, Factorize = 20, Prune = 30, Quantize = 40, Cleanup = 50, Storage = 60 }

/// <summary>
/// One technique. <see cref="Apply"/> edits <see cref="CompressionContext.Model"/> in place and records per layer
/// what it did (<see cref="CompressionContext.Record"/>); it never touches the source file. Every pass in the
/// engine is found by <see cref="CompressionPipeline"/>; nothing else lists them.
/// </summary>
public interface ICompressionPass
{
    string Name { get; }
    PassStage Stage { get; }
    /// <summary>The options records the pass reads besides data and runtime (what its cached result depends on).</summary>
    IReadOnlyList<OptionsGroup> Reads { get; }
    /// <summary>Whether the policy asks for this pass at all (global settings or any layer override).</summary>
    bool IsRequested(CompressionPolicy policy);
    void Apply(CompressionContext context);
}
