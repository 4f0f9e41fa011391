using System.Diagnostics;
using System.Globalization;
using ModelCompression;
using ModelCompression.Policy;

// Usage: dotnet run -c Release --project bench/AutoPolicy -- [--models mlp,resnet] [--max-drop 0.01] [--trials 16] [--auto-only] [--verbose]
// For each fixture: a grid of uniform policies (one Sparsity and one number format — float, int8, int4 unpruned, or a
// 16-value codebook — for every layer: PruneScope=layer, and the
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
        // --verbose: where the time went, and every trial of a search, to see where it spent its budget.
        if (args.Contains("--verbose"))
            Console.WriteLine("  " + string.Join(", ", result.Report.Timings.Select(t => $"{t.Step} {t.Milliseconds / 1000:0.0}{(t.Cached ? " cached" : "")}")));
        if (args.Contains("--verbose"))
            foreach (var t in result.Report.Search?.Trials ?? [])
                Console.WriteLine($"  trial {t.Index}: knobs {string.Join(",", t.Knobs.Select(k => k.ToString("0.000")))} size {t.SizeRatio:0.0000} drop {t.AccuracyDrop * 100:0.00} pt {(t.Feasible ? "ok" : "--")} {t.Seconds:0.0} s  {t.Layers}");
        return (result.Report.Verdict.Passed, m.SizeRatio, (m.Original?.Top1 - m.Compressed?.Top1) ?? double.NaN, clock.Elapsed.TotalSeconds);
    }

    Console.WriteLine($"\n## {name}\n\n| policy | size ratio | accuracy drop | gate | time |\n|---|---:|---:|---|---:|");
    var best = new Dictionary<string, (string Label, double Ratio)>();
    foreach (var scope in args.Contains("--auto-only") ? [] : new[] { "layer", "global" })
        foreach (var sparsity in new[] { "0", "0.5", "0.7", "0.8", "0.85", "0.9", "0.95" })
            foreach (var quantize in sparsity == "0" ? new[] { "none", "int8", "int4", "codebook" } : ["none", "int8", "codebook"])
            {
                if (sparsity == "0" && scope == "global") continue; // the same as PruneScope=layer
                if (sparsity == "0" && quantize == "none") continue;
                // Codebook=16: 4-bit indices into 16 shared values per layer (pruned weights stay zero), the float weights otherwise.
                (string, string)[] format = quantize == "codebook" ? [("Quantize", "none"), ("Codebook", "16")] : [("Quantize", quantize)];
                var label = $"{(sparsity == "0" ? "" : $"Sparsity={sparsity} PruneScope={scope} ")}{(quantize == "codebook" ? "Codebook=16" : $"Quantize={quantize}")}";
                var r = Run(label.Replace(' ', '_').Replace('=', '-'), [("Sparsity", sparsity), ("PruneScope", scope), .. format]);
                Console.WriteLine($"| {label} | {r.Ratio:0.0000} | {r.Drop * 100:0.00} pt | {(r.Passed ? "pass" : "fail")} | {r.Seconds:0.0} s |");
                // An unpruned policy belongs to both grids.
                foreach (var key in sparsity == "0" ? ["uniform", "global"] : new[] { scope == "layer" ? "uniform" : "global" })
                    if (r.Passed && (!best.TryGetValue(key, out var b) || r.Ratio < b.Ratio)) best[key] = (label, r.Ratio);
            }
    (string, string)[] auto = trials is null ? [("Auto", "true")] : [("Auto", "true"), ("SearchTrials", trials)];
    // --probe "Sparsity=0.85 Quantize=int8": one policy from nothing cached, to time a trial's steps.
    if (Arg("--probe") is { } probe)
    {
        var p = Run("probe", probe.Split(' ').Select(kv => (kv.Split('=')[0], kv.Split('=')[1])).ToArray(), cached: false);
        Console.WriteLine($"| {probe} | {p.Ratio:0.0000} | {p.Drop * 100:0.00} pt | {(p.Passed ? "pass" : "fail")} | {p.Seconds:0.0} s |");
        continue;
    }
    // Auto starts from nothing cached: its time is the whole search.
    var a = Run("auto", auto, cached: false);
    Console.WriteLine($"| Auto (Objective=size{(trials is null ? "" : $", SearchTrials={trials}")}) | {a.Ratio:0.0000} | {a.Drop * 100:0.00} pt | {(a.Passed ? "pass" : "fail")} | {a.Seconds:0.0} s |");
    Console.WriteLine();
    foreach (var (key, b) in best)
        Console.WriteLine($"best {(key == "uniform" ? "uniform policy (same setting on every layer)" : "policy with the default global sparsity allocation")}: {b.Label}, size ratio {b.Ratio:0.0000}; Auto is {b.Ratio / a.Ratio:0.00}x smaller");
}
Directory.Delete(work, recursive: true);
