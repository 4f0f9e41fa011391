using System.Diagnostics;
using System.Globalization;
using ModelCompression;
using ModelCompression.Bench.RealModels;
using ModelCompression.Data;
using ModelCompression.Diagnostics;
using ModelCompression.Evaluation;
using ModelCompression.Policy;
using ModelCompression.Runtime;
using static ModelCompression.Evaluation.MetricFormat;

// Usage: dotnet run -c Release --project bench/RealModels -- <folder> [--samples 64] [--rounds 9] [--threads 0]
//        [--calibration-samples N] [--models ppocr_det_v4,ppocr_cls_v2] [--keep]
// <folder> holds <model>.onnx with <model>.calib.npz and <model>.val.npz, and optionally
// ort/<model>.ort_pre_static_qdq.onnx (ONNX Runtime's quantize_static output). For each model it runs the engine (the
// API the command line and MSBuild use) with default settings for each case, gates ONNX Runtime's model the same way,
// and prints one table: size ratio, latency ratio (original and candidate timed in the same run, batch 8, interleaved
// rounds, p50), the model's own fidelity measure, what the gate said and how many layers changed. A case that fails
// prints its coded error in its row; the run goes on.
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
if (Options.Parse(args) is not { } options)
{
    Console.Error.WriteLine("usage: RealModels <folder with <model>.onnx, .calib.npz, .val.npz> [--samples 64] [--rounds 9] [--threads 0] [--calibration-samples N] [--models a,b] [--keep]");
    return 2;
}
var work = Directory.CreateTempSubdirectory("realmodels-bench").FullName;
Console.WriteLine($"ONNX Runtime {OnnxRuntimeLoader.Version()}, {Environment.ProcessorCount} logical CPUs, batch {Bench.Batch}, {options.Rounds} interleaved latency rounds, at most {options.Samples} validation samples");
Console.WriteLine();

var models = Directory.GetFiles(options.Folder, "*.onnx").Select(p => Path.GetFileNameWithoutExtension(p)!)
    .Where(m => options.Models is null || options.Models.Contains(m)).Order(StringComparer.Ordinal).ToList();
if (models.Count == 0) Console.WriteLine($"no <model>.onnx in {options.Folder}");
foreach (var model in models)
{
    try { Bench.Model(options, work, model); }
    catch (Exception e) { Console.WriteLine($"## {model}\n\n{Bench.Describe(e)}\n"); }
}
if (!options.Keep) Directory.Delete(work, recursive: true);
else Console.WriteLine($"candidates and reports kept in {work}");
return 0;

internal sealed record Options(string Folder, int Samples, int Rounds, int Threads, int? CalibrationSamples, IReadOnlySet<string>? Models, bool Keep)
{
    public static Options? Parse(string[] args)
    {
        string? Value(string name) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;
        int? Int(string name) => Value(name) is { } v ? int.Parse(v, CultureInfo.InvariantCulture) : null;
        var positional = args.Where((a, i) => !a.StartsWith("--", StringComparison.Ordinal) && (i == 0 || !args[i - 1].StartsWith("--", StringComparison.Ordinal) || args[i - 1] == "--keep")).ToList();
        if (positional.Count != 1 || !Directory.Exists(positional[0])) return null;
        return new Options(Path.GetFullPath(positional[0]), Int("--samples") ?? 64, Int("--rounds") ?? 9, Int("--threads") ?? 0, Int("--calibration-samples"),
            Value("--models")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet(), args.Contains("--keep"));
    }
}

/// <summary>How a model's fidelity is judged: the measure its own post-processing cares about.</summary>
internal enum Measure { MaskIou, Accuracy, Decision, Cosine }

internal static class Bench
{
    public const int Batch = 8;

    /// <summary>The engine's cases: one technique each, every other setting at its default.</summary>
    private static readonly (string Name, (string Key, string Value)[] Settings)[] Cases =
    [
        ("int8", [("Quantize", "int8")]),
        ("int8-dynamic", [("Quantize", "int8-dynamic")]),
        ("sparsity 0.5", [("Sparsity", "0.5")]),
        ("rank 0.5", [("Rank", "0.5")]),
        // A deliberately broken candidate: the default gate must fail it (its verdict is the point of this row).
        ("broken: sparsity 0.95 magnitude", [("Sparsity", "0.95"), ("PruneMethod", "magnitude")]),
    ];

