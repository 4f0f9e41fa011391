using System.Diagnostics;
using System.Globalization;
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
}

public sealed record CompressionResult(CompressionReport Report, IReadOnlyList<Diagnostic> Diagnostics)
{
    public bool GateFailed => !Report.Verdict.Passed;
    public bool OutputWritten => Report.Output is not null;
}

/// <summary>
/// The engine both front ends drive: load and check the model, run the passes on a copy, save the candidate, gate
/// it against the original, then write the output (only when it passes) and the reports. The source model is never
/// written; the output appears atomically or not at all.
/// </summary>
public static class CompressionEngine
{
    public static CompressionResult Compress(CompressionRequest request, CancellationToken cancellation = default, IProgress<(string Stage, double Fraction)>? progress = null)
    {
        var timings = new List<StepTiming>();
        var total = Stopwatch.StartNew();
        var modelPath = Path.GetFullPath(request.ModelPath);
        var outputPath = Path.GetFullPath(request.OutputPath);
        if (string.Equals(modelPath, outputPath, StringComparison.Ordinal))
            throw new CompressionException(DiagnosticCodes.BadUsage, "the output path is the source model: the source is never overwritten; choose another output", modelPath);

        Runtime.OnnxRuntimeSession.EnsureProviderAvailable(Runtime.RuntimeOptions.From(request.Policy), modelPath);
        var step = Stopwatch.StartNew();
        using var source = LoadChecked(modelPath);
        timings.Add(new StepTiming("load", step.Elapsed.TotalMilliseconds));

        using var working = source.Clone();
        var context = new CompressionContext(working, request.Policy, modelPath, cancellation) { Progress = progress };
        foreach (var pass in CompressionPipeline.For(request.Policy))
        {
            cancellation.ThrowIfCancellationRequested();
            step.Restart();
            progress?.Report((pass.Name, 0));
            pass.Apply(context);
            context.Graph.Invalidate();
            timings.Add(new StepTiming(pass.Name, step.Elapsed.TotalMilliseconds));
        }
        if (!request.Policy.HasTechnique)
            context.Warn(DiagnosticCodes.NothingToCompress, "no technique is set (Quantize, Sparsity, StructuredSparsity, Rank …): the output is the cleaned-up original");

        Directory.CreateDirectory(request.ReportDirectory);
        var name = Path.GetFileNameWithoutExtension(modelPath);
        var candidate = Path.Combine(Path.GetFullPath(request.ReportDirectory), name + ".candidate.onnx");
        step.Restart();
        SaveModel(working, candidate, modelPath);
        timings.Add(new StepTiming("save", step.Elapsed.TotalMilliseconds));

        step.Restart();
        var measurements = Gate.Measure(modelPath, candidate, request.Policy, cancellation, progress);
        var verdict = Gate.Judge(measurements, request.Policy);
        timings.Add(new StepTiming("gate", step.Elapsed.TotalMilliseconds));

        var diagnostics = new List<Diagnostic>(context.Diagnostics);
        var severity = request.GateFailureAsWarning ? Severity.Warning : Severity.Error;
        diagnostics.AddRange(verdict.Failures.Select(f => new Diagnostic(f.Code, severity, f.Message, modelPath)));

        string? written = null;
        if (verdict.Passed || request.GateFailureAsWarning)
        {
            CopyModel(candidate, outputPath);
            DeleteModel(candidate);
            written = outputPath;
        }
        timings.Add(new StepTiming("total", total.Elapsed.TotalMilliseconds));

        var (parametersBefore, nonZerosBefore) = ModelWeights.Count(source);
        var (parametersAfter, nonZerosAfter) = ModelWeights.Count(working);
        var report = new CompressionReport
        {
            Model = modelPath,
            Output = written,
            Candidate = written is null ? candidate : null,
            Policy = Describe(request.Policy),
            Layers = context.Records,
            ParametersBefore = parametersBefore,
            ParametersAfter = parametersAfter,
            NonZeroParametersBefore = nonZerosBefore,
            NonZeroParametersAfter = nonZerosAfter,
            Measurements = measurements,
            Verdict = verdict,
            GateFailureAsWarning = request.GateFailureAsWarning,
            Diagnostics = diagnostics,
            Timings = timings,
        };
        ReportWriter.WriteAll(report, request.ReportDirectory, name);
        return new CompressionResult(report, diagnostics);
    }

