using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using ModelCompression;
using ModelCompression.Bench.Scale;
using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Policy;

// Usage: dotnet run -c Release --project bench/Scale -- [--sizes 0.25,1,3] [--cases int8-dynamic,int8,int4,int4-rtn,sparsity,magnitude,sparsity-dense,rank,rank-int8]
//        [--work <folder>] [--keep]
// For each size it generates a transformer-shaped fp32 model with external data (fixed seed) plus calibration and
// validation tokens into a temporary folder, checks ONNX Runtime runs it, then runs each case in a child process of its
// own (this program re-invoked with --case), so each case's peak RSS (VmHWM) is its own. Each output is then loaded
// and run by ONNX Runtime here. One table at the end; generated models are deleted unless --keep.
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
string? Value(string name) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;

if (Value("--case") is { } single) return Child.Run(single, Value("--model")!, Value("--output")!, Value("--calibration")!, Value("--validation")!);

var sizes = (Value("--sizes") ?? "0.25,1,3").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
var cases = (Value("--cases") ?? string.Join(",", Child.Cases.Keys)).Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
var root = Value("--work") is { } w ? Directory.CreateDirectory(Path.Combine(w, $"scale-{Guid.NewGuid():N}")).FullName : Directory.CreateTempSubdirectory("scale-bench").FullName;
Console.WriteLine($"ONNX Runtime {OrtEnv.Instance().GetVersionString()}, {Environment.ProcessorCount} logical CPUs; work folder {root}");
var rows = new List<string[]>();
if (cases is ["none"]) cases = [];
foreach (var label in sizes)
{
    var shape = ModelShape.For(label);
    var folder = Directory.CreateDirectory(Path.Combine(root, "size-" + label)).FullName;
    var model = Path.Combine(folder, "model.onnx");
    var calibration = Path.Combine(folder, "calib.npz");
    var validation = Path.Combine(folder, "val.npz");
    var started = Stopwatch.GetTimestamp();
    ModelGenerator.Write(shape, model);
    ModelGenerator.WriteTokens(calibration, shape, samples: 32, seed: 1);
    ModelGenerator.WriteTokens(validation, shape, samples: 16, seed: 2);
    var modelBytes = OnnxModel.FileSizeWithExternalData(model);
    Console.WriteLine($"size {label}: hidden {shape.Hidden}, {shape.Layers} layers, vocabulary {shape.Vocabulary}, {shape.Parameters / 1e6:0.0} M parameters, {modelBytes / 1e6:0} MB on disk, generated in {Stopwatch.GetElapsedTime(started).TotalSeconds:0.0} s; source runs in ONNX Runtime: {Check.Runs(model, shape)}");
    foreach (var name in cases)
    {
        var output = Path.Combine(folder, $"out-{name}.onnx");
        var result = Child.Spawn(name, model, output, calibration, validation);
        var runs = result.Error is null ? Check.Runs(output, shape) : "–";
        var outputBytes = File.Exists(output) ? OnnxModel.FileSizeWithExternalData(output) : 0;
        var passSeconds = result.PassSeconds;
        rows.Add([label, name, result.Error ?? "ok", $"{result.Seconds:0.0}", $"{passSeconds:0.0}", passSeconds > 0 ? $"{shape.WeightMegabytes / passSeconds:0}" : "–",
            $"{result.PeakKilobytes / 1e3:0}", $"{result.PeakKilobytes * 1e3 / modelBytes:0.00}", outputBytes > 0 ? $"{outputBytes / 1e6:0}" : "–", runs, result.Steps]);
        Console.WriteLine($"  {name}: {string.Join(" | ", rows[^1].Skip(2))}");
        if (!args.Contains("--keep")) foreach (var f in Directory.GetFiles(folder, "out-*")) File.Delete(f);
        foreach (var f in Directory.GetFiles(folder, "*.json").Concat(Directory.GetFiles(folder, "*.md")).Concat(Directory.GetFiles(folder, "*.html"))) File.Delete(f);
    }
    if (!args.Contains("--keep")) Directory.Delete(folder, recursive: true);
}
Console.WriteLine();
Check.Print(["size GB", "case", "result", "wall s", "pass s", "MB/s (pass)", "peak RSS MB", "RSS / model", "output MB", "ORT runs output", "steps (s)"], rows);
if (!args.Contains("--keep")) Directory.Delete(root, recursive: true);
return 0;

internal sealed record ChildResult(double Seconds, double PassSeconds, long PeakKilobytes, string Steps, string? Error);

internal static class Child
{
    /// <summary>Each case is one technique at its defaults; calibration data is always given (the passes that need it use it).</summary>
    public static readonly Dictionary<string, (string Key, string Value)[]> Cases = new()
    {
        ["int8-dynamic"] = [("Quantize", "int8-dynamic")],
        ["int8"] = [("Quantize", "int8")],
        ["int4"] = [("Quantize", "int4")],
        ["int4-rtn"] = [("Quantize", "int4"), ("Int4Method", "rtn")],
        ["sparsity"] = [("Sparsity", "0.5")],
        // Pruning without the calibrated reconstruction: the global threshold, the prune and the storage alone.
        ["magnitude"] = [("Sparsity", "0.5"), ("PruneMethod", "magnitude")],
        // The same pruning kept dense: the pass and the gate without the sparse form's decoders (ONNX Runtime folds them at load).
        ["sparsity-dense"] = [("Sparsity", "0.5"), ("SparseStorage", "false")],
        ["rank"] = [("Rank", "0.5")],
        // Two passes: int8's calibration runs the whole model after low rank has written (and spilled) its factors.
        ["rank-int8"] = [("Rank", "0.5"), ("Quantize", "int8")],
    };

