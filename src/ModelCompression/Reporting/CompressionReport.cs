using ModelCompression.Diagnostics;
using ModelCompression.Evaluation;
using ModelCompression.Search;

namespace ModelCompression.Reporting;

/// <summary>Wall-clock time of one pipeline step.</summary>
public sealed record StepTiming(string Step, double Milliseconds, bool Cached = false);

/// <summary>
/// Everything one compression did and measured, for one model. Serialized as JSON (schema
/// <see cref="CurrentSchemaVersion"/>) and rendered to Markdown and HTML; every number in it was measured.
/// </summary>
public sealed record CompressionReport
{
    /// <summary>2: one <c>layers</c> row per layer (its final state, the techniques applied, the passes' records as <c>steps</c>); latency per round.
    /// 3: <c>measurements.outputs</c>, one fidelity row per gated output (cosine, SNR, max abs error, agreements), replaces <c>measurements.comparison</c>.
    /// 4: <c>measurements.originalSizes</c>/<c>compressedSizes</c> (file, Deflate, Brotli bytes); per layer <c>storedSizes</c> and <c>entropyBytes</c>.
    /// 5: <c>search</c>: how the per-layer settings were chosen (fallback rounds, reverted layers, lock file).</summary>
    public const int CurrentSchemaVersion = 5;

    public int SchemaVersion { get; init; } = CurrentSchemaVersion;
    public string ToolVersion { get; init; } = typeof(CompressionReport).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";
    public required string Model { get; init; }
    /// <summary>The output path asked for (the reports are named after it), written or not.</summary>
    public string? Target { get; init; }
    /// <summary>Where the compressed model was written; null when the gate failed (see <see cref="Candidate"/>).</summary>
    public string? Output { get; init; }
    /// <summary>The compressed model kept for inspection when it was not written to the output.</summary>
    public string? Candidate { get; init; }
    /// <summary>The effective settings, by policy-setting name.</summary>
    public required IReadOnlyDictionary<string, string> Policy { get; init; }
    /// <summary>One row per layer any pass looked at, in pipeline order of first appearance.</summary>
    public required IReadOnlyList<LayerSummary> Layers { get; init; }
    /// <summary>Weights and biases the computation reads, at their dense size (quantization parameters excluded).</summary>
    public long ParametersBefore { get; init; }
    public long ParametersAfter { get; init; }
    /// <summary>Of those, the ones that are not zero: what unstructured pruning removes.</summary>
    public long NonZeroParametersBefore { get; init; }
    public long NonZeroParametersAfter { get; init; }
    public required GateMeasurements Measurements { get; init; }
    public required GateVerdict Verdict { get; init; }
    public bool GateFailureAsWarning { get; init; }
    /// <summary>With Fallback: the rounds, the reverted layers and the lock file; null without.</summary>
    public SearchSummary? Search { get; init; }
    public required IReadOnlyList<Diagnostic> Diagnostics { get; init; }
    public required IReadOnlyList<StepTiming> Timings { get; init; }

    /// <summary>"model.onnx → output.onnx", the reports' title.</summary>
    public string Title => Target is null ? Path.GetFileName(Model) : $"{Path.GetFileName(Model)} → {Path.GetFileName(Target)}";

    public string VerdictText => Verdict.Passed ? "pass" : GateFailureAsWarning ? "fail (as warning)" : "fail";
}