    /// <summary>The fixtures' measures (their README): text mask at 0.3, orientation labels, the speech decision at 0.5.</summary>
    private static (Measure Measure, double Threshold, string? Output) Kind(string model, bool labelled) => model switch
    {
        "ppocr_det_v4" => (Measure.MaskIou, 0.3, null),
        "ppocr_cls_v2" => (Measure.Accuracy, 0.5, null),
        "silero_vad_v4" => (Measure.Decision, 0.5, "output"),
        _ => labelled ? (Measure.Accuracy, 0.5, null) : (Measure.Cosine, 0.5, null),
    };

    public static void Model(Options options, string work, string model)
    {
        var folder = options.Folder;
        var modelPath = Path.Combine(folder, model + ".onnx");
        var calibration = Path.Combine(folder, model + ".calib.npz");
        var validationSource = Path.Combine(folder, model + ".val.npz");
        Console.WriteLine($"## {model}");
        Console.WriteLine();
        if (!File.Exists(validationSource)) { Console.WriteLine($"no {model}.val.npz: skipped\n"); return; }
        var validation = Path.Combine(work, model + ".val.npz");
        var samples = NpzSlice.Write(validationSource, validation, options.Samples);
        var labelled = HasLabels(validationSource);
        var (measure, threshold, output) = Kind(model, labelled);

        var settings = new List<KeyValuePair<string, string>>
        {
            new("ValidationData", validation), new("BatchSize", Batch.ToString(CultureInfo.InvariantCulture)),
            new("LatencyRounds", options.Rounds.ToString(CultureInfo.InvariantCulture)), new("Threads", options.Threads.ToString(CultureInfo.InvariantCulture)),
            new("DecisionThreshold", threshold.ToString(CultureInfo.InvariantCulture)),
        };
        if (File.Exists(calibration)) settings.Add(new("CalibrationData", calibration));
        if (options.CalibrationSamples is { } c) settings.Add(new("CalibrationSamples", c.ToString(CultureInfo.InvariantCulture)));

        var rows = new List<string[]>();
        string? original = null;
        foreach (var (name, caseSettings) in Cases)
        {
            var start = Stopwatch.GetTimestamp();
            try
            {
                var policy = PolicySettings.Parse([.. settings, .. caseSettings.Select(c => new KeyValuePair<string, string>(c.Key, c.Value))], folder);
                var result = CompressionEngine.Compress(new CompressionRequest(modelPath, Path.Combine(work, $"{model}.{new string(name.Select(ch => char.IsLetterOrDigit(ch) || ch is '.' or '-' ? ch : '-').ToArray())}.onnx"), work, policy) { GateFailureAsWarning = true });
                var seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
                var report = result.Report;
                original ??= Original(report.Measurements, measure, threshold, output);
                var warnings = result.Diagnostics.Where(d => d.Severity == Severity.Warning && !report.Verdict.Failures.Any(f => f.Code == d.Code)).Select(d => d.Code).Distinct().Order(StringComparer.Ordinal);
                // Per technique, since a case may change layers by more than its own (BatchNormalization folded into convs).
                var changed = report.Layers.Count(l => l.Technique != "none");
                var techniques = report.Layers.SelectMany(l => l.Steps.Where(ModelCompression.Reporting.LayerTable.Applied).Select(r => r.Technique).Distinct())
                    .GroupBy(t => t).OrderByDescending(g => g.Count()).ThenBy(g => g.Key, StringComparer.Ordinal).Select(g => $"{g.Key} {g.Count()}");
                rows.Add([$"engine {name}", Ratio(report.Measurements.SizeRatio), LatencyCell(report.Measurements), FidelityCell(report.Measurements, measure, threshold, output),
                    VerdictCell(report.Verdict) + (warnings.Any() ? $"; warnings {string.Join(",", warnings)}" : ""), $"{changed}/{report.Layers.Count}" + (changed > 0 ? $" ({string.Join(", ", techniques)})" : ""), $"{seconds:0.0} s"]);
            }
            catch (Exception e)
            {
                rows.Add([$"engine {name}", Describe(e), "", "", "", "", $"{Stopwatch.GetElapsedTime(start).TotalSeconds:0.0} s"]);
            }
        }

        var ort = Path.Combine(folder, "ort", model + ".ort_pre_static_qdq.onnx");
        if (File.Exists(ort))
        {
            var start = Stopwatch.GetTimestamp();
            try
            {
                // ONNX Runtime's model is gated exactly as the engine gates its own candidates (default thresholds).
                var policy = PolicySettings.Parse(settings, folder);
                var m = Gate.Measure(modelPath, ort, policy);
                original ??= Original(m, measure, threshold, output);
                rows.Add(["ORT quantize_static (QDQ)", Ratio(m.SizeRatio), LatencyCell(m), FidelityCell(m, measure, threshold, output), VerdictCell(Gate.Judge(m, policy)), "", $"{Stopwatch.GetElapsedTime(start).TotalSeconds:0.0} s"]);
            }
            catch (Exception e)
            {
                rows.Add(["ORT quantize_static (QDQ)", Describe(e), "", "", "", "", ""]);
            }
        }
        else rows.Add(["ORT quantize_static (QDQ)", $"no ort/{model}.ort_pre_static_qdq.onnx", "", "", "", "", ""]);

        Console.WriteLine($"{samples} validation samples; fidelity: {MeasureText(measure, threshold, output)}" + (original is null ? "" : $"; original {original}"));
        Console.WriteLine();
        Print(["candidate", "size", "latency (p50, batch 8)", "fidelity", "gate", "layers changed", "time"], rows);
        Console.WriteLine();
    }

