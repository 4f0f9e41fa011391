using System.Diagnostics;
using System.Globalization;
using ModelCompression.Data;
using ModelCompression.Evaluation;
using ModelCompression.Onnx;
using ModelCompression.Passes;
using ModelCompression.Policy;
using ModelCompression.Quantization;
using ModelCompression.Runtime;

// Usage: dotnet run -c Release --project bench/Quantization [-- --data samples/data --rounds 15 --method minmax --batch 64]
// Prints, for each fixture and quantization mode, fp32 vs int8 p50/p95 latency measured side by side in interleaved
// rounds, their ratio, accuracy on the validation set, model size, calibration time, pass time and the kernels
// ONNX Runtime ran.
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
var options = Options.Parse(args);
var cpu = new RuntimeOptions(ExecutionProviderSpec.Cpu, options.Threads);
var validation = Dataset.Load(Path.Combine(options.Data, "fmnist_val.npz"));
var calibrationSamples = Dataset.Load(Path.Combine(options.Data, "fmnist_calib.npz")).Count;
Console.WriteLine($"ONNX Runtime {OnnxRuntimeLoader.Version()}, {Environment.ProcessorCount} logical CPUs, batch {options.Batch}, {options.Rounds} interleaved rounds x {options.RunsPerRound} runs, calibration {options.Method}");
Console.WriteLine();

foreach (var (fixture, modes) in new[] { ("fmnist_mlp.onnx", new[] { "int8", "int8-dynamic" }), ("fmnist_resnet.onnx", new[] { "int8" }) })
{
    using var original = OnnxModel.Load(Path.Combine(options.Data, fixture));
    foreach (var mode in modes)
    {
        var policy = PolicySettings.Parse(
            [new("Quantize", mode), new("CalibrationData", "fmnist_calib.npz"), new("CalibrationMethod", options.Method), new("BatchSize", options.Batch.ToString(CultureInfo.InvariantCulture))],
            options.Data);

        double calibrationMs = 0;
        if (mode == "int8")
        {
            var probe = new CompressionContext(original.Clone(), policy);
            var start = Stopwatch.GetTimestamp();
            StaticQuantizationPass.Calibrate(probe, QdqPlan.Create(probe, ranks: null).Tensors);
            calibrationMs = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }

        var compressed = original.Clone();
        var context = new CompressionContext(compressed, policy);
        var passStart = Stopwatch.GetTimestamp();
        CompressionPipeline.Run(context);
        var passMs = Stopwatch.GetElapsedTime(passStart).TotalMilliseconds;

        var bound = validation.BindTo(ModelInput.FromGraph(original.Graph));
        var batch = bound.Batches(options.Batch).First();
        var (fp32, int8) = Latency.Interleaved(original.ToBytes(), compressed.ToBytes(), batch, cpu, options.Rounds, options.RunsPerRound);
        var accuracyFp32 = Metrics.TopK(Predictions.Run(original, validation, cpu, 256), validation.Labels!, 1);
        var accuracyInt8 = Metrics.TopK(Predictions.Run(compressed, validation, cpu, 256), validation.Labels!, 1);
        var kernels = KernelProfiler.Profile(compressed.ToBytes(), batch, cpu, runs: 5)
            .GroupBy(k => k.OpType).OrderByDescending(g => g.Sum(k => k.MedianMicroseconds))
            .Select(g => $"{g.Key} x{g.Count()} {g.Sum(k => k.MedianMicroseconds) / 1000:0.00} ms");

        Console.WriteLine($"{fixture} {mode}");
        Console.WriteLine($"  latency p50  fp32 {fp32.P50:0.000} ms   {mode} {int8.P50:0.000} ms   ratio {int8.P50 / fp32.P50:0.000}   (median of per-round ratios {Latency.MedianRatio(fp32, int8):0.000})");
        Console.WriteLine($"  latency p95  fp32 {fp32.P95:0.000} ms   {mode} {int8.P95:0.000} ms");
        Console.WriteLine($"  accuracy     fp32 {accuracyFp32 * 100:0.00} %   {mode} {accuracyInt8 * 100:0.00} %   drop {(accuracyFp32 - accuracyInt8) * 100:0.00} pt   ({validation.Count} images)");
        Console.WriteLine($"  size         fp32 {original.ToBytes().Length:N0} B   {mode} {compressed.ToBytes().Length:N0} B   {(double)original.ToBytes().Length / compressed.ToBytes().Length:0.00}x smaller");
        Console.WriteLine($"  time         pass {passMs:0} ms" + (mode == "int8" ? $"   calibration alone {calibrationMs:0} ms ({Math.Min(calibrationSamples, policy.Data.CalibrationSamples)} samples)" : ""));
        Console.WriteLine($"  kernels      {string.Join(", ", kernels)}");
        Console.WriteLine();
    }
}

