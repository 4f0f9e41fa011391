using System.Diagnostics;
using System.Globalization;
using ModelCompression.Data;
using ModelCompression.Diagnostics;
using ModelCompression.Evaluation;
using ModelCompression.Graph;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Policy;
using ModelCompression.Reporting;
using ModelCompression.Search;

namespace ModelCompression;

/// <summary>One model to compress: where it is, where the result goes, where reports go, and the policy.</summary>
public sealed record CompressionRequest(string ModelPath, string OutputPath, string ReportDirectory, CompressionPolicy Policy)
{
    /// <summary>Write the output even when the gate fails (the failures become warnings).</summary>
    public bool GateFailureAsWarning { get; init; }
    /// <summary>
    /// A folder of this output's own for intermediate models (see <see cref="PassCache"/>): a later run that differs
    /// only in gate settings, or in later passes, starts from the cached passes. Null: no cache.
    /// </summary>
    public string? CacheDirectory { get; init; }
}

public sealed record CompressionResult(CompressionReport Report, IReadOnlyList<Diagnostic> Diagnostics)
{
    public bool GateFailed => !Report.Verdict.Passed;
    public bool OutputWritten => Report.Output is not null;
}

/// <summary>
/// The engine both front ends drive: load and check the model and the data files, run the passes on a copy, save the
/// candidate under a name of its own, gate it against the original, then write the output (only when it passes) and
/// the reports, named after the output. The source model is never written; the output appears atomically or not at all.
/// </summary>
public static class CompressionEngine
{
    public static CompressionResult Compress(CompressionRequest request, CancellationToken cancellation = default, IProgress<(string Stage, double Fraction)>? progress = null)
    {
        var timings = new List<StepTiming>();
        var total = Stopwatch.StartNew();
        if (string.IsNullOrWhiteSpace(request.ModelPath)) throw new CompressionException(DiagnosticCodes.BadUsage, "the model path is empty");
        if (string.IsNullOrWhiteSpace(request.OutputPath)) throw new CompressionException(DiagnosticCodes.BadUsage, "the output path is empty", request.ModelPath);
        if (string.IsNullOrWhiteSpace(request.ReportDirectory)) throw new CompressionException(DiagnosticCodes.BadUsage, "the report folder is empty", request.ModelPath);
        var modelPath = Path.GetFullPath(request.ModelPath);
        var outputPath = Path.GetFullPath(request.OutputPath);
        var reportDirectory = Path.GetFullPath(request.ReportDirectory);
        if (Directory.Exists(outputPath))
            throw new CompressionException(DiagnosticCodes.OutputNotWritable, $"the output '{outputPath}' is a folder: name the output model file", modelPath);
        if (string.Equals(modelPath, outputPath, StringComparison.Ordinal))
            throw new CompressionException(DiagnosticCodes.BadUsage, "the output path is the source model: the source is never overwritten; choose another output", modelPath);

        // Folders are checked before any work (and created only after it, so a run that fails early leaves nothing):
        // a report folder that is a file, or an output folder under a file, fails now with CM0004, not after minutes.
        CheckFolderCreatable(reportDirectory, "report folder", modelPath);
        CheckFolderCreatable(Path.GetDirectoryName(outputPath)!, "output folder", modelPath);
        // Temporaries and candidates of runs that were killed before they could clean up (their process is gone).
        TempFiles.RemoveStale(Path.GetDirectoryName(outputPath)!, Path.GetFileName(outputPath) + ".");
        TempFiles.RemoveStale(reportDirectory, Path.GetFileNameWithoutExtension(outputPath) + ".");
        Runtime.OnnxRuntimeSession.EnsureProviderAvailable(Runtime.RuntimeOptions.From(request.Policy), modelPath);
        var step = Stopwatch.StartNew();
        using var source = LoadChecked(modelPath);
        timings.Add(new StepTiming("load", step.Elapsed.TotalMilliseconds));

        // The data files are checked against the model before any pass runs: a wrong key, shape or label fails in the
        // time it takes to read the file (not after minutes of compression) and leaves nothing behind.
        step.Restart();
        var (calibration, validation) = DataCheck.All(source.Graph, request.Policy);
        timings.Add(new StepTiming(DataStep, step.Elapsed.TotalMilliseconds));

        // Reports and the kept candidate are named after the output, so runs with different outputs never share them.
        CreateFolder(reportDirectory, "report folder", modelPath);
        var name = Path.GetFileNameWithoutExtension(outputPath);
        var fallback = request.Policy.Get<FallbackOptions>();
        var auto = request.Policy.Get<SearchOptions>();
        // A search builds many candidates that share passes: without a cache of the caller's, it keeps a private one.
        var searchCache = auto.Auto && request.CacheDirectory is null ? Path.Combine(reportDirectory, $"{name}.{TempFiles.NewToken()}.search-cache") : null;
        var cache = PassCache.Open(request.CacheDirectory ?? searchCache, source, modelPath);
        var lockDiagnostics = new List<Diagnostic>();
        var large = OnnxModel.FileSizeWithExternalData(modelPath) > LargeModelBytes;

        // Runs the passes with the given per-layer choices, saves the candidate under a name no other run uses (only
        // the model this run's gate judged can become its output) and gates it.
        Trial RunTrial(LayerPolicy layers, List<StepTiming> steps, Dataset? data = null, bool latency = true, OriginalRun? original = null)
        {
            var policy = layers.ApplyTo(request.Policy, modelPath);
            var context = CompressionPipeline.Run(source, policy, modelPath, cache, steps, cancellation, progress, calibration, large, large ? Path.Combine(reportDirectory, name) : null);
            var trial = new Trial(layers, context, Path.Combine(reportDirectory, $"{name}.{TempFiles.NewToken()}.candidate.onnx"));
            try
            {
                var step = Stopwatch.StartNew();
                trial.External = SaveCandidate(context, trial.Candidate, modelPath);
                // A large candidate's built weights, and what the passes freed, go back to the system before the gate
                // maps the original: the gate's own memory is native and would not prompt a collection, and a plain
                // one keeps the freed heap committed (measured: 96 MB resident after int4 on a 269 MB model; none
                // after this one).
                if (trial.External) GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
                // The passes and the save have read the source's weights; the gate's runtime sessions map them again.
                source.ReleasePages();
                steps.Add(new StepTiming("save", step.Elapsed.TotalMilliseconds));
                step.Restart();
                trial.Measurements = Gate.Measure(modelPath, trial.Candidate, policy, cancellation, progress, data ?? validation, latency, original, LargeModelBytes);
                trial.Verdict = Gate.Judge(trial.Measurements, policy);
                steps.Add(new StepTiming("gate", step.Elapsed.TotalMilliseconds));
                return trial;
            }
            catch
            {
                trial.Dispose();
                throw;
            }
        }

        var trials = new List<Trial>();
        try
        {
            SearchSummary? search = null;
            Trial chosen;
            var lockPath = fallback.LockPath(modelPath);
            LockInputs? inputs = null;
            LockFile? existing = null;
            if (fallback.UsesLock || auto.Auto)
            {
                inputs = LockInputs.Of(modelPath, source, request.Policy);
                string? problem = null;
                if (!fallback.Search) existing = LockFile.Read(lockPath, out problem);
                if (problem is not null) lockDiagnostics.Add(new Diagnostic(DiagnosticCodes.StaleLockFile, Severity.Warning, $"{problem}: it is ignored; run with Search=true (--search true, -p:CompressModelSearch=true) to replace it", lockPath));
            }

            if (existing is not null)
            {
                // A lock is applied as it is: no fallback rounds. A stale one too (CI must not start a search unasked);
                // the gate still judges the result.
                var stale = existing.Inputs.Hash != existing.Hash || existing.Hash != inputs!.Hash;
                string status;
                if (stale)
                {
                    var changed = existing.Inputs.Differences(inputs!);
                    status = "stale: " + (changed.Count == 0 ? "its hash does not match its inputs" : string.Join(", ", changed) + " changed");
                    lockDiagnostics.Add(new Diagnostic(DiagnosticCodes.StaleLockFile, Severity.Warning,
                        $"the lock file is stale: {status[7..]} since it was written. Its per-layer settings are applied as they are and the gate judges them; run with Search=true (--search true, -p:CompressModelSearch=true) to choose again and rewrite it", lockPath));
                }
                else status = "matched";
                var timings0 = new List<StepTiming>(timings);
                chosen = RunTrial(existing.ToLayerPolicy(), timings0);
                chosen.Timings = timings0;
                trials.Add(chosen);
                search = new SearchSummary { Mode = stale ? "stale-lock" : "lock", LockFile = lockPath, LockStatus = status, Layers = chosen.Layers.Layers };
            }
            else if (auto.Auto)
            {
                var watch = Stopwatch.StartNew();
                // Sensitivities on the model as the graph passes leave it (the policy asks for no technique yet).
                AutoPolicy space;
                var prepared = CompressionPipeline.Run(source, request.Policy, modelPath, cache, [], cancellation, progress, calibration, large);
                using (prepared.Model) space = AutoPolicy.Measure(prepared);
                var gate = request.Policy.Get<GateOptions>();
                var subset = validation!.Take(Math.Min(validation.Count, auto.SearchSamples));
                var latency = AutoSearch.NeedsLatency(auto, gate);
                var original = new OriginalRun();
                var (log, ranked, closest) = AutoSearch.Run(space, gate, auto, request.Policy.Execution.Seed, layers =>
                {
                    using var trial = RunTrial(layers, [], subset, latency, original);
                    return trial.Measurements!;
                }, cancellation);
                var searchMs = watch.Elapsed.TotalMilliseconds;
                if (closest is not null)
                    lockDiagnostics.Add(new Diagnostic(DiagnosticCodes.SearchFoundNothing, Severity.Warning,
                        $"Auto: none of {log.Count} trials met every threshold on the first {subset.Count} validation samples; the closest ({AutoSearch.Describe(closest)}) is gated", modelPath));
                // The best trials, judged on all the validation data in turn until one passes (the search subset can flatter).
                Trial? picked = null;
                foreach (var layers in ranked)
                {
                    var steps = new List<StepTiming>(timings);
                    var trial = RunTrial(layers, steps);
                    trial.Timings = steps;
                    // The best one is kept for the report even when it fails; a runner-up replaces it only by passing.
                    if (picked is not null && !trial.Verdict!.Passed) { trial.Dispose(); continue; }
                    if (picked is not null) { picked.Dispose(); trials.Remove(picked); }
                    picked = trial;
                    trials.Add(trial);
                    if (trial.Verdict!.Passed) break;
                }
                chosen = picked!;
                chosen.Timings.Add(new StepTiming("search", searchMs));
                var chosenText = AutoSearch.Key(chosen.Layers);
                var chosenTrial = closest is null ? log.FirstOrDefault(t => t.Key == chosenText)?.Index : null;
                search = new SearchSummary { Mode = "auto", LockFile = lockPath, Layers = chosen.Layers.Layers, Trials = log, ChosenTrial = chosenTrial, Milliseconds = watch.Elapsed.TotalMilliseconds };
            }
            else
            {
                var timings0 = new List<StepTiming>(timings);
                var watch = Stopwatch.StartNew();
                var first = RunTrial(LayerPolicy.Empty, timings0);
                first.Timings = timings0;
                trials.Add(first);
                chosen = first;
                if (fallback.Fallback)
                {
                    var firstMs = watch.Elapsed.TotalMilliseconds;
                    IReadOnlyList<FallbackRound> rounds = [];
                    IReadOnlyList<RevertedLayer> reverted = [];
                    if (!AccuracyFallback.AccuracyPassed(first.Verdict!))
                    {
                        var ranked = AccuracyFallback.Rank(first.Context.Records, request.Policy);
                        Trial? lastPassing = null;
                        (var picked, rounds, reverted) = AccuracyFallback.Run(ranked, first.Outcome, firstMs, layers =>
                        {
                            var steps = new List<StepTiming>(timings);
                            var trial = RunTrial(layers, steps);
                            trial.Timings = steps;
                            // Keep only what can still be chosen: the last candidate that passed (bisection only moves to fewer reverted layers).
                            if (AccuracyFallback.AccuracyPassed(trial.Verdict!))
                            {
                                lastPassing?.Dispose();
                                lastPassing = trial;
                                trials.Add(trial);
                            }
                            else trial.Dispose();
                            return trial.Outcome;
                        });
                        if (picked is not null && lastPassing is not null) chosen = lastPassing;
                    }
                    else rounds = [new FallbackRound(0, "as given", [], true, first.Measurements!.Compressed?.Top1, first.Measurements.CompressedBytes, first.Verdict!.Failures.Select(f => $"{f.Code} {f.Message}").ToList(), firstMs)];
                    search = new SearchSummary { Mode = "fallback", LockFile = lockPath, Rounds = rounds, Reverted = chosen == first ? [] : reverted, Layers = chosen.Layers.Layers, Milliseconds = watch.Elapsed.TotalMilliseconds };
                    // The time spent on the candidates that were not chosen.
                    var chosenMs = chosen == first ? firstMs : rounds.Last(r => r.AccuracyPassed).Milliseconds;
                    if (rounds.Count > 1) chosen.Timings.Add(new StepTiming("fallback", rounds.Sum(r => r.Milliseconds) - chosenMs));
                }
            }

            var context = chosen.Context;
            var working = context.Model;
            var measurements = chosen.Measurements!;
            var verdict = chosen.Verdict!;
            var timingsOut = chosen.Timings;
            if (!request.Policy.HasTechnique && chosen.Layers.IsEmpty)
                context.Warn(DiagnosticCodes.NothingToCompress, $"no technique is set ({string.Join(", ", SettingsCatalog.Techniques.Select(t => t.Settings[0].Name))} …): the output is the cleaned-up original");

            var diagnostics = new List<Diagnostic>(context.Diagnostics);
            diagnostics.AddRange(lockDiagnostics);
            var severity = request.GateFailureAsWarning ? Severity.Warning : Severity.Error;
            diagnostics.AddRange(verdict.Failures.Select(f => new Diagnostic(f.Code, severity, f.Message, modelPath)));

            string? written = null;
            var kept = KeptCandidatePath(reportDirectory, outputPath);
            // From here to the reports, one run at a time per output and per report name (other processes included).
            using var outputLock = OutputLock.Acquire([outputPath, Path.Combine(reportDirectory, name)], cancellation);
            if (verdict.Passed || request.GateFailureAsWarning)
            {
                Publish(chosen.Candidate, outputPath, chosen.External);
                written = outputPath;
                DeleteModel(kept); // a failed run's candidate would no longer match the reports
            }
            else Publish(chosen.Candidate, kept, chosen.External);

            // The lock is written after a passing run that chose (or re-chose) its layers; a stale lock is never
            // replaced unasked, and a matching one is rewritten only if its text would change (it will not).
            if (search is not null && inputs is not null && search.Mode is "fallback" or "lock" or "auto")
            {
                if (verdict.Passed)
                {
                    var lockFile = new LockFile
                    {
                        Hash = inputs.Hash,
                        Inputs = inputs,
                        Constraints = request.Policy.Values.Where(v => v.Key.Group == GateOptions.Group).OrderBy(v => v.Key.Name, StringComparer.Ordinal).ToDictionary(v => v.Key.Name, v => v.Key.Format(v.Value)),
                        Layers = LockFile.Entries(chosen.Layers),
                        Gate = new LockGate(true, measurements.Original?.Top1, measurements.Compressed?.Top1, measurements.OriginalBytes, measurements.CompressedBytes),
                    };
                    var before = File.Exists(lockPath) ? File.ReadAllText(lockPath) : null;
                    lockFile.Write(lockPath);
                    search = search with { LockStatus = search.Mode == "lock" ? "matched" : before == File.ReadAllText(lockPath) ? "unchanged" : "written" };
                }
                else if (search.Mode == "fallback") search = search with { LockStatus = "not written (the gate failed)" };
            }
            timingsOut.Add(new StepTiming("total", total.Elapsed.TotalMilliseconds));

            var weightsBefore = ModelWeights.Find(source);
            var weightsAfter = ModelWeights.Find(working);
            var report = new CompressionReport
            {
                Model = modelPath,
                Target = outputPath,
                Output = written,
                Candidate = written is null ? kept : null,
                Policy = Describe(request.Policy),
                Layers = LayerTable.Build(context.Records, weightsBefore, weightsAfter, source.Graph.Node.Select(CompressionContext.LayerName).ToList(), working),
                ParametersBefore = weightsBefore.Sum(w => w.Elements),
                ParametersAfter = weightsAfter.Sum(w => w.Elements),
                NonZeroParametersBefore = weightsBefore.Sum(w => w.NonZeros ?? w.Elements),
                NonZeroParametersAfter = weightsAfter.Sum(w => w.NonZeros ?? w.Elements),
                Measurements = measurements,
                Verdict = verdict,
                GateFailureAsWarning = request.GateFailureAsWarning,
                Search = search,
                Diagnostics = diagnostics,
                Timings = timingsOut,
            };
            ReportWriter.WriteAll(report, reportDirectory, name);
            return new CompressionResult(report, diagnostics);
        }
        finally
        {
            // Whatever happened (gate passed or failed, runtime error, cancellation), this run's private copies go.
            foreach (var trial in trials) trial.Dispose();
            if (searchCache is not null && Directory.Exists(searchCache))
            {
                try { Directory.Delete(searchCache, recursive: true); }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
            }
        }
    }

