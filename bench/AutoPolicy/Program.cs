using System.Diagnostics;
using System.Globalization;
using ModelCompression;
using ModelCompression.Policy;

// Usage: dotnet run -c Release --project bench/AutoPolicy -- [--models mlp,resnet] [--max-drop 0.01] [--trials 16] [--auto-only]
// For each fixture: a grid of uniform policies (one Sparsity and one Quantize for every layer: PruneScope=layer, and the
// default global allocation as a second baseline) gated at MaxAccuracyDrop, then Auto under the same threshold; prints
// the smallest passing file of each and the ratio, with times. Every run goes through the engine the CLI and MSBuild
// use; the grid shares a pass cache, so a sparsity is pruned once for all its formats.
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
string? Arg(string name) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;
var models = (Arg("--models") ?? "mlp,resnet").Split(',');
var maxDrop = Arg("--max-drop") ?? "0.01";
var trials = Arg("--trials");
var data = Path.Combine(AppContext.BaseDirectory, "data");
var work = Directory.CreateTempSubdirectory("auto-bench").FullName;
Console.WriteLine($"{Environment.ProcessorCount} logical CPUs; MaxAccuracyDrop={maxDrop}; calibration fmnist_calib.npz, validation fmnist_val.npz");

foreach (var name in models)
{
    var source = Path.Combine(data, $"fmnist_{name}.onnx");
    var model = Path.Combine(work, $"{name}.onnx");
    File.Copy(source, model, overwrite: true);
    (string Name, string Value)[] common = [("CalibrationData", Path.Combine(data, "fmnist_calib.npz")), ("ValidationData", Path.Combine(data, "fmnist_val.npz")),
        ("MaxAccuracyDrop", maxDrop), ("LatencyRounds", "1")];
    var cache = Path.Combine(work, name + ".cache");
    (bool Passed, double Ratio, double Drop, double Seconds) Run(string label, (string Name, string Value)[] settings, bool cached = true)
    {
        var policy = PolicySettings.Parse(common.Concat(settings).Select(s => KeyValuePair.Create(s.Name, s.Value)), data);
        var clock = Stopwatch.StartNew();
        var result = CompressionEngine.Compress(new(model, Path.Combine(work, name + ".out", label + ".onnx"), Path.Combine(work, name + ".reports"), policy)
        { GateFailureAsWarning = false, CacheDirectory = cached ? cache : null });
        var m = result.Report.Measurements;
        return (result.Report.Verdict.Passed, m.SizeRatio, (m.Original?.Top1 - m.Compressed?.Top1) ?? double.NaN, clock.Elapsed.TotalSeconds);
    }

    Console.WriteLine($"\n## {name}\n\n| policy | size ratio | accuracy drop | gate | time |\n|---|---:|---:|---|---:|");
    var best = new Dictionary<string, (string Label, double Ratio)>();
    foreach (var scope in args.Contains("--auto-only") ? [] : new[] { "layer", "global" })
        foreach (var sparsity in new[] { "0", "0.5", "0.7", "0.8", "0.85", "0.9", "0.95" })
            foreach (var quantize in sparsity == "0" ? new[] { "none", "int8", "int4" } : ["none", "int8"])
            {
                if (sparsity == "0" && scope == "global") continue; // the same as PruneScope=layer
                if (sparsity == "0" && quantize == "none") continue;
                var label = $"{(sparsity == "0" ? "" : $"Sparsity={sparsity} PruneScope={scope} ")}Quantize={quantize}";
                var r = Run(label.Replace(' ', '_').Replace('=', '-'), [("Sparsity", sparsity), ("PruneScope", scope), ("Quantize", quantize)]);
                Console.WriteLine($"| {label} | {r.Ratio:0.0000} | {r.Drop * 100:0.00} pt | {(r.Passed ? "pass" : "fail")} | {r.Seconds:0.0} s |");
                // An unpruned policy belongs to both grids.
                foreach (var key in sparsity == "0" ? ["uniform", "global"] : new[] { scope == "layer" ? "uniform" : "global" })
                    if (r.Passed && (!best.TryGetValue(key, out var b) || r.Ratio < b.Ratio)) best[key] = (label, r.Ratio);
            }
    (string, string)[] auto = trials is null ? [("Auto", "true")] : [("Auto", "true"), ("SearchTrials", trials)];
    // Auto starts from nothing cached: its time is the whole search.
    var a = Run("auto", auto, cached: false);
    Console.WriteLine($"| Auto (Objective=size{(trials is null ? "" : $", SearchTrials={trials}")}) | {a.Ratio:0.0000} | {a.Drop * 100:0.00} pt | {(a.Passed ? "pass" : "fail")} | {a.Seconds:0.0} s |");
    Console.WriteLine();
    foreach (var (key, b) in best)
        Console.WriteLine($"best {(key == "uniform" ? "uniform policy (same setting on every layer)" : "policy with the default global sparsity allocation")}: {b.Label}, size ratio {b.Ratio:0.0000}; Auto is {b.Ratio / a.Ratio:0.00}x smaller");
}
Directory.Delete(work, recursive: true);
