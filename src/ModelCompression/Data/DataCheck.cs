using ModelCompression.Diagnostics;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Policy;

namespace ModelCompression.Data;

/// <summary>
/// Checks the data files a policy names against the model before any pass runs: a wrong key, dtype, shape, sample
/// count or label is found in the time it takes to read the file, not after minutes of compression. Every problem of
/// every file is reported at once (CM012x), each naming its file.
/// </summary>
public static class DataCheck
{
    /// <summary>The policy's calibration and validation data, loaded and checked against <paramref name="graph"/>.</summary>
    public static (Dataset? Calibration, Dataset? Validation) All(GraphProto graph, CompressionPolicy policy)
    {
        var errors = new List<Diagnostic>();
        Dataset? Try(string? path, Func<Dataset, Dataset> check)
        {
            if (path is null) return null;
            try { return check(Dataset.Load(path)); }
            catch (CompressionException e) { errors.AddRange(e.Diagnostics); return null; }
        }
        var calibration = Try(policy.Data.CalibrationData, data => { Calibration(data, graph); return data; });
        var validation = Try(policy.Data.ValidationData, data => { Validation(data, graph, policy); return data; });
        if (errors.Count > 0) throw new CompressionException(errors);
        return (calibration, validation);
    }

    /// <summary>Calibration data: every model input present with its dtype and shape, and at least one sample.</summary>
    public static Dataset Calibration(Dataset data, GraphProto graph)
    {
        var bound = data.BindTo(ModelInput.FromGraph(graph));
        if (bound.Count == 0) throw new CompressionException(DiagnosticCodes.InvalidData, "calibration data holds no samples", data.Source);
        RequireFinite(bound, "calibration");
        return bound;
    }

    /// <summary>
    /// Validation data, bound to the model's inputs: at least one sample; class ids when an accuracy threshold needs
    /// them (CM0123); class ids within the model's output classes when it says how many (CM0122).
    /// </summary>
    public static Dataset Validation(Dataset data, GraphProto graph, CompressionPolicy policy)
    {
        var bound = data.BindTo(ModelInput.FromGraph(graph));
        if (bound.Count == 0) throw new CompressionException(DiagnosticCodes.InvalidData, "validation data holds no samples", data.Source);
        RequireFinite(bound, "validation");
        if (policy.Get<Evaluation.GateOptions>().HasAccuracyThreshold && bound.Labels is null)
            throw new CompressionException(DiagnosticCodes.MissingLabels,
                $"MinAccuracy/MaxAccuracyDrop need class ids under 'label' or 'labels' in the validation data (found: {string.Join(", ", data.Inputs.Select(a => $"'{a.Name}' {a.ShapeText}"))})", data.Source);
        if (bound.Labels is { Length: > 0 } labels)
        {
            var (min, max) = (labels.Min(), labels.Max());
            if (min < 0)
                throw new CompressionException(DiagnosticCodes.InvalidData, $"class ids must be >= 0; the labels hold {min} (sample {Array.IndexOf(labels, min)})", data.Source);
            if (Classes(graph) is { } classes && max >= classes.Count)
                throw new CompressionException(DiagnosticCodes.DataMismatch,
                    $"the labels hold class id {max} (sample {Array.IndexOf(labels, max)}) but model output '{classes.Output}' has {classes.Count} classes (ids 0..{classes.Count - 1})", data.Source);
        }
        return bound;
    }

    /// <summary>
    /// A float input with no finite value (all NaN/±inf) calibrates no range and measures nothing: without this check
    /// static int8 would quantize with empty ranges and write a silently worse model. A stray NaN among finite values
    /// is left to the calibrators, which skip it.
    /// </summary>
    private static void RequireFinite(Dataset bound, string role)
    {
        foreach (var array in bound.Inputs)
        {
            var finite = array.Data switch
            {
                float[] f => f.Length == 0 || Array.Exists(f, float.IsFinite),
                double[] d => d.Length == 0 || Array.Exists(d, double.IsFinite),
                Half[] h => h.Length == 0 || Array.Exists(h, Half.IsFinite),
                _ => true,
            };
            if (!finite)
                throw new CompressionException(DiagnosticCodes.InvalidData,
                    $"{role} array '{array.Name}' {array.ShapeText} holds no finite value (all NaN or infinite)", bound.Source);
        }
    }

    /// <summary>The first output's static last dimension: the number of classes of a classifier.</summary>
    private static (string Output, long Count)? Classes(GraphProto graph)
    {
        if (graph.Output.Count == 0 || graph.Output[0].Type?.TensorType?.Shape is not { Dim.Count: >= 2 } shape) return null;
        var last = shape.Dim[^1];
        return last.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue && last.DimValue > 0 ? (graph.Output[0].Name, last.DimValue) : null;
    }
}