    /// <summary>One candidate: the per-layer choices it was made with, its model, its saved file and its gate result.</summary>
    private sealed class Trial(LayerPolicy layers, CompressionContext context, string candidate) : IDisposable
    {
        public LayerPolicy Layers { get; } = layers;
        public CompressionContext Context { get; } = context;
        public string Candidate { get; } = candidate;
        public bool External { get; set; }
        public GateMeasurements? Measurements { get; set; }
        public GateVerdict? Verdict { get; set; }
        public List<StepTiming> Timings { get; set; } = [];
        public TrialOutcome Outcome => new(Verdict!, Measurements!);
        private bool _disposed;

        public void Dispose()
        {
            if (_disposed) return;
            _disposed = true;
            Context.Model.Dispose();
            DeleteModel(Candidate);
        }
    }

    private static void CreateFolder(string folder, string what, string source)
    {
        try
        {
            if (File.Exists(folder)) throw new IOException("a file of that name exists");
            Directory.CreateDirectory(folder);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            throw new CompressionException(DiagnosticCodes.OutputNotWritable, $"cannot create the {what} '{folder}': {e.Message}", source, e);
        }
    }

    /// <summary>Fails when the folder cannot come into being: it, or the nearest existing folder above it, is a file.</summary>
    private static void CheckFolderCreatable(string folder, string what, string source)
    {
        for (var dir = folder; !string.IsNullOrEmpty(dir); dir = Path.GetDirectoryName(dir))
        {
            if (Directory.Exists(dir)) return;
            if (File.Exists(dir))
                throw new CompressionException(DiagnosticCodes.OutputNotWritable, $"cannot create the {what} '{folder}': '{dir}' is a file", source);
        }
    }