internal sealed record Options(string Data, int Rounds, int RunsPerRound, string Method, int Batch, int Threads)
{
    public static Options Parse(string[] args)
    {
        string? Value(string name) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;
        return new Options(
            Path.GetFullPath(Value("--data") ?? FindFixtures()),
            int.Parse(Value("--rounds") ?? "15", CultureInfo.InvariantCulture),
            int.Parse(Value("--runs") ?? "10", CultureInfo.InvariantCulture),
            Value("--method") ?? "minmax",
            int.Parse(Value("--batch") ?? "64", CultureInfo.InvariantCulture),
            int.Parse(Value("--threads") ?? "0", CultureInfo.InvariantCulture));
    }

    /// <summary>samples/data of the repository this runs from (walking up from the current folder).</summary>
    private static string FindFixtures()
    {
        for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "samples", "data", "fmnist_resnet.onnx"))) return Path.Combine(dir.FullName, "samples", "data");
        throw new DirectoryNotFoundException("fixtures not found: run from the repository or pass --data <folder with fmnist_*.onnx/npz>");
    }
}

internal sealed record LatencySample(double[] Times, double[][] Rounds)
{
    public double P50 => Percentile(Times, 0.50);
    public double P95 => Percentile(Times, 0.95);

    public static double Percentile(double[] values, double p)
    {
        var sorted = values.Order().ToArray();
        return sorted[Math.Min(sorted.Length - 1, (int)Math.Round(p * (sorted.Length - 1)))];
    }
}

internal static class Latency
{
    /// <summary>
    /// Warm-up, then rounds that alternate which model goes first (A B, B A, …) so drift on a busy machine hits both
    /// alike; each round times <paramref name="runsPerRound"/> runs of the same prepared batch.
    /// </summary>
    public static (LatencySample A, LatencySample B) Interleaved(byte[] a, byte[] b, IReadOnlyList<NdArray> batch, RuntimeOptions runtime, int rounds, int runsPerRound)
    {
        using var sessionA = OnnxRuntimeSession.Create(a, runtime);
        using var sessionB = OnnxRuntimeSession.Create(b, runtime);
        sessionA.Time(batch, 5);
        sessionB.Time(batch, 5);
        var roundsA = new double[rounds][];
        var roundsB = new double[rounds][];
        for (var r = 0; r < rounds; r++)
        {
            if (r % 2 == 0) { roundsA[r] = sessionA.Time(batch, runsPerRound); roundsB[r] = sessionB.Time(batch, runsPerRound); }
            else { roundsB[r] = sessionB.Time(batch, runsPerRound); roundsA[r] = sessionA.Time(batch, runsPerRound); }
        }
        return (new LatencySample(roundsA.SelectMany(t => t).ToArray(), roundsA), new LatencySample(roundsB.SelectMany(t => t).ToArray(), roundsB));
    }

    /// <summary>Median over rounds of (p50 of B in the round / p50 of A in the round): robust to slow drift.</summary>
    public static double MedianRatio(LatencySample a, LatencySample b)
    {
        var ratios = a.Rounds.Zip(b.Rounds, (x, y) => LatencySample.Percentile(y, 0.5) / LatencySample.Percentile(x, 0.5)).ToArray();
        return LatencySample.Percentile(ratios, 0.5);
    }
}
