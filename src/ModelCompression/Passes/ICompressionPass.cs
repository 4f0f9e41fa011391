using ModelCompression.Policy;

namespace ModelCompression.Passes;

/// <summary>Where a pass runs in the pipeline: fold → structural → prune → quantize → clean-up.</summary>
public enum PassStage { Fold = 0, Structural = 1, Prune = 2, Quantize = 3, Cleanup = 4 }

/// <summary>
/// One technique. <see cref="Apply"/> edits <see cref="CompressionContext.Model"/> in place and records per layer
/// what it did (<see cref="CompressionContext.Record"/>); it never touches the source file.
/// </summary>
public interface ICompressionPass
{
    string Name { get; }
    PassStage Stage { get; }
    /// <summary>Whether the policy asks for this pass at all (global settings or any layer override).</summary>
    bool IsRequested(CompressionPolicy policy);
    void Apply(CompressionContext context);
}