    private static bool HasLabels(string npz)
    {
        using var zip = System.IO.Compression.ZipFile.OpenRead(npz);
        return zip.Entries.Any(e => e.FullName is "label.npy" or "labels.npy");
    }

    private static string MeasureText(Measure measure, double threshold, string? output) => measure switch
    {
        Measure.MaskIou => $"mask IoU (p > {threshold}) and cosine of the first output",
        Measure.Accuracy => "top-1 accuracy against 'label'",
        Measure.Decision => $"decision agreement (p > {threshold}) of '{output}'",
        _ => "cosine of the first output",
    };

    private static OutputFidelity? Output(GateMeasurements m, string? output) =>
        output is null ? m.Outputs.FirstOrDefault() : m.Outputs.FirstOrDefault(o => o.Name == output);

    private static string? Original(GateMeasurements m, Measure measure, double threshold, string? output) =>
        measure == Measure.Accuracy && m.Original?.Top1 is { } top1 ? $"accuracy {Percent(top1)}" : null;

    private static string FidelityCell(GateMeasurements m, Measure measure, double threshold, string? output)
    {
        var o = Output(m, output);
        return measure switch
        {
            Measure.MaskIou => o is null ? "–" : $"IoU {IoU(o.MaskIou)}, cosine {Cosine(o.Cosine)}",
            Measure.Accuracy => m.Compressed?.Top1 is { } a ? $"accuracy {Percent(a)}" + (m.Original?.Top1 is { } b ? $" ({PointChange(b, a)})" : "") : "–",
            Measure.Decision => o is null ? "–" : $"agreement {Percent(o.DecisionAgreement)}, cosine {Cosine(o.Cosine)}",
            _ => o is null ? "–" : $"cosine {Cosine(o.Cosine)}",
        };
    }

    private static string LatencyCell(GateMeasurements m) =>
        m.LatencyRatio is { } r ? $"{Ratio(r)} ({Milliseconds(m.CompressedLatency!.P50Ms)} vs {Milliseconds(m.OriginalLatency!.P50Ms)})" : "–";

    private static string VerdictCell(GateVerdict verdict) =>
        verdict.Passed ? "pass" : "fail " + string.Join(",", verdict.Failures.Select(f => f.Code).Distinct());

    /// <summary>A coded error as the tools print it (first diagnostic, shortened); anything else by type and message.</summary>
    public static string Describe(Exception e)
    {
        var text = e is CompressionException c ? $"{c.Code}: {c.Diagnostics[0].Message}" + (c.Diagnostics.Count > 1 ? $" (+{c.Diagnostics.Count - 1} more)" : "")
            : $"{e.GetType().Name}: {e.Message}";
        text = text.ReplaceLineEndings(" ");
        return "error " + (text.Length > 160 ? text[..157] + "..." : text);
    }

    /// <summary>A Markdown table, columns padded so it also reads as plain text.</summary>
    private static void Print(string[] header, List<string[]> rows)
    {
        var widths = header.Select((h, i) => rows.Select(r => r[i].Length).Append(h.Length).Max()).ToArray();
        string Line(string[] cells) => "| " + string.Join(" | ", cells.Select((c, i) => c.Replace("|", "\\|").PadRight(widths[i]))) + " |";
        Console.WriteLine(Line(header));
        Console.WriteLine("|" + string.Join("|", widths.Select(w => new string('-', w + 2))) + "|");
        foreach (var row in rows) Console.WriteLine(Line(row));
    }
}