    /// <summary>Loads a model and checks it fully (order, tensor bytes, finite weights); failures are CM011x.</summary>
    public static OnnxModel LoadChecked(string path)
    {
        if (!File.Exists(path)) throw new CompressionException(DiagnosticCodes.ModelNotFound, $"model '{path}' does not exist", path);
        OnnxModel? model = null;
        try
        {
            model = OnnxModel.Load(path);
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

    private static void CheckFinite(OnnxModel model, string path)
    {
        foreach (var tensor in model.Graph.Initializer)
        {
            if (tensor.DataType is not ((int)TensorProto.Types.DataType.Float or (int)TensorProto.Types.DataType.Double or (int)TensorProto.Types.DataType.Float16)) continue;
            var values = model.ReadFloats(tensor);
            var bad = Array.FindIndex(values, v => !float.IsFinite(v));
            if (bad >= 0)
                throw new CompressionException(DiagnosticCodes.NonFiniteWeights,
                    $"initializer '{tensor.Name}' holds {values[bad]} at element {bad} ({values.Count(v => !float.IsFinite(v))} non-finite values): fix the model before compressing it", path);
        }
    }

    private static void SaveModel(OnnxModel model, string path, string source)
    {
        try
        {
            var size = model.Proto.CalculateSize();
            model.Save(path, size is < 0 or > 1_900_000_000 ? new SaveOptions { ExternalizeThreshold = 1024 } : null);
        }
        catch (IOException e) { throw new CompressionException(DiagnosticCodes.OutputNotWritable, $"cannot write '{path}': {e.Message}", source, e); }
        catch (UnauthorizedAccessException e) { throw new CompressionException(DiagnosticCodes.OutputNotWritable, $"cannot write '{path}': {e.Message}", source, e); }
    }

    /// <summary>Copies a saved model (and its external data) to its destination through temporary files and renames.</summary>
    private static void CopyModel(string from, string to)
    {
        try
        {
            using var model = OnnxModel.Load(from);
            var external = model.Proto.Graph.Initializer.Any(t => t.DataLocation == TensorProto.Types.DataLocation.External);
            model.Save(to, external ? new SaveOptions { ExternalizeThreshold = 1024 } : null);
        }
        catch (IOException e) { throw new CompressionException(DiagnosticCodes.OutputNotWritable, $"cannot write '{to}': {e.Message}", to, e); }
        catch (UnauthorizedAccessException e) { throw new CompressionException(DiagnosticCodes.OutputNotWritable, $"cannot write '{to}': {e.Message}", to, e); }
    }

    private static void DeleteModel(string path)
    {
        File.Delete(path);
        if (File.Exists(path + ".data")) File.Delete(path + ".data");
    }

    /// <summary>The policy as setting-name → value text, for the report (defaults included, so a report stands alone).</summary>
    public static IReadOnlyDictionary<string, string> Describe(CompressionPolicy policy)
    {
        var result = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var property in typeof(CompressionPolicy).GetProperties())
        {
            if (PolicySettings.Find(property.Name) is null || property.Name == "Excluded") continue;
            var value = property.GetValue(policy);
            result[property.Name] = value switch
            {
                null => "",
                double d => d.ToString("R", CultureInfo.InvariantCulture),
                System.Enum e => PolicySettings.FormatEnum(e),
                bool b => b ? "true" : "false",
                IEnumerable<string> list => string.Join(";", list),
                IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
                _ => value.ToString() ?? "",
            };
        }
        if (policy.PruneMethod == PruneMethod.Auto) result["PruneMethod"] = $"auto ({PolicySettings.FormatEnum(policy.EffectivePruneMethod)})";
        if (policy.StructuredCriterion == StructuredCriterion.Auto) result["StructuredCriterion"] = $"auto ({PolicySettings.FormatEnum(policy.EffectiveStructuredCriterion)})";
        if (policy.LowRankMethod == LowRankMethod.Auto) result["LowRankMethod"] = $"auto ({PolicySettings.FormatEnum(policy.EffectiveLowRankMethod)})";
        if (policy.LayerOverrides.Count > 0)
            result["LayerOverrides"] = string.Join("; ", policy.LayerOverrides.Select(o => $"{o.Match}: {string.Join(", ", o.Settings.Select(s => $"{s.Key}={s.Value}"))}"));
        return result;
    }
}