    /// <summary>Steps of the engine that are not the compression pass itself.</summary>
    private static readonly HashSet<string> NotPasses = ["load", CompressionEngine.DataStep, "save", "gate", "total"];

    public static ChildResult Spawn(string name, string model, string output, string calibration, string validation)
    {
        var self = Environment.ProcessPath!;
        var info = new ProcessStartInfo(self) { RedirectStandardOutput = true, RedirectStandardError = true };
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") info.ArgumentList.Add(typeof(Child).Assembly.Location);
        foreach (var a in new[] { "--case", name, "--model", model, "--output", output, "--calibration", calibration, "--validation", validation }) info.ArgumentList.Add(a);
        using var process = Process.Start(info)!;
        // Stage lines are passed on as they come: a long case shows where it is while it runs.
        var showStages = Environment.GetEnvironmentVariable("SCALE_STAGES") == "1";
        var stderr = new StringBuilder();
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (stderr) stderr.AppendLine(e.Data);
            if (showStages) Console.Error.WriteLine(e.Data);
        };
        process.BeginErrorReadLine();
        var stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        var line = stdout.Split('\n').LastOrDefault(l => l.StartsWith("RESULT ", StringComparison.Ordinal));
        if (line is null) return new ChildResult(0, 0, 0, "", $"exit {process.ExitCode}: {Short(stderr + stdout)}");
        return JsonSerializer.Deserialize<ChildResult>(line["RESULT ".Length..])!;
    }

    public static int Run(string name, string model, string output, string calibration, string validation)
    {
        var start = Stopwatch.GetTimestamp();
        string? error = null;
        double pass = 0;
        var steps = "";
        try
        {
            var settings = new List<KeyValuePair<string, string>>
            {
                new("CalibrationData", calibration), new("ValidationData", validation), new("LatencyRounds", "3"),
            };
            settings.AddRange(Cases[name].Select(c => new KeyValuePair<string, string>(c.Key, c.Value)));
            var policy = PolicySettings.Parse(settings, Path.GetDirectoryName(model)!);
            // Stage changes go to stderr with their time, to see where a slow case spends it (run a case by hand).
            string? stage = null;
            var progress = new Progress<(string Stage, double Fraction)>(p =>
            {
                if (p.Stage != stage) Console.Error.WriteLine($"{Stopwatch.GetElapsedTime(start).TotalSeconds,7:0.0} s {stage = p.Stage} (RSS {Kilobytes("VmRSS") / 1e3:0} MB, peak {Kilobytes("VmHWM") / 1e3:0} MB)");
            });
            var result = CompressionEngine.Compress(new CompressionRequest(model, output, Path.GetDirectoryName(output)!, policy) { GateFailureAsWarning = true }, progress: progress);
            var timings = result.Report.Timings;
            pass = timings.Where(t => !NotPasses.Contains(t.Step)).Sum(t => t.Milliseconds) / 1e3;
            steps = string.Join(", ", timings.Where(t => t.Step != "total" && t.Milliseconds >= 50).Select(t => $"{t.Step} {t.Milliseconds / 1e3:0.0}"));
        }
        catch (CompressionException e) { error = Short($"{e.Code}: {e.Diagnostics[0].Message}"); }
        catch (Exception e) { error = Short($"{e.GetType().Name}: {e.Message}"); }
        var seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        Console.WriteLine("RESULT " + JsonSerializer.Serialize(new ChildResult(seconds, pass, PeakKilobytes(), steps, error)));
        return 0;
    }

    /// <summary>This process's peak resident set (VmHWM), in kB.</summary>
    private static long PeakKilobytes() => Kilobytes("VmHWM");

    /// <summary>A line of /proc/self/status in kB (VmRSS: now, VmHWM: peak).</summary>
    private static long Kilobytes(string field)
    {
        var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith(field + ":", StringComparison.Ordinal));
        return line is null ? 0 : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
    }

    private static string Short(string text)
    {
        text = text.ReplaceLineEndings(" ").Trim();
        return text.Length > 200 ? text[..197] + "..." : text;
    }
}

internal static class Check
{
    /// <summary>Whether ONNX Runtime loads the model from its path (external data included) and runs one sample.</summary>
    public static string Runs(string path, ModelShape shape)
    {
        try
        {
            using var session = new InferenceSession(path);
            var tokens = new DenseTensor<long>(Enumerable.Range(0, shape.Sequence).Select(i => (long)(i * 7 % shape.Vocabulary)).ToArray(), [1, shape.Sequence]);
            using var results = session.Run([NamedOnnxValue.CreateFromTensor(ModelGenerator.Input, tokens)]);
            var logits = results.First().AsEnumerable<float>().ToArray();
            return logits.Length == shape.Sequence * shape.Vocabulary && logits.All(float.IsFinite) ? "yes" : "no: bad output";
        }
        catch (Exception e) { return "no: " + e.Message.ReplaceLineEndings(" ")[..Math.Min(120, e.Message.Length)]; }
    }

    /// <summary>A Markdown table, columns padded so it also reads as plain text.</summary>
    public static void Print(string[] header, List<string[]> rows)
    {
        var widths = header.Select((h, i) => rows.Select(r => r[i].Length).Append(h.Length).Max()).ToArray();
        string Line(string[] cells) => "| " + string.Join(" | ", cells.Select((c, i) => c.Replace("|", "\\|").PadRight(widths[i]))) + " |";
        Console.WriteLine(Line(header));
        Console.WriteLine("|" + string.Join("|", widths.Select(w => new string('-', w + 2))) + "|");
        foreach (var row in rows) Console.WriteLine(Line(row));
    }
}
