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
    private readonly Dictionary<(Type, string), object> _layerOptions = [];
    private Dataset? _calibration;

    public CompressionContext(OnnxModel model, CompressionPolicy policy, string? modelPath = null, CancellationToken cancellation = default)
    {
        Model = model;
        Graph = new OnnxGraph(model.Graph);
        Policy = policy;
        ModelPath = modelPath;
        Cancellation = cancellation;
    }

    public OnnxModel Model { get; private set; }
    public OnnxGraph Graph { get; private set; }
    public CompressionPolicy Policy { get; }
    public string? ModelPath { get; }
    public CancellationToken Cancellation { get; }
    public RuntimeOptions Runtime => RuntimeOptions.From(Policy);
    public IProgress<(string Stage, double Fraction)>? Progress { get; init; }
    /// <summary>The calibration data already loaded (and checked) by the engine; otherwise it is loaded on first use.</summary>
    public Dataset? CalibrationData { get; init; }
    public IReadOnlyList<LayerRecord> Records => _records;
    public IReadOnlyList<Diagnostic> Diagnostics => _diagnostics;

    public void Record(LayerRecord record) => _records.Add(record);

    /// <summary>Takes over what cached passes recorded, as if they had just run.</summary>
    internal void Replay(CachedSteps steps)
    {
        _records.AddRange(steps.Records);
        _diagnostics.AddRange(steps.Diagnostics);
    }

    /// <summary>
    /// After the passes, puts the model as saved (its weights read from the saved file's memory map) in place of the
    /// one the passes built, whose changed weights are then no longer held.
    /// </summary>
    internal void ReplaceModel(OnnxModel saved)
    {
        var built = Model;
        Model = saved;
        Graph = new OnnxGraph(saved.Graph);
        built.Dispose();
    }

    public void Warn(string code, string message) => _diagnostics.Add(new Diagnostic(code, Severity.Warning, message, ModelPath));

    /// <summary>A layer's name for globs and the report: the node name, or its first output when unnamed.</summary>
    public static string LayerName(NodeProto node) => string.IsNullOrEmpty(node.Name) ? node.Output[0] : node.Name;

    /// <summary>The options of one layer with their sources: defaults, the given settings, then every matching policy-file entry in order.</summary>
    public Resolved<T> Resolve<T>(NodeProto node) where T : class, IOptions<T>, new()
    {
        var key = (typeof(T), LayerName(node));
        if (_layerOptions.TryGetValue(key, out var cached)) return (Resolved<T>)cached;
        var resolved = Policy.For<T>(key.Item2);
        _layerOptions[key] = resolved;
        return resolved;
    }

    /// <summary>The options of one layer (see <see cref="Resolve{T}"/>).</summary>
    public T Options<T>(NodeProto node) where T : class, IOptions<T>, new() => Resolve<T>(node).Options;

    /// <summary>Whether no pass may touch the layer (an Exclude glob or an <c>Excluded</c> policy-file entry).</summary>
    public bool IsExcluded(NodeProto node) => Options<LayerSelectionOptions>(node).Excludes(LayerName(node));

    /// <summary>Whether calibration data was given (the "auto" methods choose the data-aware variant then).</summary>
    public bool HasCalibration => Policy.Data.CalibrationData is not null;

    /// <summary>The calibration samples (at most CalibrationSamples); CM0124 when a pass needs them and none were given.</summary>
    public Dataset RequireCalibration(string passName)
    {
        if (_calibration is not null) return _calibration;
        if (Policy.Data.CalibrationData is not { } path)
            throw new CompressionException(DiagnosticCodes.MissingCalibrationData, $"{passName} needs CalibrationData", ModelPath);
        _calibration = (CalibrationData ?? Dataset.Load(path)).BindTo(ModelInput.FromGraph(Model.Graph)).Take(Policy.Data.CalibrationSamples);
        return _calibration;
    }

    /// <summary>Runs the current model over the calibration data, handing each batch's requested float tensors to <paramref name="onBatch"/>.</summary>
    public void CaptureActivations(string passName, IReadOnlyList<string> valueNames, Action<IReadOnlyDictionary<string, FloatTensor>> onBatch)
    {
        var data = RequireCalibration(passName);
        var progress = Progress is null ? null : new InlineProgress<double>(f => Progress.Report((passName, f)));
        ActivationCapture.Run(Model, valueNames, data, Runtime, CaptureBatchSize, onBatch, Cancellation, progress);
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
        ActivationCapture.RunPaired(Model, reference, valueNames, data, Runtime, CaptureBatchSize, onBatch, Cancellation, progress);
    }

    /// <summary>
    /// The batch of a capture run. A large model's (see <see cref="LargeModel"/>) is at most <see cref="LargeCaptureBatch"/>
    /// samples: a batch hands over every requested activation of every layer at once (all 32 calibration samples of a
    /// 1 GB transformer: ≈ 0.5 GB, int8 static's peak at 1.60× the model).
    /// </summary>
    internal int CaptureBatchSize => LargeModel ? Math.Min(Policy.Execution.BatchSize, LargeCaptureBatch) : Policy.Execution.BatchSize;
    internal const int LargeCaptureBatch = 4;

    /// <summary>The source is one the engine treats as large (it runs such models in bounded memory).</summary>
    public bool LargeModel { get; init; }

    /// <summary>
    /// Folder and name start of the file a large model's built weights are spilled to between stages (in the report
    /// folder, where candidates are written too); null keeps them in memory.
    /// </summary>
    public string? SpillPathPrefix { get; init; }

    /// <summary>Built tensors at least this long are spilled (smaller ones are not worth a 4 KiB-aligned write).</summary>
    internal long SpillMinBytes { get; init; } = 256 * 1024;

    /// <summary>
    /// A pass that writes layer after layer without stages (magnitude pruning) releases its memory
    /// (<see cref="ReleaseStageMemory"/>) each time it has written this many bytes of weights.
    /// </summary>
    internal long ReleaseEveryBytes { get; init; } = 256L << 20;

    /// <summary>
    /// After a stage of a staged pass on a large model, and after each pass: the weights written so far go to the spill
    /// file (SparseGPT and low rank held them in float until the save: ≈ the model, or the output), and what the
    /// stage's layers held (weights in double, statistics, solver arrays) goes back to the system before the next
    /// capture. Those arrays live on the large-object heap, which a plain collection leaves committed: without this a
    /// 1 GB model's GPTQ pass crept from 0.6 to 1.3 GB between wide layers. One compacting collection a stage costs
    /// well under the stage.
    /// </summary>
    public void ReleaseStageMemory()
    {
        if (!LargeModel) return;
        if (SpillPathPrefix is not null) Model.Spill(SpillPathPrefix, SpillMinBytes);
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
    }
}

/// <summary>Reports progress on the calling thread, in order (unlike <see cref="Progress{T}"/>, which posts).</summary>
public sealed class InlineProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