    /// <summary>
    /// Sources past this many bytes are large: one stored with external data keeps that form, the candidate's weights
    /// are read back from its file after the save, and the gate runs one model at a time. Tests lower it to take that
    /// path with a small model.
    /// </summary>
    internal static long LargeModelBytes = DeployedSize.StreamedLimit;

    /// <summary>The timing step of the data check.</summary>
    public const string DataStep = "check data";

    /// <summary>Where a candidate that failed its gate is kept: next to its reports, named after the output.</summary>
    public static string KeptCandidatePath(string reportDirectory, string outputPath) =>
        Path.Combine(Path.GetFullPath(reportDirectory), Path.GetFileNameWithoutExtension(outputPath) + ".candidate.onnx");

    /// <summary>Loads a model and checks it fully (order, tensor bytes, finite weights); failures are CM011x.</summary>
    public static OnnxModel LoadChecked(string path)
    {
        if (!File.Exists(path)) throw new CompressionException(DiagnosticCodes.ModelNotFound, $"model '{path}' does not exist", path);
        OnnxModel? model = null;
        try
        {
            model = OnnxModel.Load(path);
            CheckNames(model);
            new OnnxGraph(model.Graph).ValidateOrder();
            model.ValidateTensors();
            CheckFinite(model, path);
            return model;
        }
        catch (OnnxFormatException e)
        {
            model?.Dispose();
            throw new CompressionException(DiagnosticCodes.InvalidModel, e.Message, path, e);
        }
        catch (CompressionException)
        {
            model?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// What ONNX requires but the protobuf allows, and ONNX Runtime only rejects when it loads the compressed model
    /// (then the failure looked like the engine's): unique initializer, input and output names per graph, and Gemm's
    /// transA/transB flags as 0 or 1.
    /// </summary>
    private static void CheckNames(OnnxModel model)
    {
        foreach (var graph in new OnnxGraph(model.Graph).SelfAndSubgraphs())
        {
            var where = graph.Proto == model.Graph ? "the graph" : $"subgraph '{graph.Proto.Name}'";
            foreach (var (kind, names) in new[]
                     {
                         ("initializer", graph.Proto.Initializer.Select(t => t.Name)),
                         ("input", graph.Proto.Input.Select(v => v.Name)),
                         ("output", graph.Proto.Output.Select(v => v.Name)),
                     })
                if (names.GroupBy(n => n, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1) is { } duplicate)
                    throw new OnnxFormatException($"{where} has {duplicate.Count()} {kind}s named '{duplicate.Key}'; names must be unique");
            foreach (var node in graph.Nodes.Where(n => n.OpType == "Gemm" && (n.Domain ?? "") is "" or "ai.onnx"))
                foreach (var flag in node.Attribute.Where(a => a.Name is "transA" or "transB" && a.I is not (0 or 1)))
                    throw new OnnxFormatException($"Gemm node '{node.Name}' has {flag.Name}={flag.I}; it must be 0 or 1");
        }
    }

    private static void CheckFinite(OnnxModel model, string path)
    {
        foreach (var tensor in model.Graph.Initializer)
        {
            if (!IsFloat(tensor)) continue;
            // float32 bytes are checked where they lie (the memory map for external data), then let go of: loading a
            // large model does not keep every weight resident. Other types are converted (a copy) as before.
            var view = model.GetTensor(tensor);
            var clean = view.HasRawBytes && view.ElementType == TensorProto.Types.DataType.Float && AllFinite(view.AsSpan<float>());
            model.ReleasePages(tensor);
            if (clean) continue;
            var values = model.ReadFloats(tensor);
            var bad = Array.FindIndex(values, v => !float.IsFinite(v));
            if (bad >= 0)
                throw new CompressionException(DiagnosticCodes.NonFiniteWeights,
                    $"initializer '{tensor.Name}' holds {values[bad]} at element {bad} ({values.Count(v => !float.IsFinite(v))} non-finite values): fix the model before compressing it", path);
        }
        // Constant nodes hold weights too (the constant-weights pass turns them into initializers). Only NaN is
        // refused there: ±inf constants are deliberate (attention masks, open Clip bounds).
        foreach (var node in new OnnxGraph(model.Graph).SelfAndSubgraphs().SelectMany(g => g.Nodes).Where(n => n.OpType == "Constant" && (n.Domain ?? "") is "" or "ai.onnx"))
            foreach (var a in node.Attribute)
            {
                var values = a.Name switch
                {
                    "value" when a.T is not null && IsFloat(a.T) => model.ReadFloats(a.T),
                    "value_float" => [a.F],
                    "value_floats" => a.Floats.ToArray(),
                    _ => [],
                };
                var bad = Array.FindIndex(values, float.IsNaN);
                if (bad >= 0)
                    throw new CompressionException(DiagnosticCodes.NonFiniteWeights,
                        $"Constant node '{node.Name}' (output '{node.Output.FirstOrDefault()}') holds NaN at element {bad} ({values.Count(float.IsNaN)} NaN values): fix the model before compressing it", path);
            }
    }

    /// <summary>Whether no element is NaN or ±inf (exponent bits all ones), a vector at a time.</summary>
    private static bool AllFinite(ReadOnlySpan<float> values)
    {
        var bits = System.Runtime.InteropServices.MemoryMarshal.Cast<float, uint>(values);
        var exponent = new System.Numerics.Vector<uint>(0x7F800000u);
        var i = 0;
        for (; i <= bits.Length - System.Numerics.Vector<uint>.Count; i += System.Numerics.Vector<uint>.Count)
            if (System.Numerics.Vector.EqualsAny(new System.Numerics.Vector<uint>(bits.Slice(i)) & exponent, exponent)) return false;
        for (; i < values.Length; i++) if (!float.IsFinite(values[i])) return false;
        return true;
    }

    private static bool IsFloat(TensorProto tensor) =>
        tensor.DataType is (int)TensorProto.Types.DataType.Float or (int)TensorProto.Types.DataType.Double or (int)TensorProto.Types.DataType.Float16;

    /// <summary>
    /// Saves the candidate. A large one (saved with external data) is then read back from its file: its changed weights
    /// (≈ a quarter of the model for int8) would otherwise stay in memory through the gate and the report. Its own
    /// method so that no reference to the built model outlives it on the caller's frame (unoptimized code keeps
    /// temporaries alive to the end of a method).
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static bool SaveCandidate(CompressionContext context, string path, string source)
    {
        var external = SaveModel(context.Model, path, source);
        if (external) context.ReplaceModel(OnnxModel.Load(path));
        return external;
    }

    /// <summary>Saves the model (large ones with external data); returns whether it has external data.</summary>
    private static bool SaveModel(OnnxModel model, string path, string source)
    {
        try
        {
            var size = model.InlineSize();
            // Past protobuf's limit, and for a large source stored with external data (it keeps that form: its weights
            // are written straight from the memory map to the side file, and ONNX Runtime maps them back in the gate).
            var external = size > 1_900_000_000
                || (model.HasExternalData() && OnnxModel.FileSizeWithExternalData(source) > LargeModelBytes);
            model.Save(path, external ? new SaveOptions { ExternalizeThreshold = 1024 } : null);
            return external;
        }
        catch (IOException e) { throw new CompressionException(DiagnosticCodes.OutputNotWritable, $"cannot write '{path}': {e.Message}", source, e); }
        catch (UnauthorizedAccessException e) { throw new CompressionException(DiagnosticCodes.OutputNotWritable, $"cannot write '{path}': {e.Message}", source, e); }
    }

    /// <summary>
    /// Puts a saved model at its destination atomically: a copy under a temporary name of its own, then a rename. A model
    /// with external data is saved again instead, since it names its data file.
    /// </summary>
    private static void Publish(string from, string to, bool external)
    {
        var temp = TempFiles.For(to);
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(to)!);
            if (external)
            {
                using var model = OnnxModel.Load(from);
                model.Save(to, new SaveOptions { ExternalizeThreshold = 1024 });
            }
            else
            {
                File.Copy(from, temp, overwrite: true);
                File.Move(temp, to, overwrite: true);
            }
        }
        catch (IOException e) { throw new CompressionException(DiagnosticCodes.OutputNotWritable, $"cannot write '{to}': {e.Message}", to, e); }
        catch (UnauthorizedAccessException e) { throw new CompressionException(DiagnosticCodes.OutputNotWritable, $"cannot write '{to}': {e.Message}", to, e); }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    private static void DeleteModel(string path)
    {
        if (File.Exists(path)) File.Delete(path);
        if (File.Exists(path + ".data")) File.Delete(path + ".data");
    }

    /// <summary>The policy as setting-name → value text, for the report (defaults included, so a report stands alone).</summary>
    public static IReadOnlyDictionary<string, string> Describe(CompressionPolicy policy) => policy.Describe();
}
