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

        var context = CompressionPipeline.Run(source, request.Policy, modelPath, PassCache.Open(request.CacheDirectory, source, modelPath), timings, cancellation, progress, calibration);
        using var working = context.Model;
        if (!request.Policy.HasTechnique)
            context.Warn(DiagnosticCodes.NothingToCompress, $"no technique is set ({string.Join(", ", SettingsCatalog.Techniques.Select(t => t.Settings[0].Name))} …): the output is the cleaned-up original");

        // Reports and the kept candidate are named after the output, so runs with different outputs never share them.
        CreateFolder(reportDirectory, "report folder", modelPath);
        var name = Path.GetFileNameWithoutExtension(outputPath);
        // The model under test has a name no other run uses: only the model this run's gate judged can become its output.
        var candidate = Path.Combine(reportDirectory, $"{name}.{TempFiles.NewToken()}.candidate.onnx");
        try
        {
            step.Restart();
            var external = SaveModel(working, candidate, modelPath);
            timings.Add(new StepTiming("save", step.Elapsed.TotalMilliseconds));

            step.Restart();
            var measurements = Gate.Measure(modelPath, candidate, request.Policy, cancellation, progress, validation);
            var verdict = Gate.Judge(measurements, request.Policy);
            timings.Add(new StepTiming("gate", step.Elapsed.TotalMilliseconds));

            var diagnostics = new List<Diagnostic>(context.Diagnostics);
            var severity = request.GateFailureAsWarning ? Severity.Warning : Severity.Error;
            diagnostics.AddRange(verdict.Failures.Select(f => new Diagnostic(f.Code, severity, f.Message, modelPath)));

            string? written = null;
            var kept = KeptCandidatePath(reportDirectory, outputPath);
            // From here to the reports, one run at a time per output and per report name (other processes included).
            using var outputLock = OutputLock.Acquire([outputPath, Path.Combine(reportDirectory, name)], cancellation);
            if (verdict.Passed || request.GateFailureAsWarning)
            {
                Publish(candidate, outputPath, external);
                written = outputPath;
                DeleteModel(kept); // a failed run's candidate would no longer match the reports
            }
            else Publish(candidate, kept, external);
            timings.Add(new StepTiming("total", total.Elapsed.TotalMilliseconds));

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
                Diagnostics = diagnostics,
                Timings = timings,
            };
            ReportWriter.WriteAll(report, reportDirectory, name);
            return new CompressionResult(report, diagnostics);
        }
        finally
        {
            // Whatever happened (gate passed or failed, runtime error, cancellation), this run's private copy goes.
            DeleteModel(candidate);
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

    private static bool IsFloat(TensorProto tensor) =>
        tensor.DataType is (int)TensorProto.Types.DataType.Float or (int)TensorProto.Types.DataType.Double or (int)TensorProto.Types.DataType.Float16;

    /// <summary>Saves the model (large ones with external data); returns whether it has external data.</summary>
    private static bool SaveModel(OnnxModel model, string path, string source)
    {
        try
        {
            var size = model.Proto.CalculateSize();
            var external = size is < 0 or > 1_900_000_000;
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
