using ModelCompression.Calibration;
using ModelCompression.Data;
using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Policy;
using ModelCompression.Runtime;

namespace ModelCompression.Passes;

/// <summary>What a pass works on: the model being compressed, the policy (with per-layer overrides), calibration data, and the record of what was done.</summary>
public sealed class CompressionContext
{
    private readonly List<LayerRecord> _records = [];
    private readonly List<Diagnostic> _diagnostics = [];
    private readonly Dictionary<string, CompressionPolicy> _layerPolicies = new(StringComparer.Ordinal);
    private Dataset? _calibration;

    public CompressionContext(OnnxModel model, CompressionPolicy policy, string? modelPath = null, CancellationToken cancellation = default)
    {
        Model = model;
        Graph = new OnnxGraph(model.Graph);
        Policy = policy;
        ModelPath = modelPath;
        Cancellation = cancellation;
    }

    public OnnxModel Model { get; }
    public OnnxGraph Graph { get; }
    public CompressionPolicy Policy { get; }
    public string? ModelPath { get; }
    public CancellationToken Cancellation { get; }
    public RuntimeOptions Runtime => RuntimeOptions.From(Policy);
    public IProgress<(string Stage, double Fraction)>? Progress { get; init; }
    public IReadOnlyList<LayerRecord> Records => _records;
    public IReadOnlyList<Diagnostic> Diagnostics => _diagnostics;

    public void Record(LayerRecord record) => _records.Add(record);

    public void Warn(string code, string message) => _diagnostics.Add(new Diagnostic(code, Severity.Warning, message, ModelPath));

    /// <summary>A layer's name for globs and the report: the node name, or its first output when unnamed.</summary>
    public static string LayerName(NodeProto node) => string.IsNullOrEmpty(node.Name) ? node.Output[0] : node.Name;

    /// <summary>The policy for one layer: global settings, then every matching policy-file override in order, then Exclude.</summary>
    public CompressionPolicy PolicyFor(NodeProto node)
    {
        var name = LayerName(node);
        if (_layerPolicies.TryGetValue(name, out var cached)) return cached;
        var policy = Policy;
        foreach (var layerOverride in Policy.LayerOverrides)
            if (LayerGlob.IsMatch(layerOverride.Match, name)) policy = PolicySettings.ApplyOverride(policy, layerOverride);
        if (Policy.Exclude.Any(glob => LayerGlob.IsMatch(glob, name))) policy = policy with { Excluded = true };
        _layerPolicies[name] = policy;
        return policy;
    }

    /// <summary>True when a policy-file override matching this layer sets one of <paramref name="settings"/> (setting names as in <see cref="PolicySettings"/>).</summary>
    public bool OverrideSets(NodeProto node, params string[] settings)
    {
        var name = LayerName(node);
        return Policy.LayerOverrides.Any(o => LayerGlob.IsMatch(o.Match, name) && settings.Any(o.Settings.ContainsKey));
    }

    /// <summary>The calibration samples (at most CalibrationSamples); CM0124 when a pass needs them and none were given.</summary>
    public Dataset RequireCalibration(string passName)
    {
        if (_calibration is not null) return _calibration;
        if (Policy.CalibrationData is null)
            throw new CompressionException(DiagnosticCodes.MissingCalibrationData, $"{passName} needs CalibrationData", ModelPath);
        _calibration = Dataset.Load(Policy.CalibrationData).Take(Policy.CalibrationSamples);
        return _calibration;
    }

    /// <summary>Runs the current model over the calibration data, handing each batch's requested float tensors to <paramref name="onBatch"/>.</summary>
    public void CaptureActivations(string passName, IReadOnlyList<string> valueNames, Action<IReadOnlyDictionary<string, FloatTensor>> onBatch)
    {
        var data = RequireCalibration(passName);
        var progress = Progress is null ? null : new InlineProgress<double>(f => Progress.Report((passName, f)));
        ActivationCapture.Run(Model, valueNames, data, Runtime, Policy.BatchSize, onBatch, Cancellation, progress);
    }

    /// <summary>
    /// Runs the current model and <paramref name="reference"/> (e.g. a copy taken before the pass changed anything)
    /// side by side over the calibration data, handing each batch's requested values from both.
    /// </summary>
    public void CapturePairedActivations(string passName, OnnxModel reference, IReadOnlyList<string> valueNames,
        Action<IReadOnlyDictionary<string, FloatTensor>, IReadOnlyDictionary<string, FloatTensor>> onBatch)
    {
        var data = RequireCalibration(passName);
        var progress = Progress is null ? null : new InlineProgress<double>(f => Progress.Report((passName, f)));
        ActivationCapture.RunPaired(Model, reference, valueNames, data, Runtime, Policy.BatchSize, onBatch, Cancellation, progress);
    }
}

/// <summary>Reports progress on the calling thread, in order (unlike <see cref="Progress{T}"/>, which posts).</summary>
public sealed class InlineProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
